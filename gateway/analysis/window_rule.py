"""Pure rollout decisions: two versions' window stats + the policy → what to do, and why.

Rules, in order (SPEC 6):

1. Enough data: each version needs `min_requests` in the window, else
   `inconclusive` (nothing else is judged on too little data).
2. Rollback when the canary's quality falls below `quality_ratio_below` ×
   stable's, or its error rate exceeds max(`error_rate_ratio_above` × stable's,
   `error_rate_floor`). The floor keeps one error against an error-free stable
   from rolling back.
3. Otherwise, once the stage has run `min_stage_duration`, move on when
   quality ≥ `quality_ratio_min` × stable's, p95 latency ≤
   `p95_latency_ratio_max` × stable's (or within `latency_slack_ms` of it) and
   average cost ≤ `cost_ratio_max` × stable's: `advance` to the next stage, or
   `promote` when the canary already serves the last stage. Else `hold`.

A rule without data on either side (no quality scores, no priced calls) is
skipped and says so. Every rule that was judged contributes one reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from gateway.config import PolicySettings
from gateway.models import WindowStats

Outcome = Literal["rollback", "advance", "promote", "hold", "inconclusive"]


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    reasons: tuple[str, ...]
    # The canary percentage the decision moves to (advance), else None.
    next_percent: float | None = None


def decide(
    *,
    stable: WindowStats,
    canary: WindowStats,
    policy: PolicySettings,
    percent: float,
    stage_elapsed_s: float,
) -> Decision:
    need = policy.min_requests
    if stable.requests < need or canary.requests < need:
        return Decision(
            "inconclusive",
            (f"not enough data: stable {stable.requests}, canary {canary.requests} requests in the window; "
             f"min_requests {need} each → inconclusive",),
        )

    reasons: list[str] = []
    rollback = False
    quality = _quality_ratio(stable, canary, reasons)
    limit = policy.rollback_when
    if quality is not None:
        if quality < limit.quality_ratio_below:
            rollback = True
            reasons.append(f"avg_quality {canary.avg_quality:.3f} < {limit.quality_ratio_below:.2f} × "
                           f"{stable.avg_quality:.3f} (stable) → rollback")
        else:
            reasons.append(f"avg_quality {canary.avg_quality:.3f} ≥ {limit.quality_ratio_below:.2f} × "
                           f"{stable.avg_quality:.3f} (stable): no rollback")
    stable_errors, canary_errors = stable.error_rate or 0.0, canary.error_rate or 0.0
    error_limit = max(limit.error_rate_ratio_above * stable_errors, limit.error_rate_floor)
    comparison = f"{limit.error_rate_ratio_above:g} × {stable_errors:.3f} (stable), floor {limit.error_rate_floor:g}"
    if canary_errors > error_limit:
        rollback = True
        reasons.append(f"error_rate {canary_errors:.3f} > {comparison} → rollback")
    else:
        reasons.append(f"error_rate {canary_errors:.3f} ≤ {comparison}: no rollback")
    if rollback:
        return Decision("rollback", tuple(reasons), next_percent=0.0)

    promote_when = policy.promote_when
    passed = True
    if stage_elapsed_s < policy.min_stage_duration:
        passed = False
        reasons.append(f"stage has run {_duration(stage_elapsed_s)} of min_stage_duration "
                       f"{_duration(policy.min_stage_duration)} → hold")
    else:
        reasons.append(f"stage has run {_duration(stage_elapsed_s)} ≥ min_stage_duration "
                       f"{_duration(policy.min_stage_duration)}")
    if quality is not None:
        ok = quality >= promote_when.quality_ratio_min
        passed &= ok
        reasons.append(f"quality ratio {quality:.3f} {'≥' if ok else '<'} {promote_when.quality_ratio_min:.2f}"
                       + ("" if ok else " → hold"))
    passed &= _latency(stable, canary, policy, reasons)
    passed &= _cost(stable, canary, policy, reasons)
    if not passed:
        return Decision("hold", tuple(reasons))
    following = next_stage(percent, policy.stages)
    if following is None:
        return Decision("promote", (*reasons, f"at {percent:g} %, the last stage → promote"))
    return Decision("advance", (*reasons, f"{percent:g} % → {following:g} %: advance"), next_percent=following)


def next_stage(percent: float, stages: Sequence[float]) -> float | None:
    """The first stage above `percent`; None when the canary already serves the last one."""
    return next((stage for stage in stages if stage > percent), None)


def _quality_ratio(stable: WindowStats, canary: WindowStats, reasons: list[str]) -> float | None:
    if stable.avg_quality is None or canary.avg_quality is None:
        missing = " and ".join(side for side, stats in (("stable", stable), ("canary", canary))
                               if stats.avg_quality is None)
        reasons.append(f"quality: no scores on {missing}, quality rules skipped")
        return None
    if stable.avg_quality == 0:
        reasons.append("quality: stable scores average 0, quality rules skipped")
        return None
    return canary.avg_quality / stable.avg_quality


def _latency(stable: WindowStats, canary: WindowStats, policy: PolicySettings, reasons: list[str]) -> bool:
    if stable.p95_latency_ms is None or canary.p95_latency_ms is None:
        reasons.append("p95_latency: no answered calls on one side, latency rule skipped")
        return True
    rule = policy.promote_when
    within_ratio = canary.p95_latency_ms <= rule.p95_latency_ratio_max * stable.p95_latency_ms
    within_slack = canary.p95_latency_ms - stable.p95_latency_ms <= rule.latency_slack_ms
    ok = within_ratio or within_slack
    relation = "≤" if within_ratio else ">"
    slack = "" if within_ratio else f" ({'within' if within_slack else 'beyond'} {rule.latency_slack_ms:g} ms slack)"
    reasons.append(f"p95_latency {canary.p95_latency_ms:.0f} ms {relation} {rule.p95_latency_ratio_max:.2f} × "
                   f"{stable.p95_latency_ms:.0f} ms (stable){slack}" + ("" if ok else " → hold"))
    return ok


def _cost(stable: WindowStats, canary: WindowStats, policy: PolicySettings, reasons: list[str]) -> bool:
    if stable.avg_cost is None or canary.avg_cost is None:
        reasons.append("avg_cost: no priced calls on one side, cost rule skipped")
        return True
    limit = policy.promote_when.cost_ratio_max
    ok = canary.avg_cost <= limit * stable.avg_cost
    reasons.append(f"avg_cost {canary.avg_cost:.6f} {'≤' if ok else '>'} {limit:.2f} × {stable.avg_cost:.6f} (stable)"
                   + ("" if ok else " → hold"))
    return ok


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"
