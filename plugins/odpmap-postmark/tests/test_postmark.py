"""Postmark: golden tests over the sample webhooks, plus behaviour checks."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from odpmap.errors import SignatureConfigError
from odpmap.testing import assert_accounting, assert_valid_events, check_golden, engine_for, golden_cases, outcome

HERE = Path(__file__).parent
SAMPLES = HERE.parent / "src" / "odpmap_postmark" / "samples"


@pytest.fixture(scope="module")
def engine():
    return engine_for("postmark")


def run(engine, record: Any, **kwargs: Any):
    result = engine.map("postmark", json.dumps(record).encode(), content_type="application/json", **kwargs)
    assert_accounting(result)
    assert_valid_events(engine, result)
    return result


def bounce(type_: str | None, code: int | None, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "RecordType": "Bounce", "ID": 4323372036854775807, "Name": "Some bounce", "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "ServerID": 23, "MessageStream": "outbound", "Description": "desc", "Details": "smtp;550 5.1.1 no such user",
        "Email": "john@example.com", "From": "sender@example.com", "BouncedAt": "2019-11-05T16:33:54.9070259Z",
        "DumpAvailable": True, "Inactive": False, "CanActivate": True, "Subject": "Test subject", "Metadata": {},
    }
    if type_ is not None:
        record["Type"] = type_
    if code is not None:
        record["TypeCode"] = code
    record.update(fields)
    return record


# --- golden files -------------------------------------------------------------------


@pytest.mark.parametrize("sample", golden_cases(SAMPLES), ids=lambda p: p.name)
def test_golden(engine, sample: Path) -> None:
    check_golden(engine, "postmark", sample, HERE / "golden")


def test_every_sample_is_mapped_or_skipped(engine) -> None:
    for sample in golden_cases(SAMPLES):
        result = engine.map("postmark", sample.read_bytes(), content_type="application/json")
        assert not result.dead_letters, (sample.name, result.dead_letters)


# --- bounce types: every entry of Postmark's table ----------------------------------

BOUNCE_TYPES = [
    ("HardBounce", 1, "reachability/unreachable (hard_bounce)"),
    ("Transient", 2, "skip:bounce-transient"),
    ("Unsubscribe", 16, "consent/opt-out"),
    ("Subscribe", 32, "skip:bounce-subscribe"),
    ("AutoResponder", 64, "skip:bounce-informational"),
    ("AddressChange", 128, "skip:bounce-informational"),
    ("DnsError", 256, "email/soft_bounce"),
    ("SpamNotification", 512, "email/soft_bounce"),
    ("OpenRelayTest", 1024, "skip:bounce-informational"),
    ("Unknown", 2048, "email/soft_bounce"),
    ("SoftBounce", 4096, "email/soft_bounce"),
    ("VirusNotification", 8192, "email/soft_bounce"),
    ("ChallengeVerification", 16384, "email/soft_bounce"),
    ("BadEmailAddress", 100000, "reachability/unreachable (hard_bounce)"),
    ("SpamComplaint", 100001, "reachability/unreachable (spam_report)"),
    ("ManuallyDeactivated", 100002, "skip:bounce-manually-deactivated"),
    ("Unconfirmed", 100003, "skip:bounce-subscribe"),
    ("Blocked", 100006, "email/soft_bounce"),
    ("SMTPApiError", 100007, "email/soft_bounce"),
    ("InboundError", 100008, "skip:bounce-inbound-error"),
    ("DMARCPolicy", 100009, "email/soft_bounce"),
    ("TemplateRenderingFailed", 100010, "email/soft_bounce"),
]


@pytest.mark.parametrize(("type_", "code", "expected"), BOUNCE_TYPES, ids=[t for t, _, _ in BOUNCE_TYPES])
def test_bounce_type(engine, type_: str, code: int, expected: str) -> None:
    assert outcome(run(engine, bounce(type_, code))) == expected


@pytest.mark.parametrize(("type_", "code", "expected"), BOUNCE_TYPES, ids=[str(c) for _, c, _ in BOUNCE_TYPES])
def test_bounce_type_code_alone(engine, type_: str, code: int, expected: str) -> None:
    assert outcome(run(engine, bounce(None, code))) == expected


def test_type_wins_over_type_code(engine) -> None:
    # An older SpamComplaint example carries TypeCode 512 (SpamNotification).
    assert outcome(run(engine, bounce("SpamComplaint", 512))) == "reachability/unreachable (spam_report)"
    assert outcome(run(engine, bounce("HardBounce", 4096))) == "reachability/unreachable (hard_bounce)"


def test_unknown_future_bounce_type_is_a_dead_letter(engine) -> None:
    result = run(engine, bounce("QuantumBounce", 123456))
    assert [d.reason for d in result.dead_letters] == ["unmapped"]


def test_bounce_value_has_name_details_and_type(engine) -> None:
    record = bounce("SoftBounce", 4096, Name="Soft bounce", Details="smtp;452 4.2.2\n  mailbox full")
    assert run(engine, record).events[0]["data"]["value"] == (
        "Reason: Soft bounce: smtp;452 4.2.2 mailbox full (Postmark SoftBounce, TypeCode 4096)"
    )


def test_bounce_value_without_details_uses_the_description(engine) -> None:
    record = bounce("HardBounce", 1, Name="Hard bounce", Details="", Description="Unknown user.")
    assert run(engine, record).events[0]["data"]["value"] == "Reason: Hard bounce: Unknown user. (Postmark HardBounce, TypeCode 1)"


# --- record types -------------------------------------------------------------------


def test_unknown_future_record_type_is_a_dead_letter(engine) -> None:
    result = run(engine, {"RecordType": "Teleport", "MessageID": "m", "Recipient": "a@example.com"})
    assert [d.reason for d in result.dead_letters] == ["unmapped"]


def test_record_without_any_known_field_is_a_dead_letter(engine) -> None:
    assert outcome(run(engine, {"Recipient": "a@example.com"})) == "dead:unmapped"


def test_spam_complaint_record(engine) -> None:
    record = bounce("SpamComplaint", 100001, RecordType="SpamComplaint", Email="spam@example.com")
    result = run(engine, record)
    assert outcome(result) == "reachability/unreachable (spam_report)"
    assert result.events[0]["identifiers"] == {"email": "spam@example.com"}


def test_click_carries_the_original_link(engine) -> None:
    record = {"RecordType": "Click", "OriginalLink": "https://example.com/a?b=c", "Recipient": "a@example.com",
              "ReceivedAt": "2017-10-25T15:21:11.9065619Z", "MessageID": "m"}
    assert run(engine, record).events[0]["data"]["value"] == "https://example.com/a?b=c"


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"TypeCode": 1, "Type": "HardBounce", "Email": "a@example.com", "BouncedAt": "2014-01-01T00:00:00Z", "ID": 1},
         "reachability/unreachable (hard_bounce)"),
        ({"Type": "SpamComplaint", "TypeCode": 512, "Email": "a@example.com", "BouncedAt": "2014-01-01T00:00:00Z"},
         "reachability/unreachable (spam_report)"),
        ({"Recipient": "a@example.com", "DeliveredAt": "2014-01-01T00:00:00Z", "Details": "250 OK"}, "email/delivery"),
        ({"Recipient": "a@example.com", "ReceivedAt": "2014-01-01T00:00:00Z", "FirstOpen": True}, "email/open"),
        ({"Recipient": "a@example.com", "ReceivedAt": "2014-01-01T00:00:00Z", "OriginalLink": "https://x/"}, "email/click"),
        ({"FromFull": {"Email": "a@example.com"}, "MailboxHash": "", "MessageID": "m"}, "skip:inbound"),
    ],
    ids=["bounce", "spam-complaint", "delivery", "open", "click", "inbound"],
)
def test_bodies_without_record_type(engine, record: dict[str, Any], expected: str) -> None:
    assert outcome(run(engine, record)) == expected


# --- subscription changes ---------------------------------------------------------------


def change(suppress: bool, reason: str | None, origin: str = "Recipient", **fields: Any) -> dict[str, Any]:
    record = {
        "RecordType": "SubscriptionChange", "MessageID": "a4909a96-73d7-4c49-b148-a54522d3f7ac", "ServerID": 23,
        "MessageStream": "broadcast", "ChangedAt": "2022-06-05T17:17:32Z", "Recipient": "john@example.com",
        "Origin": origin, "SuppressSending": suppress, "SuppressionReason": reason, "Tag": None, "Metadata": {},
    }
    record.update(fields)
    return record


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (change(True, "ManualSuppression", "Recipient"), "consent/opt-out"),
        (change(True, "ManualSuppression", "Customer", MessageID=None), "skip:subscription-manual-suppression"),
        (change(True, "ManualSuppression", "Admin", MessageID=None), "skip:subscription-manual-suppression"),
        (change(True, "HardBounce"), "skip:subscription-hard-bounce"),
        (change(True, "SpamComplaint"), "skip:subscription-spam-complaint"),
        (change(False, None, "Customer", MessageID=None), "skip:subscription-reactivated"),
        (change(True, "SomethingNew"), "dead:unmapped"),
        (change(True, None), "dead:unmapped"),
    ],
    ids=["unsubscribe", "customer", "admin", "hard-bounce", "spam-complaint", "reactivation", "new-reason", "no-reason"],
)
def test_subscription_change(engine, record: dict[str, Any], expected: str) -> None:
    assert outcome(run(engine, record)) == expected


# --- ids, tracking, times --------------------------------------------------------------


def test_duplicate_bounce_id_is_skipped(engine) -> None:
    first = bounce("HardBounce", 1, ID=42)
    result = run(engine, [first, dict(first), bounce("HardBounce", 1, ID=43)])
    assert len(result.events) == 2
    assert result.counts.duplicates == 1
    assert result.skipped[0].reason == "duplicate of item 0 (id 'Bounce:42')"


def test_records_without_id_are_never_duplicates(engine) -> None:
    open_ = {"RecordType": "Open", "Recipient": "a@example.com", "ReceivedAt": "2022-09-02T14:30:47Z", "MessageID": "m"}
    assert len(run(engine, [open_, dict(open_)]).events) == 2


def test_metadata_carries_campaign_tracking(engine) -> None:
    metadata = {
        "odp_campaign": "Winter sale", "odp_campaign_id": "42", "odp_touchpoint_id": "7", "odp_content": "Variant A",
        "odp_content_id": "9", "odp_schedule_run_ts": "1699990000", "odp_identifier_key": "default",
        "cohort": "2014-08-A",
    }
    # Postmark refuses metadata field names over 20 characters (HTTP 422).
    assert max(len(name) for name in metadata) <= 20
    record = {"RecordType": "Open", "Recipient": "a@example.com", "ReceivedAt": "2022-09-02T14:30:47Z",
              "MessageID": "m", "Metadata": metadata}
    result = run(engine, record)
    data = result.events[0]["data"]
    assert data["campaign"] == "Winter sale" and data["content"] == "Variant A"
    assert data["campaign_id"] == 42 and data["touchpoint_id"] == 7 and data["content_id"] == 9
    assert data["campaign_schedule_run_ts"] == 1699990000 and data["identifier_key"] == "default"
    assert "cohort" not in data
    assert result.counts.unattributed == 0


def test_metadata_without_tracking_fields_leaves_events_unattributed(engine) -> None:
    record = {"RecordType": "Delivery", "Recipient": "a@example.com", "DeliveredAt": "2022-09-02T11:49:27Z",
              "MessageID": "m", "Metadata": {"example": "value"}}
    result = run(engine, record)
    assert set(result.events[0]["data"]) == {"ts", "target_address"}
    assert result.counts.unattributed == 1


def test_metadata_tracking_wins_over_remembered_tracking(engine) -> None:
    record = {"RecordType": "Open", "Recipient": "a@example.com", "ReceivedAt": "2022-09-02T14:30:47Z",
              "MessageID": "m", "Metadata": {"odp_campaign_id": "42"}}
    data = run(engine, record, tracking=lambda mid: {"campaign_id": "1", "touchpoint_id": "2"}).events[0]["data"]
    assert data["campaign_id"] == 42 and data["touchpoint_id"] == 2


def test_message_id_looks_up_remembered_tracking(engine) -> None:
    seen: list[str] = []

    def lookup(message_id: str) -> dict[str, Any]:
        seen.append(message_id)
        return {"campaign_id": "5"}

    record = {"RecordType": "Delivery", "Recipient": "a@example.com", "DeliveredAt": "2022-09-02T11:49:27Z",
              "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Metadata": {}}
    result = run(engine, record, tracking=lookup)
    assert seen == ["883953f4-6105-42a2-a16a-77a8eac79483"]
    assert result.events[0]["data"]["campaign_id"] == 5


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2016-04-27T16:28:50.3963933-04:00", 1461788930),  # 7 fraction digits, offset
        ("2019-11-05T16:33:54.9070259Z", 1572971634),       # 7 fraction digits, Z
        ("2022-09-02T14:29:57.123456Z", 1662128997),        # 6 fraction digits
        ("2022-09-02T14:29:19Z", 1662128959),               # no fraction
        ("2016-12-01T15:41:45-05:00", 1480624905),          # no fraction, offset
    ],
)
def test_timestamps_are_epoch_seconds(engine, stamp: str, expected: int) -> None:
    assert run(engine, bounce("HardBounce", 1, BouncedAt=stamp)).events[0]["data"]["ts"] == expected


@pytest.mark.parametrize(
    ("record_type", "field"),
    [("Delivery", "DeliveredAt"), ("Open", "ReceivedAt"), ("Click", "ReceivedAt")],
)
def test_each_record_type_reads_its_own_time(engine, record_type: str, field: str) -> None:
    record = {"RecordType": record_type, "Recipient": "a@example.com", "MessageID": "m", field: "2022-09-02T14:31:09Z",
              "OriginalLink": "https://x/"}
    assert run(engine, record).events[0]["data"]["ts"] == 1662129069


def test_record_without_a_time_is_an_invalid_event(engine) -> None:
    result = run(engine, {"RecordType": "Delivery", "Recipient": "a@example.com", "MessageID": "m"})
    assert [d.reason for d in result.dead_letters] == ["invalid_event"]


# --- authentication (Postmark does not sign: HTTP basic credentials in the URL) --------

BODY = (SAMPLES / "symfony-delivery.json").read_bytes()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_auth_verifies(engine) -> None:
    assert engine.verify("postmark", BODY, basic("odp", "s3cret:with:colons"), secret="odp:s3cret:with:colons")


@pytest.mark.parametrize(
    "headers",
    [
        basic("odp", "wrong"),
        basic("other", "s3cret"),
        {},
        {"Authorization": "Bearer s3cret"},
        {"Authorization": "Basic not-base64!"},
    ],
    ids=["wrong-password", "wrong-user", "missing", "other-scheme", "malformed"],
)
def test_wrong_or_missing_credentials_fail(engine, headers: dict[str, str]) -> None:
    assert not engine.verify("postmark", BODY, headers, secret="odp:s3cret")


def test_credentials_do_not_cover_the_body(engine) -> None:
    # Basic auth authenticates the caller, not the content; there is no timestamp either.
    assert engine.verify("postmark", BODY.replace(b"john@", b"mallory@"), basic("odp", "s3cret"), secret="odp:s3cret")


def test_secret_must_be_user_colon_password(engine) -> None:
    with pytest.raises(SignatureConfigError):
        engine.verify("postmark", BODY, basic("odp", "s3cret"), secret="s3cret")
