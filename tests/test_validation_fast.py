"""The fast event check never calls valid what cerberus refuses, and agrees on the rest.

:class:`odpmap.validation.FastEventCheck` answers for valid events without cerberus; any
event it is not sure of goes to cerberus. Soundness (fast says valid -> cerberus says
valid) is checked over events generated around the catalogue's edges.
"""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from odpmap import Engine
from odpmap.validation import TS_MAX, TS_MIN, EventSchema

ENGINE = Engine(autoload=False)
SCHEMA = ENGINE.schema
CAT = ENGINE.catalogue

types = st.sampled_from(sorted(CAT.event_types()) + ["", "Email", "bogus", "sms "])
actions = st.sampled_from(sorted({e.action for e in CAT.events}) + ["", "deliver", "Open"])
text = st.text(alphabet=string.ascii_letters + string.digits + "@.+_- \n", max_size=20)
emails = st.sampled_from(["a@example.com", "bad", "a@b", "x y@example.com", "", "a@example.com\n"]) | text
phones = st.sampled_from(["+14155550100", "14155550100", "+0123456", "+1", "+141555501000000000"]) | text
id_names = st.sampled_from(["email", "phone", "vuid", "zaius_id", "crm_id", "foo", "Email", "", "x_hash"])
id_values = st.one_of(emails, phones, st.integers(), st.none(), st.booleans())
identifiers = st.dictionaries(id_names, id_values, max_size=3)
ts = st.one_of(
    st.integers(min_value=TS_MIN - 5, max_value=TS_MAX + 5),
    st.integers(min_value=TS_MIN, max_value=TS_MAX),
    st.integers(min_value=TS_MIN * 1000, max_value=TS_MAX * 1000),
    st.booleans(), st.floats(allow_nan=False), st.text(max_size=5), st.none(),
)
field_names = st.sampled_from([
    "target_address", "value", "list_id", "reachability_update_type", "campaign_id", "touchpoint_id",
    "campaign", "idempotence_id", "campaign_schedule_run_ts", "custom_field", "CamelCase", "x", "a\n", "_x",
])
field_values = st.one_of(
    st.sampled_from(["hard_bounce", "spam_report", "soft", "10", "4f9a7c2e-1b2d-4c3e-9f8a-0123456789ab",
                     "not-a-uuid", ""]),
    st.integers(min_value=-3, max_value=TS_MAX + 3), st.booleans(), st.none(), st.floats(allow_nan=False), text,
)
data = st.fixed_dictionaries(
    {}, optional={"ts": ts, "target_address": st.sampled_from(["a@example.com", "", "+14155550100"])},
).flatmap(lambda base: st.dictionaries(field_names, field_values, max_size=4).map(lambda extra: {**extra, **base}))


@st.composite
def valid_events(draw: st.DrawFn) -> dict:
    spec = draw(st.sampled_from([e for e in CAT.events if not e.platform_generated]))
    type_ = draw(st.sampled_from(sorted(CAT.channel_types))) if spec.type == "@channel" else spec.type
    data = {"ts": draw(st.integers(TS_MIN, TS_MAX)), "target_address": "a@example.com"}
    for name in spec.required:
        data[name] = draw(st.sampled_from(list(spec.allowed.get(name, ("list-1",)))))
    if draw(st.booleans()):
        data["campaign_id"] = draw(st.integers(0, 10**6))
    return {"type": type_, "action": spec.action, "identifiers": {"email": "a@example.com"}, "data": data}




@st.composite
def events(draw: st.DrawFn) -> dict:
    """A valid event with up to three random changes: near misses of every rule."""
    event = draw(valid_events())
    for _ in range(draw(st.integers(0, 3))):
        change = draw(st.sampled_from(["type", "action", "id", "ids", "field", "drop", "extra", "data"]))
        if change == "type":
            event["type"] = draw(types)
        elif change == "action":
            event["action"] = draw(actions)
        elif change == "id" and isinstance(event.get("identifiers"), dict):
            event["identifiers"][draw(id_names)] = draw(id_values)
        elif change == "ids":
            event["identifiers"] = draw(identifiers)
        elif change == "field" and isinstance(event.get("data"), dict):
            event["data"][draw(field_names | st.just("ts"))] = draw(field_values | ts)
        elif change == "drop":
            key = draw(st.sampled_from(["type", "action", "identifiers", "data", "ts", "target_address"]))
            target = event.get("data") if key in ("ts", "target_address") else event
            if isinstance(target, dict):
                target.pop(key, None)
        elif change == "extra":
            event[draw(st.sampled_from(["extra", "Data"]))] = 1
        elif change == "data":
            event["data"] = draw(data)
    return event


def cerberus_says_valid(schema: EventSchema, event: dict) -> bool:
    v = schema._validator()
    return bool(v.validate(event, normalize=False))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_fast_check_is_sound(event: dict) -> None:
    if SCHEMA.fast(event):
        assert cerberus_says_valid(SCHEMA, event), event


@settings(max_examples=400, deadline=None)
@given(valid_events())
def test_fast_check_accepts_what_it_is_meant_to(event: dict) -> None:
    """Valid events of every catalogue pair take the fast path (no cerberus run)."""
    assert cerberus_says_valid(SCHEMA, event), event
    assert SCHEMA.fast(event), event


def test_sent_is_fast_only_when_allowed() -> None:
    event = {"type": "email", "action": "sent", "identifiers": {"email": "a@example.com"},
             "data": {"ts": 1_700_000_000, "target_address": "a@example.com"}}
    assert not SCHEMA.fast(event)
    allowing = EventSchema(CAT, allow_sent=True)
    assert allowing.fast(event) and allowing.errors(event) == []


def test_a_schema_with_an_unknown_rule_turns_the_fast_check_off() -> None:
    from odpmap.validation import FastEventCheck

    schema = EventSchema(CAT).schema
    schema["data"]["schema"]["ts"]["max"] = 5  # a rule the fast check does not implement
    assert not FastEventCheck(schema, CAT, allow_sent=False).enabled
