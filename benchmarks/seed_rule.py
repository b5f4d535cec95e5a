"""The seed's point-ratio rollout rule, kept as the simulator's baseline.

A faithful copy of `gateway/analysis.py` as the project shipped it before the
sequential decisions (commit dd9dfa0): two versions' numbers over a trailing
window, compared as point ratios against fixed thresholds. The simulator runs
it side by side with `gateway.analysis.decide` to show what changed. It is
not used by the gateway.

Rules, in order: fewer than `min_requests` calls on either version in the
window → inconclusive; quality below 0.90 × stable's, or error rate above
max(2 × stable's, 0.01) → rollback; once `min_stage_duration` has passed,
quality ≥ 0.95 ×, p95 latency ≤ 1.20 × (or within 50 ms) and cost ≤ 1.30 ×
stable's → advance (promote after the last stage); else hold. At the 100 %
stage the stable version gets no traffic, so every later check is
inconclusive: the seed never promoted.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WindowNumbers:
    """One version's numbers over the trailing window; None where there is no data."""

    requests: int
    errors: int
    avg_quality: float | None
    p95_latency_ms: float | None
    avg_cost: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class SeedPolicy:
    stages: tuple[float, ...] = (5.0, 25.0, 50.0, 100.0)
    window_s: float = 3600.0
    min_stage_duration_s: float = 86400.0
    min_requests: int = 100
    quality_ratio_min: float = 0.95
    p95_latency_ratio_max: float = 1.20
    cost_ratio_max: float = 1.30
    latency_slack_ms: float = 50.0
    quality_ratio_below: float = 0.90
    error_rate_ratio_above: float = 2.0
    error_rate_floor: float = 0.01


def seed_decide(*, stable: WindowNumbers, canary: WindowNumbers, policy: SeedPolicy, percent: float,
                stage_elapsed_s: float) -> tuple[str, float | None]:
    """(outcome, next percent): "inconclusive", "rollback", "hold", "advance" or "promote"."""
    if stable.requests < policy.min_requests or canary.requests < policy.min_requests:
        return "inconclusive", None
    quality = None
    if stable.avg_quality is not None and canary.avg_quality is not None and stable.avg_quality != 0:
        quality = canary.avg_quality / stable.avg_quality
    rollback = quality is not None and quality < policy.quality_ratio_below
    error_limit = max(policy.error_rate_ratio_above * stable.error_rate, policy.error_rate_floor)
    if rollback or canary.error_rate > error_limit:
        return "rollback", 0.0
    passed = stage_elapsed_s >= policy.min_stage_duration_s
    if quality is not None:
        passed &= quality >= policy.quality_ratio_min
    if stable.p95_latency_ms is not None and canary.p95_latency_ms is not None:
        within_ratio = canary.p95_latency_ms <= policy.p95_latency_ratio_max * stable.p95_latency_ms
        within_slack = canary.p95_latency_ms - stable.p95_latency_ms <= policy.latency_slack_ms
        passed &= within_ratio or within_slack
    if stable.avg_cost is not None and canary.avg_cost is not None:
        passed &= canary.avg_cost <= policy.cost_ratio_max * stable.avg_cost
    if not passed:
        return "hold", None
    following = next((stage for stage in policy.stages if stage > percent), None)
    if following is None:
        return "promote", None
    return "advance", following
