"""The A/B report's numbers against a reference computed with SciPy from the raw per-user data."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from scipy import stats

from gateway.analysis import ArmEvidence, Evidence, LatencyThresholds, Sums
from gateway.analysis.ab import ab_report, units_needed
from gateway.analysis.sequential import two_sided_multiplier
from gateway.policy import RolloutPolicy
from tests.conftest import reference_multiplier, reference_variance

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
TUNING = 5000.0


def users(seed: int, n: int, *, error: float, quality: float, cost: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    calls = (rng.poisson(rng.lognormal(1.0, 0.8, n)) + 1).astype(float)
    errors = rng.binomial(calls.astype(int), error).astype(float)
    answered = calls - errors
    scored = rng.binomial(answered.astype(int), 0.4).astype(float)
    level = np.clip(rng.normal(quality, 0.1, n), 0, 1)
    good = rng.binomial(scored.astype(int), level).astype(float)
    spend = answered * cost * rng.lognormal(0, 0.3, n)
    slow = rng.binomial(answered.astype(int), 0.05).astype(float)
    return {"calls": calls, "errors": errors, "scored": scored, "good": good, "answered": answered, "spend": spend,
            "slow": slow}


def sums(x: np.ndarray, y: np.ndarray) -> Sums:
    return Sums.of(zip(x.tolist(), y.tolist(), strict=True))


def arm(version: str, data: dict[str, np.ndarray]) -> ArmEvidence:
    return ArmEvidence(
        version=version, users=len(data["calls"]), calls=int(data["calls"].sum()),
        errors=sums(data["calls"], data["errors"]), quality=sums(data["scored"], data["good"]),
        slow=sums(data["answered"], data["slow"]), slow_reference=sums(data["answered"], data["slow"]),
        cost=sums(data["answered"], data["spend"]),
    )


def evidence(stable: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> Evidence:
    return Evidence(stable=arm("v1", stable), canary=arm("v2", candidate), since=NOW - timedelta(hours=6),
                    until=NOW, latency=LatencyThresholds.of(1800.0, RolloutPolicy()))


@pytest.mark.parametrize(("seed", "alpha"), [(1, 0.05), (2, 0.01), (3, 0.1)])
def test_every_interval_matches_the_scipy_reference(seed: int, alpha: float) -> None:
    stable = users(seed, 1500, error=0.02, quality=0.8, cost=0.002)
    candidate = users(seed + 100, 1450, error=0.03, quality=0.76, cost=0.0018)
    report = ab_report(evidence(stable, candidate), split=50.0, alpha=alpha, tuning=TUNING, elapsed_s=6 * 3600)
    columns = {"error_rate": ("calls", "errors"), "quality": ("scored", "good"), "cost": ("answered", "spend"),
               "slow_share": ("answered", "slow")}
    by_metric = {metric.metric: metric for metric in report.metrics}
    assert set(by_metric) == set(columns)
    for name, (x, y) in columns.items():
        metric = by_metric[name]
        stable_value = stable[y].sum() / stable[x].sum()
        candidate_value = candidate[y].sum() / candidate[x].sum()
        difference = candidate_value - stable_value
        se = math.sqrt(reference_variance(stable[x], stable[y]) + reference_variance(candidate[x], candidate[y]))
        # The unit is the user: those with a denominator for this metric, both versions.
        multiplier = reference_multiplier(int((stable[x] > 0).sum() + (candidate[x] > 0).sum()), alpha, TUNING)
        assert metric.stable == pytest.approx(stable_value, rel=1e-12)
        assert metric.candidate == pytest.approx(candidate_value, rel=1e-12)
        assert metric.difference == pytest.approx(difference, rel=1e-9)
        assert metric.lower == pytest.approx(difference - multiplier * se, rel=1e-6)
        assert metric.upper == pytest.approx(difference + multiplier * se, rel=1e-6)
        assert metric.lower is not None and metric.upper is not None
        assert metric.significant == (not metric.lower <= 0 <= metric.upper)
        assert metric.relative == pytest.approx(difference / stable_value * 100)


def test_significance_the_srm_check_and_the_summary() -> None:
    stable = users(11, 4000, error=0.02, quality=0.8, cost=0.002)
    clearly_worse = users(12, 4000, error=0.06, quality=0.8, cost=0.002)
    report = ab_report(evidence(stable, clearly_worse), split=50.0, alpha=0.05, tuning=TUNING, elapsed_s=3600)
    by_metric = {metric.metric: metric for metric in report.metrics}
    assert by_metric["error_rate"].significant and (by_metric["error_rate"].lower or 0.0) > 0
    assert by_metric["error_rate"].needs_calls is None
    assert "significant (higher)" in by_metric["error_rate"].line
    assert report.srm is not None and not report.srm.mismatch
    assert report.summary.startswith("significant at the 0.05 level: error_rate")
    # 4,000 users against 4,000 at a declared 30 % split: a mismatch, and the report says not to conclude.
    skewed = ab_report(evidence(stable, clearly_worse), split=30.0, alpha=0.05, tuning=TUNING, elapsed_s=3600)
    assert skewed.srm is not None and skewed.srm.mismatch
    assert "sample ratio mismatch" in skewed.summary and "do not conclude" in skewed.summary
    assert stats.chisquare([4000, 4000], [8000 * 0.3, 8000 * 0.7]).pvalue == pytest.approx(skewed.srm.p_value)


def test_an_undecided_metric_says_how_much_more_traffic_would_show_its_difference() -> None:
    stable = users(21, 600, error=0.02, quality=0.80, cost=0.002)
    candidate = users(22, 600, error=0.02, quality=0.77, cost=0.002)
    report = ab_report(evidence(stable, candidate), split=50.0, alpha=0.05, tuning=TUNING, elapsed_s=7200)
    quality = next(metric for metric in report.metrics if metric.metric == "quality")
    assert not quality.significant and quality.needs_calls is not None and quality.needs_seconds is not None
    calls = report.stable_calls + report.candidate_calls
    assert quality.needs_seconds == pytest.approx(quality.needs_calls / (calls / 7200))
    # At the projected size, an interval of the same per-user variance around the same difference excludes 0.
    stable_sums, candidate_sums = arm("v1", stable).quality, arm("v2", candidate).quality
    units = stable_sums.units + candidate_sums.units
    se = math.sqrt(stable_sums.ratio_variance() + candidate_sums.ratio_variance())
    target = units_needed(units, se, abs(quality.difference or 0), 0.05, TUNING)
    assert target is not None
    assert quality.needs_calls == pytest.approx(calls * (target / units - 1))
    assert two_sided_multiplier(target, 0.05, TUNING) * se * math.sqrt(units / target) < abs(quality.difference or 0)
    smaller = int(target * 0.99)
    assert two_sided_multiplier(smaller, 0.05, TUNING) * se * math.sqrt(units / smaller) >= abs(
        quality.difference or 0)
    assert "more calls" in quality.line and "if the difference holds" in quality.line


def test_a_metric_without_data_on_one_side_reports_nothing_to_compare() -> None:
    stable = users(31, 300, error=0.02, quality=0.8, cost=0.002)
    candidate = users(32, 300, error=0.02, quality=0.8, cost=0.002)
    candidate["scored"][:] = 0
    candidate["good"][:] = 0
    report = ab_report(evidence(stable, candidate), split=50.0, alpha=0.05, tuning=TUNING, elapsed_s=60)
    quality = next(metric for metric in report.metrics if metric.metric == "quality")
    assert (quality.candidate, quality.difference, quality.significant) == (None, None, False)
    assert quality.line == "quality: no data on both versions yet"
    assert report.public()["metrics"][1]["lower"] is None
