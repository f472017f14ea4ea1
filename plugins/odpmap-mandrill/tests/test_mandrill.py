"""Mandrill: golden tests over the sample webhooks, plus behaviour checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest

from odpmap.testing import assert_accounting, assert_valid_events, check_golden, engine_for, golden_cases

HERE = Path(__file__).parent
SAMPLES = HERE.parent / "src" / "odpmap_mandrill" / "samples"
FORM = "application/x-www-form-urlencoded"
WEBHOOK_URL = "https://odp.example.com/webhooks/mandrill"
WEBHOOK_KEY = "k8Vt3VqZ0m8P-webhook-key"


@pytest.fixture(scope="module")
def engine():
    return engine_for("mandrill")


def form_body(events: list[dict[str, Any]]) -> bytes:
    """A webhook body as Mandrill posts it: one form field holding the JSON array."""
    return urlencode({"mandrill_events": json.dumps(events)}).encode()


def message_event(event: str, **extra: Any) -> dict[str, Any]:
    msg = {
        "_id": "abc123", "ts": 1699990000, "email": "jane@example.com", "sender": "shop@example.com",
        "subject": "Hello", "tags": [], "metadata": {}, "state": "sent",
    }
    msg.update(extra.pop("msg", {}))
    return {"event": event, "_id": msg["_id"], "ts": 1700000000, "msg": msg, **extra}


def map_events(engine, events: list[dict[str, Any]], **kw: Any):
    result = engine.map("mandrill", form_body(events), content_type=FORM, **kw)
    assert_accounting(result)
    assert_valid_events(engine, result)
    return result


# --- golden files ------------------------------------------------------------------------


@pytest.mark.parametrize("sample", golden_cases(SAMPLES), ids=lambda p: p.name)
def test_golden(engine, sample: Path) -> None:
    check_golden(engine, "mandrill", sample, HERE / "golden")


@pytest.mark.parametrize("form", sorted(SAMPLES.glob("*.form.txt")), ids=lambda p: p.name)
def test_form_body_and_decoded_json_array_map_alike(engine, form: Path) -> None:
    decoded = form.with_name(form.name.removesuffix(".form.txt") + ".json")
    from_form = engine.map("mandrill", form.read_bytes(), content_type=FORM, received_at=0)
    from_json = engine.map("mandrill", decoded.read_bytes(), content_type="application/json", received_at=0)
    assert from_form.events == from_json.events
    assert from_form.counts == from_json.counts
    assert [(s.index, s.rule_id) for s in from_form.skipped] == [(s.index, s.rule_id) for s in from_json.skipped]


def test_form_body_without_content_type_is_read_as_form(engine) -> None:
    body = (SAMPLES / "mandrill-test-open.form.txt").read_bytes()
    result = engine.map("mandrill", body)
    assert [e["action"] for e in result.events] == ["open"]


# --- event types -------------------------------------------------------------------------


def test_every_event_of_mandrills_test_batch_is_handled(engine) -> None:
    result = engine.map("mandrill", (SAMPLES / "mandrill-test-batch-all.form.txt").read_bytes(), content_type=FORM)
    assert_accounting(result)
    assert result.counts.received == 14
    assert not result.dead_letters
    outcomes = {s.rule_id for s in result.skipped} | {f"{e['type']}/{e['action']}" for e in result.events}
    assert outcomes == {
        "send", "deferral", "reject", "denylist-add", "denylist-remove", "allowlist",
        "reachability/unreachable", "email/soft_bounce", "email/open", "email/click", "consent/opt-out",
    }


@pytest.mark.parametrize(
    ("event", "outcome"),
    [
        ("send", "skip:send"),
        ("deferral", "skip:deferral"),
        ("delivered", "email/delivery"),
        ("open", "email/open"),
        ("click", "email/click"),
        ("hard_bounce", "reachability/unreachable:hard_bounce"),
        ("soft_bounce", "email/soft_bounce"),
        ("spam", "reachability/unreachable:spam_report"),
        ("unsub", "consent/opt-out"),
        ("reject", "skip:reject"),
        ("inbound", "skip:inbound"),
    ],
)
def test_message_event_outcomes(engine, event: str, outcome: str) -> None:
    result = map_events(engine, [message_event(event, url="https://shop.example.com/")])
    if outcome.startswith("skip:"):
        assert [s.rule_id for s in result.skipped] == [outcome[5:]]
        assert not result.events
        return
    (ev,) = result.events
    kind, _, update = outcome.partition(":")
    assert f"{ev['type']}/{ev['action']}" == kind
    assert ev["data"].get("reachability_update_type") == (update or None)
    assert ev["identifiers"] == {"email": "jane@example.com"}
    assert ev["data"]["target_address"] == "jane@example.com"
    assert ev["data"]["ts"] == 1700000000


@pytest.mark.parametrize(
    ("sync_type", "action", "rule"),
    [
        ("blacklist", "add", "denylist-add"),
        ("blacklist", "change", "denylist-add"),
        ("blacklist", "remove", "denylist-remove"),
        ("denylist", "add", "denylist-add"),
        ("whitelist", "add", "allowlist"),
        ("whitelist", "remove", "allowlist"),
        ("allowlist", "remove", "allowlist"),
    ],
)
def test_sync_events_are_skipped_with_a_reason(engine, sync_type: str, action: str, rule: str) -> None:
    entry = {"email": "jane@example.com", "reason": "hard-bounce"}
    result = map_events(engine, [{"type": sync_type, "action": action, "reject": entry, "ts": 1700000000}])
    assert [s.rule_id for s in result.skipped] == [rule]
    assert result.skipped[0].reason


def test_click_carries_the_url(engine) -> None:
    result = map_events(engine, [message_event("click", url="https://shop.example.com/sale?x=1")])
    assert result.events[0]["data"]["value"] == "https://shop.example.com/sale?x=1"


def test_click_without_url_is_still_a_click(engine) -> None:
    result = map_events(engine, [message_event("click")])
    assert result.events[0]["action"] == "click"
    assert "value" not in result.events[0]["data"]


@pytest.mark.parametrize(
    ("msg", "value"),
    [
        ({"bounce_description": "mailbox_full", "diag": "smtp;552 5.2.2 Over Quota"},
         "Reason: mailbox_full (smtp;552 5.2.2 Over Quota)"),
        ({"bounce_description": "general", "diag": None}, "Reason: general"),
        ({"bounce_description": None, "diag": "smtp;421 try later"}, "Reason: unknown (smtp;421 try later)"),
        ({}, "Reason: unknown"),
    ],
)
def test_soft_bounce_reason(engine, msg: dict[str, Any], value: str) -> None:
    result = map_events(engine, [message_event("soft_bounce", msg=msg)])
    assert result.events[0]["data"]["value"] == value


def test_hard_bounce_reason(engine) -> None:
    msg = {"bounce_description": "bad_mailbox", "bgtools_code": 10, "diag": "smtp;550 5.1.1 unknown user"}
    result = map_events(engine, [message_event("hard_bounce", msg=msg)])
    assert result.events[0]["data"]["value"] == "Reason: bad_mailbox (smtp;550 5.1.1 unknown user)"


# --- batches, ids, unknown events ------------------------------------------------------------


def test_url_validation_post_with_an_empty_batch_maps_to_nothing(engine) -> None:
    result = engine.map("mandrill", b"mandrill_events=%5B%5D", content_type=FORM)
    assert result.counts.received == 0
    assert not result.events and not result.skipped and not result.dead_letters


def test_unknown_future_event_type_is_a_dead_letter(engine) -> None:
    result = map_events(engine, [message_event("machine_learned")])
    assert [d.reason for d in result.dead_letters] == ["unmapped"]
    assert result.dead_letters[0].item["event"] == "machine_learned"


def test_unknown_sync_action_is_a_dead_letter(engine) -> None:
    result = map_events(engine, [{"type": "blacklist", "action": "expire", "reject": {"email": "a@example.com"}}])
    assert [d.reason for d in result.dead_letters] == ["unmapped"]


def test_repeated_event_in_a_batch_is_skipped_as_duplicate(engine) -> None:
    event = message_event("open")
    result = map_events(engine, [event, json.loads(json.dumps(event))])
    assert len(result.events) == 1
    assert result.counts.duplicates == 1
    assert result.skipped[0].reason == "duplicate of item 0 (id 'abc123:open:1700000000:')"


def test_repeated_opens_and_clicks_of_one_message_are_not_duplicates(engine) -> None:
    events = [
        message_event("open"),
        message_event("open", ts=1700000100),
        message_event("click", url="https://a.example.com/"),
        message_event("click", url="https://b.example.com/"),
    ]
    result = map_events(engine, events)
    assert result.counts.duplicates == 0
    assert [e["action"] for e in result.events] == ["open", "open", "click", "click"]


def test_message_id_falls_back_to_msg_id_for_tracking_lookup(engine) -> None:
    event = message_event("open", msg={"_id": "only-in-msg"})
    del event["_id"]
    asked: list[str] = []

    def lookup(message_id: str) -> dict[str, Any]:
        asked.append(message_id)
        return {"campaign_id": 42, "touchpoint_id": 7}

    result = map_events(engine, [event], tracking=lookup)
    assert asked == ["only-in-msg"]
    assert result.events[0]["data"]["campaign_id"] == 42
    assert result.counts.unattributed == 0


# --- campaign tracking and time ------------------------------------------------------------


def test_metadata_carries_campaign_tracking(engine) -> None:
    metadata = {
        "odp_campaign": "Winter sale", "odp_campaign_id": "42", "odp_touchpoint_id": "7",
        "odp_content": "Variant A", "odp_content_id": "9", "odp_campaign_schedule_run_ts": "1699990000",
        "order_ref": "A-1",
    }
    result = map_events(engine, [message_event("click", url="https://x.example/", msg={"metadata": metadata})])
    data = result.events[0]["data"]
    assert data["campaign"] == "Winter sale" and data["content"] == "Variant A"
    assert data["campaign_id"] == 42 and data["touchpoint_id"] == 7 and data["content_id"] == 9
    assert data["campaign_schedule_run_ts"] == 1699990000
    assert "order_ref" not in data
    assert result.counts.unattributed == 0


def test_metadata_with_unprefixed_integer_fields(engine) -> None:
    result = map_events(engine, [message_event("open", msg={"metadata": {"campaign_id": 42, "touchpoint_id": 7}})])
    assert result.events[0]["data"]["campaign_id"] == 42
    assert result.events[0]["data"]["touchpoint_id"] == 7


def test_missing_or_null_metadata_leaves_the_event_unattributed(engine) -> None:
    without = message_event("open")
    del without["msg"]["metadata"]
    result = map_events(engine, [without, message_event("open", ts=1700000001, msg={"metadata": None})])
    assert len(result.events) == 2
    assert result.counts.unattributed == 2


@pytest.mark.parametrize("ts", [1700000000, "1700000000", 1700000000.25, 1700000000123])
def test_event_time_is_epoch_seconds(engine, ts: Any) -> None:
    result = map_events(engine, [message_event("open", ts=ts)])
    assert result.events[0]["data"]["ts"] == 1700000000


# --- signature -------------------------------------------------------------------------------


def mandrill_signature(key: str, url: str, params: dict[str, str]) -> str:
    """Mandrill's documented algorithm: HMAC-SHA1 over the URL then each POST key and value,
    keys sorted, base64-encoded."""
    signed = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(hmac.new(key.encode(), signed.encode(), hashlib.sha1).digest()).decode()


def test_signature_verifies_through_the_engine(engine) -> None:
    raw = json.dumps([message_event("open")])
    body = urlencode({"mandrill_events": raw}).encode()
    headers = {"X-Mandrill-Signature": mandrill_signature(WEBHOOK_KEY, WEBHOOK_URL, {"mandrill_events": raw})}
    assert engine.verify("mandrill", body, headers, secret=WEBHOOK_KEY, url=WEBHOOK_URL)
    # Header names are case-insensitive.
    assert engine.verify("mandrill", body, {"x-mandrill-signature": headers["X-Mandrill-Signature"]},
                         secret=WEBHOOK_KEY, url=WEBHOOK_URL)


def test_signature_of_a_real_sample_body(engine) -> None:
    # Mandrill signs the decoded POST value (PHP's json_encode of the array, see SOURCES.md).
    body = (SAMPLES / "mandrill-test-batch-all.form.txt").read_bytes()
    params = {"mandrill_events": parse_qs(body.decode())["mandrill_events"][0]}
    headers = {"X-Mandrill-Signature": mandrill_signature(WEBHOOK_KEY, WEBHOOK_URL, params)}
    assert engine.verify("mandrill", body, headers, secret=WEBHOOK_KEY, url=WEBHOOK_URL)
    assert not engine.verify("mandrill", body.replace(b"bad_mailbox", b"bad_mailbax"), headers,
                             secret=WEBHOOK_KEY, url=WEBHOOK_URL)


def test_signature_empty_validation_batch(engine) -> None:
    body = b"mandrill_events=%5B%5D"
    headers = {"X-Mandrill-Signature": mandrill_signature(WEBHOOK_KEY, WEBHOOK_URL, {"mandrill_events": "[]"})}
    assert engine.verify("mandrill", body, headers, secret=WEBHOOK_KEY, url=WEBHOOK_URL)


def test_signature_rejects_tampering_wrong_key_wrong_url_and_no_header(engine) -> None:
    raw = json.dumps([message_event("open")])
    body = urlencode({"mandrill_events": raw}).encode()
    headers = {"X-Mandrill-Signature": mandrill_signature(WEBHOOK_KEY, WEBHOOK_URL, {"mandrill_events": raw})}
    tampered = urlencode({"mandrill_events": raw.replace("open", "spam")}).encode()
    assert not engine.verify("mandrill", tampered, headers, secret=WEBHOOK_KEY, url=WEBHOOK_URL)
    assert not engine.verify("mandrill", body, headers, secret="another-key", url=WEBHOOK_URL)
    assert not engine.verify("mandrill", body, headers, secret=WEBHOOK_KEY, url=WEBHOOK_URL + "?x=1")
    assert not engine.verify("mandrill", body, {}, secret=WEBHOOK_KEY, url=WEBHOOK_URL)
