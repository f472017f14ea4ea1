"""odpmap provider for Amazon SES sending events delivered by Amazon SNS.

Registers, through odpmap's plugin hooks:

* the ``ses`` provider: its mapping (``ses.yaml``) and sample reports;
* the ``sns`` report parser (:func:`parse_sns`);
* the ``ses_uuid5`` template filter (:func:`ses_uuid5`).

Why a parser in code: SES does not call webhooks itself. It publishes each event to an
SNS topic, and SNS POSTs an *envelope* (``Type``, ``MessageId``, ``Signature``, ...)
whose ``Message`` field holds the SES event as a JSON document **inside a string**.
The YAML language can decode that string (``from_json``) but only per template, not
once for the whole report: the mapping's ``items:`` expression (one item per
recipient) and every rule would have to decode it again, and a body that is not an SNS
envelope at all could not be refused as ``unparseable``. The parser unwraps the
envelope once, keeps every envelope field (the mapping de-duplicates on ``MessageId``
and skips ``SubscriptionConfirmation``), and refuses anything that is not an SNS
message. Everything else (the event table, bounce classes, recipients, tracking) is in
``ses.yaml``. The signature scheme (``verify: sns``) is odpmap's own.

Why a filter: SNS delivers at least once and retries a delivery it deems failed, each
time as a new HTTP request with the same ``MessageId``. ``item_id`` only de-duplicates
within one report, and odpmap derives ``data.idempotence_id`` from the stored report, so
a redelivery would reach ODP twice. The mapping sets ``data.idempotence_id`` itself, a
UUID derived from the SNS ``MessageId`` and the recipient, so every delivery of the same
SNS message yields the same ids (the outbox and ODP drop the repeats). The template
language has no way to make a UUID.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from importlib.resources import files
from typing import Any

import jinja2

from odpmap import Provider, hookimpl

__all__ = [
    "IDEMPOTENCE_NAMESPACE",
    "SNS_MESSAGE_TYPES",
    "odpmap_prepare_jinja_environment",
    "odpmap_register_parsers",
    "odpmap_register_providers",
    "parse_sns",
    "ses_uuid5",
]

#: The ``Type`` values Amazon SNS sends to HTTP(S) endpoints
#: (https://docs.aws.amazon.com/sns/latest/dg/http-notification-json.html and the
#: ``SubscriptionConfirmation``/``UnsubscribeConfirmation`` pages next to it).
SNS_MESSAGE_TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")

#: The uuid5 namespace of the idempotence ids this plugin derives (``uuid5(NAMESPACE_URL,
#: "https://pypi.org/project/odpmap-ses/")``). Never change it: ids must stay stable.
IDEMPOTENCE_NAMESPACE = uuid.UUID("472c1c00-7486-56a6-8032-d7ff189097b5")

# Fields every SNS HTTP(S) message has, whatever its type, as strings.
_REQUIRED_FIELDS = ("Type", "MessageId", "TopicArn", "Message", "Timestamp")


def parse_sns(
    body: bytes,
    *,
    content_type: str | None = None,
    headers: Mapping[str, str] | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Parse an Amazon SNS HTTP(S) message: the envelope, with ``Message`` decoded.

    SNS posts JSON with ``Content-Type: text/plain``, so the content type is ignored.
    The result is the envelope as a dict, every field kept; ``Message`` is replaced by
    the JSON document it holds when it holds one (an SES event), and kept as text
    otherwise (SNS's own confirmation texts, SES's setup message).

    :raises ValueError: the body is not an SNS message (not a JSON object, or missing
        ``Type``/``MessageId``/``TopicArn``/``Message``/``Timestamp``), including an SES
        event posted without its envelope (SNS *raw message delivery*, which also drops
        the signature); ``Message`` starts like JSON but does not parse; or the
        ``x-amz-sns-message-type``/``x-amz-sns-message-id`` headers contradict the body.
        The engine turns these into ``unparseable`` dead letters holding the raw body.
    """
    try:
        text = bytes(body).decode((options or {}).get("encoding", "utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not an Amazon SNS message: the body is not valid UTF-8 ({exc})") from None
    text = text.removeprefix("\ufeff")
    try:
        envelope = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"not an Amazon SNS message: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(envelope, dict):
        raise ValueError(f"not an Amazon SNS message: the body is a JSON {type(envelope).__name__}, not an object")
    if "Type" not in envelope and ("eventType" in envelope or "notificationType" in envelope):
        raise ValueError(
            "an SES event without its SNS envelope: turn off raw message delivery on the SNS "
            "subscription (the envelope carries the message id and the signature)"
        )
    missing = [name for name in _REQUIRED_FIELDS if not isinstance(envelope.get(name), str)]
    if missing:
        raise ValueError(f"not an Amazon SNS message: no string field {', '.join(missing)}")
    lowered = {name.lower(): value for name, value in (headers or {}).items()}
    for header, field in (("x-amz-sns-message-type", "Type"), ("x-amz-sns-message-id", "MessageId")):
        if header in lowered and lowered[header] != envelope[field]:
            raise ValueError(
                f"the {header} header ({lowered[header]!r}) contradicts the body's {field} ({envelope[field]!r})"
            )
    message = envelope["Message"]
    if message.lstrip()[:1] in ("{", "["):
        try:
            envelope["Message"] = json.loads(message)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"the SNS Message looks like JSON but does not parse: line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from None
    return envelope


def ses_uuid5(value: Any) -> str:
    """A stable UUID (version 5) for ``value``'s text: ``uuid5(IDEMPOTENCE_NAMESPACE, str(value))``.

    Used as ``data.idempotence_id``, from the SNS ``MessageId`` and the recipient.

    :raises ValueError: ``value`` is ``None`` or empty (an id from nothing would collide)
    """
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    if value is None or value == "":
        raise ValueError("ses_uuid5: no value to derive an id from")
    return str(uuid.uuid5(IDEMPOTENCE_NAMESPACE, str(value)))


@hookimpl
def odpmap_prepare_jinja_environment(env):  # type: ignore[no-untyped-def]
    env.filters["ses_uuid5"] = ses_uuid5


@hookimpl
def odpmap_register_parsers(register):  # type: ignore[no-untyped-def]
    register("sns", parse_sns)


@hookimpl
def odpmap_register_providers(register):  # type: ignore[no-untyped-def]
    here = files(__name__)
    register(Provider(mapping=here / "ses.yaml", samples=here / "samples"))
