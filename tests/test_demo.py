"""`canary-gateway demo` end to end, as CI and a pipe see it: plain lines, a promotion and a rollback, exit 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.demo import headline

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_the_fast_demo_promotes_the_good_canary_and_rolls_back_the_bad_one(tmp_path: Path) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--fast"],
        cwd=tmp_path, env={**os.environ, "TERM": "xterm-256color"}, capture_output=True, text=True, timeout=280,
    )
    elapsed = time.monotonic() - started
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    # Not a terminal: plain lines, no escape sequences or carriage returns.
    assert "\x1b" not in output and "\r" not in output
    assert re.search(r"dashboard  http://127\.0\.0\.1:\d+/dashboard   admin token: \S{20,}", output)
    assert re.search(r"support-bot: advance 5 % → 25 % — .+", output)
    assert re.search(r"support-bot: advance 25 % → 50 % — .+", output)
    assert re.search(r"support-bot: promote at 50 %: v2 is the new stable — .+", output)
    assert re.search(r"summarizer: roll back at \d+ %: every user back on v1 — .+", output)
    assert "support-bot: 5 % → 25 % → 50 % → promoted after" in output
    assert re.search(r"summarizer: 5 % (→ \d+ % )*→ rolled back after", output)
    # The compare table of each rollout, as `canary-gateway compare` prints it.
    assert output.count("Metric                   Stable     Canary       Diff") == 2
    assert re.search(r"demo finished in \d+ s: the good canary was promoted and the bad one rolled back\.", output)
    print(f"demo wall time {elapsed:.1f} s")
    # The gateway was stopped and its temporary directory removed.
    directory = re.search(r"config and logs in (\S+)\)", output)
    assert directory and not Path(directory.group(1)).exists()


def test_a_decision_reads_as_one_line_of_its_deciding_reasons() -> None:
    rollback = {"action": "rolled_back", "reason": "avg_quality 0.48 < 0.90 × 0.83 (stable) → rollback; "
                                                   "error_rate 0.004 ≤ 2 × 0.005 (stable), floor 0.01: no rollback"}
    assert headline(rollback) == "avg_quality 0.48 < 0.90 × 0.83 (stable) → rollback"
    advance = {
        "action": "advanced",
        "reason": "stage has run 3.0s ≥ min_stage_duration 1.0s; "
        "quality ratio 1.004 ≥ 0.95; p95_latency 480 ms ≤ 1.20 × 600 ms (stable); "
        "5 % → 25 %: advance",
    }
    assert headline(advance) == "quality ratio 1.004 ≥ 0.95; p95_latency 480 ms ≤ 1.20 × 600 ms (stable)"
    assert headline({"action": "advanced", "snapshot": {"summary": "every gate shown"}}) == "every gate shown"
