"""Test helpers for provider and plugin authors (used by odpmap's own tests too).

Golden tests: a sample report in, the exact events, skips and dead letters out::

    from pathlib import Path
    import pytest
    from odpmap.testing import golden_cases, check_golden, engine_for

    HERE = Path(__file__).parent
    SAMPLES = HERE.parent / "src" / "odpmap_acme" / "samples"

    @pytest.mark.parametrize("sample", golden_cases(SAMPLES), ids=lambda p: p.name)
    def test_golden(sample):
        check_golden(engine_for("acme"), "acme", sample, HERE / "golden")

Run once with ``ODPMAP_UPDATE_GOLDEN=1`` to write the expected files, read every one of
them against the provider's documentation, and commit them: from then on a change in
output fails the test with a diff.
"""

from __future__ import annotations

import difflib
import functools
import json
import os

from pathlib import Path
from typing import Any

from .engine import Engine, content_type_for
from .outcomes import MapResult

__all__ = [
    "GOLDEN_RECEIVED_AT",
    "assert_accounting",
    "assert_valid_events",
    "check_golden",
    "engine_for",
    "golden_cases",
    "outcome",
    "outcome_summary",
    "outcomes",
    "without_idempotence_ids",
]

#: The receive time golden tests use (providers without event times, e.g. Twilio).
GOLDEN_RECEIVED_AT = 1_700_000_000


@functools.lru_cache(maxsize=None)
def engine_for(*providers: str) -> Engine:
    """A shared engine with every installed plugin, checked to have ``providers``."""
    engine = Engine()
    for name in providers:
        engine.provider(name)
    return engine


def assert_accounting(result: MapResult) -> None:
    """Every item ended as exactly one of mapped, skipped or dead-lettered."""
    c = result.counts
    assert c.received == c.mapped + c.skipped + c.dead_lettered, c
    assert c.skipped == len(result.skipped), c
    assert c.dead_lettered == len(result.dead_letters), c
    assert c.events == len(result.events), c


def assert_valid_events(engine: Engine, result: MapResult) -> None:
    """Every event of the result passes the engine's ODP schema."""
    for event in result.events:
        errors = engine.schema.errors(event)
        assert not errors, (event, errors)


def outcomes(result: MapResult) -> list[str]:
    """Each item's outcome in a compact form, for table-driven tests: ``type/action``
    (with ``(reachability_update_type)`` where the event has one) per event, then
    ``skip:<rule id>`` per skipped item, then ``dead:<reason>`` per dead letter."""
    out = []
    for e in result.events:
        kind = e["data"].get("reachability_update_type")
        out.append(f"{e['type']}/{e['action']}" + (f" ({kind})" if kind else ""))
    out += [f"skip:{s.rule_id}" for s in result.skipped]
    out += [f"dead:{d.reason}" for d in result.dead_letters]
    return out


def outcome(result: MapResult) -> str:
    """The outcome of a one-item report, as :func:`outcomes` writes it."""
    assert result.counts.received == 1, result.counts
    found = outcomes(result)
    assert len(found) == 1, found
    return found[0]


def without_idempotence_ids(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events with ``data.idempotence_id`` removed, for comparing event content."""
    return [{**e, "data": {k: v for k, v in e["data"].items() if k != "idempotence_id"}} for e in events]


def golden_cases(samples_dir: str | os.PathLike[str], pattern: str = "*") -> list[Path]:
    """The sample reports in a folder that odpmap can read (by file name)."""
    folder = Path(samples_dir)
    return sorted(p for p in folder.glob(pattern) if p.is_file() and content_type_for(p.name))


def outcome_summary(result: MapResult) -> dict[str, Any]:
    """A JSON-able, stable view of a result for golden files."""
    return {
        "events": result.events,
        "skipped": [{"index": s.index, "rule": s.rule_id, "reason": s.reason} for s in result.skipped],
        "dead_letters": [
            {"index": d.index, "reason": d.reason, "rule": d.rule_id, "message": d.message} for d in result.dead_letters
        ],
        "counts": result.counts.to_dict(),
    }


def check_golden(
    engine: Engine,
    provider: str,
    sample: str | os.PathLike[str],
    golden_dir: str | os.PathLike[str],
    *,
    received_at: float = GOLDEN_RECEIVED_AT,
    headers: dict[str, str] | None = None,
) -> MapResult:
    """Map ``sample`` and compare with ``golden_dir/<sample name>.golden.json``.

    With ``ODPMAP_UPDATE_GOLDEN=1`` the golden file is (re)written instead. Dead-letter
    messages are compared without the mapping file's folder, so golden files do not
    depend on where the plugin is installed.
    """
    sample = Path(sample)
    result = engine.map(provider, sample.read_bytes(), content_type=content_type_for(sample.name),
                        headers=headers, received_at=received_at)
    assert_accounting(result)
    assert_valid_events(engine, result)
    actual = _portable(outcome_summary(result), engine.provider(provider).mapping_file)
    golden = Path(golden_dir) / f"{sample.name}.golden.json"
    text = json.dumps(actual, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if os.environ.get("ODPMAP_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text, encoding="utf-8")
        return result
    if not golden.exists():
        raise AssertionError(f"no golden file {golden}; run with ODPMAP_UPDATE_GOLDEN=1 and review it")
    expected = golden.read_text(encoding="utf-8")
    if expected != text:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True), str(golden), "actual"))
        raise AssertionError(f"{sample.name}: output differs from {golden.name}:\n{diff}")
    return result


def _portable(summary: dict[str, Any], mapping_file: str) -> dict[str, Any]:
    folder = str(Path(mapping_file).parent) + os.sep
    for dl in summary["dead_letters"]:
        dl["message"] = dl["message"].replace(folder, "")
    return summary


