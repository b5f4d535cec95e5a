"""Per-user evidence: what a check knows about each version since the stage started.

The unit of analysis is the user, because users are what the router
randomizes: calls of one user are correlated (one user asks many similar
questions), so treating calls as independent understates the noise. Every
metric is a ratio of per-user sums over the users of one version,

    R = Σ_u y_u / Σ_u x_u      (errors / calls, quality / scored calls, ...)

and its variance comes from the delta method over users (Deng, Knoblich and
Lu, "Applying the Delta Method in Metric Analytics: A Practical Guide with
Novel Ideas", KDD 2018, section 3):

    Var(R̂) ≈ n/(n−1) · Σ_u (y_u − R̂·x_u)² / (Σ_u x_u)²,   n = users with x_u > 0,

which needs only five sums per version and metric (Σx, Σy, Σx², Σy², Σxy):
the store computes them in SQL, `evidence_from_records` computes them from
raw records, and tests hold the two to the same numbers.

Two versions are compared as log(R_canary / R_stable), whose variance is the
sum of each side's relative variance Var(R̂)/R̂². For count metrics (errors,
slow calls) that relative variance is floored at the binomial one, 1/y − 1/x,
so a handful of events cannot make an interval spuriously narrow, and an
empty count is read as half an event (the Haldane–Anscombe correction) so the
logarithm exists.

Anonymous calls (no user id: pinned to stable), calls the client
abandoned and shadow copies (answered to no one) are left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from gateway.models import QualityScore, RequestRecord
from gateway.policy import RolloutPolicy


class Sums(NamedTuple):
    """Σ over users of x_u, y_u, x_u², y_u², x_u·y_u for one version and one ratio metric Σy/Σx.

    `units` counts the users with x_u > 0 (users with x_u = 0 add nothing to any sum).
    A named tuple: the simulator builds millions of them.
    """

    units: int = 0
    x: float = 0.0
    y: float = 0.0
    xx: float = 0.0
    yy: float = 0.0
    xy: float = 0.0

    @property
    def ratio(self) -> float | None:
        return self.y / self.x if self.x > 0 else None

    def ratio_variance(self) -> float:
        """Delta-method variance of Σy/Σx over users (Deng et al. 2018); 0 with fewer than two users."""
        if self.x <= 0 or self.units < 2:
            return 0.0
        r = self.y / self.x
        squares = max(self.yy - 2.0 * r * self.xy + r * r * self.xx, 0.0)
        return squares / (self.x * self.x) * self.units / (self.units - 1)

    @staticmethod
    def of(pairs: Iterable[tuple[float, float]]) -> Sums:
        """Sums from per-user (x_u, y_u) pairs."""
        units = 0
        x = y = xx = yy = xy = 0.0
        for xu, yu in pairs:
            if xu <= 0:
                continue
            units += 1
            x += xu
            y += yu
            xx += xu * xu
            yy += yu * yu
            xy += xu * yu
        return Sums(units, x, y, xx, yy, xy)

    def public(self) -> dict[str, Any]:
        return {"units": self.units, "x": self.x, "y": self.y, "xx": self.xx, "yy": self.yy, "xy": self.xy}


@dataclass(frozen=True, slots=True)
class ArmEvidence:
    """One version's per-user sums over the stage.

    errors: y = errors, x = calls. quality: y = Σ call quality, x = scored calls.
    slow / slow_reference / slow_rollback: y = answered calls slower than the
    latency gate / reference / rollback threshold, x = answered calls.
    cost: y = cache-neutral cost (every input token priced as uncached), x = priced calls.
    sources: per quality source, y = Σ scores, x = scores.
    """

    version: str
    users: int = 0
    calls: int = 0
    errors: Sums = Sums()
    quality: Sums = Sums()
    slow: Sums = Sums()
    slow_reference: Sums = Sums()
    slow_rollback: Sums = Sums()
    cost: Sums = Sums()
    # Σ of the cost actually billed (with cache prices), shown beside the neutral one.
    actual_cost: float = 0.0
    sources: Mapping[str, Sums] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "users": self.users,
            "calls": self.calls,
            "errors": int(self.errors.y),
            "error_rate": self.errors.ratio,
            "scored": int(self.quality.x),
            "avg_quality": self.quality.ratio,
            "answered": int(self.slow.x),
            "slow_share": self.slow.ratio,
            "avg_cost": self.cost.ratio,
            "avg_actual_cost": self.actual_cost / self.cost.x if self.cost.x else None,
            "quality_by_source": {name: {"avg": sums.ratio, "count": int(sums.x)}
                                  for name, sums in sorted(self.sources.items())},
        }


@dataclass(frozen=True, slots=True)
class LatencyThresholds:
    """Milliseconds: stable's p95 (the reference) and the gate's and rollback bound's thresholds."""

    reference_ms: float
    gate_ms: float
    rollback_ms: float | None

    @staticmethod
    def of(reference_ms: float, policy: RolloutPolicy) -> LatencyThresholds:
        """The gate: max(ratio × reference, reference + slack); the rollback bound: ratio × reference."""
        gate = policy.promote_when
        above = policy.rollback_when.p95_latency_ratio_above
        return LatencyThresholds(
            reference_ms=reference_ms,
            gate_ms=max(gate.p95_latency_ratio_max * reference_ms, reference_ms + gate.latency_slack_ms),
            rollback_ms=above * reference_ms if above is not None else None,
        )


@dataclass(frozen=True, slots=True)
class Evidence:
    """Both versions over the same period [since, until), with the latency thresholds used."""

    stable: ArmEvidence
    canary: ArmEvidence
    since: datetime
    until: datetime
    latency: LatencyThresholds | None = None
    # Users with calls on both versions in the period: users the router moved to the canary
    # when the stage grew, whose last stable calls were recorded just after the stage started
    # (replicas route on the new percentage within a refresh interval).
    users_in_both: int = 0

    def public(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "latency_thresholds_ms": None if self.latency is None else {
                "stable_p95": self.latency.reference_ms, "gate": self.latency.gate_ms,
                "rollback": self.latency.rollback_ms},
            "users_in_both": self.users_in_both,
            "stable": self.stable.public(),
            "canary": self.canary.public(),
        }


class LogRatio(NamedTuple):
    """log(R_canary / R_stable) with its delta-method standard error, over `units` users."""

    ratio: float
    log_ratio: float
    se: float
    units: int


def log_ratio(canary: Sums, stable: Sums, *, counts: bool) -> LogRatio | None:
    """Compare two versions' ratio metrics; None when either has no denominator or both have no events.

    `counts`: y counts events among x trials (errors, slow calls): the binomial
    floor and the half-event correction apply.
    """
    if canary.x <= 0 or stable.x <= 0 or (canary.y <= 0 and stable.y <= 0):
        return None
    variance = _relative_variance(canary, counts) + _relative_variance(stable, counts)
    c_ratio = max(canary.y, 0.5) / canary.x if canary.y <= 0 else canary.y / canary.x
    s_ratio = max(stable.y, 0.5) / stable.x if stable.y <= 0 else stable.y / stable.x
    value = math.log(c_ratio / s_ratio)
    return LogRatio(ratio=math.exp(value), log_ratio=value, se=math.sqrt(variance),
                    units=canary.units + stable.units)


def _relative_variance(sums: Sums, counts: bool) -> float:
    events = sums.y if sums.y > 0 else 0.5
    mean = events / sums.x
    relative = sums.ratio_variance() / (mean * mean) if sums.y > 0 else 0.0
    if counts:
        relative = max(relative, 1.0 / events - 1.0 / max(sums.x, events))
    return relative


def percentile_cont(ordered: Sequence[float], fraction: float) -> float | None:
    """PostgreSQL's percentile_cont over sorted values: linear interpolation between the closest ranks."""
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return float(ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower))


def latency_reference(baseline: Sequence[float], stage: Sequence[float], *, min_requests: int) -> float | None:
    """Stable's p95 latency (ms) the latency thresholds are built on.

    The p95 of stable's answered calls over the baseline period before the
    stage (fixed for the whole stage, so the thresholds do not move between
    checks); when the baseline has fewer than `min_requests` calls, the p95
    of stable's answered calls in the stage so far. Both sorted ascending.
    """
    if len(baseline) >= min_requests:
        return percentile_cont(baseline, 0.95)
    return percentile_cont(stage, 0.95)


class _User:
    __slots__ = (
        "actual_cost",
        "answered",
        "calls",
        "cost",
        "errors",
        "priced",
        "quality",
        "scored",
        "slow",
        "slow_reference",
        "slow_rollback",
        "sources",
    )

    def __init__(self) -> None:
        self.calls = self.errors = self.answered = self.slow = self.slow_reference = self.slow_rollback = 0
        self.cost = self.actual_cost = self.quality = 0.0
        self.priced = self.scored = 0
        self.sources: dict[str, list[float]] = {}


def evidence_from_records(
    records: Iterable[RequestRecord],
    scores: Iterable[QualityScore],
    *,
    stable: str,
    canary: str,
    since: datetime,
    until: datetime,
    latency: LatencyThresholds | None,
) -> Evidence:
    """The evidence from raw request records and quality scores, as the store computes it in SQL.

    Counts calls of `stable` and `canary` with since <= created_at < until, a
    user id, and a status other than client_cancelled, served to users (shadow
    copies are never a version's production traffic). A call's cost is its
    cache-neutral cost (`uncached_cost_usd`, else `cost_usd` for records
    written before it existed); `quality` is the call's derived quality.
    """
    users: dict[str, dict[str, _User]] = {stable: {}, canary: {}}
    owner: dict[str, _User] = {}
    for record in records:
        if (record.version not in users or record.user_hash is None or record.status == "client_cancelled"
                or record.mode != "live" or not since <= record.created_at < until):
            continue
        user = users[record.version].setdefault(record.user_hash, _User())
        owner[record.id] = user
        user.calls += 1
        if record.status == "error":
            user.errors += 1
        if record.status == "ok":
            user.answered += 1
            if latency is not None:
                user.slow += record.latency_ms > latency.gate_ms
                user.slow_reference += record.latency_ms > latency.reference_ms
                if latency.rollback_ms is not None:
                    user.slow_rollback += record.latency_ms > latency.rollback_ms
        neutral = record.uncached_cost_usd if record.uncached_cost_usd is not None else record.cost_usd
        if neutral is not None:
            user.priced += 1
            user.cost += neutral
            user.actual_cost += record.cost_usd if record.cost_usd is not None else neutral
        if record.quality is not None:
            user.scored += 1
            user.quality += record.quality
    for score in scores:
        scored_user = owner.get(score.request_id)
        if scored_user is not None:
            tally = scored_user.sources.setdefault(score.source, [0.0, 0.0])
            tally[0] += 1
            tally[1] += score.score

    def arm(version: str) -> ArmEvidence:
        members = list(users[version].values())
        sources = sorted({name for user in members for name in user.sources})
        return ArmEvidence(
            version=version,
            users=len(members),
            calls=sum(user.calls for user in members),
            errors=Sums.of((user.calls, user.errors) for user in members),
            quality=Sums.of((user.scored, user.quality) for user in members),
            slow=Sums.of((user.answered, user.slow) for user in members),
            slow_reference=Sums.of((user.answered, user.slow_reference) for user in members),
            slow_rollback=Sums.of((user.answered, user.slow_rollback) for user in members),
            cost=Sums.of((user.priced, user.cost) for user in members),
            actual_cost=sum(user.actual_cost for user in members),
            sources={name: Sums.of(_source_pair(user, name) for user in members) for name in sources},
        )

    return Evidence(stable=arm(stable), canary=arm(canary), since=since, until=until, latency=latency,
                    users_in_both=len(users[stable].keys() & users[canary].keys()))


def _source_pair(user: _User, source: str) -> tuple[float, float]:
    count, total = user.sources.get(source, (0.0, 0.0))
    return count, total
