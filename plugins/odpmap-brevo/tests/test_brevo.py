"""Brevo: golden tests over the sample events, plus behaviour checks."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from odpmap import Engine
from odpmap.errors import SignatureConfigError
from odpmap.testing import (
    GOLDEN_RECEIVED_AT,
    assert_accounting,
    assert_valid_events,
    check_golden,
    golden_cases,
    outcome,
    without_idempotence_ids,
)
from odpmap_brevo import brevo_custom

HERE = Path(__file__).parent
SAMPLES = HERE.parent / "src" / "odpmap_brevo" / "samples"


@pytest.fixture(scope="module")
def engine() -> Engine:
    # Only this plugin (and odpmap's built-ins): fast, and independent of other plugins
    # installed next to it. tests/data holds the README's basic-auth mapping (brevo-basic).
    return Engine(load_plugins=["brevo"], mapping_paths=[HERE / "data"])


def run(engine: Engine, report: Any, **kwargs: Any):
    result = engine.map("brevo", report, received_at=GOLDEN_RECEIVED_AT, **kwargs)
    assert_accounting(result)
    assert_valid_events(engine, result)
    return result


def event(name: str, **fields: Any) -> dict[str, Any]:
    """A transactional event shaped like symfony's 2023 captures."""
    base = {
        "id": 814119, "email": "jane@example.com", "event": name,
        "message-id": "<202305311408.17112967225@smtp-relay.mailin.fr>",
        "ts": 1685542108, "ts_event": 1685542108, "ts_epoch": 1685542108462,
    }
    base.update(fields)
    return base


# --- golden files --------------------------------------------------------------------


@pytest.mark.parametrize("sample", golden_cases(SAMPLES), ids=lambda p: p.name)
def test_golden(engine: Engine, sample: Path) -> None:
    check_golden(engine, "brevo", sample, HERE / "golden")


def test_every_sample_is_mapped_or_skipped(engine: Engine) -> None:
    for sample in golden_cases(SAMPLES):
        result = run(engine, sample.read_bytes(), content_type="application/json")
        assert not result.dead_letters, (sample.name, result.dead_letters)


# --- the event table -------------------------------------------------------------------

EVENT_TABLE = [
    # transactional (docs names)
    ("request", "skip:request"),
    ("deferred", "skip:deferred"),
    ("delivered", "email/delivery"),
    ("opened", "email/open"),
    ("unique_opened", "email/open"),
    ("proxy_open", "skip:proxy-open"),
    ("unique_proxy_open", "skip:proxy-open"),
    ("click", "email/click"),
    ("hard_bounce", "reachability/unreachable (hard_bounce)"),
    ("invalid_email", "reachability/unreachable (hard_bounce)"),
    ("soft_bounce", "email/soft_bounce"),
    ("blocked", "email/soft_bounce"),
    ("error", "email/soft_bounce"),
    ("spam", "reachability/unreachable (spam_report)"),
    ("unsubscribed", "consent/opt-out"),
    # other spellings of the same events
    ("complaint", "reachability/unreachable (spam_report)"),
    ("unsubscribe", "consent/opt-out"),
    ("hard_bounced", "reachability/unreachable (hard_bounce)"),
    ("soft_bounced", "email/soft_bounce"),
    ("unique_proxy_opened", "skip:proxy-open"),
    ("Delivered", "email/delivery"),
    # marketing contact events
    ("list_addition", "skip:list-addition"),
    ("contact_updated", "skip:contact-change"),
    ("contact_deleted", "skip:contact-change"),
]


@pytest.mark.parametrize(("name", "expected"), EVENT_TABLE, ids=[n for n, _ in EVENT_TABLE])
def test_event_table(engine: Engine, name: str, expected: str) -> None:
    assert outcome(run(engine, event(name, reason="x", link="https://x.example/"))) == expected


@pytest.mark.parametrize(("name", "expected"), [(n, o) for n, o in EVENT_TABLE if not n.startswith(("request", "deferred"))])
def test_marketing_events_map_like_transactional_ones(engine: Engine, name: str, expected: str) -> None:
    marketing = {"id": 1, "camp_id": 960, "campaign name": "Spring", "email": "jane@example.com", "event": name,
                 "date_sent": "2024-11-13 17:03:03", "date_event": "2024-12-13 10:36:06", "tag": "",
                 "ts_sent": 1731513783, "ts_event": 1734082566, "ts": 1734082566, "URL": "https://x.example/"}
    result = run(engine, marketing)
    assert outcome(result) == expected
    for e in result.events:
        assert e["data"]["ts"] == 1734082566
        assert "campaign_id" not in e["data"]  # Brevo's camp_id is not an ODP campaign id


def test_unknown_future_event_type_is_a_dead_letter(engine: Engine) -> None:
    result = run(engine, event("unique_coupon_sent"))
    assert [d.reason for d in result.dead_letters] == ["unmapped"]
    assert result.dead_letters[0].item["event"] == "unique_coupon_sent"


def test_item_without_event_is_a_dead_letter(engine: Engine) -> None:
    result = run(engine, {"email": "jane@example.com", "ts_event": 1685542108})
    assert [d.reason for d in result.dead_letters] == ["unmapped"]


def test_inbound_parsing_payload_posted_here_is_a_dead_letter(engine: Engine) -> None:
    result = run(engine, {"items": [{"Uuid": ["x"], "Subject": "hi"}]})
    assert [d.reason for d in result.dead_letters] == ["unmapped"]


# --- bounces, blocks and reasons ------------------------------------------------------

BLOCK_REASONS = [
    ("blocked : due to blacklist user", "skip:blocked-suppressed"),      # live capture (anymail)
    ("blocked : due to unsubscribed user", "skip:blocked-suppressed"),   # live capture (symfony)
    ("blocked : due to hardbounce user", "skip:blocked-suppressed"),     # inferred spelling
    ("blocked : due to hard bounce user", "skip:blocked-suppressed"),
    ("blocked : due to complaint user", "skip:blocked-suppressed"),
    ("blocked : due to blocklist user", "skip:blocked-suppressed"),
    ("blocked : sender domain not verified", "email/soft_bounce"),
    ("", "email/soft_bounce"),
]


@pytest.mark.parametrize(("reason", "expected"), BLOCK_REASONS, ids=[r or "no-reason" for r, _ in BLOCK_REASONS])
def test_blocked_reasons(engine: Engine, reason: str, expected: str) -> None:
    fields = {"reason": reason} if reason else {}
    result = run(engine, event("blocked", **fields))
    assert outcome(result) == expected
    if result.events:
        assert result.events[0]["data"]["value"] == f"Reason: {reason or 'blocked by Brevo'}"


@pytest.mark.parametrize(("raw", "value"), [
    (" RecipientError: 550 5.5.0 Requested action not taken: mailbox unavailable.",
     "Reason: RecipientError: 550 5.5.0 Requested action not taken: mailbox unavailable."),
    ("550-5.1.1 The email account\n   550 5.1.1  does not exist", "Reason: 550-5.1.1 The email account 550 5.1.1 does not exist"),
    ("undefined Unable to find MX of domain no-mx.example.com", "Reason: Unable to find MX of domain no-mx.example.com"),
    (None, "Reason: hard bounce"),
])
def test_bounce_reason_is_cleaned(engine: Engine, raw: str | None, value: str) -> None:
    fields = {} if raw is None else {"reason": raw}
    result = run(engine, event("hard_bounce", **fields))
    assert result.events[0]["data"]["value"] == value


@pytest.mark.parametrize(("name", "value"), [
    ("soft_bounce", "Reason: soft bounce"),
    ("invalid_email", "Reason: invalid email address"),
    ("error", "Reason: sending error"),
])
def test_default_reasons(engine: Engine, name: str, value: str) -> None:
    assert run(engine, event(name)).events[0]["data"]["value"] == value


def test_spam_report_carries_no_value(engine: Engine) -> None:
    data = run(engine, event("spam", reason="undesired")).events[0]["data"]
    assert data["reachability_update_type"] == "spam_report" and "value" not in data


def test_click_value_is_the_link(engine: Engine) -> None:
    assert run(engine, event("click", link="https://a.example/p?q=1")).events[0]["data"]["value"] == "https://a.example/p?q=1"
    marketing = {"camp_id": 1, "email": "jane@example.com", "event": "click", "URL": "https://m.example/", "ts_event": 1734082566}
    assert run(engine, marketing).events[0]["data"]["value"] == "https://m.example/"
    assert "value" not in run(engine, event("click")).events[0]["data"]


def test_marketing_unsubscribe_with_lists_is_a_global_opt_out(engine: Engine) -> None:
    result = run(engine, (SAMPLES / "docs-marketing-unsubscribed.json").read_bytes(), content_type="application/json")
    assert [(e["type"], e["action"]) for e in result.events] == [("consent", "opt-out")]
    assert "list_id" not in result.events[0]["data"]


# --- timestamps -----------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "ts"), [
    # anymail's live capture: ts/ts_event 9 hours off the UTC ts_epoch (ms)
    ({"ts": 1520331023, "ts_event": 1520331023, "ts_epoch": 1520363423000}, 1520363423),
    ({"ts_epoch": 1604933623, "ts_event": 1604933654}, 1604933623),   # docs example: ts_epoch in seconds
    ({"ts_epoch": "1685542108462"}, 1685542108),                       # as a string
    ({"ts_event": 1604933737, "ts": 1604937337}, 1604933737),          # marketing: ts_event before ts
    ({"ts": 1604937111}, 1604937111),                                  # contact events: ts only
    ({"s_epoch": 1534486682000}, 1534486682),                          # the docs' proxy_open typo
    ({"ts_epoch": None, "ts_event": 1604933654}, 1604933654),          # null is passed over
    ({"date": "2020-10-09 00:00:00"}, GOLDEN_RECEIVED_AT),             # local time only: receive time
])
def test_event_time(engine: Engine, fields: dict[str, Any], ts: int) -> None:
    item = {"event": "delivered", "email": "jane@example.com", "message-id": "<a@b>", **fields}
    assert run(engine, item).events[0]["data"]["ts"] == ts


# --- batches and duplicates -------------------------------------------------------------


def test_batched_webhook_array(engine: Engine) -> None:
    result = run(engine, (SAMPLES / "derived-batched-array.json").read_bytes(), content_type="application/json")
    assert result.counts.received == 6
    assert [s.rule_id for s in result.skipped] == ["request"]
    assert [f"{e['type']}/{e['action']}" for e in result.events] == [
        "email/delivery", "email/open", "email/open", "email/click", "reachability/unreachable",
    ]


def test_repeated_event_in_a_batch_is_skipped_as_duplicate(engine: Engine) -> None:
    click = event("click", link="https://x.example/")
    result = run(engine, [click, dict(click)])
    assert len(result.events) == 1
    assert result.counts.duplicates == 1
    assert result.skipped[0].reason.startswith("duplicate of item 0 (id '202305311408.17112967225@smtp-relay.mailin.fr|click|")


def test_duplicate_key_ignores_angle_brackets(engine: Engine) -> None:
    with_brackets = event("delivered")
    without = dict(with_brackets, **{"message-id": "202305311408.17112967225@smtp-relay.mailin.fr"})
    assert run(engine, [with_brackets, without]).counts.duplicates == 1


@pytest.mark.parametrize("change", [
    {"ts_epoch": 1685542109000},                 # a second open later
    {"link": "https://y.example/"},              # another link
    {"event": "unique_opened"},                  # another event type
    {"message-id": "<other@smtp-relay.mailin.fr>"},
])
def test_distinct_events_in_a_batch_are_not_duplicates(engine: Engine, change: dict[str, Any]) -> None:
    first = event("opened", link="https://x.example/")
    assert run(engine, [first, {**first, **change}]).counts.duplicates == 0


def test_marketing_duplicates_are_keyed_by_campaign(engine: Engine) -> None:
    item = json.loads((SAMPLES / "docs-marketing-click-segment-ids.json").read_text())
    result = run(engine, [item, dict(item), {**item, "camp_id": 124}])
    assert result.counts.duplicates == 1 and len(result.events) == 2


# --- campaign tracking --------------------------------------------------------------------


def test_x_mailin_custom_json_carries_campaign_tracking(engine: Engine) -> None:
    result = run(engine, (SAMPLES / "derived-click-tracking-json.json").read_bytes(), content_type="application/json")
    data = result.events[0]["data"]
    assert data["campaign"] == "Winter sale" and data["content"] == "Variant A"
    assert data["campaign_id"] == 42 and data["touchpoint_id"] == 7 and data["content_id"] == 9
    assert data["campaign_schedule_run_ts"] == 1685530000
    assert result.counts.unattributed == 0


def test_x_mailin_custom_pairs_carry_campaign_tracking(engine: Engine) -> None:
    result = run(engine, (SAMPLES / "derived-delivered-tracking-pairs.json").read_bytes(), content_type="application/json")
    data = result.events[0]["data"]
    assert (data["campaign_id"], data["touchpoint_id"], data["content"]) == (42, 7, "Variant A")
    assert result.counts.unattributed == 0


@pytest.mark.parametrize("custom", ["some_custom_header", '{"meta": "data"}', "{not json", "[1, 2]", "", None])
def test_x_mailin_custom_without_tracking_fields_is_ignored(engine: Engine, custom: str | None) -> None:
    result = run(engine, event("opened", **{"X-Mailin-custom": custom}))
    assert len(result.events) == 1
    assert result.counts.unattributed == 1


def test_unprefixed_tracking_keys_are_accepted(engine: Engine) -> None:
    result = run(engine, event("opened", **{"X-Mailin-custom": '{"campaign_id": "5", "touchpoint_id": 6}'}))
    assert (result.events[0]["data"]["campaign_id"], result.events[0]["data"]["touchpoint_id"]) == (5, 6)


@pytest.mark.parametrize("message_id", ["<abc.123@smtp-relay.mailin.fr>", "abc.123@smtp-relay.mailin.fr", " <abc.123@smtp-relay.mailin.fr> "])
def test_remembered_tracking_is_looked_up_by_the_api_message_id(engine: Engine, message_id: str) -> None:
    asked: list[str] = []

    def lookup(mid: str) -> dict[str, Any]:
        asked.append(mid)
        return {"campaign_id": 77, "touchpoint_id": 8}

    result = run(engine, event("delivered", **{"message-id": message_id}), tracking=lookup)
    assert asked == ["<abc.123@smtp-relay.mailin.fr>"]  # as /v3/smtp/email returns it
    assert result.events[0]["data"]["campaign_id"] == 77


def test_marketing_events_have_no_message_id_to_look_up(engine: Engine) -> None:
    asked: list[str] = []
    item = json.loads((SAMPLES / "docs-marketing-opened.json").read_text())
    run(engine, item, tracking=lambda mid: asked.append(mid) or {})
    assert asked == []


@pytest.mark.parametrize(("value", "parsed"), [
    ('{"odp_campaign_id": 42}', {"odp_campaign_id": 42}),
    (' {"a": {"b": 1}} ', {"a": {"b": 1}}),
    ("odp_campaign_id:42|odp_content:Sale: 50% off", {"odp_campaign_id": "42", "odp_content": "Sale: 50% off"}),
    ("custom_header_1:custom_value_1|custom_header_2:custom_value_2",
     {"custom_header_1": "custom_value_1", "custom_header_2": "custom_value_2"}),
    (" a : 1 | junk | :x | b:", {"a": "1", "b": ""}),
    ("some_custom_header", {}),
    ("{broken", {}),
    ('["x"]', {}),
    ("", {}),
    (None, {}),
    (42, {}),
    ({"odp_campaign_id": 1}, {"odp_campaign_id": 1}),
    ("x:" + "y" * 10_000, {}),
])
def test_brevo_custom_filter(value: Any, parsed: dict[str, Any]) -> None:
    assert brevo_custom(value) == parsed


# --- authentication -----------------------------------------------------------------------

BODY = (SAMPLES / "symfony-click.json").read_bytes()


def test_bearer_token_verifies_through_the_engine(engine: Engine) -> None:
    headers = {"Content-Type": "application/json", "Authorization": "Bearer s3cret-token"}
    assert engine.verify("brevo", BODY, headers, secret="s3cret-token")
    assert engine.verify("brevo", BODY, {"authorization": "bearer s3cret-token"}, secret="s3cret-token")


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": "Bearer s3cret-token-and-more"},
    {"Authorization": "Basic " + base64.b64encode(b"s3cret-token").decode()},
    {"Authorization": "Bearer "},
    {},
])
def test_bearer_token_refuses_wrong_or_missing_credentials(engine: Engine, headers: dict[str, str]) -> None:
    assert not engine.verify("brevo", BODY, headers, secret="s3cret-token")


def test_bearer_token_does_not_cover_the_body(engine: Engine) -> None:
    # Brevo signs nothing: the token authenticates the caller, not the content (use https).
    tampered = BODY.replace(b"click", b"spam")
    assert engine.verify("brevo", tampered, {"Authorization": "Bearer s3cret-token"}, secret="s3cret-token")


def test_empty_secret_is_a_configuration_error(engine: Engine) -> None:
    with pytest.raises(SignatureConfigError):
        engine.verify("brevo", BODY, {"Authorization": "Bearer x"}, secret="")


def test_basic_auth_through_a_mapping_that_extends_brevo(engine: Engine) -> None:
    good = {"Authorization": "Basic " + base64.b64encode(b"odpmap:s3cret").decode()}
    bad = {"Authorization": "Basic " + base64.b64encode(b"odpmap:wrong").decode()}
    assert engine.verify("brevo-basic", BODY, good, secret="odpmap:s3cret")
    assert not engine.verify("brevo-basic", BODY, bad, secret="odpmap:s3cret")
    assert not engine.verify("brevo-basic", BODY, {}, secret="odpmap:s3cret")
    assert not engine.verify("brevo-basic", BODY, {"Authorization": "Bearer odpmap:s3cret"}, secret="odpmap:s3cret")
    # the extending mapping maps exactly like brevo (ids differ: they name the provider)
    assert without_idempotence_ids(engine.map("brevo-basic", BODY, content_type="application/json").events) == \
        without_idempotence_ids(engine.map("brevo", BODY, content_type="application/json").events)


def test_proxy_opens_can_be_counted_by_extending_the_mapping(engine: Engine) -> None:
    body = (SAMPLES / "symfony-proxy-open.json").read_bytes()
    assert run(engine, body, content_type="application/json").skipped[0].rule_id == "proxy-open"
    result = engine.map("brevo-proxy-opens", body, content_type="application/json")
    assert [(e["type"], e["action"], e["data"]["ts"]) for e in result.events] == [("email", "open", 1604933654)]
