"""Verify that a webhook request really comes from the messaging provider.

Every verifier is a pure function with the same signature::

    verify_xxx(body, headers, *, secret, url=None, now=None, **scheme_options) -> bool

``body``
    The raw request body, byte for byte as received. For providers that call with ``GET``
    (Vonage delivery receipts) pass the raw query string, without the ``?``.
``headers``
    The request headers. Keys are matched case-insensitively.
``secret``
    What the provider gave you to check its requests: an HMAC key, a public key, a
    certificate, ``"user:password"`` or a token. Each verifier documents its own.
``url``
    The full URL the provider called, as configured at the provider (scheme, host, port,
    path and query). Only the schemes that sign the URL use it: Twilio and Mandrill.
``now``
    Epoch seconds to use instead of :func:`time.time` when checking a timestamp's age.

A verifier returns ``False`` for a missing, malformed, wrong or stale signature. It raises
:class:`~odpmap.errors.SignatureConfigError` only when it is misused: an empty secret, a
malformed key or certificate, an unknown option, or a URL that is required but missing or
not absolute. All comparisons of secrets and signatures are constant-time.

The schemes
-----------

``sendgrid``
    ECDSA P-256 with SHA-256 over the ``X-Twilio-Email-Event-Webhook-Timestamp`` header
    value followed by the raw body. ``X-Twilio-Email-Event-Webhook-Signature`` holds the
    base64 of the DER-encoded signature. ``secret`` is the verification key SendGrid shows
    (base64 DER) or the same key as PEM. No age check unless ``max_age`` is given.
``mailgun``
    The signature travels in the body: ``{"signature": {"timestamp", "token", "signature"},
    "event-data": {...}}`` (or the fields ``timestamp``, ``token``, ``signature`` of a legacy
    form-encoded webhook). ``signature`` is hex HMAC-SHA256 keyed with the webhook signing
    key over ``timestamp + token``. A subaccount's ``parent-signature`` is accepted as well.
    Timestamps more than ``max_age`` (15 minutes) from now are refused.
``twilio``
    ``X-Twilio-Signature`` is base64 HMAC-SHA1 keyed with the auth token over the URL
    followed by every POST parameter, sorted by name, as ``name + value`` (repeated names:
    each value, values sorted). Like twilio-python's ``RequestValidator`` the URL is tried
    as given, without its port and with the default port (``:443``/``:80``) added. JSON
    bodies are covered by a ``bodySHA256`` query parameter: the hex SHA-256 of the body.
``mandrill``
    ``X-Mandrill-Signature`` is base64 HMAC-SHA1 keyed with the webhook key over the URL
    followed by every POST parameter, sorted by name, as ``name + value``.
``sns``
    Amazon SNS signs its JSON envelope with an X.509 certificate: RSA PKCS#1 v1.5 with
    SHA-1 (``SignatureVersion`` 1) or SHA-256 (2) over ``"Name\\nvalue\\n"`` lines of fixed
    fields. ``secret`` is a PEM certificate to pin, or ``""``/``"fetch"`` to download
    ``SigningCertURL``, allowed only over https from ``sns.<region>.amazonaws.com[.cn]``.
``basic_auth`` (also ``postmark`` and ``sparkpost``)
    ``Authorization: Basic base64(user:password)``; ``secret`` is ``"user:password"``.
``bearer_token`` (also ``brevo``)
    ``Authorization: Bearer <token>``; ``secret`` is the token.
``vonage``
    SMS API signed callbacks carry ``sig`` and ``timestamp`` among their parameters.
    Every other parameter, sorted by name, is written ``&name=value`` with ``&`` and ``=``
    in values replaced by ``_``; ``sig`` is the hex MD5 of that string followed by the
    signature secret (``method="md5hash"``), or its HMAC keyed with the secret
    (``"md5"``, ``"sha1"``, ``"sha256"``, ``"sha512"``). Timestamps more than ``max_age``
    (5 minutes) from now are refused.

:data:`VERIFIERS` maps these scheme names to the functions.

.. versionadded:: 0.1
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import math
import re
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import ParseResult, parse_qs, parse_qsl, urlparse

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from .errors import SignatureConfigError

__all__ = [
    "VERIFIERS",
    "fetch_certificate",
    "is_trusted_sns_cert_url",
    "verify_basic_auth",
    "verify_bearer_token",
    "verify_mailgun",
    "verify_mandrill",
    "verify_sendgrid",
    "verify_sns",
    "verify_twilio",
    "verify_vonage",
]

# --- shared helpers ------------------------------------------------------------


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``headers`` with lower-cased names."""
    return {name.lower(): value for name, value in headers.items()}


def _equal(a: str, b: str) -> bool:
    """Compare two strings in constant time (any characters, unlike compare_digest on str)."""
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )


def _require_secret(secret: str, scheme: str) -> None:
    if not isinstance(secret, str) or not secret:
        raise SignatureConfigError(f"{scheme}: the secret is empty")


def _require_url(url: str | None, scheme: str) -> tuple[str, ParseResult]:
    """Check and parse the URL a scheme signs; it must be an absolute http(s) URL."""
    if not url:
        raise SignatureConfigError(f"{scheme}: the request URL is required for this signature")
    try:
        parsed = urlparse(url)
        parsed.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise SignatureConfigError(f"{scheme}: malformed URL {url!r}: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise SignatureConfigError(f"{scheme}: the URL must be absolute http(s), got {url!r}")
    return url, parsed


def _check_max_age(max_age: float | None, scheme: str) -> None:
    if max_age is not None and not max_age >= 0:
        raise SignatureConfigError(f"{scheme}: max_age must be None or >= 0, got {max_age!r}")


def _fresh(timestamp: object, now: float | None, max_age: float | None) -> bool:
    """True when ``timestamp`` (epoch seconds) is within ``max_age`` of ``now``, either way.

    ``max_age=None`` disables the check.
    """
    if max_age is None:
        return True
    if not isinstance(timestamp, (str, int, float)) or isinstance(timestamp, bool):
        return False
    try:
        seconds = float(timestamp)
    except (ValueError, OverflowError):
        return False
    if not math.isfinite(seconds):
        return False
    current = time.time() if now is None else now
    return abs(current - seconds) <= max_age


def _form_pairs(body: bytes) -> list[tuple[str, str]] | None:
    """The ``name=value`` pairs of a form-encoded body, in order; ``None`` if not UTF-8."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return parse_qsl(text, keep_blank_values=True)


def _unique_form(body: bytes) -> dict[str, str] | None:
    """A form body as a dict; ``None`` if it is not a form or repeats a name (ambiguous)."""
    pairs = _form_pairs(body)
    if pairs is None:
        return None
    form = dict(pairs)
    return form if len(form) == len(pairs) else None


def _json_object(body: bytes) -> dict[str, Any] | None:
    """The body parsed as a JSON object, or ``None``."""
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _looks_like_json(body: bytes) -> bool:
    return body.lstrip()[:1] == b"{"


def _b64decode(value: object) -> bytes | None:
    """Strict base64 decoding; ``None`` for anything that is not valid base64 text."""
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def _hmac_b64(key: str, message: str, digest: Callable[..., Any]) -> str:
    mac = hmac.new(key.encode("utf-8"), message.encode("utf-8"), digest)
    return base64.b64encode(mac.digest()).decode("ascii")


# --- SendGrid --------------------------------------------------------------------


def _load_ec_public_key(secret: str) -> ec.EllipticCurvePublicKey:
    """Load SendGrid's verification key: base64 DER (as SendGrid shows it) or PEM."""
    text = secret.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode("ascii"))
        else:
            der = base64.b64decode("".join(text.split()), validate=True)
            key = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm) as exc:  # binascii.Error is a ValueError
        raise SignatureConfigError(f"sendgrid: the public key cannot be loaded: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SignatureConfigError("sendgrid: the public key is not an ECDSA P-256 key")
    return key


def verify_sendgrid(
    body: bytes,
    headers: Mapping[str, str],
    *,
    secret: str,
    url: str | None = None,
    now: float | None = None,
    max_age: float | None = None,
) -> bool:
    """Verify a SendGrid signed Event Webhook request.

    :param secret: the verification key from SendGrid's Mail Settings, base64 DER
        (``MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE...``) or PEM
    :param max_age: seconds the ``X-Twilio-Email-Event-Webhook-Timestamp`` may differ
        from ``now``; ``None`` (default, as SendGrid's own libraries) skips the check
    :raises SignatureConfigError: the key is empty, malformed, or not a P-256 key
    """
    _require_secret(secret, "sendgrid")
    _check_max_age(max_age, "sendgrid")
    key = _load_ec_public_key(secret)
    lowered = _lower(headers)
    timestamp = lowered.get("x-twilio-email-event-webhook-timestamp")
    signature = _b64decode(lowered.get("x-twilio-email-event-webhook-signature"))
    if not timestamp or not signature or not _fresh(timestamp, now, max_age):
        return False
    try:
        key.verify(signature, timestamp.encode("utf-8") + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


# --- Mailgun ---------------------------------------------------------------------


def _mailgun_signature_fields(body: bytes, content_type: str | None = None) -> Mapping[str, object] | None:
    """The ``timestamp``/``token``/``signature`` fields of a JSON, legacy form or
    legacy multipart (with attachments) webhook."""
    if content_type and content_type.lower().startswith("multipart/form-data"):
        from .builtins.parsers import multipart_fields

        try:
            fields = multipart_fields(body, content_type)
        except ValueError:
            return None
        return fields if all(isinstance(fields.get(k), str) for k in ("timestamp", "token")) else None
    if _looks_like_json(body):
        document = _json_object(body)
        fields = document.get("signature") if document else None
        return fields if isinstance(fields, dict) else None
    return _unique_form(body)


def verify_mailgun(
    body: bytes,
    headers: Mapping[str, str],
    *,
    secret: str,
    url: str | None = None,
    now: float | None = None,
    max_age: float | None = 900.0,
) -> bool:
    """Verify a Mailgun webhook (JSON webhooks, and legacy form-encoded or multipart ones).

    The signature is inside the body; ``headers`` give only the ``content-type`` (for
    multipart bodies, whose boundary it names).

    :param secret: the HTTP webhook signing key of the Mailgun account (for a subaccount's
        events, either the subaccount's key or the primary account's, which signs
        ``parent-signature``)
    :param max_age: seconds the signed ``timestamp`` may differ from ``now``
        (default 15 minutes); ``None`` disables the check
    :raises SignatureConfigError: the key is empty
    """
    _require_secret(secret, "mailgun")
    _check_max_age(max_age, "mailgun")
    fields = _mailgun_signature_fields(body, _lower(headers).get("content-type"))
    if fields is None:
        return False
    timestamp, token = fields.get("timestamp"), fields.get("token")
    if isinstance(timestamp, bool) or not isinstance(timestamp, (str, int)):
        return False
    if not isinstance(token, str) or not token or not _fresh(timestamp, now, max_age):
        return False
    message = f"{timestamp}{token}".encode("utf-8")
    expected = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    given = [fields.get("signature"), fields.get("parent-signature")]
    # Evaluate both comparisons (no short-circuit) to keep the timing independent of which matched.
    matches = [isinstance(value, str) and _equal(expected, value.lower()) for value in given]
    return any(matches)


# --- Twilio ----------------------------------------------------------------------


def _twilio_url_variants(url: str, parsed: ParseResult) -> list[str]:
    """The URL as given, without its port, and with the scheme's default port added.

    Twilio's own signing is inconsistent about the port, so twilio-python's
    ``RequestValidator`` accepts either form; so do we. (Unlike twilio-python, the port is
    removed correctly when the URL also carries ``user:password@`` or an IPv6 host.)
    """
    if parsed.port is not None:
        with_port = parsed.geturl()
        without_port = parsed._replace(netloc=parsed.netloc.rpartition(":")[0]).geturl()
    else:
        default = 443 if parsed.scheme == "https" else 80
        with_port = parsed._replace(netloc=f"{parsed.netloc}:{default}").geturl()
        without_port = parsed.geturl()
    return list(dict.fromkeys((url, without_port, with_port)))


def _twilio_signature(token: str, url: str, params: list[tuple[str, str]]) -> str:
    grouped: defaultdict[str, list[str]] = defaultdict(list)
    for name, value in params:
        grouped[name].append(value)
    data = url + "".join(
        name + value for name in sorted(grouped) for value in sorted(grouped[name])
    )
    return _hmac_b64(token, data, hashlib.sha1)


def verify_twilio(
    body: bytes,
    headers: Mapping[str, str],
    *,
    secret: str,
    url: str | None = None,
    now: float | None = None,
) -> bool:
    """Verify Twilio's ``X-Twilio-Signature``.

    ``body`` is the form-encoded POST body (empty for ``GET``: the parameters are then in
    ``url``). When ``url`` has a ``bodySHA256`` query parameter the body is taken as
    opaque (JSON) and must hash to it; only the URL is then signed.

    :param secret: the account's auth token (the one of the account or subaccount that
        owns the resource)
    :param url: the full URL Twilio requested, including its query string (required)
    :raises SignatureConfigError: the token is empty, or ``url`` is missing or not absolute
    """
    _require_secret(secret, "twilio")
    url, parsed = _require_url(url, "twilio")
    signature = _lower(headers).get("x-twilio-signature")
    if not signature:
        return False
    body_hash = parse_qs(parsed.query).get("bodySHA256")
    if body_hash is not None:
        if not _equal(hashlib.sha256(body).hexdigest(), body_hash[0]):
            return False
        params: list[tuple[str, str]] = []
    else:
        pairs = _form_pairs(body)
        if pairs is None:
            return False
        params = pairs
    param_sets = [params]
    if body and body.lstrip(b"?") == parsed.query.encode():
        # A GET callback whose query string the caller also passed as the body (as a
        # receiver does for GET providers): Twilio signed the URL alone.
        param_sets.append([])
    matches = [
        _equal(_twilio_signature(secret, candidate, p), signature)
        for p in param_sets
        for candidate in _twilio_url_variants(url, parsed)
    ]
    return any(matches)


# --- Mandrill --------------------------------------------------------------------


def verify_mandrill(
    body: bytes,
    headers: Mapping[str, str],
    *,
    secret: str,
    url: str | None = None,
    now: float | None = None,
) -> bool:
    """Verify Mandrill's ``X-Mandrill-Signature``.

    :param secret: the webhook's key, shown on Mandrill's webhook settings page (not the
        API key)
    :param url: the webhook URL exactly as entered in Mandrill (required)
    :raises SignatureConfigError: the key is empty, or ``url`` is missing or not absolute
    """
    _require_secret(secret, "mandrill")
    url, _ = _require_url(url, "mandrill")
    signature = _lower(headers).get("x-mandrill-signature")
    pairs = _form_pairs(body)
    if not signature or pairs is None:
        return False
    data = url + "".join(name + value for name, value in sorted(pairs, key=lambda pair: pair[0]))
    return _equal(_hmac_b64(secret, data, hashlib.sha1), signature)


# --- Amazon SNS ------------------------------------------------------------------

_SNS_CERT_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
_SNS_CONFIRMATION_FIELDS = (
    "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"
)
_SNS_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": _SNS_CONFIRMATION_FIELDS,
    "UnsubscribeConfirmation": _SNS_CONFIRMATION_FIELDS,
}
_SNS_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
_MAX_CERT_BYTES = 64 * 1024


def is_trusted_sns_cert_url(url: str) -> bool:
    """True when ``url`` may be fetched as an SNS signing certificate.

    It must be ``https``, on a host matching ``sns.<region>.amazonaws.com`` (or ``.com.cn``),
    on the default port, without credentials, and name a ``.pem`` file (as the AWS SDKs
    require).
    """
    try:
        parsed = urlparse(url)
        port = parsed.port
    except ValueError:  # a bad port or IPv6 literal
        return False
    return (
        parsed.scheme == "https"
        and port in (None, 443)
        and parsed.username is None
        and _SNS_CERT_HOST.fullmatch(parsed.hostname or "") is not None
        and parsed.path.endswith(".pem")
    )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: a redirect could lead away from the checked host."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@functools.lru_cache(maxsize=16)
def fetch_certificate(url: str) -> bytes:
    """Download an SNS signing certificate (PEM) from ``url``; results are cached.

    This is the default ``cert_fetcher`` of :func:`verify_sns`. It refuses URLs that
    :func:`is_trusted_sns_cert_url` does not accept, does not follow redirects, times out
    after 10 seconds and reads at most 64 KiB.

    :raises ValueError: the URL is not a trusted SNS certificate URL
    :raises OSError: the download failed (``urllib.error.URLError`` is an ``OSError``)
    """
    if not is_trusted_sns_cert_url(url):
        raise ValueError(f"not an Amazon SNS certificate URL: {url!r}")
    opener = urllib.request.build_opener(_NoRedirect)
    with opener.open(url, timeout=10) as response:
        return bytes(response.read(_MAX_CERT_BYTES))


def _sns_string_to_sign(message: Mapping[str, Any]) -> str | None:
    """The canonical ``"Name\\nvalue\\n"`` string of an SNS message, or ``None`` if malformed."""
    message_type = message.get("Type")
    fields = _SNS_FIELDS.get(message_type) if isinstance(message_type, str) else None
    if fields is None:
        return None
    lines = []
    for name in fields:
        value = message.get(name)
        if name == "Subject" and value is None:  # optional, and signed only when present
            continue
        if not isinstance(value, str):
            return None
        lines.append(f"{name}\n{value}\n")
    return "".join(lines)


def _load_pinned_certificate_key(secret: str) -> rsa.RSAPublicKey:
    try:
        certificate = x509.load_pem_x509_certificate(secret.encode("utf-8"))
    except ValueError as exc:
        raise SignatureConfigError(f"sns: the certificate cannot be loaded: {exc}") from exc
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise SignatureConfigError("sns: the certificate does not hold an RSA key")
    return key


def _fetch_certificate_key(url: str, fetcher: Callable[[str], bytes]) -> rsa.RSAPublicKey | None:
    try:
        certificate = x509.load_pem_x509_certificate(fetcher(url))
    except ValueError:
        return None
    key = certificate.public_key()
    return key if isinstance(key, rsa.RSAPublicKey) else None


def verify_sns(
    body: bytes,
    headers: Mapping[str, str],
    *,
    secret: str,
    url: str | None = None,
    now: float | None = None,
    cert_fetcher: Callable[[str], bytes] | None = None,
) -> bool:
    """Verify the signature of an Amazon SNS HTTP(S) message.

    ``body`` is the SNS JSON envelope (``Notification``, ``SubscriptionConfirmation`` or
    ``UnsubscribeConfirmation``); ``headers`` are not used. Message age is not checked:
    SNS retries deliveries long after signing. The certificate chain is not validated: a
    fetched certificate is trusted because it came over https from an SNS host.

    :param secret: a PEM certificate to verify against (pinning), or ``""``/``"fetch"`` to
        download the message's ``SigningCertURL``; a URL that fails
        :func:`is_trusted_sns_cert_url` gives ``False`` without any download
    :param cert_fetcher: ``url -> PEM bytes``, default :func:`fetch_certificate`. Its
        exceptions (network errors) propagate, so the caller can answer 5xx and SNS retries
    :raises SignatureConfigError: the pinned certificate is malformed or not RSA
    """
    pinned = None if secret in ("", "fetch") else _load_pinned_certificate_key(secret)
    message = _json_object(body)
    if message is None:
        return False
    string_to_sign = _sns_string_to_sign(message)
    version = message.get("SignatureVersion")
    hash_factory = _SNS_HASHES.get(version) if isinstance(version, str) else None
    signature = _b64decode(message.get("Signature"))
    if string_to_sign is None or hash_factory is None or not signature:
        return False
    key = pinned
    if key is None:
        cert_url = message.get("SigningCertURL")
        if not isinstance(cert_url, str) or not is_trusted_sns_cert_url(cert_url):
            return False
        key = _fetch_certificate_key(cert_url, cert_fetcher or fetch_certificate)
        if key is None:
            return False
    try:
        key.verify(signature, string_to_sign.encode("utf-8"), padding.PKCS1v15(), hash_factory())
    except InvalidSignature:
        return False
    return True


# --- HTTP authentication -----------------------------------------------------------


def _authorization(headers: Mapping[str, str], scheme: str) -> str | None:
    """The credentials of an ``Authorization: <scheme> <credentials>`` header, or ``None``."""
    name, _, credentials = _lower(headers).get("authorization", "").strip().partition(" ")
    credentials = credentials.strip()
    return credentials if name.lower() == scheme and credentials else None


def verify_basic_auth(
    body: bytes,
    headers: Mapping[str, str],
    *,
    secret: str,
    url: str | None = None,
    now: float | None = None,
) -> bool:
    """Check HTTP Basic credentials (Postmark, SparkPost, Brevo with credentials in the URL).

    :param secret: ``"user:password"``, as put in the webhook URL at the provider
    :raises SignatureConfigError: the secret is empty or has no ``:``
    """
    _require_secret(secret, "basic_auth")
    if ":" not in secret:
        raise SignatureConfigError("basic_auth: the secret must be 'user:password'")
    decoded = _b64decode(_authorization(headers, "basic"))
    return decoded is not None and hmac.compare_digest(decoded, secret.encode("utf-8"))


def verify_bearer_token(
    body: bytes,
    headers: Mapping[str, str],
    *,
    secret: str,
    url: str | None = None,
    now: float | None = None,
) -> bool:
    """Check an ``Authorization: Bearer <token>`` header (Brevo's webhook token).

    :param secret: the token configured at the provider
    :raises SignatureConfigError: the token is empty
    """
    _require_secret(secret, "bearer_token")
    token = _authorization(headers, "bearer")
    return token is not None and _equal(token, secret)


# --- Vonage ----------------------------------------------------------------------

_VONAGE_HMACS: dict[str, Callable[..., Any]] = {
    "md5": hashlib.md5,
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
}


def _vonage_params(body: bytes) -> dict[str, str] | None:
    """The flat parameters of a query string, form or JSON body; ``None`` if unusable."""
    if _looks_like_json(body):
        document = _json_object(body)
        if document is None:
            return None
        params: dict[str, str] = {}
        for name, value in document.items():
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                return None
            params[name] = str(value)
        return params
    return _unique_form(body.removeprefix(b"?"))


def verify_vonage(
    body: bytes,
    headers: Mapping[str, str],
    *,
    secret: str,
    url: str | None = None,
    now: float | None = None,
    method: str = "md5hash",
    max_age: float | None = 300.0,
) -> bool:
    """Verify the ``sig`` parameter of a Vonage (Nexmo) SMS API signed callback.

    ``body`` is the raw query string of a ``GET`` callback, or the form or JSON body of a
    ``POST`` one; ``headers`` are not used.

    :param secret: the account's signature secret (not the API secret)
    :param method: the signature method chosen in the Vonage dashboard: ``"md5hash"``
        (default), or HMAC with ``"md5"``, ``"sha1"``, ``"sha256"`` or ``"sha512"``
    :param max_age: seconds the signed ``timestamp`` may differ from ``now``
        (default 5 minutes); ``None`` disables the check
    :raises SignatureConfigError: the secret is empty or ``method`` is unknown
    """
    _require_secret(secret, "vonage")
    if method != "md5hash" and method not in _VONAGE_HMACS:
        raise SignatureConfigError(f"vonage: unknown signature method {method!r}")
    _check_max_age(max_age, "vonage")
    params = _vonage_params(body)
    if params is None:
        return False
    signature = params.pop("sig", "")
    timestamp = params.get("timestamp")
    if not signature or timestamp is None or not _fresh(timestamp, now, max_age):
        return False
    canonical = "".join(
        f"&{name}={params[name].replace('&', '_').replace('=', '_')}" for name in sorted(params)
    ).encode("utf-8")
    key = secret.encode("utf-8")
    if method == "md5hash":
        expected = hashlib.md5(canonical + key).hexdigest()
    else:
        expected = hmac.new(key, canonical, _VONAGE_HMACS[method]).hexdigest()
    return _equal(expected, signature.lower())


# --- registry --------------------------------------------------------------------

#: Scheme name -> verifier. Providers that authenticate with HTTP credentials reuse
#: ``basic_auth`` (Postmark, SparkPost) or ``bearer_token`` (Brevo's token).
VERIFIERS: dict[str, Callable[..., bool]] = {
    "basic_auth": verify_basic_auth,
    "bearer_token": verify_bearer_token,
    "brevo": verify_bearer_token,
    "mailgun": verify_mailgun,
    "mandrill": verify_mandrill,
    "postmark": verify_basic_auth,
    "sendgrid": verify_sendgrid,
    "sns": verify_sns,
    "sparkpost": verify_basic_auth,
    "twilio": verify_twilio,
    "vonage": verify_vonage,
}
