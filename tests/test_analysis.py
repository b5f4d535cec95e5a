"""gateway.analysis.decide, rule by rule, edge by edge."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.analysis.window_rule import decide, next_stage
from gateway.config import PolicySettings
from gateway.models import WindowStats

POLICY = PolicySettings(min_requests=100, min_stage_duration=3600)
DAY = 86400.0


def stats(version: str = "v1", **values: Any) -> WindowStats:
    base: dict[str, Any] = {
        "requests": 1000, "errors": 10, "scored": 200, "avg_quality": 0.9, "p50_latency_ms": 800.0,
        "p95_latency_ms": 1800.0, "p50_ttft_ms": None, "p95_ttft_ms": None, "avg_cost": 0.004,
        "total_cost": 4.0, "avg_prompt_tokens": 100.0, "avg_completion_tokens": 50.0,
    }
    base.update(values)
    return WindowStats(version=version, **base)


def run(stable: dict[str, Any] | None = None, canary: dict[str, Any] | None = None, *, percent: float = 5.0,
        elapsed: float = DAY, policy: PolicySettings = POLICY) -> tuple[str, tuple[str, ...], float | None]:
    decision = decide(stable=stats("v1", **(stable or {})), canary=stats("v2", **(canary or {})), policy=policy,
                      percent=percent, stage_elapsed_s=elapsed)
    return decision.outcome, decision.reasons, decision.next_percent


@pytest.mark.parametrize(
    ("stable", "canary", "outcome"),
    [
        # enough data
        ({"requests": 99}, {}, "inconclusive"),
        ({}, {"requests": 99, "errors": 0}, "inconclusive"),
        ({}, {"requests": 0, "errors": 0}, "inconclusive"),
        ({"requests": 100}, {"requests": 100, "errors": 1}, "advance"),
        # quality rollback: below 0.90 × stable; exactly at the threshold does not roll back
        ({}, {"avg_quality": 0.80}, "rollback"),
        ({"avg_quality": 1.0}, {"avg_quality": 0.8999}, "rollback"),
        ({"avg_quality": 1.0}, {"avg_quality": 0.90}, "hold"),  # no rollback, but below 0.95 to advance
        ({"avg_quality": 1.0}, {"avg_quality": 0.95}, "advance"),  # exactly the advance threshold
        ({"avg_quality": 1.0}, {"avg_quality": 0.9499}, "hold"),
        # error rate rollback: above max(2 × stable, floor)
        ({"errors": 10}, {"errors": 21}, "rollback"),  # 0.021 > 0.020
        ({"errors": 10}, {"errors": 20}, "advance"),  # exactly 2 × stable
        ({"errors": 0}, {"errors": 10}, "advance"),  # 0.010 = the floor: one error against a clean stable
        ({"errors": 0}, {"errors": 11}, "rollback"),  # 0.011 > floor 0.01
        ({"errors": 0}, {"errors": 0}, "advance"),
        # latency: ratio or slack
        ({"p95_latency_ms": 1000.0}, {"p95_latency_ms": 1200.0}, "advance"),  # exactly 1.20 ×
        ({"p95_latency_ms": 1000.0}, {"p95_latency_ms": 1250.0}, "hold"),
        ({"p95_latency_ms": 100.0}, {"p95_latency_ms": 150.0}, "advance"),  # 1.5 × but within 50 ms
        ({"p95_latency_ms": 100.0}, {"p95_latency_ms": 151.0}, "hold"),
        ({"p95_latency_ms": None}, {}, "advance"),  # skipped
        # cost
        ({"avg_cost": 0.004}, {"avg_cost": 0.0052}, "advance"),  # exactly 1.30 ×
        ({"avg_cost": 0.004}, {"avg_cost": 0.0053}, "hold"),
        ({"avg_cost": None}, {}, "advance"),  # skipped
        # missing quality on either side: quality rules skipped
        ({"avg_quality": None, "scored": 0}, {"avg_quality": 0.1}, "advance"),
        ({}, {"avg_quality": None, "scored": 0}, "advance"),
        ({"avg_quality": 0.0}, {"avg_quality": 0.0}, "advance"),
        # a rollback wins over everything else
        ({"errors": 0}, {"errors": 500, "avg_quality": 0.1, "p95_latency_ms": 99999.0}, "rollback"),
    ],
)
def test_rules(stable: dict[str, Any], canary: dict[str, Any], outcome: str) -> None:
    assert run(stable, canary)[0] == outcome


def test_reasons_read_like_the_rule() -> None:
    outcome, reasons, _ = run({"errors": 10}, {"requests": 1000, "errors": 84})
    assert outcome == "rollback"
    assert "error_rate 0.084 > 2 × 0.010 (stable), floor 0.01 → rollback" in reasons
    assert any(reason.startswith("avg_quality 0.900 ≥ 0.90 × 0.900 (stable)") for reason in reasons)


def test_one_reason_per_judged_rule_when_advancing() -> None:
    outcome, reasons, following = run()
    assert (outcome, following) == ("advance", 25.0)
    assert [reason.split()[0] for reason in reasons] == [
        "avg_quality", "error_rate", "stage", "quality", "p95_latency", "avg_cost", "5"]
    assert reasons[-1] == "5 % → 25 %: advance"


def test_missing_quality_is_said() -> None:
    _, reasons, _ = run({"avg_quality": None}, {"avg_quality": None})
    assert "quality: no scores on stable and canary, quality rules skipped" in reasons


def test_a_young_stage_holds_even_when_everything_is_good() -> None:
    outcome, reasons, _ = run(elapsed=1800)
    assert outcome == "hold"
    assert "stage has run 30.0m of min_stage_duration 1.0h → hold" in reasons


def test_a_young_stage_still_rolls_back() -> None:
    assert run({}, {"errors": 500}, elapsed=1)[0] == "rollback"


def test_the_last_stage_promotes() -> None:
    outcome, reasons, following = run(percent=100)
    assert (outcome, following) == ("promote", None)
    assert reasons[-1] == "at 100 %, the last stage → promote"


def test_a_manual_percent_between_stages_advances_to_the_next_one() -> None:
    assert run(percent=30)[2] == 50.0


@pytest.mark.parametrize(("percent", "expected"), [(0, 5), (4.99, 5), (5, 25), (26, 50), (50, 100), (100, None)])
def test_next_stage(percent: float, expected: float | None) -> None:
    assert next_stage(percent, (5.0, 25.0, 50.0, 100.0)) == expected
