"""Tests of odpmap.signatures: published vectors, vectors of our own, and every way to fail.

Vectors live in tests/data/signatures/ (see _source.md there). No test touches the network:
an autouse fixture makes any socket connection fail the test.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from odpmap.errors import SignatureConfigError
from odpmap.signatures import (
    VERIFIERS,
    fetch_certificate,
    is_trusted_sns_cert_url,
    verify_basic_auth,
    verify_bearer_token,
    verify_mailgun,
    verify_mandrill,
    verify_sendgrid,
    verify_sns,
    verify_twilio,
    verify_vonage,
)

DATA = Path(__file__).parent / "data" / "signatures"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_registry_names_the_schemes() -> None:
    assert VERIFIERS == {
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


@pytest.mark.parametrize(
    "verify",
    [verify_sendgrid, verify_mailgun, verify_twilio, verify_mandrill, verify_basic_auth,
     verify_bearer_token, verify_vonage],
)
def test_empty_secret_is_a_config_error(verify: Any) -> None:
    with pytest.raises(SignatureConfigError):
        verify(b"", {}, secret="", url="https://example.com/hook")


# --- SendGrid --------------------------------------------------------------------

SENDGRID = json.loads((DATA / "signature-sendgrid-python-single-event.json").read_bytes())
SENDGRID_HEADERS = {name.lower(): value for name, value in SENDGRID["headers"].items()}
SENDGRID_KEY = SENDGRID["public_key_base64_der"]
SENDGRID_TS = int(SENDGRID_HEADERS["x-twilio-email-event-webhook-timestamp"])


def test_sendgrid_published_vector() -> None:
    assert verify_sendgrid(SENDGRID["raw_body"].encode(), SENDGRID_HEADERS, secret=SENDGRID_KEY)


def test_sendgrid_raw_body_file_is_the_signed_body() -> None:
    body = (DATA / "signed-body-single-event.txt").read_bytes()
    assert body.endswith(b"\r\n")
    assert verify_sendgrid(body, SENDGRID_HEADERS, secret=SENDGRID_KEY)


@pytest.mark.parametrize("case", SENDGRID["negative_cases"], ids=lambda c: c["description"])
def test_sendgrid_published_negative_cases(case: dict[str, Any]) -> None:
    headers = dict(SENDGRID_HEADERS)
    if "signature" in case:
        headers["x-twilio-email-event-webhook-signature"] = case["signature"]
    if "timestamp" in case:
        headers["x-twilio-email-event-webhook-timestamp"] = case["timestamp"]
    body = case.get("raw_body", SENDGRID["raw_body"]).encode()
    key = case.get("public_key_base64_der", SENDGRID_KEY)
    assert verify_sendgrid(body, headers, secret=key) is case["expected_valid"]


def test_sendgrid_accepts_the_key_as_pem_and_mixed_case_headers() -> None:
    der = base64.b64decode(SENDGRID_KEY)
    pem = serialization.load_der_public_key(der).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    headers = {name.title(): value for name, value in SENDGRID_HEADERS.items()}
    assert verify_sendgrid(SENDGRID["raw_body"].encode(), headers, secret=pem.decode())


@pytest.mark.parametrize(
    "missing",
    ["x-twilio-email-event-webhook-signature", "x-twilio-email-event-webhook-timestamp"],
)
def test_sendgrid_missing_header(missing: str) -> None:
    headers = {k: v for k, v in SENDGRID_HEADERS.items() if k != missing}
    assert not verify_sendgrid(SENDGRID["raw_body"].encode(), headers, secret=SENDGRID_KEY)


def test_sendgrid_signature_not_base64() -> None:
    headers = dict(SENDGRID_HEADERS, **{"x-twilio-email-event-webhook-signature": "not base64!"})
    assert not verify_sendgrid(SENDGRID["raw_body"].encode(), headers, secret=SENDGRID_KEY)


def test_sendgrid_max_age() -> None:
    body = SENDGRID["raw_body"].encode()
    headers, key = SENDGRID_HEADERS, SENDGRID_KEY
    assert verify_sendgrid(body, headers, secret=key, max_age=300, now=SENDGRID_TS + 299)
    assert not verify_sendgrid(body, headers, secret=key, max_age=300, now=SENDGRID_TS + 301)
    # no max_age: SendGrid's own libraries do not check the age, neither do we by default
    assert verify_sendgrid(body, SENDGRID_HEADERS, secret=SENDGRID_KEY, now=SENDGRID_TS + 10**8)


@pytest.mark.parametrize(
    "key", ["not a key", "bm90IGEga2V5", "-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----"]
)
def test_sendgrid_malformed_key(key: str) -> None:
    with pytest.raises(SignatureConfigError):
        verify_sendgrid(SENDGRID["raw_body"].encode(), SENDGRID_HEADERS, secret=key)


def test_sendgrid_key_of_the_wrong_type() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    p384_key = ec.generate_private_key(ec.SECP384R1()).public_key()
    for key in (rsa_key, p384_key):
        der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        with pytest.raises(SignatureConfigError):
            verify_sendgrid(b"[]", SENDGRID_HEADERS, secret=base64.b64encode(der).decode())


# --- Mailgun ---------------------------------------------------------------------

MAILGUN_KEY = "key-odpmap-test"
MAILGUN_TS = 1529006854
MAILGUN_TOKEN = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0"
# hex HMAC-SHA256(b"key-odpmap-test", b"1529006854" + token), computed once for this test
MAILGUN_SIGNATURE = "c0509770b95fdfb5bdff6fe504e8369954712844d0fbe3817a82d01a4469a34a"


def mailgun_body(signature: dict[str, Any]) -> bytes:
    return json.dumps({"signature": signature, "event-data": {"event": "delivered"}}).encode()


def mailgun_sign(key: str, timestamp: int | str, token: str) -> str:
    return hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()


MAILGUN_VALID = {"timestamp": str(MAILGUN_TS), "token": MAILGUN_TOKEN, "signature": MAILGUN_SIGNATURE}


def test_mailgun_fixed_vector() -> None:
    assert mailgun_sign(MAILGUN_KEY, MAILGUN_TS, MAILGUN_TOKEN) == MAILGUN_SIGNATURE
    assert verify_mailgun(mailgun_body(MAILGUN_VALID), {}, secret=MAILGUN_KEY, now=MAILGUN_TS + 60)


def test_mailgun_integer_timestamp_and_upper_case_signature() -> None:
    body = mailgun_body(dict(MAILGUN_VALID, timestamp=MAILGUN_TS, signature=MAILGUN_SIGNATURE.upper()))
    assert verify_mailgun(body, {}, secret=MAILGUN_KEY, now=MAILGUN_TS)


def test_mailgun_legacy_form_webhook() -> None:
    body = urlencode(dict(MAILGUN_VALID, event="delivered", recipient="a@example.com")).encode()
    assert verify_mailgun(body, {}, secret=MAILGUN_KEY, now=MAILGUN_TS)
    repeated = body + b"&token=other"
    assert not verify_mailgun(repeated, {}, secret=MAILGUN_KEY, now=MAILGUN_TS)


def test_mailgun_parent_signature_of_a_subaccount() -> None:
    parent_key = "key-parent"
    fields = dict(MAILGUN_VALID, **{"parent-signature": mailgun_sign(parent_key, MAILGUN_TS, MAILGUN_TOKEN)})
    body = mailgun_body(fields)
    assert verify_mailgun(body, {}, secret=MAILGUN_KEY, now=MAILGUN_TS)
    assert verify_mailgun(body, {}, secret=parent_key, now=MAILGUN_TS)
    assert not verify_mailgun(body, {}, secret="key-other", now=MAILGUN_TS)


@pytest.mark.parametrize(
    "fields",
    [
        dict(MAILGUN_VALID, token=MAILGUN_TOKEN[:-1] + "1"),
        dict(MAILGUN_VALID, timestamp=str(MAILGUN_TS + 1)),
        dict(MAILGUN_VALID, signature="0" * 64),
        {k: v for k, v in MAILGUN_VALID.items() if k != "signature"},
        {k: v for k, v in MAILGUN_VALID.items() if k != "token"},
        dict(MAILGUN_VALID, timestamp=None),
        dict(MAILGUN_VALID, signature=12),
    ],
    ids=["token", "timestamp", "signature", "no-signature", "no-token", "null-timestamp", "int-signature"],
)
def test_mailgun_tampered(fields: dict[str, Any]) -> None:
    assert not verify_mailgun(mailgun_body(fields), {}, secret=MAILGUN_KEY, now=MAILGUN_TS)


@pytest.mark.parametrize(
    "body", [b"", b"{", b"[]", b'{"event-data": {}}', b'{"signature": "x"}', b"\xff\xfe"]
)
def test_mailgun_unusable_body(body: bytes) -> None:
    assert not verify_mailgun(body, {}, secret=MAILGUN_KEY, now=MAILGUN_TS)


def test_mailgun_wrong_key() -> None:
    assert not verify_mailgun(mailgun_body(MAILGUN_VALID), {}, secret="key-wrong", now=MAILGUN_TS)


def test_mailgun_age_window() -> None:
    body = mailgun_body(MAILGUN_VALID)
    assert verify_mailgun(body, {}, secret=MAILGUN_KEY, now=MAILGUN_TS + 900)
    assert verify_mailgun(body, {}, secret=MAILGUN_KEY, now=MAILGUN_TS - 900)
    assert not verify_mailgun(body, {}, secret=MAILGUN_KEY, now=MAILGUN_TS + 901)
    assert not verify_mailgun(body, {}, secret=MAILGUN_KEY, now=MAILGUN_TS - 901)
    assert verify_mailgun(body, {}, secret=MAILGUN_KEY, now=MAILGUN_TS + 3600, max_age=None)
    assert not verify_mailgun(body, {}, secret=MAILGUN_KEY, now=MAILGUN_TS + 61, max_age=60)
    # default clock: a 2018 timestamp is stale today
    assert not verify_mailgun(body, {}, secret=MAILGUN_KEY)


def test_mailgun_negative_max_age_is_a_config_error() -> None:
    with pytest.raises(SignatureConfigError):
        verify_mailgun(mailgun_body(MAILGUN_VALID), {}, secret=MAILGUN_KEY, max_age=-1)


# --- Twilio ----------------------------------------------------------------------

TWILIO = json.loads((DATA / "signature-twilio-docs-example.json").read_bytes())


def twilio_sign(token: str, data: str) -> str:
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def twilio_headers(signature: str) -> dict[str, str]:
    return {"x-twilio-signature": signature}


def test_twilio_documented_vector() -> None:
    assert twilio_sign(TWILIO["auth_token"], TWILIO["string_to_sign"]) == TWILIO["expected_signature"]
    body = urlencode(TWILIO["params"]).encode()
    headers = twilio_headers(TWILIO["expected_signature"])
    assert verify_twilio(body, headers, secret=TWILIO["auth_token"], url=TWILIO["url"])
    assert verify_twilio(body, {"X-Twilio-Signature": TWILIO["expected_signature"]},
                         secret=TWILIO["auth_token"], url=TWILIO["url"])


def test_twilio_documented_vector_negatives() -> None:
    body = urlencode(TWILIO["params"]).encode()
    headers = twilio_headers(TWILIO["expected_signature"])
    token, url = TWILIO["auth_token"], TWILIO["url"]
    assert not verify_twilio(body.replace(b"1234", b"1235"), headers, secret=token, url=url)
    assert not verify_twilio(body + b"&Extra=1", headers, secret=token, url=url)
    assert not verify_twilio(body, headers, secret="54321", url=url)
    assert not verify_twilio(body, headers, secret=token, url=url.replace("foo=1", "foo=2"))
    assert not verify_twilio(body, {}, secret=token, url=url)
    assert not verify_twilio(body, twilio_headers(""), secret=token, url=url)


def test_twilio_real_status_callback_body() -> None:
    body = (DATA / "status-delivered-va-notify.form.txt").read_bytes()
    url = "https://hooks.example.com/twilio/status"
    data = (url + "AccountSidACzzzApiVersion2010-04-01From+12223334444MessageSidSMyyy"
            "MessageStatusdeliveredRawDlrDoneDate2303222338SmsSidSMxxxSmsStatusdelivered"
            "To+11111111111")
    headers = twilio_headers(twilio_sign("token", data))
    assert verify_twilio(body, headers, secret="token", url=url)
    assert not verify_twilio(body.replace(b"delivered", b"failed"), headers, secret="token", url=url)


def test_twilio_repeated_parameters_are_sorted_by_name_then_value() -> None:
    url = "https://example.com/hook"
    headers = twilio_headers(twilio_sign("token", url + "a0a1b2"))
    assert verify_twilio(b"b=2&a=1&a=0", headers, secret="token", url=url)


def test_twilio_get_request_signs_the_url_only() -> None:
    url = "https://example.com/hook?MessageSid=SM1&MessageStatus=sent"
    headers = twilio_headers(twilio_sign("token", url))
    assert verify_twilio(b"", headers, secret="token", url=url)


@pytest.mark.parametrize(
    ("signed_url", "called_url"),
    [
        ("https://example.com:443/hook?a=1", "https://example.com/hook?a=1"),
        ("https://example.com/hook?a=1", "https://example.com:443/hook?a=1"),
        ("http://example.com:80/hook", "http://example.com/hook"),
        ("http://example.com/hook", "http://example.com:80/hook"),
        ("https://example.com:8443/hook", "https://example.com:8443/hook"),
        ("https://example.com/hook", "https://example.com:8443/hook"),
        ("https://user:pass@example.com/hook", "https://user:pass@example.com:443/hook"),
        ("https://[2001:db8::1]:443/hook", "https://[2001:db8::1]/hook"),
    ],
)
def test_twilio_port_rules(signed_url: str, called_url: str) -> None:
    body = b"MessageSid=SM1&MessageStatus=sent"
    headers = twilio_headers(twilio_sign("token", signed_url + "MessageSidSM1MessageStatussent"))
    assert verify_twilio(body, headers, secret="token", url=called_url)


@pytest.mark.parametrize(
    ("signed_url", "called_url"),
    [
        ("https://example.com:444/hook", "https://example.com/hook"),
        ("https://example.com:80/hook", "https://example.com/hook"),
        ("http://example.com:443/hook", "http://example.com/hook"),
        ("https://example.com/hook", "http://example.com/hook"),
    ],
)
def test_twilio_other_ports_do_not_match(signed_url: str, called_url: str) -> None:
    headers = twilio_headers(twilio_sign("token", signed_url))
    assert not verify_twilio(b"", headers, secret="token", url=called_url)


def test_twilio_json_body_with_body_sha256() -> None:
    body = b'{"MessageSid": "SM1", "MessageStatus": "delivered"}'
    url = "https://example.com/hook?bodySHA256=" + hashlib.sha256(body).hexdigest()
    headers = twilio_headers(twilio_sign("token", url))
    assert verify_twilio(body, headers, secret="token", url=url)
    assert not verify_twilio(body.replace(b"delivered", b"failed"), headers, secret="token", url=url)
    assert not verify_twilio(body, headers, secret="other", url=url)


def test_twilio_body_not_utf8() -> None:
    url = "https://example.com/hook"
    headers = twilio_headers(twilio_sign("token", url + "a"))
    assert not verify_twilio(b"a=\xff", headers, secret="token", url=url)


@pytest.mark.parametrize("url", [None, "", "/hook", "example.com/hook", "ftp://example.com/hook",
                                 "https://example.com:port/hook", "https://[2001:db8::1/hook"])
def test_twilio_url_is_required_and_absolute(url: str | None) -> None:
    with pytest.raises(SignatureConfigError):
        verify_twilio(b"", twilio_headers("x"), secret="token", url=url)


# --- Mandrill --------------------------------------------------------------------

MANDRILL_URL = "https://hooks.example.com/mandrill"
MANDRILL_EVENTS = '[{"event":"send","msg":{"email":"a@example.com"}}]'
# base64 HMAC-SHA1(b"mandrill-key", url + "mandrill_events" + events), computed once for this test
MANDRILL_SIGNATURE = "xRJMsMfKJ5bjmEGIHulSaC1XiBI="
MANDRILL_BODY = urlencode({"mandrill_events": MANDRILL_EVENTS}).encode()


def test_mandrill_fixed_vector() -> None:
    headers = {"X-Mandrill-Signature": MANDRILL_SIGNATURE}
    assert verify_mandrill(MANDRILL_BODY, headers, secret="mandrill-key", url=MANDRILL_URL)


def test_mandrill_parameters_sorted_by_name() -> None:
    body = b"zeta=1&alpha=2"
    signature = twilio_sign("k", MANDRILL_URL + "alpha2zeta1")  # same HMAC-SHA1 + base64
    assert verify_mandrill(body, {"x-mandrill-signature": signature}, secret="k", url=MANDRILL_URL)


def test_mandrill_negatives() -> None:
    headers = {"x-mandrill-signature": MANDRILL_SIGNATURE}
    tampered = urlencode({"mandrill_events": MANDRILL_EVENTS.replace("send", "open")}).encode()
    assert not verify_mandrill(tampered, headers, secret="mandrill-key", url=MANDRILL_URL)
    assert not verify_mandrill(MANDRILL_BODY, headers, secret="other-key", url=MANDRILL_URL)
    assert not verify_mandrill(MANDRILL_BODY, headers, secret="mandrill-key", url=MANDRILL_URL + "/")
    assert not verify_mandrill(MANDRILL_BODY, {}, secret="mandrill-key", url=MANDRILL_URL)
    assert not verify_mandrill(b"\xff", headers, secret="mandrill-key", url=MANDRILL_URL)


def test_mandrill_url_is_required() -> None:
    with pytest.raises(SignatureConfigError):
        verify_mandrill(MANDRILL_BODY, {"x-mandrill-signature": MANDRILL_SIGNATURE}, secret="mandrill-key")


# --- Amazon SNS ------------------------------------------------------------------

CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"


def make_certificate() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return key, certificate.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def sns_cert() -> tuple[rsa.RSAPrivateKey, str]:
    return make_certificate()


def sns_sign(key: rsa.RSAPrivateKey, message: dict[str, Any], version: str = "1") -> dict[str, Any]:
    """Sign ``message`` the way SNS does, written out independently of the module under test."""
    if message["Type"] == "Notification":
        names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    text = "".join(f"{name}\n{message[name]}\n" for name in names if name in message)
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(text.encode(), padding.PKCS1v15(), algorithm)
    return dict(message, SignatureVersion=version, Signature=base64.b64encode(signature).decode(),
                SigningCertURL=CERT_URL)


NOTIFICATION = {
    "Type": "Notification",
    "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
    "TopicArn": "arn:aws:sns:us-west-2:123456789012:MyTopic",
    "Subject": "My First Message",
    "Message": '{"notificationType":"Delivery","mail":{"messageId":"abc"}}\nsecond line',
    "Timestamp": "2012-05-02T00:54:06.655Z",
    "UnsubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x",
}
CONFIRMATION = {
    "Type": "SubscriptionConfirmation",
    "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
    "Token": "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a7",
    "TopicArn": "arn:aws:sns:us-west-2:123456789012:MyTopic",
    "Message": "You have chosen to subscribe to the topic arn:aws:sns:us-west-2:123456789012:MyTopic.",
    "SubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn=x&Token=y",
    "Timestamp": "2012-04-26T20:45:04.751Z",
}


def as_body(message: dict[str, Any]) -> bytes:
    return json.dumps(message, indent=2).encode()


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize(
    "message",
    [NOTIFICATION, {k: v for k, v in NOTIFICATION.items() if k != "Subject"}, CONFIRMATION,
     dict(CONFIRMATION, Type="UnsubscribeConfirmation")],
    ids=["notification", "notification-no-subject", "subscription", "unsubscribe"],
)
def test_sns_valid_with_pinned_certificate(sns_cert: Any, message: dict[str, Any], version: str) -> None:
    key, pem = sns_cert
    assert verify_sns(as_body(sns_sign(key, message, version)), {}, secret=pem)


def test_sns_null_subject_is_not_signed(sns_cert: Any) -> None:
    key, pem = sns_cert
    signed = sns_sign(key, {k: v for k, v in NOTIFICATION.items() if k != "Subject"})
    assert verify_sns(as_body(dict(signed, Subject=None)), {}, secret=pem)


@pytest.mark.parametrize(
    "change",
    [
        {"Message": NOTIFICATION["Message"] + " "},
        {"Subject": "Other"},
        {"TopicArn": "arn:aws:sns:us-west-2:123456789012:Other"},
        {"Type": "SubscriptionConfirmation"},
        {"Type": "Unknown"},
        {"Type": ["Notification"]},
        {"SignatureVersion": ["2"]},
        {"SignatureVersion": "3"},
        {"SignatureVersion": 1},
        {"Signature": "not base64!"},
        {"Signature": base64.b64encode(b"x" * 256).decode()},
        {"MessageId": None},
    ],
    ids=lambda c: ",".join(f"{k}={v!r}"[:40] for k, v in c.items()),
)
def test_sns_tampered(sns_cert: Any, change: dict[str, Any]) -> None:
    key, pem = sns_cert
    signed = sns_sign(key, NOTIFICATION, "2")
    assert not verify_sns(as_body(dict(signed, **change)), {}, secret=pem)


def test_sns_subject_added_after_signing(sns_cert: Any) -> None:
    key, pem = sns_cert
    signed = sns_sign(key, {k: v for k, v in NOTIFICATION.items() if k != "Subject"})
    assert not verify_sns(as_body(dict(signed, Subject="Injected")), {}, secret=pem)


def test_sns_other_certificate(sns_cert: Any) -> None:
    key, _ = sns_cert
    _, other_pem = make_certificate()
    assert not verify_sns(as_body(sns_sign(key, NOTIFICATION)), {}, secret=other_pem)


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b"{}", b"\xff"])
def test_sns_unusable_body(sns_cert: Any, body: bytes) -> None:
    assert not verify_sns(body, {}, secret=sns_cert[1])


@pytest.mark.parametrize(
    "secret", ["not a certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"]
)
def test_sns_malformed_certificate(secret: str) -> None:
    with pytest.raises(SignatureConfigError):
        verify_sns(as_body(NOTIFICATION), {}, secret=secret)


def test_sns_certificate_without_rsa_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ec")])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(start).not_valid_after(start + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(SignatureConfigError):
        pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
        verify_sns(as_body(NOTIFICATION), {}, secret=pem)


class RecordingFetcher:
    def __init__(self, pem: bytes) -> None:
        self.pem = pem
        self.calls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        return self.pem


@pytest.mark.parametrize("secret", ["fetch", ""])
@pytest.mark.parametrize("version", ["1", "2"])
def test_sns_fetches_the_certificate_from_an_sns_host(sns_cert: Any, secret: str, version: str) -> None:
    key, pem = sns_cert
    fetcher = RecordingFetcher(pem.encode())
    body = as_body(sns_sign(key, CONFIRMATION, version))
    assert verify_sns(body, {}, secret=secret, cert_fetcher=fetcher)
    assert fetcher.calls == [CERT_URL]


def test_sns_fetched_certificate_must_match(sns_cert: Any) -> None:
    key, _ = sns_cert
    _, other_pem = make_certificate()
    body = as_body(sns_sign(key, NOTIFICATION))
    for served in (other_pem.encode(), b"<html>not a cert</html>"):
        assert not verify_sns(body, {}, secret="fetch", cert_fetcher=RecordingFetcher(served))


FORBIDDEN_CERT_URLS = [
    "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
    "https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService-x.pem",
    "https://evil.example/sns.us-east-1.amazonaws.com/x.pem",
    "https://sqs.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
    "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-x.pem",
    "https://user@sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.txt",
    "https://evil.example\\@sns.us-east-1.amazonaws.com/x.pem",
    "https://SNS.us-east-1.amazonaws.com.evil.example/x.pem",
    "sns.us-east-1.amazonaws.com/x.pem",
    "https://[sns.us-east-1.amazonaws.com/x.pem",
]


@pytest.mark.parametrize("cert_url", FORBIDDEN_CERT_URLS)
def test_sns_forbidden_cert_url_is_never_fetched(sns_cert: Any, cert_url: str) -> None:
    key, pem = sns_cert
    fetcher = RecordingFetcher(pem.encode())
    body = as_body(dict(sns_sign(key, NOTIFICATION), SigningCertURL=cert_url))
    assert not verify_sns(body, {}, secret="fetch", cert_fetcher=fetcher)
    assert fetcher.calls == []
    assert not is_trusted_sns_cert_url(cert_url)


def test_sns_missing_cert_url_is_never_fetched(sns_cert: Any) -> None:
    key, pem = sns_cert
    fetcher = RecordingFetcher(pem.encode())
    signed = {k: v for k, v in sns_sign(key, NOTIFICATION).items() if k != "SigningCertURL"}
    assert not verify_sns(as_body(signed), {}, secret="fetch", cert_fetcher=fetcher)
    assert fetcher.calls == []


@pytest.mark.parametrize(
    "cert_url",
    [CERT_URL, "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-x.pem",
     "https://sns.us-gov-west-1.amazonaws.com:443/SimpleNotificationService-x.pem"],
)
def test_sns_trusted_cert_urls(cert_url: str) -> None:
    assert is_trusted_sns_cert_url(cert_url)


def test_fetch_certificate_refuses_untrusted_urls_before_connecting() -> None:
    with pytest.raises(ValueError, match="not an Amazon SNS certificate URL"):
        fetch_certificate("https://evil.example/x.pem")


def test_sns_fetcher_errors_propagate(sns_cert: Any) -> None:
    key, _ = sns_cert

    def failing(url: str) -> bytes:
        raise OSError("connection refused")

    with pytest.raises(OSError, match="connection refused"):
        verify_sns(as_body(sns_sign(key, NOTIFICATION)), {}, secret="fetch", cert_fetcher=failing)


# --- basic auth and bearer token ------------------------------------------------------


def basic(credentials: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


def test_basic_auth() -> None:
    assert verify_basic_auth(b"{}", basic("hooks:s3cr:et"), secret="hooks:s3cr:et")
    assert verify_basic_auth(b"{}", {"Authorization": basic("u:p")["authorization"]}, secret="u:p")
    lower_scheme = {"authorization": "basic " + base64.b64encode(b"u:p").decode()}
    assert verify_basic_auth(b"{}", lower_scheme, secret="u:p")


@pytest.mark.parametrize(
    "headers",
    [{}, basic("u:wrong"), basic("other:p"), basic("u:p "), {"authorization": "Basic"},
     {"authorization": "Basic not-base64!"}, {"authorization": "Bearer dTpw"},
     {"authorization": "Digest dTpw"}],
)
def test_basic_auth_refused(headers: dict[str, str]) -> None:
    assert not verify_basic_auth(b"{}", headers, secret="u:p")


def test_basic_auth_secret_needs_a_colon() -> None:
    with pytest.raises(SignatureConfigError):
        verify_basic_auth(b"{}", basic("u:p"), secret="just-a-password")


def test_bearer_token() -> None:
    assert verify_bearer_token(b"{}", {"authorization": "Bearer tok-123"}, secret="tok-123")
    assert verify_bearer_token(b"{}", {"Authorization": "bearer  tok-123 "}, secret="tok-123")


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer tok-124"}, {"authorization": "Bearer"}, {"authorization": "tok-123"},
     {"authorization": "Basic tok-123"}, {"authorization": "Bearer tok-123é"}],
)
def test_bearer_token_refused(headers: dict[str, str]) -> None:
    assert not verify_bearer_token(b"{}", headers, secret="tok-123")


# --- Vonage ----------------------------------------------------------------------

# Published in Vonage/vonage-python-sdk http_client/tests/test_auth.py (secret "signature_secret").
VONAGE_SDK_VECTORS = [
    ("md5", {"param1": "value1", "param2": "value2"}, "724c2bf6ca423c36e20631b11d1c5753"),
    ("md5", {"param1": "value&1", "param2": "value=2"}, "2bbf0abafb2c55e5af6231513896a2ac"),
    ("md5", {"param": "value"}, "655a4d0b7f064dff438defc52b012cf5"),
    ("sha256", {"param1": "value1", "param2": "value2"},
     "280c4320703dbc98bfa22db676655ed2acfbfe8792b062ff7622e67f1183c287"),
]
VONAGE_SDK_TS = 1234567890


@pytest.mark.parametrize(("method", "params", "sig"), VONAGE_SDK_VECTORS)
def test_vonage_published_hmac_vectors(method: str, params: dict[str, str], sig: str) -> None:
    body = urlencode(dict(params, timestamp=VONAGE_SDK_TS, sig=sig)).encode()
    assert verify_vonage(body, {}, secret="signature_secret", method=method, now=VONAGE_SDK_TS + 1)
    assert not verify_vonage(body, {}, secret="signature_secret", method="sha1", now=VONAGE_SDK_TS + 1)
    assert not verify_vonage(body, {}, secret="other_secret", method=method, now=VONAGE_SDK_TS + 1)


# A delivery receipt (the vonage sample's fields) signed with md5hash, computed once for this test:
# md5("&message-timestamp=2017-05-02 11:24:03&messageId=0C0000002EEBDA56&msisdn=4527631111"
#     "&status=delivered&timestamp=1705021324" + "vonage-secret")
VONAGE_TS = 1705021324
VONAGE_DLR = (
    "msisdn=4527631111&messageId=0C0000002EEBDA56&status=delivered"
    "&message-timestamp=2017-05-02+11%3A24%3A03&timestamp=1705021324&sig=b95240177e0dea687015786f40fb64c4"
).encode()


def test_vonage_md5hash_query_string() -> None:
    assert verify_vonage(VONAGE_DLR, {}, secret="vonage-secret", now=VONAGE_TS + 10)
    assert verify_vonage(b"?" + VONAGE_DLR, {}, secret="vonage-secret", now=VONAGE_TS + 10)
    upper = VONAGE_DLR.replace(b"sig=b952", b"sig=B952")
    assert verify_vonage(upper, {}, secret="vonage-secret", now=VONAGE_TS)


def test_vonage_json_body() -> None:
    body = json.dumps({
        "msisdn": "4527631111", "messageId": "0C0000002EEBDA56", "status": "delivered",
        "message-timestamp": "2017-05-02 11:24:03", "timestamp": VONAGE_TS,
        "sig": "b95240177e0dea687015786f40fb64c4",
    }).encode()
    assert verify_vonage(body, {}, secret="vonage-secret", now=VONAGE_TS)
    nested = json.loads(body) | {"extra": {"a": 1}}
    assert not verify_vonage(json.dumps(nested).encode(), {}, secret="vonage-secret", now=VONAGE_TS)


@pytest.mark.parametrize(
    "body",
    [
        VONAGE_DLR.replace(b"status=delivered", b"status=failed"),
        VONAGE_DLR + b"&extra=1",
        VONAGE_DLR.replace(b"&sig=b95240177e0dea687015786f40fb64c4", b""),
        VONAGE_DLR.replace(b"&timestamp=1705021324", b""),
        VONAGE_DLR + b"&status=failed",
        b"\xff",
        b"{not json",
    ],
    ids=["tampered", "extra-param", "no-sig", "no-timestamp", "repeated-param", "not-utf8", "bad-json"],
)
def test_vonage_refused(body: bytes) -> None:
    assert not verify_vonage(body, {}, secret="vonage-secret", now=VONAGE_TS)


def test_vonage_wrong_secret_and_method() -> None:
    assert not verify_vonage(VONAGE_DLR, {}, secret="other-secret", now=VONAGE_TS)
    assert not verify_vonage(VONAGE_DLR, {}, secret="vonage-secret", method="md5", now=VONAGE_TS)


def test_vonage_age_window() -> None:
    assert verify_vonage(VONAGE_DLR, {}, secret="vonage-secret", now=VONAGE_TS + 300)
    assert not verify_vonage(VONAGE_DLR, {}, secret="vonage-secret", now=VONAGE_TS + 301)
    assert not verify_vonage(VONAGE_DLR, {}, secret="vonage-secret", now=VONAGE_TS - 301)
    assert verify_vonage(VONAGE_DLR, {}, secret="vonage-secret", now=VONAGE_TS + 10**6, max_age=None)


def test_vonage_unknown_method_is_a_config_error() -> None:
    with pytest.raises(SignatureConfigError):
        verify_vonage(VONAGE_DLR, {}, secret="vonage-secret", method="sha3", now=VONAGE_TS)


def test_mailgun_legacy_multipart_webhook_verifies() -> None:
    import hashlib
    import hmac as _hmac
    import time as _time

    from odpmap.signatures import verify_mailgun

    key, ts, token = "key-multipart", str(int(_time.time())), "t" * 50
    sig = _hmac.new(key.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()
    b = "b0und"
    parts = {"event": "bounced", "timestamp": ts, "token": token, "signature": sig}
    body = "".join(f"--{b}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n" for k, v in parts.items())
    body += f"--{b}\r\nContent-Disposition: form-data; name=\"attachment-1\"; filename=\"m.eml\"\r\n\r\nX\r\n--{b}--\r\n"
    headers = {"content-type": f"multipart/form-data; boundary={b}"}
    assert verify_mailgun(body.encode(), headers, secret=key)
    assert not verify_mailgun(body.encode(), headers, secret="other-key")
    assert not verify_mailgun(body.replace(sig, "0" * 64).encode(), headers, secret=key)


def test_twilio_get_callback_with_the_query_also_given_as_body() -> None:
    """A receiver passes a GET's query string as the body; Twilio signed only the URL."""
    import base64
    import hashlib
    import hmac as _hmac

    from odpmap.signatures import verify_twilio

    url = "https://example.com/webhooks/twilio?MessageSid=SM1&MessageStatus=delivered&To=%2B15550100"
    sig = base64.b64encode(_hmac.new(b"token", url.encode(), hashlib.sha1).digest()).decode()
    query = url.split("?", 1)[1].encode()
    headers = {"x-twilio-signature": sig}
    assert verify_twilio(b"", headers, secret="token", url=url)
    assert verify_twilio(query, headers, secret="token", url=url)
    assert not verify_twilio(query, headers, secret="other", url=url)
    # A body that is not the URL's query is still signed as POST parameters.
    assert not verify_twilio(b"MessageSid=SM1", headers, secret="token", url=url)
