"""SendGrid: golden tests over the documented sample events, plus behaviour checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from odpmap.testing import assert_accounting, check_golden, engine_for, golden_cases

HERE = Path(__file__).parent
SAMPLES = HERE.parent / "src" / "odpmap_sendgrid" / "samples"


@pytest.fixture(scope="module")
def engine():
    return engine_for("sendgrid")


@pytest.mark.parametrize("sample", golden_cases(SAMPLES), ids=lambda p: p.name)
def test_golden(engine, sample: Path) -> None:
    check_golden(engine, "sendgrid", sample, HERE / "golden")


def test_every_documented_event_type_is_handled(engine) -> None:
    batch = json.loads((SAMPLES / "docs-all-event-types-batch.json").read_text())
    result = engine.map("sendgrid", batch)
    assert_accounting(result)
    assert result.counts.received == 11
    assert not result.dead_letters
    outcomes = {s.rule_id for s in result.skipped} | {f"{e['type']}/{e['action']}" for e in result.events}
    assert outcomes == {
        "processed", "deferred", "dropped-suppressed", "group-resubscribe",
        "email/delivery", "email/open", "email/click", "reachability/unreachable",
        "consent/opt-out", "list/unsubscribe",
    }


def test_unknown_future_event_type_is_a_dead_letter(engine) -> None:
    result = engine.map("sendgrid", [{"event": "machine_learned", "email": "a@example.com", "timestamp": 1700000000}])
    assert [d.reason for d in result.dead_letters] == ["unmapped"]
    assert result.dead_letters[0].item["event"] == "machine_learned"


def test_repeated_event_in_a_batch_is_skipped_as_duplicate(engine) -> None:
    event = {"event": "open", "email": "a@example.com", "timestamp": 1700000000, "sg_event_id": "abc"}
    result = engine.map("sendgrid", [event, dict(event)])
    assert len(result.events) == 1
    assert result.counts.duplicates == 1
    assert result.skipped[0].reason == "duplicate of item 0 (id 'abc:open')"


def test_custom_args_carry_campaign_tracking(engine) -> None:
    event = {
        "event": "click", "email": "a@example.com", "timestamp": 1700000000, "url": "https://x.example/",
        "odp_campaign": "Winter sale", "odp_campaign_id": "42", "odp_touchpoint_id": "7",
        "odp_content_id": "9", "odp_campaign_schedule_run_ts": "1699990000",
    }
    result = engine.map("sendgrid", [event])
    data = result.events[0]["data"]
    assert data["campaign"] == "Winter sale"
    assert data["campaign_id"] == 42 and data["touchpoint_id"] == 7 and data["content_id"] == 9
    assert data["campaign_schedule_run_ts"] == 1699990000
    assert result.counts.unattributed == 0


def test_millisecond_timestamps_become_seconds(engine) -> None:
    result = engine.map("sendgrid", (SAMPLES / "docs-singlesend-open-ms-timestamp.json").read_bytes(),
                        content_type="application/json")
    assert result.events[0]["data"]["ts"] == 1591726752


def test_signature_vector_verifies_through_the_engine(engine) -> None:
    vector = json.loads((HERE / "data" / "signature-sendgrid-python-single-event.json").read_text())
    headers = vector["headers"]
    body = vector["raw_body"].encode()
    assert engine.verify("sendgrid", body, headers, secret=vector["public_key_base64_der"])
    assert not engine.verify("sendgrid", body.replace(b"dropped", b"opened"), headers,
                             secret=vector["public_key_base64_der"])
