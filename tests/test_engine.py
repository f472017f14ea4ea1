"""odpmap.Engine: mapping semantics, accounting, tracking, isolation, sinks and dispatch.

Every ``engine.map`` call goes through :func:`accounted`, which checks that each item
ends as exactly one of mapped, skipped or dead-lettered.
"""

from __future__ import annotations

import base64
import json
import random
import textwrap
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from odpmap import (
    ConfigError,
    DeadLetter,
    Engine,
    MapResult,
    MappingError,
    SendReport,
    Skipped,
    UnknownProviderError,
    hookimpl,
)
from odpmap.sinks import dumps_event

TS = 1_700_000_000  # 2023-11-14, plausible epoch seconds

ACME = """\
    format: 1
    provider: acme
    channel: email
    parser: json
    item_id: "{{ item.id | default(none) }}"
    vars:
      event: "{{ item.event | lower }}"
    defaults:
      identifiers:
        email: "{{ item.email }}"
      data:
        ts: "{{ item.ts | epoch }}"
        target_address: "{{ item.email }}"
    rules:
      - id: delivered
        when: vars.event == "delivered"
        emit: {action: delivery}
      - id: open
        when: vars.event == "open"
        emit:
          action: open
          data:
            value: "{{ item.ua | default(none) }}"
      - id: deferred
        when: vars.event == "deferred"
        skip: "deferred: retried later"
      - id: click
        when: vars.event == "click"
        emit:
          action: click
          data:
            value: "{{ item.url }}"
      - id: raw-ts
        when: vars.event == "engage"
        emit:
          action: engage
          data:
            ts: "{{ item.ts }}"
      - id: twice
        when: vars.event == "twice"
        emit:
          - action: open
          - action: click
            identifiers:
              email: "{{ item.other }}"
    """


def accounted(result: MapResult) -> MapResult:
    """Assert the accounting invariant of one map() result and return it."""
    c = result.counts
    assert c.received == c.mapped + c.skipped + c.dead_lettered, c
    assert c.balanced()
    assert c.skipped == len(result.skipped)
    assert c.dead_lettered == len(result.dead_letters)
    assert c.events == len(result.events)
    assert c.mapped <= c.events
    indexes = [s.index for s in result.skipped] + [d.index for d in result.dead_letters if d.index is not None]
    assert len(indexes) == len(set(indexes)), "an item counted twice"
    assert all(0 <= i < c.received for i in indexes)
    assert result.ok == (not result.dead_letters)
    return result


def item(event: str, **kw: Any) -> dict[str, Any]:
    return {"event": event, "email": "a@example.com", "ts": TS, **kw}


def build(factory: pytest.TempPathFactory, text: str, **kw: Any) -> Engine:
    """A hermetic engine over one mapping file, for module-scoped fixtures.

    Engines are meant to be built once and reused (and map() is thread-safe), so the
    read-only tests share one per mapping.
    """
    folder = factory.mktemp("mappings")
    (folder / "acme.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    return Engine(autoload=False, mapping_paths=[folder], environ={}, **kw)


@pytest.fixture(scope="module")
def acme(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return build(tmp_path_factory, ACME)


@pytest.fixture
def acme_file(acme: Engine) -> str:
    return acme.provider("acme").mapping_file


def map_ok(engine: Engine, provider: str, body: Any, **kw: Any) -> MapResult:
    return accounted(engine.map(provider, body, **kw))


# -- outcomes -------------------------------------------------------------------------


def test_maps_a_batch(acme: Engine) -> None:
    result = map_ok(acme, "acme", json.dumps([item("delivered"), item("OPEN", ua="Mozilla")]).encode())
    assert result.events == [
        {"type": "email", "action": "delivery", "identifiers": {"email": "a@example.com"},
         "data": {"ts": TS, "target_address": "a@example.com"}},
        {"type": "email", "action": "open", "identifiers": {"email": "a@example.com"},
         "data": {"ts": TS, "target_address": "a@example.com", "value": "Mozilla"}},
    ]
    assert result.counts.to_dict() == {"received": 2, "mapped": 2, "skipped": 0, "dead_lettered": 0, "events": 2,
                                       "duplicates": 0, "unattributed": 2}
    assert result.ok and result.provider == "acme"


def test_first_matching_rule_wins(write_mapping: Callable[[str, str], Path],
                                  hermetic_engine: Callable[..., Engine]) -> None:
    write_mapping("acme.yaml", """\
        format: 1
        provider: acme
        channel: email
        defaults:
          identifiers: {email: a@example.com}
          data: {ts: 1700000000, target_address: a@example.com}
        rules:
          - id: big
            when: item.n > 5
            emit: {action: open}
          - id: positive
            when: item.n > 0
            emit: {action: click}
          - id: big-again
            when: item.n > 5
            skip: never reached for n > 5
          - id: rest
            skip: rest
        """)
    result = map_ok(hermetic_engine(), "acme", [{"n": 7}, {"n": 3}, {"n": -1}])
    assert [e["action"] for e in result.events] == ["open", "click"]
    assert [(s.index, s.rule_id) for s in result.skipped] == [(2, "rest")]


def test_unmapped_item_is_a_dead_letter(acme: Engine, acme_file: str) -> None:
    raw = item("bogus")
    result = map_ok(acme, "acme", [item("delivered"), raw], content_type="application/json")
    (dl,) = result.dead_letters
    assert dl == DeadLetter(
        reason="unmapped", message=f"no rule of {acme_file} matched this item", provider="acme", item=raw,
        rule_id=None, index=1, details={}, content_type="application/json",
    )
    assert result.counts.mapped == 1 and not result.ok


def test_skip_names_rule_and_reason(acme: Engine) -> None:
    raw = item("deferred")
    result = map_ok(acme, "acme", [raw])
    assert result.skipped == [Skipped("acme", 0, "deferred", "deferred: retried later", raw)]
    assert result.events == [] and result.ok
    assert result.skipped[0].to_dict() == {"provider": "acme", "index": 0, "rule_id": "deferred",
                                           "reason": "deferred: retried later", "item": raw}


def test_template_error_is_a_dead_letter_and_the_batch_goes_on(acme: Engine, acme_file: str) -> None:
    result = map_ok(acme, "acme", [item("delivered"), item("click"), item("click", url="https://x.test")])
    (dl,) = result.dead_letters
    assert dl.reason == "template_error" and dl.index == 1 and dl.rule_id == "click"
    # the location of the failing template, then the rule
    assert dl.message.startswith(f"{acme_file}:32:16: missing field or variable: ")
    assert "'url'" in dl.message and dl.message.endswith("(rule 'click')")
    assert [e["action"] for e in result.events] == ["delivery", "click"]
    assert result.events[1]["data"]["value"] == "https://x.test"


def test_template_error_in_a_var(acme: Engine, acme_file: str) -> None:
    no_event = {"email": "a@example.com", "ts": TS}
    result = map_ok(acme, "acme", [no_event, item("open")])
    (dl,) = result.dead_letters
    assert dl.reason == "template_error" and dl.index == 0 and dl.item == no_event
    assert dl.message.startswith(f"{acme_file}:7:10: missing field or variable: ")
    assert result.counts.mapped == 1


def test_failing_filter_is_a_template_error(acme: Engine, acme_file: str) -> None:
    result = map_ok(acme, "acme", [item("delivered", ts="yesterday-ish")])
    (dl,) = result.dead_letters
    assert dl.reason == "template_error"
    assert dl.message.startswith(f"{acme_file}:12:9: epoch: 'yesterday-ish' is not a recognised time")
    assert dl.message.endswith("(rule 'delivered')")


def test_timestamp_in_milliseconds_is_an_invalid_event(acme: Engine) -> None:
    result = map_ok(acme, "acme", [item("engage", ts=TS * 1000)])
    (dl,) = result.dead_letters
    assert dl.reason == "invalid_event" and dl.rule_id == "raw-ts"
    assert dl.details["errors"] == [
        ["data.ts", "epoch_seconds", f"{TS * 1000} looks like epoch milliseconds; ODP wants epoch seconds"]
    ]
    assert dl.details["event"]["data"]["ts"] == TS * 1000
    assert "rule 'raw-ts'" in dl.message and "looks like epoch milliseconds" in dl.message
    # the same value through |epoch is fine
    assert map_ok(acme, "acme", [item("delivered", ts=TS * 1000)]).events[0]["data"]["ts"] == TS


def test_bad_email_is_an_invalid_event(acme: Engine) -> None:
    result = map_ok(acme, "acme", [item("delivered", email="not-an-email")])
    (dl,) = result.dead_letters
    assert dl.reason == "invalid_event"
    assert ["identifiers.email", "email", "'not-an-email' is not an email address"] in dl.details["errors"]
    assert json.loads(dl.to_json())["details"]["errors"] == dl.details["errors"]


def test_item_is_all_or_nothing(acme: Engine) -> None:
    # the second event of the item is invalid: no event of the item is kept
    result = map_ok(acme, "acme", [item("twice", other="broken"), item("twice", other="b@example.com")])
    (dl,) = result.dead_letters
    assert dl.reason == "invalid_event" and dl.index == 0
    assert dl.details["event"]["action"] == "click"
    assert [(e["action"], e["identifiers"]["email"]) for e in result.events] == [
        ("open", "a@example.com"), ("click", "b@example.com"),
    ]
    assert result.counts.mapped == 1 and result.counts.events == 2


# -- bodies and items ----------------------------------------------------------------


def test_unparseable_body_keeps_raw_text(acme: Engine) -> None:
    body = b'[{"event": "open",'
    result = map_ok(acme, "acme", body, content_type="application/json")
    (dl,) = result.dead_letters
    assert dl.reason == "unparseable" and dl.index is None and dl.item == body
    assert dl.message.startswith("json parser: invalid JSON")
    assert dl.to_dict()["item"] == body.decode()
    assert dl.content_type == "application/json"
    assert result.counts.received == 1 and result.counts.dead_lettered == 1


def test_unparseable_binary_body_survives_as_base64(acme: Engine) -> None:
    body = b"\xff\xfe\x00garbage\x80"
    result = map_ok(acme, "acme", body)
    (dl,) = result.dead_letters
    assert dl.reason == "unparseable"
    encoded = json.loads(dl.to_json())["item"]
    assert base64.b64decode(encoded["base64"]) == body


def test_text_body(acme: Engine) -> None:
    assert map_ok(acme, "acme", json.dumps([item("open")])).counts.mapped == 1


def test_already_parsed_bodies(acme: Engine) -> None:
    assert map_ok(acme, "acme", [item("open"), item("delivered")]).counts.mapped == 2
    # a dict report (no items:) is one item
    assert map_ok(acme, "acme", item("open")).counts.to_dict()["mapped"] == 1
    assert map_ok(acme, "acme", []).counts.received == 0


ITEMS = """\
    format: 1
    provider: acme
    channel: email
    items: "{items}"
    defaults:
      identifiers: {{email: "{{{{ item.email }}}}"}}
      data: {{ts: 1700000000, target_address: "{{{{ item.email }}}}"}}
    rules:
      - id: all
        emit: {{action: open}}
    """


@pytest.mark.parametrize(
    ("expression", "report", "expected"),
    [
        ("report.data.events", {"data": {"events": [{"email": "a@x.io"}, {"email": "b@x.io"}]}}, ["a@x.io", "b@x.io"]),
        ("report.payload", {"payload": {"email": "a@x.io"}}, ["a@x.io"]),
        ("report.events | default(none)", {"other": 1}, []),
        ("report.events | default(none)", {"events": []}, []),
    ],
    ids=["nested-list", "dict-is-one-item", "none-is-no-item", "empty-list"],
)
def test_items_expression(expression: str, report: Any, expected: list[str],
                          write_mapping: Callable[[str, str], Path], hermetic_engine: Callable[..., Engine]) -> None:
    write_mapping("acme.yaml", ITEMS.format(items=expression))
    engine = hermetic_engine()
    result = map_ok(engine, "acme", report)
    assert [e["identifiers"]["email"] for e in result.events] == expected
    assert result.counts.received == len(expected)
    assert map_ok(engine, "acme", json.dumps(report)).events == result.events


def test_failing_items_expression_dead_letters_the_report(write_mapping: Callable[[str, str], Path],
                                                          hermetic_engine: Callable[..., Engine]) -> None:
    path = write_mapping("acme.yaml", ITEMS.format(items="report.data.events"))
    result = map_ok(hermetic_engine(), "acme", {"nodata": 1})
    (dl,) = result.dead_letters
    assert dl.reason == "template_error" and dl.item == {"nodata": 1} and dl.index is None
    assert dl.message.startswith(f"items: {path}:4:8: missing field or variable")


# -- values ---------------------------------------------------------------------------

VALUES = """\
    format: 1
    provider: acme
    channel: email
    defaults:
      identifiers:
        email: "{{ item.email }}"
      data:
        ts: "{{ received_at }}"
        target_address: "{{ item.email }}"
        value: from-default
    rules:
      - id: native
        when: item.kind == "native"
        emit:
          action: open
          identifiers:
            customer_id: "{{ item.cid }}"
          data:
            count: "{{ item.n }}"
            ratio: "{{ item.n / 4 }}"
            flag: "{{ item.flag }}"
            text: "n={{ item.n }}"
            maybe: "{{ item.missing | default(none) }}"
      - id: no-default
        when: item.kind == "nulled"
        emit:
          action: open
          data:
            value: null
      - id: first
        when: item.kind == "first"
        emit:
          action: open
          data:
            ts:
              first:
                - "{{ item.ts_a | epoch }}"
                - "{{ item.ts_b | epoch }}"
              default: "{{ received_at }}"
            value:
              first: ["{{ item.empty }}", "{{ item.label }}"]
              default: no-label
      - id: header
        when: item.kind == "header"
        emit:
          action: open
          data:
            value: "{{ headers['x-acme-signature'] }}"
      - id: context
        when: item.kind == "context"
        emit:
          action: open
          data:
            value: "{{ provider }}/{{ channel }}/{{ index }}/{{ report | length }}"
    """


@pytest.fixture(scope="module")
def values(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return build(tmp_path_factory, VALUES, clock=lambda: 1_700_000_123.9)


def test_native_types(values: Engine) -> None:
    (event,) = map_ok(values, "acme", [{"kind": "native", "email": "a@x.io", "cid": "42", "n": 5, "flag": True}]).events
    assert event["identifiers"] == {"email": "a@x.io", "customer_id": "42"}
    data = event["data"]
    assert data["count"] == 5 and type(data["count"]) is int
    assert data["ratio"] == 1.25
    assert data["flag"] is True
    assert data["text"] == "n=5"
    assert "maybe" not in data  # rendered to None: left out
    assert data["value"] == "from-default"
    assert data["ts"] == 1_700_000_123  # the engine's clock, as int


def test_explicit_null_removes_a_default(values: Engine) -> None:
    (event,) = map_ok(values, "acme", [{"kind": "nulled", "email": "a@x.io"}]).events
    assert "value" not in event["data"]


@pytest.mark.parametrize(
    ("fields", "ts", "value"),
    [
        ({"ts_a": "2023-11-14T22:13:20Z", "ts_b": 1, "label": "L"}, TS, "L"),
        ({"ts_b": TS + 5, "empty": ""}, TS + 5, "no-label"),
        ({"empty": None}, 1_700_000_999, "no-label"),
    ],
    ids=["first-candidate", "second-candidate", "default"],
)
def test_first_of(values: Engine, fields: dict[str, Any], ts: int, value: str) -> None:
    (event,) = map_ok(values, "acme", [{"kind": "first", "email": "a@x.io", **fields}], received_at=1_700_000_999).events
    assert (event["data"]["ts"], event["data"]["value"]) == (ts, value)


def test_failing_first_candidate_that_is_not_missing_is_an_error(values: Engine) -> None:
    result = map_ok(values, "acme", [{"kind": "first", "email": "a@x.io", "ts_a": "garbage"}])
    assert [dl.reason for dl in result.dead_letters] == ["template_error"]


def test_headers_are_lower_cased(values: Engine) -> None:
    (event,) = map_ok(values, "acme", [{"kind": "header", "email": "a@x.io"}],
                      headers={"X-Acme-Signature": "sig"}).events
    assert event["data"]["value"] == "sig"


def test_context_variables(values: Engine) -> None:
    report = [{"kind": "context", "email": "a@x.io"}, {"kind": "context", "email": "b@x.io"}]
    result = map_ok(values, "acme", report)
    assert [e["data"]["value"] for e in result.events] == ["acme/email/0/2", "acme/email/1/2"]


def test_received_at_is_injectable(values: Engine) -> None:
    (event,) = map_ok(values, "acme", [{"kind": "nulled", "email": "a@x.io"}], received_at=1_600_000_000.7).events
    assert event["data"]["ts"] == 1_600_000_000


# -- vars ------------------------------------------------------------------------------


class Counter:
    """A plugin adding a ``counted`` filter that records every call."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    @hookimpl
    def odpmap_prepare_jinja_environment(self, env: Any) -> None:
        def counted(value: Any) -> Any:
            self.calls.append(value)
            return value

        env.filters["counted"] = counted


def test_vars_are_lazy_and_evaluated_once_per_item(write_mapping: Callable[[str, str], Path],
                                                   hermetic_engine: Callable[..., Engine]) -> None:
    write_mapping("acme.yaml", """\
        format: 1
        provider: acme
        channel: email
        vars:
          event: "{{ item.event | counted }}"
          risky: "{{ item.deep.field }}"
        defaults:
          identifiers: {email: a@x.io}
          data: {ts: 1700000000, target_address: a@x.io}
        rules:
          - id: open
            when: vars.event == "open"
            emit:
              action: open
              data: {value: "{{ vars.event }}-{{ vars.event }}"}
          - id: click
            when: vars.event == "click"
            emit:
              action: click
              data: {value: "{{ vars.risky }}"}
          - id: rest
            when: vars.event != "x"
            skip: rest
        """)
    counter = Counter()
    engine = hermetic_engine(plugins=[counter])
    result = map_ok(engine, "acme", [
        {"event": "open"},
        {"event": "click", "deep": {"field": "ok"}},
        {"event": "other"},
        {"event": "click"},
    ])
    # `risky` is not needed for "open" or "other", so its missing field does not matter
    assert [e["data"]["value"] for e in result.events] == ["open-open", "ok"]
    assert [dl.index for dl in result.dead_letters] == [3]
    assert "missing field" in result.dead_letters[0].message
    # once per item, however many rules and fields use it
    assert counter.calls == ["open", "click", "other", "click"]


# -- de-duplication ------------------------------------------------------------------


def test_item_id_deduplicates_within_a_report(acme: Engine) -> None:
    first, again = item("open", id="e1"), item("open", id="e1")
    result = map_ok(acme, "acme", [first, item("open", id="e2"), again, item("open"), item("open")])
    assert result.counts.mapped == 4 and result.counts.duplicates == 1 and result.counts.skipped == 1
    assert result.skipped == [Skipped("acme", 2, "<duplicate>", "duplicate of item 0 (id 'e1')", again)]
    assert "duplicates=1" in result.counts.summary()
    # ids are remembered per report only
    assert map_ok(acme, "acme", [item("open", id="e1")]).counts.duplicates == 0


def test_duplicate_of_a_dead_letter_is_still_a_duplicate(acme: Engine) -> None:
    result = map_ok(acme, "acme", [item("bogus", id="x"), item("bogus", id="x")])
    assert [dl.index for dl in result.dead_letters] == [0]
    assert result.skipped[0].reason == "duplicate of item 0 (id 'x')"


# -- campaign tracking -------------------------------------------------------------

TRACKING = """\
    format: 1
    provider: acme
    channel: email
    message_id: "{{ item.msg | default(none) }}"
    tracking: item
    defaults:
      identifiers: {email: "{{ item.email }}"}
      data: {ts: 1700000000, target_address: "{{ item.email }}"}
    rules:
      - id: delivered
        when: item.event == "delivered"
        emit: {action: delivery}
      - id: soft
        when: item.event == "soft"
        emit: {action: soft_bounce}
      - id: explicit
        when: item.event == "explicit"
        emit:
          action: open
          data: {campaign: from-rule, value: "{{ tracking.campaign | default('-') }}"}
    """


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return build(tmp_path_factory, TRACKING)


class Store:
    def __init__(self, known: dict[str, dict[str, Any]]) -> None:
        self.known = known
        self.asked: list[str] = []

    def __call__(self, message_id: str) -> dict[str, Any] | None:
        self.asked.append(message_id)
        return self.known.get(message_id)


def test_tracking_from_provider_metadata(tracked: Engine) -> None:
    result = map_ok(tracked, "acme", [{"event": "delivered", "email": "a@x.io", "odp_campaign_id": "12",
                                      "odp_campaign": "spring", "touchpoint_id": 7, "campaign_group_id": 3}])
    data = result.events[0]["data"]
    assert data["campaign_id"] == 12 and data["campaign"] == "spring" and data["touchpoint_id"] == 7
    assert data["campaign_group_id"] == 3
    assert result.counts.unattributed == 0


def test_tracking_field_that_is_not_a_number_is_an_invalid_event(tracked: Engine) -> None:
    result = map_ok(tracked, "acme", [{"event": "delivered", "email": "a@x.io", "odp_campaign_id": "twelve"}])
    (dl,) = result.dead_letters
    assert dl.reason == "invalid_event" and dl.details["event"]["data"]["campaign_id"] == "twelve"
    assert [e[0] for e in dl.details["errors"]] == ["data.campaign_id"]


def test_tracking_store_and_precedence(tracked: Engine) -> None:
    store = Store({
        "m1": {"campaign": "from-store", "touchpoint_id": "9"},
        "m2": {"odp_campaign": "store-2", "odp_content_id": 5},
    })
    result = map_ok(tracked, "acme", [
        {"event": "delivered", "email": "a@x.io", "msg": "m1"},
        {"event": "delivered", "email": "a@x.io", "msg": "m2", "campaign": "from-metadata"},
        {"event": "delivered", "email": "a@x.io", "msg": "unknown"},
        {"event": "delivered", "email": "a@x.io"},
        {"event": "soft", "email": "a@x.io", "msg": "unknown"},
        {"event": "explicit", "email": "a@x.io", "msg": "m1"},
    ], tracking=store)
    data = [e["data"] for e in result.events]
    assert {k: data[0][k] for k in ("campaign", "touchpoint_id")} == {"campaign": "from-store", "touchpoint_id": 9}
    # metadata wins over the store; the store fills in what metadata lacks
    assert data[1]["campaign"] == "from-metadata" and data[1]["content_id"] == 5
    assert "campaign" not in data[2] and "campaign" not in data[3]
    # an event that sets a tracking field itself keeps it; templates see `tracking`
    assert data[5]["campaign"] == "from-rule" and data[5]["value"] == "from-store"
    assert data[5]["touchpoint_id"] == 9
    assert store.asked == ["m1", "m2", "unknown", "unknown", "m1"]  # not asked without a message id
    # two attributable events (delivery) carry no tracking; a soft bounce is not attributable
    assert result.counts.unattributed == 2
    assert "unattributed=2" in result.counts.summary()


def test_empty_tracking_field_does_not_hide_prefixed_one(tracked: Engine) -> None:
    result = map_ok(tracked, "acme", [{"event": "delivered", "email": "a@x.io", "campaign": "", "odp_campaign": "c"}])
    assert result.events[0]["data"]["campaign"] == "c"


def test_numeric_message_id_is_looked_up_as_text(tracked: Engine) -> None:
    store = Store({"123": {"campaign": "c"}})
    result = map_ok(tracked, "acme", [{"event": "delivered", "email": "a@x.io", "msg": 123}], tracking=store)
    assert store.asked == ["123"] and result.events[0]["data"]["campaign"] == "c"


# -- randomized accounting -------------------------------------------------------------

KINDS: dict[str, tuple[str, Callable[[random.Random], dict[str, Any]]]] = {
    "delivered": ("mapped", lambda r: item("delivered")),
    "open": ("mapped", lambda r: item(r.choice(["open", "Open", "OPEN"]), ua=r.choice([None, "UA"]))),
    "click": ("mapped", lambda r: item("click", url=f"https://x.test/{r.randrange(100)}")),
    "twice": ("mapped", lambda r: item("twice", other="b@example.com")),
    "deferred": ("skipped", lambda r: item("deferred")),
    "bogus": ("unmapped", lambda r: item(r.choice(["bogus", "bounce", ""]))),
    "no-url": ("template_error", lambda r: item("click")),
    "no-event": ("template_error", lambda r: {"email": "a@example.com", "ts": TS}),
    "bad-ts": ("template_error", lambda r: item("open", ts="soon")),
    "ms-ts": ("invalid_event", lambda r: item("engage", ts=TS * 1000)),
    "bad-email": ("invalid_event", lambda r: item("delivered", email=r.choice(["", "x", "a@b"]))),
    "half-bad": ("invalid_event", lambda r: item("twice", other="nope")),
}


@pytest.mark.parametrize("seed", range(6))
def test_randomized_batch_is_accounted_for(acme: Engine, seed: int) -> None:
    rng = random.Random(seed)
    kinds = [rng.choice(sorted(KINDS)) for _ in range(rng.randrange(1, 80))]
    items = [KINDS[k][1](rng) for k in kinds]
    body: Any = json.dumps(items).encode() if seed % 2 else items
    result = map_ok(acme, "acme", body)

    expected = [KINDS[k][0] for k in kinds]
    got: list[str | None] = [None] * len(items)
    for s in result.skipped:
        got[s.index] = "skipped"
    for dl in result.dead_letters:
        assert dl.index is not None and dl.item == items[dl.index]
        got[dl.index] = dl.reason
    got = [g or "mapped" for g in got]
    assert got == expected
    assert result.counts.received == len(items)
    assert result.counts.events == sum({"twice": 2}.get(k, 1) for k in kinds if KINDS[k][0] == "mapped")


def test_counts_add_up_over_reports(acme: Engine) -> None:
    total = MapResult(provider="acme")
    for body in ([item("open")], b"garbage", [item("deferred"), item("bogus")], []):
        total.extend(map_ok(acme, "acme", body))
    assert total.counts.to_dict() == {"received": 4, "mapped": 1, "skipped": 1, "dead_lettered": 2, "events": 1,
                                      "duplicates": 0, "unattributed": 1}
    assert total.counts.balanced()


# -- providers, loading, isolation ----------------------------------------------------


def test_unknown_provider_lists_known(acme: Engine) -> None:
    with pytest.raises(UnknownProviderError) as info:
        acme.map("nope", b"[]")
    assert str(info.value) == "unknown provider 'nope' (known: acme, vonage)"
    assert info.value.known == ["acme", "vonage"] and isinstance(info.value, ConfigError)


def test_non_strict_engine_collects_load_errors(write_mapping: Callable[[str, str], Path],
                                                hermetic_engine: Callable[..., Engine]) -> None:
    write_mapping("acme.yaml", ACME)
    bad = write_mapping("broken.yaml", "format: 1\nprovider: broken\nchannel: email\nrules:\n  - id: a\n")
    yaml_error = write_mapping("worse.yaml", "provider: [\n")
    engine = hermetic_engine(strict=False)
    assert sorted(e.file for e in engine.load_errors) == [str(bad), str(yaml_error)]
    assert all(isinstance(e, MappingError) for e in engine.load_errors)
    assert list(engine.providers) == ["acme", "vonage"]
    assert map_ok(engine, "acme", [item("open")]).counts.mapped == 1
    with pytest.raises(UnknownProviderError):
        engine.provider("broken")
    with pytest.raises(MappingError):
        hermetic_engine()


def test_mapping_path_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Engine(autoload=False, mapping_paths=[tmp_path / "nope"])


def test_mapping_path_can_be_a_file(write_mapping: Callable[[str, str], Path]) -> None:
    path = write_mapping("acme.yaml", ACME)
    engine = Engine(autoload=False, mapping_paths=[path])
    assert list(engine.providers) == ["acme", "vonage"]
    assert engine.provider("acme").source == f"mapping file {path}"


class Shout:
    @hookimpl
    def odpmap_prepare_jinja_environment(self, env: Any) -> None:
        env.filters["shout"] = lambda v: str(v).upper() + "!"


def test_two_engines_do_not_share_providers_or_filters(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    alpha = ITEMS.replace("acme", "alpha").format(items="report").replace(
        "{action: open}", '{action: open, data: {value: "{{ item.email | shout }}"}}')
    (tmp_path / "a" / "alpha.yaml").write_text(textwrap.dedent(alpha))
    (tmp_path / "b" / "beta.yaml").write_text(textwrap.dedent(ITEMS.replace("acme", "beta").format(items="report")))
    one = Engine(autoload=False, mapping_paths=[tmp_path / "a"], plugins=[Shout()])
    two = Engine(autoload=False, mapping_paths=[tmp_path / "b"])
    assert list(one.providers) == ["alpha", "vonage"] and list(two.providers) == ["beta", "vonage"]
    assert "shout" in one.env.filters and "shout" not in two.env.filters
    assert one.pm is not two.pm and one.catalogue is not two.catalogue
    assert map_ok(one, "alpha", [{"email": "a@x.io"}]).events[0]["data"]["value"] == "A@X.IO!"
    with pytest.raises(UnknownProviderError):
        two.provider("alpha")
    # a third engine built later is not affected by either
    assert "shout" not in Engine(autoload=False).env.filters


def test_samples(acme: Engine) -> None:
    samples = acme.samples("vonage")
    assert samples and all(s.provider == "vonage" and s.content_type for s in samples)
    assert acme.samples("acme") == []
    for s in samples:
        accounted(acme.map("vonage", s.body, content_type=s.content_type))


# -- verify, sinks, dispatch ------------------------------------------------------------


def test_verify_without_verifier_is_a_config_error(acme: Engine) -> None:
    with pytest.raises(ConfigError, match="^provider 'acme' has no signature verifier$"):
        acme.verify("acme", b"{}", {}, secret="s")


def test_verify_uses_the_provider_verifier(write_mapping: Callable[[str, str], Path],
                                           hermetic_engine: Callable[..., Engine]) -> None:
    seen: list[tuple[bytes, dict[str, str], str]] = []

    class Verifiers:
        @hookimpl
        def odpmap_register_verifiers(self, register: Any) -> None:
            def check(body: bytes, headers: dict[str, str], *, secret: str, url: Any, now: Any) -> bool:
                seen.append((body, dict(headers), secret))
                return headers.get("x-sig") == secret

            register("check", check)

    write_mapping("acme.yaml", ACME.replace("    parser: json\n", "    parser: json\n    verify: check\n"))
    engine = hermetic_engine(plugins=[Verifiers()])
    assert engine.verify("acme", b"body", {"X-Sig": "s3"}, secret="s3") is True
    assert engine.verify("acme", b"body", {"X-Sig": "no"}, secret="s3") is False
    assert seen[0] == (b"body", {"x-sig": "s3"}, "s3")


def test_jsonl_sink_writes_json_lines(acme: Engine, tmp_path: Path) -> None:
    events = map_ok(acme, "acme", [item("open"), item("delivered")]).events
    path = tmp_path / "out" / "events.jsonl"
    sink = acme.sink("jsonl", path=path)
    try:
        assert acme.dispatch(events, sink) == SendReport(sent=2)
        assert acme.dispatch(events[:1], sink).sent == 1
    finally:
        sink.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines == [dumps_event(events[0]), dumps_event(events[1]), dumps_event(events[0])]
    assert [json.loads(line) for line in lines[:2]] == events


def test_sink_errors(acme: Engine) -> None:
    with pytest.raises(ConfigError, match="unknown sink 'nope'"):
        acme.sink("nope")
    with pytest.raises(ConfigError, match="^sink 'jsonl': "):
        acme.sink("jsonl", colour="red")


class RejectingSink:
    """Rejects given indexes of every batch it receives; remembers batch sizes."""

    name = "rejecting"

    def __init__(self, reject: Sequence[int]) -> None:
        self.reject = reject
        self.batches: list[list[dict[str, Any]]] = []

    def send(self, events: Sequence[dict[str, Any]]) -> SendReport:
        self.batches.append(list(events))
        bad = [i for i in self.reject if i < len(events)]
        return SendReport(sent=len(events) - len(bad), rejected=[(i, f"no {events[i]['data']['n']}") for i in bad])

    def close(self) -> None:
        pass


def test_dispatch_batches_and_offsets_rejections(acme: Engine) -> None:
    events = [{"type": "email", "action": "open", "identifiers": {"email": "a@x.io"}, "data": {"n": n}}
              for n in range(250)]
    sink = RejectingSink(reject=[0, 5, 60])
    report = acme.dispatch(events, sink, batch_size=100)
    assert [len(b) for b in sink.batches] == [100, 100, 50]
    assert [b[0]["data"]["n"] for b in sink.batches] == [0, 100, 200]
    assert report.sent == 250 - 8
    assert report.rejected == [(0, "no 0"), (5, "no 5"), (60, "no 60"), (100, "no 100"), (105, "no 105"),
                               (160, "no 160"), (200, "no 200"), (205, "no 205")]
    assert acme.dispatch([], sink) == SendReport(sent=0)


# -- threads ------------------------------------------------------------------------------


def test_map_from_several_threads(acme: Engine) -> None:
    batches = []
    for seed in range(4):
        rng = random.Random(seed)
        batches.append([KINDS[k][1](rng) for k in (rng.choice(sorted(KINDS)) for _ in range(40))])
    expected = [map_ok(acme, "acme", json.dumps(b).encode()) for b in batches]

    results: dict[int, list[MapResult]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def work(n: int) -> None:
        try:
            start.wait()
            results[n] = [acme.map("acme", json.dumps(batches[n]).encode()) for _ in range(2)]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for n in range(4):
        for result in results[n]:
            accounted(result)
            assert result.events == expected[n].events
            assert result.dead_letters == expected[n].dead_letters
            assert result.counts == expected[n].counts


def test_verify_options_in_the_mapping_reach_the_verifier(tmp_path: Path) -> None:
    """`verify: {name, options}` passes options (here Vonage's HMAC method) to the verifier."""
    from urllib.parse import urlencode

    (tmp_path / "vonage-hmac.yaml").write_text(
        "format: 1\nprovider: vonage-hmac\nextends: vonage\nverify: {name: vonage, options: {method: sha256}}\n"
    )
    engine = Engine(autoload=False, mapping_paths=[tmp_path])
    # Published in Vonage/vonage-python-sdk (secret "signature_secret", timestamp 1234567890).
    sig = "280c4320703dbc98bfa22db676655ed2acfbfe8792b062ff7622e67f1183c287"
    body = urlencode({"param1": "value1", "param2": "value2", "timestamp": 1234567890, "sig": sig}).encode()
    assert engine.verify("vonage-hmac", body, {}, secret="signature_secret", now=1234567891)
    # The same body under the plain provider (md5hash by default) does not verify.
    assert not engine.verify("vonage", body, {}, secret="signature_secret", now=1234567891)


def test_first_passes_over_a_null_value_given_to_a_filter(tmp_path: Path) -> None:
    (tmp_path / "nulls.yaml").write_text(textwrap.dedent("""\
        format: 1
        provider: nulls
        channel: sms
        defaults:
          identifiers: {phone: "{{ item.to | e164 }}"}
          data:
            target_address: "{{ item.to | e164 }}"
            ts:
              first: ["{{ item.done_at | epoch }}", "{{ item.sent_at | epoch }}"]
        rules:
          - id: ok
            when: item.status == "ok"
            emit: {action: delivery}
        """))
    engine = Engine(autoload=False, mapping_paths=[tmp_path])
    result = engine.map("nulls", {"status": "ok", "to": "+14155550100", "done_at": None, "sent_at": 1700000000})
    assert result.events[0]["data"]["ts"] == 1700000000
    # Outside `first`, the null is an error naming the filter.
    bad = engine.map("nulls", {"status": "ok", "to": None, "done_at": 1700000000})
    assert bad.dead_letters[0].reason == "template_error" and "e164: the value is null" in bad.dead_letters[0].message


def test_only_maps_the_selected_items() -> None:
    engine = Engine(autoload=False)
    receipts = [
        {"msisdn": "447700900001", "status": "delivered", "err-code": "0", "message-timestamp": "2024-01-01 00:00:00"},
        {"msisdn": "447700900002", "status": "bogus"},
        {"msisdn": "447700900003", "status": "delivered", "err-code": "0", "message-timestamp": "2024-01-01 00:00:00"},
    ]
    result = engine.map("vonage", receipts, only=[2])
    assert result.counts.received == 1 and result.counts.balanced()
    assert [e["identifiers"]["phone"] for e in result.events] == ["+447700900003"]
    assert engine.map("vonage", receipts, only=[1]).dead_letters[0].index == 1


def test_engine_as_a_context_manager_closes_its_store(tmp_path: Path) -> None:
    import sqlite3

    with Engine(autoload=False, data_dir=tmp_path) as engine:
        engine.remember("vonage", "m-1", {"campaign_id": 1})
        store = engine._tracking_store(create=False)
    with pytest.raises(sqlite3.ProgrammingError):  # closed
        store.recall("vonage", "m-1")
    # The engine reopens its store when needed again.
    assert engine.map("vonage", {"msisdn": "447700900001", "status": "delivered", "err-code": "0",
                                 "message-timestamp": "2024-01-01 00:00:00", "messageId": "m-1"}
                      ).events[0]["data"]["campaign_id"] == 1
    engine.close()
