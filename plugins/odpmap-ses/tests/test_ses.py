"""Amazon SES via SNS: golden tests over the documented samples, plus behaviour checks.

Envelopes built here follow the SNS HTTP(S) JSON formats; the SES documents inside them
follow the SES developer guide (event publishing and notification contents). Signatures
are made with a key and self-signed certificate generated for the test, signed the way
SNS documents it (RSA PKCS#1 v1.5 over "Name\\nvalue\\n" lines, SHA1 for
SignatureVersion 1, SHA256 for 2). No test touches the network.
"""

from __future__ import annotations

import base64
import datetime
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from odpmap.testing import assert_accounting, assert_valid_events, check_golden, engine_for, golden_cases
from odpmap_ses import IDEMPOTENCE_NAMESPACE, parse_sns, ses_uuid5

HERE = Path(__file__).parent
SAMPLES = HERE.parent / "src" / "odpmap_ses" / "samples"
TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-events"
CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"


@pytest.fixture(scope="module")
def engine():
    return engine_for("ses")


@pytest.mark.parametrize("sample", golden_cases(SAMPLES), ids=lambda p: p.name)
def test_golden(engine, sample: Path) -> None:
    check_golden(engine, "ses", sample, HERE / "golden")


# --- helpers ---------------------------------------------------------------------------


def envelope(message: dict[str, Any] | str, *, message_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """An SNS Notification envelope around an SES document (serialised compact, as SES does)."""
    text = message if isinstance(message, str) else json.dumps(message, separators=(",", ":"))
    return {
        "Type": "Notification",
        "MessageId": message_id or str(uuid.uuid4()),
        "TopicArn": TOPIC,
        "Subject": "Amazon SES Email Event Notification",
        "Message": text,
        "Timestamp": "2024-03-01T12:00:01.234Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLE==",
        "SigningCertURL": CERT_URL,
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x",
        **fields,
    }


def mail(*destination: str, tags: dict[str, list[str]] | None = None, timestamp: str = "2024-03-01T12:00:00.000Z",
         message_id: str = "0100018e0a1b2c3d-aaaa-bbbb-cccc-000000000000-000000") -> dict[str, Any]:
    out: dict[str, Any] = {
        "timestamp": timestamp,
        "source": "sender@example.com",
        "sendingAccountId": "123456789012",
        "messageId": message_id,
        "destination": list(destination or ("jane@example.com",)),
    }
    if tags is not None:
        out["tags"] = tags
    return out


def event(kind: str, obj_key: str | None = None, obj: dict[str, Any] | None = None, **mail_kw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"eventType": kind, "mail": mail(*mail_kw.pop("destination", ()), **mail_kw)}
    if obj_key is not None:
        doc[obj_key] = obj if obj is not None else {}
    return doc


def bounce(bounce_type: str, sub_type: str, *recipients: dict[str, Any], fmt: str = "eventType") -> dict[str, Any]:
    doc = {
        fmt: "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": sub_type,
            "bouncedRecipients": list(recipients) or [{"emailAddress": "jane@example.com"}],
            "timestamp": "2024-03-01T12:05:00.500Z",
            "feedbackId": "0100018e0a1b2c3d-feedback-000000",
        },
        "mail": mail("jane@example.com", "mary@example.com"),
    }
    return doc


def run(engine, *envelopes: dict[str, Any], **kwargs: Any):
    results = [engine.map("ses", json.dumps(e).encode(), content_type="text/plain; charset=UTF-8", **kwargs)
               for e in envelopes]
    for result in results:
        assert_accounting(result)
        assert_valid_events(engine, result)
    return results[0] if len(results) == 1 else results


def outcomes(result) -> list[str]:
    out = [f"{e['type']}/{e['action']}" for e in result.events]
    out += [f"skip:{s.rule_id}" for s in result.skipped]
    out += [f"dead:{d.reason}" for d in result.dead_letters]
    return out


# --- the sns parser ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "invalid JSON"),
        (b"not json", "invalid JSON"),
        (b"\xff\xfe", "not valid UTF-8"),
        (b"[]", "JSON list, not an object"),
        (b'{"Type": "Notification"}', "no string field MessageId, TopicArn, Message, Timestamp"),
        (json.dumps(dict(envelope("x"), Message={"eventType": "Send"})).encode(), "no string field Message"),
        (json.dumps({"eventType": "Send", "mail": mail()}).encode(), "raw message delivery"),
        (json.dumps({"notificationType": "Bounce"}).encode(), "raw message delivery"),
        (json.dumps(envelope('{"eventType": "Send", ')).encode(), "looks like JSON but does not parse"),
    ],
    ids=["empty", "text", "not-utf8", "array", "missing-fields", "message-not-string", "raw-event", "raw-notification",
         "broken-message-json"],
)
def test_not_an_sns_envelope_is_unparseable(engine, body: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_sns(body)
    result = engine.map("ses", body, content_type="text/plain")
    assert [d.reason for d in result.dead_letters] == ["unparseable"]
    assert message in result.dead_letters[0].message
    assert result.dead_letters[0].item == body


def test_parser_keeps_the_envelope_and_decodes_message() -> None:
    env = envelope(event("Send", "send"), MessageAttributes={"a": {"Type": "String", "Value": "b"}})
    body = ("\ufeff" + json.dumps(env)).encode()
    parsed = parse_sns(body, content_type="text/plain; charset=UTF-8", headers={"X-Amz-Sns-Message-Type": "Notification"})
    assert parsed["Message"]["eventType"] == "Send"
    assert {k: v for k, v in parsed.items() if k != "Message"} == {k: v for k, v in env.items() if k != "Message"}
    text = parse_sns(json.dumps(envelope("Hello world!")).encode())
    assert text["Message"] == "Hello world!"


@pytest.mark.parametrize("header", [{"x-amz-sns-message-type": "SubscriptionConfirmation"},
                                    {"x-amz-sns-message-id": "other-id"}])
def test_headers_contradicting_the_body_are_refused(engine, header: dict[str, str]) -> None:
    body = json.dumps(envelope(event("Send", "send"), message_id="m-1")).encode()
    result = engine.map("ses", body, headers=header)
    assert [d.reason for d in result.dead_letters] == ["unparseable"]
    assert "contradicts" in result.dead_letters[0].message
    consistent = {"x-amz-sns-message-type": "Notification", "x-amz-sns-message-id": "m-1"}
    assert engine.map("ses", body, headers=consistent).counts.skipped == 1


# --- SNS and set-up messages -------------------------------------------------------------


def test_subscription_confirmation_is_skipped_for_the_receiver(engine) -> None:
    result = engine.map("ses", (SAMPLES / "sns-docs-subscription-confirmation.json").read_bytes())
    assert outcomes(result) == ["skip:sns-subscription-confirmation"]
    assert "confirms the subscription" in result.skipped[0].reason
    assert result.skipped[0].item["SubscribeURL"].startswith("https://sns.us-west-2.amazonaws.com/")


def test_identity_notification_setup_message_is_skipped(engine) -> None:
    # As SES sends it when a topic is set for an identity (captured in public test suites).
    message = ('{"notificationType":"AmazonSnsSubscriptionSucceeded","message":"You have successfully subscribed '
               "your Amazon SNS topic 'arn:aws:sns:us-east-1:123456789012:bounces' to receive 'Complaint' "
               "notifications from Amazon SES for identity 'info@example.com'.\"}\n")
    result = run(engine, envelope(message))
    assert outcomes(result) == ["skip:ses-subscription-succeeded"]


@pytest.mark.parametrize(
    "message",
    [
        "Hello world!",
        {"eventType": "MachineLearned", "mail": mail("a@example.com", "b@example.com"), "machineLearned": {}},
        {"notificationType": "Received", "mail": mail("inbox@example.com"), "receipt": {}},
    ],
    ids=["text-from-another-publisher", "future-event-type", "inbound-received"],
)
def test_unknown_messages_are_one_unmapped_dead_letter(engine, message) -> None:
    result = run(engine, envelope(message))
    assert outcomes(result) == ["dead:unmapped"]
    assert result.dead_letters[0].item["TopicArn"] == TOPIC  # the whole envelope is kept


# --- recipients ----------------------------------------------------------------------------


def test_one_event_per_bounced_recipient(engine) -> None:
    doc = bounce("Permanent", "NoEmail", {"emailAddress": "jane@example.com"}, {"emailAddress": "mary@example.com"})
    result = run(engine, envelope(doc))
    assert [e["identifiers"]["email"] for e in result.events] == ["jane@example.com", "mary@example.com"]
    assert [e["data"]["target_address"] for e in result.events] == ["jane@example.com", "mary@example.com"]


def test_one_event_per_delivered_and_complained_recipient(engine) -> None:
    delivery = event("Delivery", "delivery", {"timestamp": "2024-03-01T12:00:02.000Z",
                                              "recipients": ["jane@example.com", "mary@example.com"]},
                     destination=("jane@example.com", "mary@example.com", "bob@example.com"))
    complaint = event("Complaint", "complaint", {"timestamp": "2024-03-01T13:00:00.000Z", "complainedRecipients": [
        {"emailAddress": "jane@example.com"}, {"emailAddress": "mary@example.com"}]})
    r1, r2 = run(engine, envelope(delivery), envelope(complaint))
    assert [e["identifiers"]["email"] for e in r1.events] == ["jane@example.com", "mary@example.com"]
    assert [e["identifiers"]["email"] for e in r2.events] == ["jane@example.com", "mary@example.com"]


def test_open_of_a_multi_recipient_message_is_reported_for_each_recipient(engine) -> None:
    doc = event("Open", "open", {"timestamp": "2024-03-01T14:00:00.000Z", "ipAddress": "192.0.2.1"},
                destination=("jane@example.com", "mary@example.com"))
    result = run(engine, envelope(doc))
    assert outcomes(result) == ["email/open", "email/open"]
    assert [e["identifiers"]["email"] for e in result.events] == ["jane@example.com", "mary@example.com"]


def test_display_name_destinations_become_plain_addresses(engine) -> None:
    doc = event("Click", "click", {"timestamp": "2024-03-01T14:00:00.000Z", "link": "https://x.example/a?b=1"},
                destination=('"Jane Doe" <jane@example.com>', "Mary <mary@example.com>"))
    result = run(engine, envelope(doc))
    assert [e["identifiers"]["email"] for e in result.events] == ["jane@example.com", "mary@example.com"]
    assert {e["data"]["value"] for e in result.events} == {"https://x.example/a?b=1"}


def test_a_bounce_without_recipients_is_not_dropped_silently(engine) -> None:
    doc = bounce("Permanent", "General")
    doc["bounce"]["bouncedRecipients"] = []
    result = run(engine, envelope(doc))
    assert outcomes(result) == ["dead:invalid_event"]


def test_repeated_recipient_is_skipped_as_duplicate(engine) -> None:
    doc = bounce("Transient", "MailboxFull", {"emailAddress": "jane@example.com"}, {"emailAddress": "jane@example.com"})
    result = run(engine, envelope(doc, message_id="sns-1"))
    assert len(result.events) == 1
    assert result.counts.duplicates == 1
    assert result.skipped[0].reason == "duplicate of item 0 (id 'sns-1:jane@example.com')"


def test_idempotence_ids_are_stable_across_sns_redeliveries(engine) -> None:
    doc = bounce("Permanent", "General", {"emailAddress": "jane@example.com"}, {"emailAddress": "mary@example.com"})
    first, retry, other = run(engine, envelope(doc, message_id="sns-1"),
                              dict(envelope(doc, message_id="sns-1"), Timestamp="2024-03-01T12:09:00.000Z"),
                              envelope(doc, message_id="sns-2"))
    ids = [e["data"]["idempotence_id"] for e in first.events]
    assert len(set(ids)) == 2
    assert [e["data"]["idempotence_id"] for e in retry.events] == ids
    assert not set(ids) & {e["data"]["idempotence_id"] for e in other.events}
    assert ids[0] == ses_uuid5("sns-1/jane@example.com")
    assert IDEMPOTENCE_NAMESPACE == uuid.uuid5(uuid.NAMESPACE_URL, "https://pypi.org/project/odpmap-ses/")
    with pytest.raises(ValueError):
        ses_uuid5("")


# --- bounces ------------------------------------------------------------------------------

# Every bounceType/bounceSubType the SES developer guide documents (both formats).
BOUNCE_TABLE = [
    ("Permanent", "General", "hard"),
    ("Permanent", "NoEmail", "hard"),
    ("Permanent", "Suppressed", "hard"),
    ("Permanent", "OnAccountSuppressionList", "hard"),
    ("Transient", "General", "soft"),
    ("Transient", "MailboxFull", "soft"),
    ("Transient", "MessageTooLarge", "soft"),
    ("Transient", "ContentRejected", "soft"),
    ("Transient", "AttachmentRejected", "soft"),
    ("Undetermined", "Undetermined", "soft"),
]


@pytest.mark.parametrize("fmt", ["eventType", "notificationType"])
@pytest.mark.parametrize(("bounce_type", "sub_type", "klass"), BOUNCE_TABLE)
def test_bounce_classes(engine, bounce_type: str, sub_type: str, klass: str, fmt: str) -> None:
    recipient = {"emailAddress": "jane@example.com", "action": "failed", "status": "5.0.0",
                 "diagnosticCode": "smtp; 550 something"}
    result = run(engine, envelope(bounce(bounce_type, sub_type, recipient, fmt=fmt)))
    [ev] = result.events
    assert ev["data"]["value"] == f"Reason: {bounce_type}/{sub_type}: smtp; 550 something"
    assert ev["data"]["ts"] == 1709294700  # bounce.timestamp 2024-03-01T12:05:00.500Z
    if klass == "hard":
        assert (ev["type"], ev["action"], ev["data"]["reachability_update_type"]) == (
            "reachability", "unreachable", "hard_bounce")
    else:
        assert (ev["type"], ev["action"]) == ("email", "soft_bounce")
        assert "reachability_update_type" not in ev["data"]


@pytest.mark.parametrize(
    ("recipient", "reason"),
    [
        ({"emailAddress": "jane@example.com", "status": "5.2.2", "diagnosticCode": "smtp; 552 5.2.2 Mailbox full"},
         "Reason: Transient/MailboxFull: smtp; 552 5.2.2 Mailbox full"),
        ({"emailAddress": "jane@example.com", "action": "failed", "status": "5.2.2"},
         "Reason: Transient/MailboxFull (status 5.2.2)"),
        ({"emailAddress": "jane@example.com"}, "Reason: Transient/MailboxFull"),
    ],
    ids=["diagnostic-code", "status-only", "no-dsn"],
)
def test_bounce_reason_text(engine, recipient: dict[str, str], reason: str) -> None:
    result = run(engine, envelope(bounce("Transient", "MailboxFull", recipient)))
    assert result.events[0]["data"]["value"] == reason


def test_an_undocumented_bounce_subtype_follows_its_type(engine) -> None:
    result = run(engine, envelope(bounce("Permanent", "SomethingNew")))
    assert outcomes(result) == ["reachability/unreachable"]


def test_an_undocumented_bounce_type_is_unmapped(engine) -> None:
    result = run(engine, envelope(bounce("Sideways", "General")))
    assert outcomes(result) == ["dead:unmapped"]


# --- complaints -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("feedback", "expected", "reason"),
    [
        ("abuse", "reachability/unreachable", "Reason: complaint (feedback type abuse)"),
        ("auth-failure", "reachability/unreachable", "Reason: complaint (feedback type auth-failure)"),
        ("fraud", "reachability/unreachable", "Reason: complaint (feedback type fraud)"),
        ("other", "reachability/unreachable", "Reason: complaint (feedback type other)"),
        ("virus", "reachability/unreachable", "Reason: complaint (feedback type virus)"),
        (None, "reachability/unreachable", "Reason: complaint (no feedback report)"),
        ("not-spam", "skip:complaint-not-spam", None),
    ],
)
def test_complaint_feedback_types(engine, feedback: str | None, expected: str, reason: str | None) -> None:
    obj: dict[str, Any] = {"complainedRecipients": [{"emailAddress": "jane@example.com"}],
                           "timestamp": "2024-03-01T13:00:00.000Z", "feedbackId": "f-1"}
    if feedback is not None:
        obj["complaintFeedbackType"] = feedback
    result = run(engine, envelope(event("Complaint", "complaint", obj)))
    assert outcomes(result) == [expected]
    if reason is not None:
        assert result.events[0]["data"]["reachability_update_type"] == "spam_report"
        assert result.events[0]["data"]["value"] == reason


def test_complaint_on_account_suppression_list(engine) -> None:
    obj = {"complainedRecipients": [{"emailAddress": "jane@example.com"}], "timestamp": "2024-03-01T13:00:00.000Z",
           "complaintSubType": "OnAccountSuppressionList", "feedbackId": "f-1"}
    result = run(engine, envelope(event("Complaint", "complaint", obj)))
    assert result.events[0]["data"]["value"] == "Reason: complaint (no feedback report, OnAccountSuppressionList)"


# --- messages never sent ------------------------------------------------------------------


def test_reject_and_rendering_failure_are_soft_bounces_of_every_recipient(engine) -> None:
    reject = event("Reject", "reject", {"reason": "Bad content"}, destination=("jane@example.com", "mary@example.com"))
    failure = event("Rendering Failure", "failure", {"templateName": "Welcome", "errorMessage": "Attribute 'x' missing"})
    r1, r2 = run(engine, envelope(reject), envelope(failure))
    assert outcomes(r1) == ["email/soft_bounce", "email/soft_bounce"]
    assert r1.events[0]["data"]["value"] == "Reason: rejected by Amazon SES before sending: Bad content"
    assert outcomes(r2) == ["email/soft_bounce"]
    assert r2.events[0]["data"]["value"] == "Reason: template rendering failure (Welcome): Attribute 'x' missing"


def test_send_and_delivery_delay_are_skipped(engine) -> None:
    delay = event("DeliveryDelay", "deliveryDelay", {
        "timestamp": "2024-03-01T12:10:00.000Z", "delayType": "MailboxFull",
        "expirationTime": "2024-03-02T12:00:00.000Z",
        "delayedRecipients": [{"emailAddress": "jane@example.com", "status": "4.2.2"},
                              {"emailAddress": "mary@example.com", "status": "4.2.2"}]})
    r1, r2 = run(engine, envelope(event("Send", "send")), envelope(delay))
    assert outcomes(r1) == ["skip:send"]
    assert outcomes(r2) == ["skip:delivery-delay", "skip:delivery-delay"]


# --- subscription management -----------------------------------------------------------------


def subscription(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    return event("Subscription", "subscription", {
        "contactList": "Customers", "timestamp": "2024-03-01T15:00:00.000Z", "source": "UnsubscribeLink",
        "newTopicPreferences": new, "oldTopicPreferences": old})


def prefs(unsubscribe_all: bool, **topics: str) -> dict[str, Any]:
    return {"unsubscribeAll": unsubscribe_all,
            "topicSubscriptionStatus": [{"topicName": t, "subscriptionStatus": s} for t, s in topics.items()]}


def test_unsubscribe_all_is_a_consent_opt_out(engine) -> None:
    result = run(engine, envelope(subscription(prefs(True, News="OptIn"), prefs(False, News="OptIn"))))
    assert outcomes(result) == ["consent/opt-out"]
    assert result.events[0]["identifiers"] == {"email": "jane@example.com"}
    assert result.events[0]["data"]["ts"] == 1709305200


def test_topic_changes_are_list_unsubscribes_per_topic(engine) -> None:
    new = prefs(False, News="OptOut", Offers="OptOut", Sports="OptOut", Cycling="OptIn")
    old = prefs(False, News="OptIn", Sports="OptOut", Cycling="OptOut")
    result = run(engine, envelope(subscription(new, old), message_id="sns-7"))
    assert [(e["type"], e["action"], e["data"]["list_id"]) for e in result.events] == [
        ("list", "unsubscribe", "News"), ("list", "unsubscribe", "Offers")]
    assert {e["identifiers"]["email"] for e in result.events} == {"jane@example.com"}
    assert [(s.rule_id, s.item["topicName"]) for s in result.skipped] == [
        ("subscription-topic-unchanged", "Sports"), ("subscription-topic-opt-in", "Cycling")]


def test_resubscribe_to_all_is_skipped(engine) -> None:
    result = run(engine, envelope(subscription(prefs(False), prefs(True))))
    assert outcomes(result) == ["skip:subscription-no-opt-out"]
    assert "no opt-in event" in result.skipped[0].reason


# --- campaign tracking ---------------------------------------------------------------------------


def test_message_tags_carry_campaign_tracking(engine) -> None:
    tags = {"ses:configuration-set": ["ConfigSet"], "odp_campaign": ["Winter_sale"], "odp_campaign_id": ["42"],
            "odp_touchpoint_id": ["7"], "odp_content": ["Variant_A"], "odp_content_id": ["9"],
            "odp_campaign_schedule_run_ts": ["1699990000"], "odp_identifier_key": ["default"],
            "campaign_id": ["not-ours"]}
    doc = event("Click", "click", {"timestamp": "2024-03-01T14:00:00.000Z", "link": "https://x.example/"}, tags=tags)
    result = run(engine, envelope(doc))
    data = result.events[0]["data"]
    assert data["campaign"] == "Winter_sale" and data["content"] == "Variant_A"
    assert data["campaign_id"] == 42 and data["touchpoint_id"] == 7 and data["content_id"] == 9
    assert data["campaign_schedule_run_ts"] == 1699990000
    assert data["identifier_key"] == "default"
    assert result.counts.unattributed == 0


def test_tracking_remembered_at_send_time_is_looked_up_by_ses_message_id(engine) -> None:
    seen: list[str] = []

    def lookup(message_id: str) -> dict[str, Any]:
        seen.append(message_id)
        return {"campaign": "Winter sale", "campaign_id": 42}

    doc = event("Open", "open", {"timestamp": "2024-03-01T14:00:00.000Z"}, tags={"odp_touchpoint_id": ["7"]},
                message_id="0100018e-remembered-000000")
    result = run(engine, envelope(doc), tracking=lookup)
    assert seen == ["0100018e-remembered-000000"]
    data = result.events[0]["data"]
    assert (data["campaign"], data["campaign_id"], data["touchpoint_id"]) == ("Winter sale", 42, 7)


def test_identity_notifications_have_no_tags(engine) -> None:
    result = engine.map("ses", (SAMPLES / "notification-delivery.json").read_bytes())
    assert outcomes(result) == ["email/delivery"]
    assert result.counts.unattributed == 1


# --- timestamps ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "ts"),
    [
        # the event object's own timestamp (ISO 8601, milliseconds, Z)
        (event("Open", "open", {"timestamp": "2024-03-01T14:00:00.999Z"}), 1709301600),
        # no timestamp in the event object: mail.timestamp (when the message was sent)
        (event("Reject", "reject", {"reason": "Bad content"}), 1709294400),
        (event("Rendering Failure", "failure", {"templateName": "T", "errorMessage": "e"}), 1709294400),
        # mail.timestamp as the notification-contents guide prints it ("...T14:05:45 +0000")
        (event("Reject", "reject", {"reason": "Bad content"}, timestamp="2018-10-08T14:05:45 +0000"), 1539007545),
        # a UTC offset
        (event("Delivery", "delivery", {"timestamp": "2024-03-01T14:00:00.000+01:00",
                                        "recipients": ["jane@example.com"]}), 1709298000),
    ],
    ids=["event-object", "reject-mail-timestamp", "failure-mail-timestamp", "space-offset", "utc-offset"],
)
def test_timestamps(engine, doc: dict[str, Any], ts: int) -> None:
    result = run(engine, envelope(doc))
    assert result.events[0]["data"]["ts"] == ts


# --- signatures --------------------------------------------------------------------------------


def make_certificate() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650)).sign(key, hashes.SHA256())
    )
    return key, certificate.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def sns_cert() -> tuple[rsa.RSAPrivateKey, str]:
    return make_certificate()


def sns_sign(key: rsa.RSAPrivateKey, message: dict[str, Any], version: str = "1") -> dict[str, Any]:
    """Sign like SNS: fixed field names, sorted, "Name\\nvalue\\n"; Subject only when present."""
    if message["Type"] == "Notification":
        names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    text = "".join(f"{name}\n{message[name]}\n" for name in names if name in message)
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303 - SNS SignatureVersion 1
    signature = key.sign(text.encode(), padding.PKCS1v15(), digest)
    return dict(message, SignatureVersion=version, Signature=base64.b64encode(signature).decode())


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("sample", ["eventpub-bounce-permanent.json", "notification-bounce-without-dsn.json",
                                    "sns-docs-subscription-confirmation.json"])
def test_signed_sample_verifies_through_the_engine(engine, sns_cert, sample: str, version: str) -> None:
    key, pem = sns_cert
    body = json.dumps(sns_sign(key, json.loads((SAMPLES / sample).read_text()), version), indent=2).encode()
    assert engine.verify("ses", body, {}, secret=pem)
    # SNS has no timestamp age limit (it retries for a long time): an old message still verifies.
    assert engine.verify("ses", body, {}, secret=pem, now=4_000_000_000)
    assert engine.map("ses", body).counts.received >= 1


def test_tampered_or_foreign_signatures_are_refused(engine, sns_cert) -> None:
    key, pem = sns_cert
    signed = sns_sign(key, envelope(bounce("Permanent", "General")), "2")
    body = json.dumps(signed).encode()
    assert engine.verify("ses", body, {}, secret=pem)
    tampered = dict(signed, Message=signed["Message"].replace("Permanent", "Transient"))
    assert not engine.verify("ses", json.dumps(tampered).encode(), {}, secret=pem)
    assert not engine.verify("ses", json.dumps(dict(signed, TopicArn=TOPIC + "-other")).encode(), {}, secret=pem)
    assert not engine.verify("ses", json.dumps(dict(signed, Subject="Injected")).encode(), {}, secret=pem)
    _, other_pem = make_certificate()
    assert not engine.verify("ses", body, {}, secret=other_pem)
    # The shipped samples carry the SNS docs' EXAMPLE signatures: they never verify.
    sample = (SAMPLES / "eventpub-click.json").read_bytes()
    assert not engine.verify("ses", sample, {}, secret=pem)
