"""Vonage (mapping library provider ``mappings/vonage.yaml``): golden tests over its samples,
plus behaviour checks for delivery receipts (GET query, POST form, POST JSON), inbound SMS
and signed webhooks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import urlencode

import pytest
from odpmap import Engine
from odpmap.testing import assert_accounting, assert_valid_events, check_golden, golden_cases, outcome, without_idempotence_ids

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "mappings" / "samples" / "vonage"
GOLDEN = Path(__file__).parent / "golden" / "vonage"
RECEIVED_AT = 1_700_000_123

# The SMS API reference's delivery receipt example, unsigned fields.
DLR = {
    "msisdn": "447700900000", "to": "AcmeInc", "network-code": "12345", "messageId": "0A0000001234567B",
    "price": "0.03330000", "status": "delivered", "scts": "2001011400", "err-code": "0",
    "api-key": "abcd1234", "client-ref": "my-personal-reference", "message-timestamp": "2020-01-01 12:00:00 +0000",
}
DLR_TS = 1577880000  # 2020-01-01T12:00:00Z
# The inbound message example, without concatenation and signature fields.
INBOUND = {
    "messageId": "0A0000000123ABCD1", "msisdn": "447700900001", "to": "447700900000", "text": "Hello world",
    "type": "text", "keyword": "HELLO", "message-timestamp": "2020-01-01T12:00:00.000+00:00",
}


@pytest.fixture(scope="module")
def engine() -> Engine:
    # odpmap's own providers only: vonage ships in the mapping library.
    return Engine(autoload=False, environ={})


def dlr(**fields: str) -> dict[str, str]:
    return {**DLR, **fields}


def inbound(text: str, **fields: str) -> dict[str, str]:
    return {**INBOUND, "text": text, "keyword": text.split()[0].upper() if text.split() else "", **fields}


def map_json(engine: Engine, item: dict[str, str], **kwargs):
    result = engine.map("vonage", json.dumps(item), content_type="application/json", received_at=RECEIVED_AT,
                        **kwargs)
    assert_accounting(result)
    assert_valid_events(engine, result)
    return result


# --- golden files ------------------------------------------------------------------------


def test_the_mapping_names_its_samples(engine) -> None:
    samples = engine.samples("vonage")
    assert {s.name for s in samples} == {p.name for p in golden_cases(SAMPLES)}
    assert len(samples) >= 20


@pytest.mark.parametrize("sample", golden_cases(SAMPLES), ids=lambda p: p.name)
def test_golden(engine, sample: Path) -> None:
    check_golden(engine, "vonage", sample, GOLDEN)


@pytest.mark.parametrize("sample", golden_cases(SAMPLES / "messages-api"), ids=lambda p: p.name)
def test_messages_api_webhooks_are_not_this_providers(engine, sample: Path) -> None:
    """Messages API status webhooks (message_uuid, JWT-signed) are another product: every one
    is a dead letter ``unmapped``, never an event built from the wrong fields."""
    result = check_golden(engine, "vonage", sample, GOLDEN / "messages-api")
    assert [d.reason for d in result.dead_letters] == ["unmapped"]


# --- delivery receipts -------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "err", "expected"), [
    ("delivered", "0", "sms/delivery"),
    ("accepted", "0", "skip:in-progress"),
    ("buffered", "0", "skip:in-progress"),
    ("unknown", "1", "sms/delivery_unknown"),
    ("expired", "1", "sms/soft_bounce"),
    ("failed", "2", "sms/soft_bounce"),
    ("rejected", "3", "reachability/unreachable (hard_bounce)"),
    ("DELIVERED", "0", "sms/delivery"),
])
def test_every_documented_status_is_handled(engine, status: str, err: str, expected: str) -> None:
    assert outcome(map_json(engine, dlr(status=status, **{"err-code": err}))) == expected


@pytest.mark.parametrize(("code", "expected", "meaning"), [
    ("1", "sms/soft_bounce", "Unknown"),
    ("2", "sms/soft_bounce", "Absent Subscriber - Temporary"),
    ("3", "reachability/unreachable (hard_bounce)", "Absent Subscriber - Permanent"),
    ("4", "reachability/unreachable (hard_bounce)", "Call Barred by User"),
    ("5", "sms/soft_bounce", "Portability Error"),
    ("6", "sms/soft_bounce", "Anti-Spam Rejection"),
    ("7", "sms/soft_bounce", "Handset Busy"),
    ("8", "sms/soft_bounce", "Network Error"),
    ("10", "sms/soft_bounce", "Illegal Message"),
    ("11", "sms/soft_bounce", "Unroutable"),
    ("12", "reachability/unreachable (hard_bounce)", "Destination Unreachable"),
    ("13", "sms/soft_bounce", "Subscriber Age Restriction"),
    ("14", "sms/soft_bounce", "Number Blocked by Carrier"),
    ("15", "sms/soft_bounce", "Prepaid Insufficient Funds"),
    ("16", "sms/soft_bounce", "Gateway Quota Exceeded"),
    ("50", "sms/soft_bounce", "Entity Filter"),
    ("51", "sms/soft_bounce", "Header Filter"),
    ("52", "sms/soft_bounce", "Content Filter"),
    ("53", "sms/soft_bounce", "Consent Filter"),
    ("54", "sms/soft_bounce", "Regulation Error"),
    ("99", "sms/soft_bounce", "General Error"),
    ("77", "sms/soft_bounce", "error"),
])
def test_err_codes(engine, code: str, expected: str, meaning: str) -> None:
    for status in ("failed", "rejected"):
        result = map_json(engine, dlr(status=status, **{"err-code": code}))
        assert outcome(result) == expected
        data = result.events[0]["data"]
        assert data["value"] == f"Reason: {meaning} (status {status}, err-code {code})"
        assert result.events[0]["identifiers"] == {"phone": "+447700900000"}
        if expected.startswith("reachability"):
            assert data["reachability_update_type"] == "hard_bounce"


@pytest.mark.parametrize("status", ["failed", "rejected"])
def test_err_code_9_is_the_recipient_opting_out(engine, status: str) -> None:
    result = map_json(engine, dlr(status=status, **{"err-code": "9"}))
    assert without_idempotence_ids(result.events) == [{
        "type": "consent", "action": "opt-out", "identifiers": {"phone": "+447700900000"},
        "data": {"ts": DLR_TS, "target_address": "+447700900000"},
    }]


def test_failed_without_err_code_is_a_soft_bounce(engine) -> None:
    item = dlr(status="failed")
    del item["err-code"]
    assert map_json(engine, item).events[0]["data"]["value"] == "Reason: failed without an err-code"


def test_unknown_future_status_is_a_dead_letter(engine) -> None:
    result = map_json(engine, dlr(status="teleported"))
    assert [d.reason for d in result.dead_letters] == ["unmapped"]
    assert result.dead_letters[0].item["status"] == "teleported"


def test_repeated_receipt_in_one_report_is_skipped_as_duplicate(engine) -> None:
    result = engine.map("vonage", [DLR, dict(DLR), dlr(status="failed", **{"err-code": "3"})],
                        received_at=RECEIVED_AT)
    assert_accounting(result)
    assert [e["action"] for e in result.events] == ["delivery", "unreachable"]
    assert result.counts.duplicates == 1
    assert result.skipped[0].reason == "duplicate of item 0 (id '0A0000001234567B:delivered')"


def test_get_query_post_form_and_post_json_give_the_same_events(engine) -> None:
    item = dlr(status="rejected", **{"err-code": "4"})
    query = urlencode(item).encode()
    as_query = engine.map("vonage", query, received_at=RECEIVED_AT)  # GET: the raw query string
    as_query_with_mark = engine.map("vonage", b"?" + query, received_at=RECEIVED_AT)
    as_form = engine.map("vonage", query, content_type="application/x-www-form-urlencoded; charset=UTF-8",
                         received_at=RECEIVED_AT)
    as_json = engine.map("vonage", json.dumps(item).encode(), content_type="application/json",
                         received_at=RECEIVED_AT)
    assert as_query.events == as_query_with_mark.events == as_form.events == as_json.events
    assert outcome(as_json) == "reachability/unreachable (hard_bounce)"


# --- timestamps ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "expected"), [
    ({"message-timestamp": "2020-01-01 12:00:00"}, DLR_TS),
    ({"message-timestamp": "2020-01-01 12:00:00 +0000"}, DLR_TS),
    ({"message-timestamp": "2020-01-01T13:00:00.000+01:00"}, DLR_TS),
    ({"message-timestamp": "", "timestamp": "1582650446"}, 1582650446),
    ({"message-timestamp": "", "scts": "2001011400"}, RECEIVED_AT),
])
def test_event_time(engine, fields: dict[str, str], expected: int) -> None:
    """message-timestamp (UTC), else the signing timestamp, else the receive time; never scts,
    which is in the carrier's local time."""
    assert map_json(engine, dlr(**fields)).events[0]["data"]["ts"] == expected


def test_event_time_without_any_timestamp_is_the_receive_time(engine) -> None:
    item = dict(DLR)
    del item["message-timestamp"], item["scts"]
    assert map_json(engine, item).events[0]["data"]["ts"] == RECEIVED_AT


# --- inbound SMS -----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["STOP", "stop", " Stop. ", "STOPALL", "Unsubscribe", "CANCEL", "end", "QUIT"])
def test_inbound_opt_out_keywords(engine, text: str) -> None:
    result = map_json(engine, inbound(text))
    assert without_idempotence_ids(result.events) == [{
        "type": "consent", "action": "opt-out", "identifiers": {"phone": "+447700900001"},
        "data": {"ts": DLR_TS, "target_address": "+447700900001"},
    }]


@pytest.mark.parametrize(("text", "expected"), [
    ("START", "skip:inbound-opt-in"),
    ("unstop", "skip:inbound-opt-in"),
    ("JOIN", "skip:inbound-opt-in"),
    ("HELP", "skip:inbound-help"),
    ("info", "skip:inbound-help"),
    ("Yes please, book me in", "sms/engage"),
    ("stop sending me the weekly digest please", "sms/engage"),
])
def test_other_inbound_messages(engine, text: str, expected: str) -> None:
    assert outcome(map_json(engine, inbound(text))) == expected


def test_binary_inbound_message_is_a_reply(engine) -> None:
    item = {k: v for k, v in INBOUND.items() if k not in ("text", "keyword")}
    item.update(type="binary", data="0605040B8423F0", udh="050003CC0201")
    assert outcome(map_json(engine, item)) == "sms/engage"


@pytest.mark.parametrize(("part", "expected"), [("1", "sms/engage"), ("2", "skip:inbound-part"),
                                                 ("3", "skip:inbound-part")])
def test_a_long_inbound_message_is_one_reply(engine, part: str, expected: str) -> None:
    item = inbound("Hello world", concat="true", **{"concat-ref": "1", "concat-total": "3", "concat-part": part})
    assert outcome(map_json(engine, item)) == expected


def test_inbound_identifies_the_sender_not_the_virtual_number(engine) -> None:
    event = map_json(engine, inbound("Thanks")).events[0]
    assert event["identifiers"] == {"phone": "+447700900001"}
    assert event["data"]["target_address"] == "+447700900001"


# --- campaign tracking ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tracking_engine(tmp_path_factory):
    engine = Engine(autoload=False, environ={}, data_dir=tmp_path_factory.mktemp("odpmap-data"))
    yield engine
    engine.close()


def test_tracking_remembered_at_send_time_is_added_to_the_receipt(tracking_engine) -> None:
    tracking_engine.remember("vonage", "0A00000011111111", {
        "campaign": "Winter sale", "campaign_id": "42", "touchpoint_id": "7", "content_id": 9,
        "campaign_schedule_run_ts": "1699990000",
    })
    result = map_json(tracking_engine, dlr(messageId="0A00000011111111"))
    assert result.counts.unattributed == 0
    data = result.events[0]["data"]
    assert data["campaign"] == "Winter sale"
    assert data["campaign_id"] == 42 and data["touchpoint_id"] == 7 and data["content_id"] == 9
    assert data["campaign_schedule_run_ts"] == 1699990000


def test_receipt_without_remembered_tracking_is_unattributed(tracking_engine) -> None:
    result = map_json(tracking_engine, dlr(messageId="0A00000022222222"))
    assert result.counts.unattributed == 1
    assert "campaign_id" not in result.events[0]["data"]


def test_inbound_message_id_is_not_looked_up(engine) -> None:
    seen: list[str] = []
    map_json(engine, inbound("Thanks"), tracking=lambda message_id: seen.append(message_id))
    map_json(engine, DLR, tracking=lambda message_id: seen.append(message_id))
    assert seen == ["0A0000001234567B"]


# --- signatures ----------------------------------------------------------------------------------------

SECRET = "vonage-signature-secret"
SIGNED_AT = 1_582_650_446


def signed(params: dict[str, str], secret: str = SECRET) -> dict[str, str]:
    """Vonage's md5hash signature: every parameter but sig, sorted, as ``&name=value`` (``&``
    and ``=`` in values replaced by ``_``), then the secret; hex MD5."""
    params = {**params, "timestamp": str(SIGNED_AT), "nonce": "ec11dd3e-1e7f-4db5-9467-82b02cd223b9"}
    canonical = "".join(f"&{k}={params[k].replace('&', '_').replace('=', '_')}" for k in sorted(params))
    return {**params, "sig": hashlib.md5((canonical + secret).encode()).hexdigest()}


@pytest.mark.parametrize("encode", [
    lambda p: urlencode(p).encode(),                # GET query string or POST form
    lambda p: b"?" + urlencode(p).encode(),         # a query string with its "?"
    lambda p: json.dumps(p).encode(),               # POST-JSON
], ids=["query-or-form", "query-with-mark", "json"])
def test_signed_receipt_verifies_through_the_engine(engine, encode) -> None:
    body = encode(signed(DLR))
    assert engine.verify("vonage", body, {}, secret=SECRET, now=SIGNED_AT + 10)
    assert not engine.verify("vonage", body.replace(b"delivered", b"failed"), {}, secret=SECRET, now=SIGNED_AT + 10)
    assert not engine.verify("vonage", body, {}, secret="another-secret", now=SIGNED_AT + 10)
    assert not engine.verify("vonage", body, {}, secret=SECRET, now=SIGNED_AT + 301)  # stale
    assert not engine.verify("vonage", body, {}, secret=SECRET, now=SIGNED_AT - 301)


def test_signed_inbound_message_with_reserved_characters_verifies(engine) -> None:
    body = urlencode(signed(inbound("Tom & Jerry = fun"))).encode()
    assert engine.verify("vonage", body, {}, secret=SECRET, now=SIGNED_AT)
    assert outcome(engine.map("vonage", body, received_at=RECEIVED_AT)) == "sms/engage"


def test_unsigned_webhook_is_refused(engine) -> None:
    assert not engine.verify("vonage", urlencode(DLR).encode(), {}, secret=SECRET, now=SIGNED_AT)
