"""Engine throughput against hand-written Python doing the same mapping.

Maps a SendGrid Event Webhook batch (a realistic mix of event types) three ways:

* ``engine``: ``Engine.map()`` (parse, rules, templates, campaign tracking, cerberus
  validation of every event);
* ``handwritten``: a plain Python function producing the same events, no validation:
  the floor any framework is measured against;
* ``handwritten+validate``: the same function plus the engine's cerberus validation.

It checks that all three produce identical events, then reports items per second and
the ratios. Run: ``.venv/bin/python benchmarks/bench_map.py [--items N] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from datetime import datetime, timezone
from typing import Any

from odpmap import Engine
from odpmap.engine import idempotence_id

KINDS = ["processed", "delivered", "open", "click", "bounce", "deferred", "spamreport", "unsubscribe",
         "group_unsubscribe"]


def make_batch(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = rng.choice(KINDS)
        event: dict[str, Any] = {
            "email": f"user{i}@example.com", "timestamp": 1_700_000_000 + i, "event": kind,
            "sg_event_id": f"ev{i}", "sg_message_id": f"msg{i}.filter", "odp_campaign_id": str(i % 50),
        }
        if kind == "click":
            event["url"] = f"https://example.com/{i}"
        if kind == "bounce":
            event.update(reason="550 no such user", type=rng.choice(["bounce", "blocked"]))
        if kind == "group_unsubscribe":
            event["asm_group_id"] = 10
        out.append(event)
    return out


def handwritten(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The SendGrid mapping, written by hand."""
    events = []
    seen = set()
    for item in batch:
        key = f"{item['sg_event_id']}:{item['event']}"
        if key in seen:
            continue
        seen.add(key)
        kind = item["event"].lower()
        email = item["email"]
        ts = int(item["timestamp"])
        if ts > 100_000_000_000:
            ts //= 1000
        data: dict[str, Any] = {"ts": ts, "target_address": email}
        type_ = "email"
        if kind in ("processed", "deferred", "group_resubscribe"):
            continue
        if kind == "delivered":
            action = "delivery"
        elif kind == "open":
            action = "open"
        elif kind == "click":
            action = "click"
            data["value"] = item["url"]
        elif kind == "bounce" and item.get("type", "bounce") == "blocked":
            action = "soft_bounce"
            data["value"] = f"Reason: {item.get('reason', 'unknown')}"
        elif kind == "bounce":
            type_, action = "reachability", "unreachable"
            data["reachability_update_type"] = "hard_bounce"
            data["value"] = f"Reason: {item.get('reason', 'unknown')}"
        elif kind == "spamreport":
            type_, action = "reachability", "unreachable"
            data["reachability_update_type"] = "spam_report"
        elif kind == "unsubscribe":
            type_, action = "consent", "opt-out"
        elif kind == "group_unsubscribe":
            type_, action = "list", "unsubscribe"
            data["list_id"] = str(item["asm_group_id"])
        else:
            continue
        if "odp_campaign_id" in item:
            data.setdefault("campaign_id", int(item["odp_campaign_id"]))
        data["idempotence_id"] = idempotence_id("sendgrid", key, 0)
        events.append({"type": type_, "action": action, "identifiers": {"email": email}, "data": data})
    return events


def best_of(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    engine = Engine(load_plugins=["sendgrid"])
    batch = make_batch(args.items)
    body = json.dumps(batch).encode()
    schema = engine.schema

    engine_events = engine.map("sendgrid", body, content_type="application/json").events
    hand_events = handwritten(json.loads(body))
    assert engine_events == hand_events, "the engine and the hand-written mapping disagree"

    def run_engine() -> None:
        engine.map("sendgrid", body, content_type="application/json")

    def run_hand() -> None:
        handwritten(json.loads(body))

    def run_hand_validated() -> None:
        for event in handwritten(json.loads(body)):
            schema.validate(event)

    results = {
        "engine": best_of(run_engine, args.repeat),
        "handwritten": best_of(run_hand, args.repeat),
        "handwritten+validate": best_of(run_hand_validated, args.repeat),
    }
    n = args.items
    print(f"{n} SendGrid items, best of {args.repeat} ({datetime.now(timezone.utc):%Y-%m-%d})")
    for name, seconds in results.items():
        print(f"  {name:22s} {seconds * 1000:9.1f} ms  {n / seconds:10.0f} items/s")
    print(f"  ratio engine / handwritten:          {results['engine'] / results['handwritten']:.1f}x")
    print(f"  ratio engine / handwritten+validate: {results['engine'] / results['handwritten+validate']:.2f}x")


if __name__ == "__main__":
    main()
