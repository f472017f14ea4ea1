"""Every installed provider's sample reports pass the same checks.

For each provider with samples (plugins and the mapping library alike): the counts add
up, every event passes the ODP schema, every item is accounted for by index, and dead
letters and skips carry their reasons and raw items. A plugin's samples join this
suite as soon as the plugin is installed.
"""

from __future__ import annotations

import pytest

from odpmap import Engine
from odpmap.testing import GOLDEN_RECEIVED_AT, assert_accounting, assert_valid_events

ENGINE = Engine()
CASES = [(name, sample) for name in ENGINE.providers for sample in ENGINE.samples(name)]


def test_bundled_providers_ship_samples() -> None:
    with_samples = {name for name, _ in CASES}
    assert {"sendgrid", "vonage"} <= with_samples


@pytest.mark.parametrize(("provider", "sample"), CASES, ids=[f"{p}/{s.name}" for p, s in CASES])
def test_sample_conforms(provider: str, sample) -> None:
    result = ENGINE.map(provider, sample.body, content_type=sample.content_type, received_at=GOLDEN_RECEIVED_AT)
    assert_accounting(result)
    assert_valid_events(ENGINE, result)
    # Every item is accounted for exactly once (an item may emit several events).
    outcome_indexes = [s.index for s in result.skipped] + [d.index for d in result.dead_letters if d.index is not None]
    assert len(outcome_indexes) == len(set(outcome_indexes)), "an item ended up both skipped and dead-lettered"
    for skipped in result.skipped:
        assert skipped.reason and skipped.rule_id
    for dead in result.dead_letters:
        assert dead.reason in ("unparseable", "unmapped", "template_error", "invalid_event")
        assert dead.message and dead.item is not None
    for event in result.events:
        assert event["data"]["target_address"]
        assert isinstance(event["data"]["ts"], int)


@pytest.mark.parametrize("provider", sorted(ENGINE.providers))
def test_provider_has_no_catch_all_rule(provider: str) -> None:
    """Unknown future event types must become `unmapped` dead letters, not be swallowed."""
    rules = ENGINE.provider(provider).mapping.rules
    assert not any(r.catch_all for r in rules), f"{provider}: a catch-all rule hides unknown event types"
