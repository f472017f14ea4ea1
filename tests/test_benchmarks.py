"""The benchmarks still run and their baselines still agree with the engine.

No timing is asserted here: speed is read from the benchmark's own report.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_map_runs_and_the_baseline_matches_the_engine() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_map.py"), "--items", "60", "--repeat", "1"],
        capture_output=True, text=True, timeout=120,
    )
    # bench_map.py asserts that the engine and the hand-written mapping produce the same
    # events before it times anything.
    assert proc.returncode == 0, proc.stderr
    assert "ratio engine / handwritten:" in proc.stdout
