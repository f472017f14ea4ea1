"""Twilio: golden tests over the sample callbacks, plus behaviour checks.

Status callbacks and incoming messages are form-encoded POSTs; the helpers below build
them the way Twilio does (``urlencode`` of the parameters).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from urllib.parse import urlencode

import pytest

from odpmap import Engine
from odpmap.testing import assert_accounting, assert_valid_events, check_golden, golden_cases, outcome, without_idempotence_ids

HERE = Path(__file__).parent
SAMPLES = HERE.parent / "src" / "odpmap_twilio" / "samples"
FORM = "application/x-www-form-urlencoded"
RECEIVED_AT = 1_700_000_123
SID = "SM4262411b90e5464b98a4f66a49c57a97"


@pytest.fixture(scope="module")
def engine():
    # Only this plugin (and odpmap's own mappings): fast, and independent of other plugins.
    return Engine(load_plugins=["twilio"])


@pytest.fixture(scope="module")
def tracking_engine(tmp_path_factory):
    """An engine with a tracking store, as a sender would use it (Engine.remember at send time)."""
    engine = Engine(data_dir=tmp_path_factory.mktemp("odpmap-data"), load_plugins=["twilio"])
    yield engine
    engine.close()


def status_callback(status: str, *, error: str | None = None, to: str = "+15622089096", sid: str = SID,
                    **extra: str) -> bytes:
    """A status callback as Twilio posts it (parameters of the symfony fixture)."""
    params = {"SmsSid": sid, "SmsStatus": status, "MessageStatus": status, "To": to,
              "MessagingServiceSid": "MG4d9d720b38f7892254869fabdca51e69", "MessageSid": sid,
              "AccountSid": "AC0db966d80e9f1662da09c61287f8bba1", "From": "+16232320112",
              "ApiVersion": "2010-04-01", **extra}
    if error is not None:
        params = {"ErrorCode": error, **params}
    return urlencode(params).encode()


def incoming(body: str, *, sender: str = "+14133881111", **extra: str) -> bytes:
    """An incoming-message webhook (parameters of courier's tw_incoming.json)."""
    params = {"ToCountry": "US", "SmsMessageSid": "SMe287d7109a5a925f182f0e07fe5b223b", "NumMedia": "0",
              "SmsSid": "SMe287d7109a5a925f182f0e07fe5b223b", "SmsStatus": "received", "Body": body,
              "To": "+12028831111", "NumSegments": "1", "MessageSid": "SMe287d7109a5a925f182f0e07fe5b223b",
              "AccountSid": "acctid", "From": sender, "ApiVersion": "2010-04-01", **extra}
    return urlencode(params).encode()


def map_form(engine: Engine, body: bytes, **kwargs):
    result = engine.map("twilio", body, content_type=FORM, received_at=RECEIVED_AT, **kwargs)
    assert_accounting(result)
    assert_valid_events(engine, result)
    return result


# --- golden files ------------------------------------------------------------------------


@pytest.mark.parametrize("sample", golden_cases(SAMPLES), ids=lambda p: p.name)
def test_golden(engine, sample: Path) -> None:
    check_golden(engine, "twilio", sample, HERE / "golden")


# --- statuses ------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "expected"), [
    ("accepted", "skip:in-progress"),
    ("scheduled", "skip:in-progress"),
    ("queued", "skip:in-progress"),
    ("sending", "skip:in-progress"),
    ("sent", "skip:in-progress"),
    ("canceled", "skip:canceled"),
    ("delivered", "sms/delivery"),
    ("read", "sms/open"),
    ("partially_delivered", "sms/delivery_unknown"),
    ("undelivered", "sms/soft_bounce"),
    ("failed", "sms/soft_bounce"),
    ("Delivered", "sms/delivery"),
])
def test_every_documented_outbound_status_is_handled(engine, status: str, expected: str) -> None:
    assert outcome(map_form(engine, status_callback(status))) == expected


def test_message_status_wins_over_the_legacy_sms_status(engine) -> None:
    body = status_callback("sent", SmsStatus="delivered")
    result = map_form(engine, body.replace(b"SmsStatus=sent&", b""))
    assert outcome(result) == "skip:in-progress"


def test_unknown_future_status_is_a_dead_letter(engine) -> None:
    result = map_form(engine, (HERE / "data" / "courier-status-invalid-status.form.txt").read_bytes())
    assert [d.reason for d in result.dead_letters] == ["unmapped"]
    assert result.dead_letters[0].item["MessageStatus"] == "huh"


def test_callback_without_recipient_is_a_dead_letter_not_a_guess(engine) -> None:
    result = map_form(engine, (HERE / "data" / "courier-status-delivered-minimal.form.txt").read_bytes())
    assert [d.reason for d in result.dead_letters] == ["template_error"]
    assert result.dead_letters[0].rule_id == "delivered"
    assert "e164: the value is null" in result.dead_letters[0].message


def test_repeated_status_change_in_one_report_is_skipped_as_duplicate(engine) -> None:
    item = {"MessageSid": SID, "MessageStatus": "delivered", "To": "+15622089096"}
    result = engine.map("twilio", [item, dict(item), dict(item, MessageStatus="read")], received_at=RECEIVED_AT)
    assert_accounting(result)
    assert [e["action"] for e in result.events] == ["delivery", "open"]
    assert result.counts.duplicates == 1
    assert result.skipped[0].reason == f"duplicate of item 0 (id '{SID}:delivered')"


# --- error codes ---------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "expected", "reason"), [
    ("30003", "sms/soft_bounce", "Unreachable destination handset"),
    ("30004", "sms/soft_bounce", "Message blocked"),
    ("30005", "reachability/unreachable (hard_bounce)", "Unknown destination handset"),
    ("30006", "reachability/unreachable (hard_bounce)", "Landline or unreachable carrier"),
    ("30007", "sms/soft_bounce", "Message filtered"),
    ("30008", "sms/soft_bounce", "Unknown error"),
    ("30034", "sms/soft_bounce", "US A2P 10DLC - Message from an Unregistered Number"),
    ("21211", "reachability/unreachable (hard_bounce)", "Invalid 'To' Phone Number"),
    ("21614", "reachability/unreachable (hard_bounce)", "'To' number is not a valid mobile number"),
    ("21635", "reachability/unreachable (hard_bounce)", "'To' number cannot be a landline"),
    ("30010", "sms/soft_bounce", "Message price exceeds max price"),
    ("99999", "sms/soft_bounce", "Twilio error"),
])
def test_error_codes(engine, code: str, expected: str, reason: str) -> None:
    for status in ("undelivered", "failed"):
        result = map_form(engine, status_callback(status, error=code))
        assert outcome(result) == expected
        data = result.events[0]["data"]
        assert data["value"] == f"Reason: {reason} (ErrorCode {code})"
        if expected.startswith("reachability"):
            assert data["reachability_update_type"] == "hard_bounce"


def test_21610_unsubscribed_recipient_is_a_consent_opt_out(engine) -> None:
    result = map_form(engine, status_callback("failed", error="21610"))
    assert without_idempotence_ids(result.events) == [{
        "type": "consent", "action": "opt-out", "identifiers": {"phone": "+15622089096"},
        "data": {"ts": RECEIVED_AT, "target_address": "+15622089096"},
    }]


def test_undelivered_without_error_code_is_a_soft_bounce(engine) -> None:
    result = map_form(engine, status_callback("undelivered"))
    assert result.events[0]["data"]["value"] == "Reason: undelivered without an ErrorCode"


# --- incoming messages ------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    "STOP", "stop", "  Stop  ", "Stop.", "STOPALL", "stop all", "UNSUBSCRIBE", "cancel", "END", "quit",
    "REVOKE", "optout",
])
def test_opt_out_keywords(engine, body: str) -> None:
    result = map_form(engine, incoming(body))
    assert without_idempotence_ids(result.events) == [{
        "type": "consent", "action": "opt-out", "identifiers": {"phone": "+14133881111"},
        "data": {"ts": RECEIVED_AT, "target_address": "+14133881111"},
    }]


def test_advanced_opt_out_type_wins_over_the_body(engine) -> None:
    """A custom opt-out keyword of an Advanced Opt-Out Messaging Service."""
    result = map_form(engine, incoming("ARRET", OptOutType="STOP"))
    assert outcome(result) == "consent/opt-out"


@pytest.mark.parametrize(("body", "extra", "expected"), [
    ("START", {}, "skip:inbound-opt-in"),
    ("yes", {}, "skip:inbound-opt-in"),
    ("UNSTOP", {}, "skip:inbound-opt-in"),
    ("SUBSCRIBE", {"OptOutType": "START"}, "skip:inbound-opt-in"),
    ("HELP", {}, "skip:inbound-help"),
    ("info", {}, "skip:inbound-help"),
    ("Thanks!", {}, "sms/engage"),
    ("stop it, I love these offers", {}, "sms/engage"),
    ("", {"NumMedia": "1", "MediaUrl0": "https://api.twilio.com/media/cat.jpg"}, "sms/engage"),
])
def test_other_incoming_messages(engine, body: str, extra: dict[str, str], expected: str) -> None:
    assert outcome(map_form(engine, incoming(body, **extra))) == expected


def test_opt_in_skip_says_why(engine) -> None:
    result = map_form(engine, incoming("START"))
    assert "ODP has no opt-in event" in result.skipped[0].reason


def test_reply_identifies_the_sender(engine) -> None:
    result = map_form(engine, incoming("See you Friday", sender="+447700900123"))
    assert result.events[0]["identifiers"] == {"phone": "+447700900123"}
    assert result.events[0]["data"]["target_address"] == "+447700900123"


# --- WhatsApp -------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "expected"), [
    (status_callback("delivered", to="whatsapp:+15622089096"), "whatsapp/delivery"),
    (status_callback("read", to="whatsapp:+15622089096"), "whatsapp/open"),
    (status_callback("sent", to="whatsapp:+15622089096"), "skip:in-progress"),
    (status_callback("failed", to="whatsapp:+15622089096", error="63016"), "whatsapp/soft_bounce"),
    (status_callback("undelivered", to="whatsapp:+15622089096", error="63024"), "whatsapp/soft_bounce"),
    (incoming("Hello", sender="whatsapp:+14133881111"), "whatsapp/engage"),
    (incoming("STOP", sender="whatsapp:+14133881111"), "consent/opt-out"),
])
def test_whatsapp_messages_use_the_whatsapp_type_and_an_e164_phone(engine, body: bytes, expected: str) -> None:
    result = map_form(engine, body)
    assert outcome(result) == expected
    if result.events:
        phone = result.events[0]["identifiers"]["phone"]
        assert phone in ("+15622089096", "+14133881111")
        assert result.events[0]["data"]["target_address"] == phone


# --- campaign tracking ------------------------------------------------------------------------


TRACKING = {"campaign": "Winter sale", "campaign_id": "42", "touchpoint_id": 7, "content": "Variant A",
            "content_id": "9", "campaign_schedule_run_ts": "1699990000"}


def test_tracking_remembered_at_send_time_is_added_to_the_callback(tracking_engine) -> None:
    sid = "SM11111111111111111111111111111111"
    tracking_engine.remember("twilio", sid, TRACKING)
    result = map_form(tracking_engine, status_callback("delivered", sid=sid))
    assert result.counts.unattributed == 0
    data = result.events[0]["data"]
    assert data["campaign"] == "Winter sale" and data["content"] == "Variant A"
    assert data["campaign_id"] == 42 and data["touchpoint_id"] == 7 and data["content_id"] == 9
    assert data["campaign_schedule_run_ts"] == 1699990000


def test_tracking_follows_the_message_through_every_status(tracking_engine) -> None:
    sid = "SM22222222222222222222222222222222"
    tracking_engine.remember("twilio", sid, {"odp_campaign_id": 42, "odp_touchpoint_id": 7})
    read = map_form(tracking_engine, status_callback("read", to="whatsapp:+15622089096", sid=sid))
    bounced = map_form(tracking_engine, status_callback("undelivered", error="30003", sid=sid))
    assert read.events[0]["data"]["campaign_id"] == 42
    assert bounced.events[0]["data"]["touchpoint_id"] == 7


def test_without_remembered_tracking_attributable_events_are_counted_unattributed(tracking_engine) -> None:
    tracking_engine.remember("twilio", "SM33333333333333333333333333333333", {"campaign_id": 1})
    result = map_form(tracking_engine, status_callback("delivered", sid="SM44444444444444444444444444444444"))
    assert result.counts.unattributed == 1
    assert "campaign_id" not in result.events[0]["data"]


def test_incoming_reply_has_its_own_sid_so_it_is_unattributed(tracking_engine) -> None:
    result = map_form(tracking_engine, incoming("Thanks!"))
    assert outcome(result) == "sms/engage"
    assert result.counts.unattributed == 1


def test_tracking_lookup_passed_by_the_caller(engine) -> None:
    seen: list[str] = []

    def lookup(message_id: str):
        seen.append(message_id)
        return {"campaign_id": "42"}

    result = map_form(engine, status_callback("delivered"), tracking=lookup)
    assert seen == [SID]
    assert result.events[0]["data"]["campaign_id"] == 42


# --- timestamps -------------------------------------------------------------------------------


def test_callbacks_use_the_receive_time(engine) -> None:
    result = engine.map("twilio", status_callback("delivered"), content_type=FORM, received_at=1_712_345_678.9)
    assert result.events[0]["data"]["ts"] == 1_712_345_678


def test_messages_list_pages_use_date_updated(engine) -> None:
    page = json.loads((SAMPLES / "docs-messages-list-page.json").read_text())
    page["messages"][0]["status"] = "delivered"
    page["messages"][0]["date_updated"] = "Fri, 04 Sep 2015 22:54:41 +0200"
    result = engine.map("twilio", json.dumps(page), content_type="application/json", received_at=RECEIVED_AT)
    assert result.events[0]["data"]["ts"] == 1441400081  # 2015-09-04T20:54:41Z
    assert result.events[0]["identifiers"] == {"phone": "+14155552345"}


def test_messages_list_page_inbound_message_is_a_reply(engine) -> None:
    page = json.loads((SAMPLES / "docs-messages-list-page.json").read_text())
    page["messages"][0].update(direction="inbound", status="received", body="Thanks", **{"from": "+14155550100"})
    result = engine.map("twilio", json.dumps(page), content_type="application/json", received_at=RECEIVED_AT)
    assert outcome(result) == "sms/engage"
    assert result.events[0]["identifiers"] == {"phone": "+14155550100"}


# --- signatures -------------------------------------------------------------------------------


VECTOR = json.loads((HERE / "data" / "signature-twilio-docs-example.json").read_text())
WEBHOOK_URL = "https://odp.example.com/webhooks/twilio"


def twilio_signature(token: str, url: str, body: bytes) -> str:
    """Twilio's documented algorithm: URL + each POST parameter sorted by name, HMAC-SHA1, base64."""
    from urllib.parse import parse_qsl

    data = url + "".join(name + value for name, value in sorted(parse_qsl(body.decode(), keep_blank_values=True)))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def test_documented_signature_vector_verifies_through_the_engine(engine) -> None:
    body = urlencode(VECTOR["params"]).encode()
    headers = {VECTOR["header"]: VECTOR["expected_signature"]}
    assert twilio_signature(VECTOR["auth_token"], VECTOR["url"], body) == VECTOR["expected_signature"]
    assert engine.verify("twilio", body, headers, secret=VECTOR["auth_token"], url=VECTOR["url"])
    assert not engine.verify("twilio", body.replace(b"1234", b"1235"), headers,
                             secret=VECTOR["auth_token"], url=VECTOR["url"])
    assert not engine.verify("twilio", body, headers, secret="54321", url=VECTOR["url"])


def test_signed_status_callback_verifies_and_tampering_is_refused(engine) -> None:
    token = "0123456789abcdef0123456789abcdef"
    body = (SAMPLES / "va-notify-status-failed-30010.form.txt").read_bytes()
    headers = {"X-Twilio-Signature": twilio_signature(token, WEBHOOK_URL, body)}
    assert engine.verify("twilio", body, headers, secret=token, url=WEBHOOK_URL)
    assert engine.verify("twilio", body, headers, secret=token, url="https://odp.example.com:443/webhooks/twilio")
    assert not engine.verify("twilio", body.replace(b"ErrorCode=30010", b"ErrorCode=30005"), headers,
                             secret=token, url=WEBHOOK_URL)
    assert not engine.verify("twilio", body, headers, secret="another-auth-token", url=WEBHOOK_URL)
    assert not engine.verify("twilio", body, headers, secret=token, url=WEBHOOK_URL + "?x=1")
    assert not engine.verify("twilio", body, {}, secret=token, url=WEBHOOK_URL)
