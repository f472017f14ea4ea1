"""Tests for odpmap.validation: the ODP event schema built from the catalogue."""

from __future__ import annotations

import copy
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from odpmap.catalogue import Catalogue, CatalogueBuilder
from odpmap.errors import EventValidationError, ProcessingError
from odpmap.validation import TS_MAX, TS_MIN, EventSchema

TS = 1_700_000_000  # 2023-11-14, epoch seconds
EMAIL = {"email": "ada@example.com"}
PHONE = {"phone": "+14155238886"}


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    builder = CatalogueBuilder()
    builder.load_builtin()
    return builder.build()


@pytest.fixture(scope="module")
def schema(catalogue: Catalogue) -> EventSchema:
    return EventSchema(catalogue)


def event(type_: str = "email", action: str = "delivery", identifiers: Any = None, **data: Any) -> dict[str, Any]:
    ids = dict(EMAIL if identifiers is None else identifiers)
    fields: dict[str, Any] = {"ts": TS, "target_address": next(iter(ids.values()))}
    fields.update(data)
    return {"type": type_, "action": action, "identifiers": ids, "data": fields}


def with_data(ev: dict[str, Any], **changes: Any) -> dict[str, Any]:
    ev = copy.deepcopy(ev)
    ev["data"].update(changes)
    return ev


def without(ev: dict[str, Any], *path: str) -> dict[str, Any]:
    ev = copy.deepcopy(ev)
    target = ev
    for step in path[:-1]:
        target = target[step]
    del target[path[-1]]
    return ev


def failures(schema: EventSchema, ev: Any) -> list[tuple[str, str, str]]:
    """The (path, rule, message) list of validate()'s exception; asserts it raises."""
    with pytest.raises(EventValidationError) as info:
        schema.validate(ev)
    assert info.value.event is ev
    assert info.value.errors == schema.errors(ev)
    return info.value.errors


def rules_at(errors: list[tuple[str, str, str]], path: str) -> set[str]:
    return {rule for p, rule, _ in errors if p == path}


def message_at(errors: list[tuple[str, str, str]], path: str, rule: str) -> str:
    matches = [m for p, r, m in errors if p == path and r == rule]
    assert matches, f"no {rule!r} error at {path!r} in {errors}"
    return matches[0]


# -- valid events ----------------------------------------------------------------------

VALID = {
    "email/delivery": event("email", "delivery"),
    "sms/delivery_unknown": event("sms", "delivery_unknown", PHONE),
    "email/open": event("email", "open"),
    "email/click": event("email", "click", value="https://example.com/x"),
    "email/engage": event("email", "engage"),
    "email/disengage": event("email", "disengage"),
    "consent/opt-out": event("consent", "opt-out"),
    "list/unsubscribe": event("list", "unsubscribe", list_id="newsletter"),
    "reachability/hard_bounce": event("reachability", "unreachable", reachability_update_type="hard_bounce"),
    "reachability/spam_report": event("reachability", "unreachable", reachability_update_type="spam_report"),
    "sms/soft_bounce": event("sms", "soft_bounce", PHONE),
    "whatsapp/delivery": event("whatsapp", "delivery", PHONE),
    "custom-identifier": event("email", "open", {"crm_id": "c-1", "email": "ada@example.com"}),
    "all-typed-fields": event(
        "email", "click",
        campaign="spring", campaign_id=12, campaign_group_id=3, touchpoint_id=4, content="c", content_id=5,
        campaign_schedule_run_ts=TS - 60, identifier_key="email", value="v", data_source_type="odpmap",
        data_source="sendgrid", data_source_version="0.1", idempotence_id="123e4567-e89b-12d3-a456-426614174000",
    ),
    "extra-snake-case-field": event("email", "delivery", smtp_response="250 ok", x2="y"),
    "ts-bounds": event("email", "delivery", ts=TS_MIN, campaign_schedule_run_ts=TS_MAX),
}


@pytest.mark.parametrize("ev", list(VALID.values()), ids=list(VALID))
def test_valid_event(ev: dict[str, Any], schema: EventSchema) -> None:
    assert schema.errors(ev) == []
    schema.validate(ev)  # does not raise


def test_every_catalogue_pair_has_a_valid_example(catalogue: Catalogue) -> None:
    # Keeps VALID honest when the catalogue grows (sent is tested separately).
    specs = [catalogue.lookup(ev["type"], ev["action"]) for ev in VALID.values()]
    covered = {(spec.type, spec.action) for spec in specs if spec is not None}
    pairs = {(spec.type, spec.action) for spec in catalogue.events if not spec.platform_generated}
    assert pairs <= covered


# -- each rule fails with the right path and rule name ---------------------------------

BASE = event()


@pytest.mark.parametrize(
    ("ev", "path", "rule"),
    [
        (without(BASE, "identifiers"), "identifiers", "required"),
        ({**BASE, "identifiers": {}}, "identifiers", "minlength"),
        ({**BASE, "identifiers": ["ada@example.com"]}, "identifiers", "type"),
        ({**BASE, "identifiers": {"email": 5}}, "identifiers.email", "type"),
        ({**BASE, "identifiers": {"crm_id": 5}}, "identifiers.crm_id", "type"),
        ({**BASE, "identifiers": {"crm_id": ""}}, "identifiers.crm_id", "empty"),
        ({**BASE, "identifiers": {"email": ""}}, "identifiers.email", "empty"),
        ({**BASE, "identifiers": {"email": "not-an-email"}}, "identifiers.email", "email"),
        ({**BASE, "identifiers": {"phone": "4155238886"}}, "identifiers.phone", "e164"),
        ({**BASE, "identifiers": {"phone": "+0123456789"}}, "identifiers.phone", "e164"),
        ({**BASE, "identifiers": {"nickname": "ada"}}, "identifiers.nickname", "identifier_name"),
        (without(BASE, "type"), "type", "required"),
        (without(BASE, "action"), "action", "required"),
        (without(BASE, "data"), "data", "required"),
        ({**BASE, "data": [1]}, "data", "type"),
        (without(BASE, "data", "ts"), "data.ts", "required"),
        (without(BASE, "data", "target_address"), "data.target_address", "required"),
        (with_data(BASE, ts=True), "data.ts", "type"),
        (with_data(BASE, ts=str(TS)), "data.ts", "type"),
        (with_data(BASE, ts=TS + 0.5), "data.ts", "type"),
        (with_data(BASE, ts=TS * 1000), "data.ts", "epoch_seconds"),
        (with_data(BASE, ts=TS * 1_000_000), "data.ts", "epoch_seconds"),
        (with_data(BASE, ts=TS_MIN - 1), "data.ts", "epoch_seconds"),
        (with_data(BASE, ts=TS_MAX + 1), "data.ts", "epoch_seconds"),
        (with_data(BASE, campaign_schedule_run_ts=TS * 1000), "data.campaign_schedule_run_ts", "epoch_seconds"),
        (with_data(BASE, Campaign="x"), "data.Campaign", "regex"),
        (with_data(BASE, campaignName="x"), "data.campaignName", "regex"),
        (with_data(BASE, x="too-short-key"), "data.x", "regex"),
        (with_data(BASE, **{"2fa": "x"}), "data.2fa", "regex"),
        (with_data(BASE, **{"smtp-code": "x"}), "data.smtp-code", "regex"),
        (with_data(BASE, campaign_id="12"), "data.campaign_id", "type"),
        (with_data(BASE, campaign_id=True), "data.campaign_id", "type"),
        (with_data(BASE, campaign=12), "data.campaign", "type"),
        (with_data(BASE, idempotence_id="not-a-uuid"), "data.idempotence_id", "uuid"),
        ({**BASE, "extra": 1}, "extra", "custom"),
        ({**BASE, "type": "pigeon"}, "type", "allowed"),
        ({**BASE, "type": "pigeon"}, "type", "odp_event"),
        ({**BASE, "type": 5}, "type", "type"),
        ({**BASE, "action": "bounce"}, "action", "odp_event"),
        ({**BASE, "action": ""}, "action", "empty"),
        (event("list", "unsubscribe"), "data", "odp_event"),
        (event("list", "unsubscribe", list_id=""), "data", "odp_event"),
        (event("reachability", "unreachable"), "data", "odp_event"),
        (event("reachability", "unreachable", reachability_update_type="soft_bounce"), "data", "odp_event"),
        (event("email", "sent"), "action", "odp_event"),
    ],
    ids=[
        "identifiers-missing", "identifiers-empty", "identifiers-list", "identifier-not-string",
        "custom-identifier-not-string", "identifier-empty-value", "email-empty", "bad-email", "phone-without-plus",
        "phone-leading-zero", "unknown-identifier-name", "type-missing", "action-missing", "data-missing",
        "data-not-dict", "ts-missing", "target-address-missing", "ts-bool", "ts-string", "ts-float",
        "ts-milliseconds", "ts-microseconds", "ts-before-2000", "ts-after-2100", "run-ts-milliseconds",
        "data-key-uppercase", "data-key-camelcase", "data-key-one-char", "data-key-leading-digit",
        "data-key-dash", "campaign-id-string", "campaign-id-bool", "campaign-not-string", "idempotence-not-uuid",
        "unknown-top-level-key", "unknown-type-allowed", "unknown-type-odp-event", "type-not-string",
        "action-not-in-catalogue", "action-empty", "list-without-list-id", "list-empty-list-id",
        "reachability-without-type", "reachability-wrong-type", "sent-refused",
    ],
)
def test_rule_failure(ev: dict[str, Any], path: str, rule: str, schema: EventSchema) -> None:
    errors = failures(schema, ev)
    assert rule in rules_at(errors, path), errors
    for p, r, message in errors:
        assert isinstance(p, str) and isinstance(r, str) and message, (p, r, message)


def test_custom_identifier_suffixes_are_accepted(schema: EventSchema, catalogue: Catalogue) -> None:
    for suffix in catalogue.custom_identifier_suffixes:
        assert schema.errors(event(identifiers={f"crm{suffix}": "v"})) == [], suffix


def test_unknown_identifier_message_lists_suffixes(schema: EventSchema) -> None:
    message = message_at(failures(schema, event(identifiers={"nickname": "ada"})), "identifiers.nickname",
                         "identifier_name")
    assert "'nickname'" in message
    assert "_id" in message and "_hash" in message


def test_ts_in_milliseconds_message(schema: EventSchema) -> None:
    message = message_at(failures(schema, with_data(BASE, ts=TS * 1000)), "data.ts", "epoch_seconds")
    assert "milliseconds" in message and "epoch seconds" in message


def test_ts_in_microseconds_message(schema: EventSchema) -> None:
    message = message_at(failures(schema, with_data(BASE, ts=TS * 1_000_000)), "data.ts", "epoch_seconds")
    assert "microseconds" in message


def test_ts_before_2000_message(schema: EventSchema) -> None:
    message = message_at(failures(schema, with_data(BASE, ts=900_000_000)), "data.ts", "epoch_seconds")
    assert "2000-2100" in message


def test_ts_bool_is_not_an_integer(schema: EventSchema) -> None:
    # bool is an int in Python; ODP integers are not booleans.
    assert message_at(failures(schema, with_data(BASE, ts=True)), "data.ts", "type") == "must be of integer type"


def test_action_not_in_catalogue_lists_allowed_actions(schema: EventSchema) -> None:
    message = message_at(failures(schema, {**BASE, "action": "bounce"}), "action", "odp_event")
    assert "'bounce'" in message
    for action in ("click", "delivery", "delivery_unknown", "disengage", "engage", "open", "soft_bounce"):
        assert action in message


def test_action_not_allowed_for_fixed_type(schema: EventSchema) -> None:
    message = message_at(failures(schema, event("consent", "delivery")), "action", "odp_event")
    assert "allowed: opt-out" in message


def test_unknown_type_message(schema: EventSchema) -> None:
    assert "unknown event type 'pigeon'" in message_at(failures(schema, {**BASE, "type": "pigeon"}), "type", "odp_event")


def test_required_field_message(schema: EventSchema) -> None:
    message = message_at(failures(schema, event("list", "unsubscribe")), "data", "odp_event")
    assert message == "list/unsubscribe requires data.list_id"


def test_allowed_values_message(schema: EventSchema) -> None:
    ev = event("reachability", "unreachable", reachability_update_type="soft_bounce")
    message = message_at(failures(schema, ev), "data", "odp_event")
    assert "hard_bounce" in message and "spam_report" in message and "'soft_bounce'" in message


def test_sent_refused_by_default_message(schema: EventSchema) -> None:
    message = message_at(failures(schema, event("email", "sent")), "action", "odp_event")
    assert "generated by ODP" in message


def test_sent_accepted_with_allow_sent(catalogue: Catalogue) -> None:
    permissive = EventSchema(catalogue, allow_sent=True)
    assert permissive.errors(event("email", "sent")) == []
    assert permissive.errors(event("sms", "sent", PHONE)) == []
    # allow_sent does not loosen anything else.
    assert rules_at(permissive.errors(with_data(event("email", "sent"), ts="x")), "data.ts") == {"type"}


def test_several_errors_are_all_reported(schema: EventSchema) -> None:
    ev = {"type": "email", "action": "delivery", "identifiers": {"email": "nope"}, "data": {"ts": "x", "Bad": 1}}
    errors = failures(schema, ev)
    found = {(p, r) for p, r, _ in errors}
    assert {("identifiers.email", "email"), ("data.ts", "type"), ("data.Bad", "regex"),
            ("data.target_address", "required")} <= found
    assert errors == sorted(errors)


def test_validation_error_carries_errors_and_text(schema: EventSchema) -> None:
    ev = with_data(BASE, ts=TS * 1000)
    with pytest.raises(EventValidationError) as info:
        schema.validate(ev)
    exc = info.value
    assert isinstance(exc, ProcessingError)
    assert exc.event is ev
    assert len(exc.errors) == 1
    path, rule, message = exc.errors[0]
    assert (path, rule) == ("data.ts", "epoch_seconds")
    assert str(exc) == f"invalid ODP event: data.ts: {message} [epoch_seconds]"


@pytest.mark.parametrize("ev", [[1], "event", None, 5], ids=["list", "str", "none", "int"])
def test_non_mapping_event(ev: Any, schema: EventSchema) -> None:
    errors = failures(schema, ev)
    assert len(errors) == 1
    assert errors[0][:2] == ("", "type")
    assert "must be a mapping" in errors[0][2]


def test_validation_does_not_modify_the_event(schema: EventSchema) -> None:
    ev = with_data(event(identifiers={"email": "nope"}), ts="x")
    before = copy.deepcopy(ev)
    schema.errors(ev)
    assert ev == before


def test_validator_state_does_not_leak_between_events(schema: EventSchema) -> None:
    assert schema.errors(with_data(BASE, ts="x"))
    assert schema.errors(BASE) == []
    assert rules_at(schema.errors({**BASE, "identifiers": {"email": "x"}}), "identifiers.email") == {"email"}
    assert schema.errors(BASE) == []


# -- thread safety ---------------------------------------------------------------------

CASES: list[tuple[dict[str, Any], set[tuple[str, str]]]] = [
    (event("email", "delivery"), set()),
    (with_data(BASE, ts=TS * 1000), {("data.ts", "epoch_seconds")}),
    (event("sms", "soft_bounce", PHONE), set()),
    ({**BASE, "identifiers": {"email": "nope"}}, {("identifiers.email", "email")}),
    (event("list", "unsubscribe", list_id="l1"), set()),
    (event("list", "unsubscribe"), {("data", "odp_event")}),
    (with_data(BASE, campaign_id="7"), {("data.campaign_id", "type")}),
    (event("reachability", "unreachable", reachability_update_type="spam_report"), set()),
]


def test_validate_from_four_threads(schema: EventSchema) -> None:
    n_threads, rounds = 4, 40
    barrier = threading.Barrier(n_threads)
    problems: list[str] = []
    lock = threading.Lock()

    def work(offset: int) -> Callable[[], None]:
        def run() -> None:
            barrier.wait()
            for i in range(rounds):
                ev, expected = CASES[(i + offset) % len(CASES)]
                try:
                    got = {(p, r) for p, r, _ in schema.errors(ev)}
                    try:
                        schema.validate(ev)
                        raised: set[tuple[str, str]] = set()
                    except EventValidationError as exc:
                        raised = {(p, r) for p, r, _ in exc.errors}
                except Exception as exc:  # a race inside cerberus shows up as a crash
                    with lock:
                        problems.append(f"thread {offset} round {i}: {type(exc).__name__}: {exc}")
                    continue
                if got != expected or raised != expected:
                    with lock:
                        problems.append(f"thread {offset} round {i}: expected {expected}, got {got} / {raised}")

        return run

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible to provoke races
    try:
        threads = [threading.Thread(target=work(k)) for k in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert problems == []
