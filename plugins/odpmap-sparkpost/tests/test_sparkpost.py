"""SparkPost: golden tests over the sample webhook batches, plus behaviour checks."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from odpmap.testing import assert_accounting, assert_valid_events, check_golden, engine_for, golden_cases, outcome
from odpmap_sparkpost import sparkpost_events

HERE = Path(__file__).parent
SAMPLES = HERE.parent / "src" / "odpmap_sparkpost" / "samples"


@pytest.fixture(scope="module")
def engine():
    return engine_for("sparkpost")


def event(type_: str, cls: str = "message_event", **fields: Any) -> dict[str, Any]:
    """One envelope of a webhook batch, with the fields every real event carries."""
    inner = {
        "type": type_, "event_id": f"evt-{type_}", "message_id": "000443ee14578172be22",
        "transmission_id": "65832150921904138", "rcpt_to": "jane@example.com",
        "raw_rcpt_to": "Jane@example.com", "timestamp": "1700000000", "rcpt_meta": {},
    }
    inner.update(fields)
    return {"msys": {cls: inner}}


def map_batch(engine, batch: list[Any], **kw: Any):
    result = engine.map("sparkpost", json.dumps(batch).encode(), content_type="application/json", **kw)
    assert_accounting(result)
    assert_valid_events(engine, result)
    return result


# --- golden files ------------------------------------------------------------------------


@pytest.mark.parametrize("sample", golden_cases(SAMPLES), ids=lambda p: p.name)
def test_golden(engine, sample: Path) -> None:
    check_golden(engine, "sparkpost", sample, HERE / "golden")


def test_webhook_validation_ping_maps_to_nothing(engine) -> None:
    result = engine.map("sparkpost", b'[{"msys":{}}]', content_type="application/json")
    assert result.counts.received == 0
    assert not result.events and not result.skipped and not result.dead_letters


def test_every_sample_event_type_is_handled(engine) -> None:
    result = engine.map("sparkpost", (SAMPLES / "gosparkpost-batch-all.json").read_bytes(),
                        content_type="application/json")
    assert_accounting(result)
    assert result.counts.received == 19
    assert not result.dead_letters
    assert result.counts.duplicates == 0  # the samples share one event_id across types


# --- the batch filter --------------------------------------------------------------------


def test_filter_flattens_envelopes_in_order() -> None:
    batch = [{"msys": {"message_event": {"type": "delivery"}}}, {"msys": {}},
             {"msys": {"track_event": {"type": "open"}}, "cust": {"id": "1"}}]
    assert sparkpost_events(batch) == [{"type": "delivery"}, {"type": "open"}]


def test_filter_reads_a_single_envelope_as_a_batch_of_one() -> None:
    assert sparkpost_events({"msys": {"track_event": {"type": "click"}}}) == [{"type": "click"}]


def test_filter_passes_malformed_elements_through() -> None:
    assert sparkpost_events([{"nope": 1}, "x", {"msys": None}]) == [{"nope": 1}, "x", {"msys": None}]


def test_a_malformed_envelope_is_dead_lettered_alone(engine) -> None:
    result = map_batch(engine, [event("delivery"), {"not_msys": {}}, event("open", "track_event")])
    assert [e["action"] for e in result.events] == ["delivery", "open"]
    assert [(d.index, d.reason) for d in result.dead_letters] == [(1, "unmapped")]


# --- event types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "cls", "expected"),
    [
        ("injection", "message_event", "skip:injection"),
        ("delivery", "message_event", "email/delivery"),
        ("delay", "message_event", "skip:delay"),
        ("spam_complaint", "message_event", "reachability/unreachable (spam_report)"),
        ("policy_rejection", "message_event", "email/soft_bounce"),
        ("sms_status", "message_event", "skip:sms-status"),
        ("generation_failure", "gen_event", "email/soft_bounce"),
        ("generation_failure", "message_event", "email/soft_bounce"),
        ("generation_rejection", "gen_event", "email/soft_bounce"),
        ("open", "track_event", "email/open"),
        ("initial_open", "track_event", "email/open"),
        ("amp_open", "track_event", "email/open"),
        ("amp_initial_open", "track_event", "email/open"),
        ("click", "track_event", "email/click"),
        ("initial_click", "track_event", "email/click"),
        ("amp_click", "track_event", "email/click"),
        ("list_unsubscribe", "unsubscribe_event", "consent/opt-out"),
        ("link_unsubscribe", "unsubscribe_event", "consent/opt-out"),
        ("relay_injection", "relay_event", "skip:relay"),
        ("relay_rejection", "relay_event", "skip:relay"),
        ("relay_delivery", "relay_event", "skip:relay"),
        ("relay_tempfail", "relay_event", "skip:relay"),
        ("relay_permfail", "relay_event", "skip:relay"),
        ("ab_test_completed", "ab_test_event", "skip:ab-test"),
        ("ab_test_cancelled", "ab_test_event", "skip:ab-test"),
    ],
)
def test_event_type_outcomes(engine, type_: str, cls: str, expected: str) -> None:
    result = map_batch(engine, [event(type_, cls, reason="554 5.7.1 something", target_link_url="https://x.example/")])
    assert outcome(result) == expected
    for ev in result.events:
        assert ev["identifiers"] == {"email": "jane@example.com"}
        assert ev["data"]["target_address"] == "jane@example.com"
        assert ev["data"]["ts"] == 1700000000


def test_click_carries_the_target_link_url(engine) -> None:
    result = map_batch(engine, [event("click", "track_event", target_link_url="https://shop.example.com/?a=1")])
    assert result.events[0]["data"]["value"] == "https://shop.example.com/?a=1"


def test_unknown_future_event_type_is_a_dead_letter(engine) -> None:
    result = map_batch(engine, [event("machine_learned", "future_event")])
    assert [d.reason for d in result.dead_letters] == ["unmapped"]
    assert result.dead_letters[0].item["type"] == "machine_learned"


# --- bounce classes ------------------------------------------------------------------------

BOUNCE_CLASSES = [
    # (class, expected outcome, name in the value); SparkPost's Bounce Classification Codes.
    ("1", "email/soft_bounce", "Undetermined"),
    ("10", "reachability/unreachable (hard_bounce)", "Invalid Recipient"),
    ("20", "email/soft_bounce", "Soft Bounce"),
    ("21", "email/soft_bounce", "DNS Failure"),
    ("22", "email/soft_bounce", "Mailbox Full"),
    ("23", "email/soft_bounce", "Too Large"),
    ("24", "email/soft_bounce", "Timeout"),
    ("25", "email/soft_bounce", "Admin Failure"),
    ("26", "email/soft_bounce", "Smart Send Suppression"),
    ("30", "reachability/unreachable (hard_bounce)", "Generic Bounce: No RCPT"),
    ("40", "email/soft_bounce", "Generic Bounce"),
    ("50", "email/soft_bounce", "Mail Block"),
    ("51", "email/soft_bounce", "Spam Block"),
    ("52", "email/soft_bounce", "Spam Content"),
    ("53", "email/soft_bounce", "Prohibited Attachment"),
    ("54", "email/soft_bounce", "Relaying Denied"),
    ("60", "skip:bounce-auto-reply", None),
    ("70", "email/soft_bounce", "Transient Failure"),
    ("80", "skip:bounce-subscribe", None),
    ("90", "consent/opt-out", None),
    ("100", "email/soft_bounce", "Challenge-Response"),
    ("999", "email/soft_bounce", "Unknown bounce class"),
]


@pytest.mark.parametrize("type_", ["bounce", "out_of_band"])
@pytest.mark.parametrize(("bounce_class", "expected", "name"), BOUNCE_CLASSES, ids=[c[0] for c in BOUNCE_CLASSES])
def test_bounce_classes(engine, type_: str, bounce_class: str, expected: str, name: str | None) -> None:
    result = map_batch(engine, [event(type_, bounce_class=bounce_class, reason="550 5.0.0 remote said no")])
    assert outcome(result) == expected
    if name is not None:
        value = result.events[0]["data"]["value"]
        assert value == f"Reason: {name} (bounce class {bounce_class}): 550 5.0.0 remote said no"


def test_bounce_class_may_be_a_number(engine) -> None:
    result = map_batch(engine, [event("bounce", bounce_class=10, reason="550 5.1.1 unknown user")])
    assert outcome(result) == "reachability/unreachable (hard_bounce)"


def test_bounce_reason_falls_back_to_raw_reason(engine) -> None:
    result = map_batch(engine, [event("bounce", bounce_class="22", raw_reason="552 5.2.2 full")])
    assert result.events[0]["data"]["value"] == "Reason: Mailbox Full (bounce class 22): 552 5.2.2 full"


def test_bounce_without_bounce_class_is_a_dead_letter(engine) -> None:
    result = map_batch(engine, [event("bounce", reason="550 oops")])
    assert [d.reason for d in result.dead_letters] == ["template_error"]


@pytest.mark.parametrize("type_", ["generation_rejection", "policy_rejection", "bounce"])
def test_recipient_on_the_accounts_suppression_list_is_skipped(engine, type_: str) -> None:
    reason = "554 5.7.1 recipient address suppressed due to customer policy"
    result = map_batch(engine, [event(type_, bounce_class="25", reason=reason)])
    assert outcome(result) == "skip:suppressed-by-account"


@pytest.mark.parametrize("type_", ["generation_rejection", "policy_rejection"])
@pytest.mark.parametrize("reason", ["554 5.7.1 recipient address suppressed due to system policy",
                                    "554 5.7.1 Recipient address suppressed due to System Policy"])
def test_recipient_on_sparkposts_global_suppression_list_is_unreachable(engine, type_: str, reason: str) -> None:
    result = map_batch(engine, [event(type_, reason=reason)])
    assert outcome(result) == "reachability/unreachable (hard_bounce)"
    assert result.events[0]["data"]["value"] == f"Reason: {reason}"


def test_other_policy_rejection_is_a_soft_bounce_with_the_reason(engine) -> None:
    reason = "550 5.7.1 [internal] Sending domain not configured"
    result = map_batch(engine, [event("policy_rejection", reason=reason)])
    assert result.events[0]["data"]["value"] == f"Reason: {reason}"


# --- ids, recipients, tracking, time ----------------------------------------------------------


def test_repeated_event_in_a_batch_is_skipped_as_duplicate(engine) -> None:
    result = map_batch(engine, [event("open", "track_event"), event("open", "track_event")])
    assert len(result.events) == 1
    assert result.counts.duplicates == 1
    assert result.skipped[0].reason == "duplicate of item 0 (id 'evt-open:open')"


def test_same_event_id_with_another_type_is_not_a_duplicate(engine) -> None:
    batch = [event("delivery", event_id="1"), event("open", "track_event", event_id="1")]
    result = map_batch(engine, batch)
    assert result.counts.duplicates == 0
    assert [e["action"] for e in result.events] == ["delivery", "open"]


def test_recipient_falls_back_to_raw_rcpt_to_lower_cased(engine) -> None:
    envelope = event("delivery")
    del envelope["msys"]["message_event"]["rcpt_to"]
    result = map_batch(engine, [envelope])
    assert result.events[0]["identifiers"] == {"email": "jane@example.com"}


def test_event_without_recipient_is_a_dead_letter(engine) -> None:
    envelope = event("delivery")
    del envelope["msys"]["message_event"]["rcpt_to"]
    del envelope["msys"]["message_event"]["raw_rcpt_to"]
    result = map_batch(engine, [envelope])
    assert [d.reason for d in result.dead_letters] == ["invalid_event"]


def test_rcpt_meta_carries_campaign_tracking(engine) -> None:
    meta = {
        "odp_campaign": "Winter sale", "odp_campaign_id": "42", "odp_touchpoint_id": 7,
        "odp_content": "Variant A", "odp_content_id": "9", "odp_campaign_schedule_run_ts": "1699990000",
        "customKey": "customValue", "anotherKey": ["value1", "value2"],
    }
    result = map_batch(engine, [event("click", "track_event", rcpt_meta=meta, target_link_url="https://x.example/")])
    data = result.events[0]["data"]
    assert data["campaign"] == "Winter sale" and data["content"] == "Variant A"
    assert data["campaign_id"] == 42 and data["touchpoint_id"] == 7 and data["content_id"] == 9
    assert data["campaign_schedule_run_ts"] == 1699990000
    assert "customKey" not in data
    assert result.counts.unattributed == 0


def test_sparkposts_own_campaign_id_is_not_odps(engine) -> None:
    # The transmission's campaign_id is a free-text name; only rcpt_meta feeds ODP tracking.
    result = map_batch(engine, [event("delivery", campaign_id="Example Campaign Name")])
    assert "campaign_id" not in result.events[0]["data"]
    assert result.counts.unattributed == 1


def test_message_id_looks_up_tracking_remembered_at_send_time(engine) -> None:
    asked: list[str] = []

    def lookup(message_id: str) -> dict[str, Any]:
        asked.append(message_id)
        return {"campaign_id": 42}

    result = map_batch(engine, [event("open", "track_event")], tracking=lookup)
    assert asked == ["000443ee14578172be22"]
    assert result.events[0]["data"]["campaign_id"] == 42


@pytest.mark.parametrize(
    "timestamp",
    ["1700000000", 1700000000, "1700000000.000", "2023-11-14T22:13:20.000+00:00", "2023-11-14T22:13:20.000Z",
     "2023-11-14T23:13:20+01:00", 1700000000000],
)
def test_timestamp_formats(engine, timestamp: Any) -> None:
    result = map_batch(engine, [event("delivery", timestamp=timestamp)])
    assert result.events[0]["data"]["ts"] == 1700000000


def test_event_without_timestamp_is_a_dead_letter(engine) -> None:
    envelope = event("delivery")
    del envelope["msys"]["message_event"]["timestamp"]
    result = map_batch(engine, [envelope])
    assert [d.reason for d in result.dead_letters] == ["template_error"]


# --- authentication ----------------------------------------------------------------------------


def basic(credentials: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


def test_basic_auth_verifies_through_the_engine(engine) -> None:
    body = (SAMPLES / "gosparkpost-delivery.json").read_bytes()
    assert engine.verify("sparkpost", body, basic("odp-hook:s3cret:with:colons"), secret="odp-hook:s3cret:with:colons")
    assert engine.verify("sparkpost", body, {"authorization": basic("u:p")["Authorization"]}, secret="u:p")


def test_basic_auth_rejects_wrong_or_missing_credentials(engine) -> None:
    body = (SAMPLES / "gosparkpost-delivery.json").read_bytes()
    assert not engine.verify("sparkpost", body, basic("odp-hook:wrong"), secret="odp-hook:s3cret")
    assert not engine.verify("sparkpost", body, basic("other:s3cret"), secret="odp-hook:s3cret")
    assert not engine.verify("sparkpost", body, {}, secret="odp-hook:s3cret")
    assert not engine.verify("sparkpost", body, {"Authorization": "Bearer odp-hook:s3cret"}, secret="odp-hook:s3cret")


def test_basic_auth_authenticates_the_caller_not_the_body(engine) -> None:
    # SparkPost does not sign payloads: HTTP Basic over TLS proves who called, and a changed
    # body still passes. There is no timestamp either, so no replay window (SparkPost retries
    # a batch for 8 hours with the same X-MessageSystems-Batch-ID).
    body = (SAMPLES / "gosparkpost-delivery.json").read_bytes()
    tampered = body.replace(b"delivery", b"bounce")
    assert engine.verify("sparkpost", tampered, basic("u:p"), secret="u:p")
