"""Mailgun: golden tests over the sample webhooks, plus behaviour checks."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from odpmap.testing import assert_accounting, assert_valid_events, check_golden, engine_for, golden_cases, outcome

HERE = Path(__file__).parent
SAMPLES = HERE.parent / "src" / "odpmap_mailgun" / "samples"
# anymail's test signing key: the anymail-* and legacy-* samples are signed with it.
SAMPLE_KEY = "TEST_WEBHOOK_SIGNING_KEY"
KEY = "key-0123456789abcdef0123456789abcdef"
T0 = 1_700_000_000


@pytest.fixture(scope="module")
def engine():
    return engine_for("mailgun")


def webhook(event_data: dict[str, Any], *, timestamp: int = T0, token: str = "a" * 50, key: str = KEY) -> bytes:
    """A current-style (JSON) Mailgun webhook body, signed with ``key``."""
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    body = {"signature": {"timestamp": str(timestamp), "token": token, "signature": signature}, "event-data": event_data}
    return json.dumps(body).encode()


def event(name: str, **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "event": name, "id": f"id-{name}", "timestamp": 1521243339.873676, "recipient": "alice@example.com",
        "message": {"headers": {"message-id": "20180316232232.1.ABC@mg.example.com"}},
        "user-variables": {}, "tags": [], "campaigns": [], "flags": {"is-test-mode": False},
    }
    data.update(fields)
    return data


def map_event(engine, data: dict[str, Any], **kwargs: Any):
    result = engine.map("mailgun", webhook(data), content_type="application/json", **kwargs)
    assert_accounting(result)
    assert_valid_events(engine, result)
    return result


# --- golden files -------------------------------------------------------------------


@pytest.mark.parametrize("sample", golden_cases(SAMPLES), ids=lambda p: p.name)
def test_golden(engine, sample: Path) -> None:
    check_golden(engine, "mailgun", sample, HERE / "golden")


def test_every_sample_is_mapped_or_skipped(engine) -> None:
    for sample in golden_cases(SAMPLES):
        result = engine.map("mailgun", sample.read_bytes(), content_type=_ctype(sample))
        assert not result.dead_letters, (sample.name, result.dead_letters)


def _ctype(sample: Path) -> str:
    return "application/x-www-form-urlencoded" if sample.name.endswith(".form.txt") else "application/json"


# --- the event table ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fields", "expected"),
    [
        ("accepted", {}, "skip:accepted"),
        ("rejected", {"reject": {"reason": "Sandbox subdomains are for test purposes only."}}, "skip:rejected"),
        ("delivered", {"delivery-status": {"code": 250, "message": "OK"}}, "email/delivery"),
        ("opened", {}, "email/open"),
        ("clicked", {"url": "https://example.com/x"}, "email/click"),
        ("complained", {}, "reachability/unreachable (spam_report)"),
        ("unsubscribed", {}, "consent/opt-out"),
        ("unsubscribed", {"mailing-list": {"address": "news@lists.example.com"}}, "list/unsubscribe"),
        ("stored", {"storage": {"url": "https://se.api.mailgun.net/v3/x", "key": "k"}}, "skip:stored"),
        ("list_member_uploaded", {"mailing-list": {"address": "news@lists.example.com"}}, "skip:mailing-list-upload"),
        ("list_member_upload_error", {}, "skip:mailing-list-upload"),
        ("list_uploaded", {}, "skip:mailing-list-upload"),
        ("DELIVERED", {}, "email/delivery"),  # event names are compared case-insensitively
    ],
)
def test_documented_event_types(engine, name: str, fields: dict[str, Any], expected: str) -> None:
    assert outcome(map_event(engine, event(name, **fields))) == expected


def test_click_carries_the_url(engine) -> None:
    result = map_event(engine, event("clicked", url="https://example.com/signup?a=1"))
    assert result.events[0]["data"]["value"] == "https://example.com/signup?a=1"


def test_mailing_list_unsubscribe_names_the_list(engine) -> None:
    result = map_event(engine, event("unsubscribed", **{"mailing-list": {"address": "news@lists.example.com"}}))
    assert result.events[0]["data"]["list_id"] == "news@lists.example.com"


def test_test_mode_messages_are_skipped(engine) -> None:
    result = map_event(engine, event("delivered", flags={"is-test-mode": True}))
    assert outcome(result) == "skip:test-mode"


def test_unknown_future_event_type_is_a_dead_letter(engine) -> None:
    result = map_event(engine, event("teleported"))
    assert [d.reason for d in result.dead_letters] == ["unmapped"]
    assert result.dead_letters[0].item["event"] == "teleported"


def test_failed_without_severity_is_a_dead_letter(engine) -> None:
    data = event("failed", reason="generic")
    result = map_event(engine, data)
    assert [d.reason for d in result.dead_letters] == ["unmapped"]


# --- failures: severity x reason x status code --------------------------------------


@pytest.mark.parametrize(
    ("severity", "reason", "status", "expected"),
    [
        # Mailgun retries temporary failures: whatever the reason, the outcome follows later.
        ("temporary", "generic", {"code": 451, "enhanced-code": "4.7.652"}, "skip:failed-temporary"),
        ("temporary", "greylisted", {"code": 450}, "skip:failed-temporary"),
        ("temporary", "espblock", {"code": 421}, "skip:failed-temporary"),
        # reason "bounce": the address goes on Mailgun's Bounces list.
        ("permanent", "bounce", {"code": 550, "message": "5.1.1 user unknown"}, "reachability/unreachable (hard_bounce)"),
        # already suppressed: reported when it happened.
        ("permanent", "suppress-bounce", {"code": 605}, "skip:failed-suppressed"),
        ("permanent", "suppress-unsubscribe", {"code": 606}, "skip:failed-suppressed"),
        ("permanent", "suppress-complaint", {"code": 607}, "skip:failed-suppressed"),
        # final for this message, address not suppressed.
        ("permanent", "old", {"code": 602, "message": "Too old"}, "email/soft_bounce"),
        ("permanent", "espblock", {"code": 554, "message": "blocked by policy"}, "email/soft_bounce"),
        ("permanent", "generic", {"code": 552, "enhanced-code": "5.2.2", "message": "mailbox full"}, "email/soft_bounce"),
        ("permanent", "something-new", {"code": 554}, "email/soft_bounce"),
        # an invalid-address status code makes a "generic" failure a hard bounce.
        ("permanent", "generic", {"code": 550, "enhanced-code": "5.1.1"}, "reachability/unreachable (hard_bounce)"),
        ("permanent", "generic", {"code": 550, "bounce-code": "5.1.2"}, "reachability/unreachable (hard_bounce)"),
        ("permanent", "generic", {"code": 553, "enhanced-code": "5.1.3"}, "reachability/unreachable (hard_bounce)"),
        ("permanent", "generic", {"code": 556, "enhanced-code": "5.1.10"}, "reachability/unreachable (hard_bounce)"),
        ("permanent", "generic", {"code": 550, "enhanced-code": "5.7.1"}, "email/soft_bounce"),
        # ... but never an already-suppressed one.
        ("permanent", "suppress-bounce", {"code": 605, "enhanced-code": "5.1.1"}, "skip:failed-suppressed"),
    ],
)
def test_failure_classification(engine, severity: str, reason: str, status: dict[str, Any], expected: str) -> None:
    data = event("failed", severity=severity, reason=reason, **{"delivery-status": status})
    assert outcome(map_event(engine, data)) == expected


def test_soft_bounce_value_names_the_reason(engine) -> None:
    status = {"code": 602, "message": "Too old\n  (last: 451 try later)", "description": ""}
    result = map_event(engine, event("failed", severity="permanent", reason="old", **{"delivery-status": status}))
    assert result.events[0]["data"]["value"] == "Reason: Too old (last: 451 try later) (Mailgun reason old, code 602)"


def test_hard_bounce_value_falls_back_to_the_description(engine) -> None:
    status = {"code": 550, "message": "", "description": "No such mailbox"}
    result = map_event(engine, event("failed", severity="permanent", reason="bounce", **{"delivery-status": status}))
    assert result.events[0]["data"]["value"] == "Reason: No such mailbox (Mailgun reason bounce, code 550)"


# --- legacy (form-encoded) webhooks ---------------------------------------------------


def legacy(fields: dict[str, str], *, key: str = KEY) -> bytes:
    base = {"recipient": "bob@example.com", "domain": "mg.example.com", "timestamp": str(T0), "token": "b" * 50}
    base.update(fields)
    base["signature"] = hmac.new(key.encode(), (base["timestamp"] + base["token"]).encode(), hashlib.sha256).hexdigest()
    return urlencode(base).encode()


def map_legacy(engine, fields: dict[str, str], **kwargs: Any):
    result = engine.map("mailgun", legacy(fields), content_type="application/x-www-form-urlencoded", **kwargs)
    assert_accounting(result)
    assert_valid_events(engine, result)
    return result


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"event": "delivered", "Message-Id": "<1@mg.example.com>"}, "email/delivery"),
        ({"event": "opened"}, "email/open"),
        ({"event": "clicked", "url": "https://example.com/"}, "email/click"),
        ({"event": "unsubscribed"}, "consent/opt-out"),
        ({"event": "unsubscribed", "mailing-list": "news@lists.example.com"}, "list/unsubscribe"),
        ({"event": "complained"}, "reachability/unreachable (spam_report)"),
        ({"event": "bounced", "code": "550", "error": "5.1.1 no such user"}, "reachability/unreachable (hard_bounce)"),
        ({"event": "dropped", "reason": "hardfail", "code": "605"}, "skip:legacy-dropped-hardfail"),
        ({"event": "dropped", "reason": "old", "code": "499"}, "email/soft_bounce"),
        ({"event": "dropped", "reason": "mystery"}, "dead:unmapped"),
    ],
)
def test_legacy_events(engine, fields: dict[str, str], expected: str) -> None:
    assert outcome(map_legacy(engine, fields)) == expected


def test_legacy_custom_variables_carry_campaign_tracking(engine) -> None:
    result = map_legacy(engine, {"event": "opened", "odp_campaign": "Spring", "odp_campaign_id": "42",
                                 "odp_touchpoint_id": "7"})
    data = result.events[0]["data"]
    assert data["campaign"] == "Spring"
    assert data["campaign_id"] == 42 and data["touchpoint_id"] == 7
    assert result.counts.unattributed == 0


def test_legacy_timestamp_is_read_from_text(engine) -> None:
    assert map_legacy(engine, {"event": "opened"}).events[0]["data"]["ts"] == T0


# --- identifiers, ids, tracking, times --------------------------------------------


def test_duplicate_event_id_in_an_events_api_page_is_skipped(engine) -> None:
    page = {"items": [event("opened", id="same"), event("opened", id="same"), event("clicked", id="other", url="u")],
            "paging": {"next": "https://api.mailgun.net/v3/x/events/n"}}
    result = engine.map("mailgun", json.dumps(page).encode(), content_type="application/json")
    assert_accounting(result)
    assert [e["action"] for e in result.events] == ["open", "click"]
    assert result.counts.duplicates == 1
    assert result.skipped[0].reason == "duplicate of item 0 (id 'same')"


def test_user_variables_carry_campaign_tracking(engine) -> None:
    variables = {
        "odp_campaign": "Winter sale", "odp_campaign_id": "42", "odp_touchpoint_id": "7", "odp_content": "Variant A",
        "odp_content_id": "9", "odp_campaign_schedule_run_ts": "1699990000", "odp_identifier_key": "default",
        "unrelated": "x",
    }
    result = map_event(engine, event("clicked", url="https://x.example/", **{"user-variables": variables}))
    data = result.events[0]["data"]
    assert data["campaign"] == "Winter sale" and data["content"] == "Variant A"
    assert data["campaign_id"] == 42 and data["touchpoint_id"] == 7 and data["content_id"] == 9
    assert data["campaign_schedule_run_ts"] == 1699990000 and data["identifier_key"] == "default"
    assert "unrelated" not in data
    assert result.counts.unattributed == 0


def test_user_variables_without_prefix_are_accepted(engine) -> None:
    result = map_event(engine, event("opened", **{"user-variables": {"campaign_id": 5}}))
    assert result.events[0]["data"]["campaign_id"] == 5


def test_delivery_without_tracking_is_counted_unattributed(engine) -> None:
    assert map_event(engine, event("delivered")).counts.unattributed == 1


def test_message_id_looks_up_remembered_tracking(engine) -> None:
    seen: list[str] = []

    def lookup(message_id: str) -> dict[str, Any]:
        seen.append(message_id)
        return {"campaign_id": "77", "campaign": "Remembered"}

    result = map_event(engine, event("delivered"), tracking=lookup)
    assert seen == ["20180316232232.1.ABC@mg.example.com"]
    assert result.events[0]["data"]["campaign_id"] == 77


def test_legacy_message_id_loses_its_angle_brackets(engine) -> None:
    seen: list[str] = []
    map_legacy(engine, {"event": "delivered", "Message-Id": "<20160421175529.1@example.com>"},
               tracking=lambda mid: seen.append(mid) or {})
    headers = json.dumps([["Message-Id", "<2@example.com>"], ["To", "bob@example.com"]])
    map_legacy(engine, {"event": "bounced", "message-headers": headers}, tracking=lambda mid: seen.append(mid) or {})
    assert seen == ["20160421175529.1@example.com", "2@example.com"]


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [(1529692199.626182, 1529692199), (1529692199, 1529692199), ("1529692199.9", 1529692199)],
)
def test_event_time_is_epoch_seconds(engine, timestamp: Any, expected: int) -> None:
    assert map_event(engine, event("opened", timestamp=timestamp)).events[0]["data"]["ts"] == expected


def test_identifier_and_target_address_are_the_recipient(engine) -> None:
    e = map_event(engine, event("opened", recipient="carol@example.org")).events[0]
    assert e["identifiers"] == {"email": "carol@example.org"}
    assert e["data"]["target_address"] == "carol@example.org"


# --- signatures -------------------------------------------------------------------


def test_valid_signature_verifies(engine) -> None:
    body = webhook(event("delivered"))
    assert engine.verify("mailgun", body, {"Content-Type": "application/json"}, secret=KEY, now=T0 + 60)


def test_wrong_key_fails(engine) -> None:
    body = webhook(event("delivered"))
    assert not engine.verify("mailgun", body, {}, secret="key-wrong", now=T0)


def test_tampered_signed_fields_fail(engine) -> None:
    body = webhook(event("delivered"))
    assert not engine.verify("mailgun", body.replace(b'"aaaa', b'"baaa', 1), {}, secret=KEY, now=T0)
    assert not engine.verify("mailgun", body.replace(str(T0).encode(), str(T0 + 1).encode(), 1), {}, secret=KEY,
                             now=T0)


def test_signature_covers_timestamp_and_token_only(engine) -> None:
    # Mailgun's documented scheme signs timestamp + token, not the event: a replayed token
    # with other event data still verifies. Receivers should refuse tokens seen before.
    body = webhook(event("delivered"))
    assert engine.verify("mailgun", body.replace(b"alice@", b"mallory@"), {}, secret=KEY, now=T0)


def test_stale_or_future_timestamp_fails(engine) -> None:
    body = webhook(event("delivered"))
    assert engine.verify("mailgun", body, {}, secret=KEY, now=T0 + 14 * 60)
    assert not engine.verify("mailgun", body, {}, secret=KEY, now=T0 + 16 * 60)
    assert not engine.verify("mailgun", body, {}, secret=KEY, now=T0 - 16 * 60)


def test_legacy_form_signature_verifies(engine) -> None:
    body = legacy({"event": "delivered"})
    assert engine.verify("mailgun", body, {}, secret=KEY, now=T0)
    assert not engine.verify("mailgun", body, {}, secret="key-wrong", now=T0)


def test_captured_samples_verify_with_anymails_test_key(engine) -> None:
    for name in ("anymail-delivered-live-capture.json", "legacy-delivered.form.txt"):
        body = (SAMPLES / name).read_bytes()
        assert engine.verify("mailgun", body, {}, secret=SAMPLE_KEY, now=1534108637 if "json" in name else 1461261330)
        assert not engine.verify("mailgun", body, {}, secret=KEY, now=1534108637)


def test_subaccount_parent_signature_verifies(engine) -> None:
    parent_key = "key-parent"
    body = json.loads(webhook(event("delivered"), key="key-subaccount"))
    body["signature"]["parent-signature"] = hmac.new(
        parent_key.encode(), f"{T0}{'a' * 50}".encode(), hashlib.sha256
    ).hexdigest()
    raw = json.dumps(body).encode()
    assert engine.verify("mailgun", raw, {}, secret=parent_key, now=T0)
    assert engine.verify("mailgun", raw, {}, secret="key-subaccount", now=T0)
