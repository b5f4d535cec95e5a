"""The shadow stage's verdict: stable's and the canary's answers to the same calls → pass, fail or wait.

In the shadow stage no user is served by the canary: a sampled share of
stable's calls is copied to it off the hot path (`gateway.shadowing`), and each
copy is recorded as a *pair*, the user's call (stable's record) and its
shadow (the canary's record), with the evaluators' scores of both answers
and the pairwise judge's verdict (the copy's `PAIRWISE_SOURCE` score). This module turns pairs into evidence and
evidence into a `Decision` of the same shape as `gateway.analysis.decide`'s.

The unit of analysis is the user, as in the canary stages (a call without a
user id is a unit of its own). Metrics, each on anytime-valid bounds from
`gateway.analysis.sequential` (valid however often the check looks):

- **win rate** (the pairwise judge): the mean of the canary's win scores
  (1 won, 0.5 tie, 0 lost, averaged over both orders), a ratio of per-user
  sums with its delta-method variance; it must be shown ≥ `shadow.win_rate_min`;
- **quality per evaluator** (paired): Σ canary score / Σ stable score over the
  pairs both answers were scored on; ≥ `promote_when.quality_ratio_min`. The
  pairing enters the variance through the per-user residuals
  y_u − R·x_u (Deng, Knoblich and Lu, KDD 2018), so the correlation of two
  answers to one question narrows the interval honestly;
- **cost per call** (paired, cache-neutral), against `promote_when.cost_ratio_max`;
- **error rate** and **p95 latency** (the share of canary answers slower
  than max(ratio × stable's p95, stable's p95 + slack), against the share of
  stable's slower than its p95, both over the shadowed calls), against
  `error_rate_ratio_max` and 1: compared as the canary stages compare them
  (`evidence.log_ratio`, which treats the two sides as independent:
  conservative, since paired answers are positively correlated).

The stage passes when the canary is shown not worse on answer quality:
every quality gate (win rate, each evaluator) has its bound on the good
side (each at `false_promote_rate`, an intersection-union test). It fails
into a rollback as soon as any metric, quality, errors, latency or cost, is
shown on the wrong side of its gate's threshold (at `false_rollback_rate`
split over the tests and the stages, Bonferroni). Errors, latency and cost
are not gates here: the canary stages that follow judge them on real
traffic, and a 1 % error rate needs more pairs to bound than a shadow
sample gives in a day. In the canary stages a rollback needs a breach of
the wider `rollback_when` bounds because users are exposed while the check
waits; in shadow nobody is, and a metric shown on the wrong side of its gate
could never pass, so the stage says so at once.

Order of a check: a critical error rate rolls back at once; fewer than
`shadow.min_pairs` pairs holds; a metric shown on the wrong side rolls back;
every gate shown and `min_stage_duration` passed advances to the first
percentage stage (or promotes when that is 100); otherwise hold, saying
what each undecided metric still needs, and `on_timeout` after
`max_stage_duration`.

Why one module over 400 lines: the shadow stage is a decision of its own
(paired evidence, its gates, its explanations), kept apart from `decide` and
whole in one place.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, NamedTuple

from gateway.analysis.decide import Decision, MetricTest, Outcome, Role, Verdict
from gateway.analysis.evidence import ArmEvidence, LatencyThresholds, Sums, log_ratio, percentile_cont
from gateway.analysis.sequential import radius_multiplier
from gateway.models import RequestRecord, RolloutState
from gateway.policy import RolloutPolicy, next_stage

# The quality source under which a shadow copy's pairwise win score is recorded.
PAIRWISE_SOURCE = "pairwise"


@dataclass(frozen=True, slots=True)
class ShadowPair:
    """One shadowed call: stable's record (the user's call), the canary's (its copy) and their scores.

    `stable_scores` / `canary_scores`: evaluator source → score in [0, 1];
    `win`: the pairwise judge's win score of the canary, None when not judged.
    """

    stable: RequestRecord
    canary: RequestRecord
    stable_scores: Mapping[str, float] = field(default_factory=dict)
    canary_scores: Mapping[str, float] = field(default_factory=dict)
    win: float | None = None


class Paired(NamedTuple):
    """Per-user sums of a paired metric: x_u = stable's side, y_u = the canary's, over `pairs` pairs."""

    pairs: int = 0
    sums: Sums = Sums()


@dataclass(frozen=True, slots=True)
class ShadowEvidence:
    """Everything a shadow check knows, over the pairs recorded in [since, until).

    `stable` / `canary`: each side of the pairs as an arm (calls, errors, slow
    shares against `latency`, cost); `win`: x = judged pairs, y = Σ win
    scores; `sources`: paired evaluator scores; `cost`: paired cache-neutral cost.
    """

    since: datetime
    until: datetime
    pairs: int
    users: int
    stable: ArmEvidence
    canary: ArmEvidence
    win: Sums = Sums()
    sources: Mapping[str, Paired] = field(default_factory=dict)
    cost: Paired = Paired()
    latency: LatencyThresholds | None = None

    def public(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "pairs": self.pairs,
            "users": self.users,
            "judged_pairs": int(self.win.x),
            "win_rate": self.win.ratio,
            "latency_thresholds_ms": None if self.latency is None else {
                "stable_p95": self.latency.reference_ms, "gate": self.latency.gate_ms},
            "stable": self.stable.public(),
            "canary": self.canary.public(),
            "quality_by_source": {
                name: {"pairs": paired.pairs, "stable_avg": _mean(paired.sums.x, paired.pairs),
                       "canary_avg": _mean(paired.sums.y, paired.pairs)}
                for name, paired in sorted(self.sources.items())},
            "cost": {"pairs": self.cost.pairs, "stable_avg": _mean(self.cost.sums.x, self.cost.pairs),
                     "canary_avg": _mean(self.cost.sums.y, self.cost.pairs)},
        }


class _Unit:
    __slots__ = (
        "canary_answered",
        "canary_cost",
        "canary_errors",
        "canary_slow",
        "judged",
        "pairs",
        "priced",
        "sources",
        "stable_answered",
        "stable_cost",
        "stable_errors",
        "stable_slow",
        "win",
    )

    def __init__(self) -> None:
        self.pairs = self.stable_errors = self.canary_errors = self.stable_answered = self.canary_answered = 0
        self.stable_slow = self.canary_slow = self.judged = self.priced = 0
        self.win = self.stable_cost = self.canary_cost = 0.0
        self.sources: dict[str, list[float]] = {}


def shadow_evidence_from_pairs(pairs: Iterable[ShadowPair], *, since: datetime, until: datetime,
                               policy: RolloutPolicy) -> ShadowEvidence:
    """The evidence of the pairs whose user's call was made in [since, until).

    A pair counts when neither side was abandoned (client_cancelled). The
    unit is the user (`user_hash`), or the call itself when it carried no
    user id. Latency thresholds come from the p95 of stable's answered side
    (`LatencyThresholds.of`). The store computes the same numbers in SQL.
    """
    kept = [pair for pair in pairs if since <= pair.stable.created_at < until
            and "client_cancelled" not in (pair.stable.status, pair.canary.status)]
    answered = sorted(pair.stable.latency_ms for pair in kept if pair.stable.status == "ok")
    reference = percentile_cont(answered, 0.95)
    latency = LatencyThresholds.of(reference, policy) if reference is not None else None
    units: dict[str, _Unit] = {}
    for pair in kept:
        unit = units.setdefault(pair.stable.user_hash or f"call:{pair.stable.id}", _Unit())
        stable, canary = pair.stable, pair.canary
        unit.pairs += 1
        unit.stable_errors += stable.status == "error"
        unit.canary_errors += canary.status == "error"
        if stable.status == "ok":
            unit.stable_answered += 1
            unit.stable_slow += latency is not None and stable.latency_ms > latency.reference_ms
        if canary.status == "ok":
            unit.canary_answered += 1
            unit.canary_slow += latency is not None and canary.latency_ms > latency.gate_ms
        if pair.win is not None:
            unit.judged += 1
            unit.win += pair.win
        for source, stable_score in pair.stable_scores.items():
            canary_score = pair.canary_scores.get(source)
            if canary_score is not None:
                tally = unit.sources.setdefault(source, [0.0, 0.0, 0.0])
                tally[0] += 1
                tally[1] += stable_score
                tally[2] += canary_score
        stable_cost, canary_cost = _neutral_cost(stable), _neutral_cost(canary)
        if stable_cost is not None and canary_cost is not None:
            unit.priced += 1
            unit.stable_cost += stable_cost
            unit.canary_cost += canary_cost
    members = list(units.values())
    names = sorted({name for unit in members for name in unit.sources})

    def side(version: str, errors: str, answered: str, slow: str, cost: str) -> ArmEvidence:
        slow_sums = Sums.of((getattr(unit, answered), getattr(unit, slow)) for unit in members)
        return ArmEvidence(
            version=version, users=len(members), calls=sum(unit.pairs for unit in members),
            errors=Sums.of((unit.pairs, getattr(unit, errors)) for unit in members),
            slow=slow_sums, slow_reference=slow_sums,
            cost=Sums.of((unit.priced, getattr(unit, cost)) for unit in members),
        )

    return ShadowEvidence(
        since=since, until=until, pairs=len(kept), users=len(members),
        stable=side(kept[0].stable.version if kept else "", "stable_errors", "stable_answered", "stable_slow",
                    "stable_cost"),
        canary=side(kept[0].canary.version if kept else "", "canary_errors", "canary_answered", "canary_slow",
                    "canary_cost"),
        win=Sums.of((unit.judged, unit.win) for unit in members),
        sources={name: paired_sums([(unit.sources[name][1], unit.sources[name][2], int(unit.sources[name][0]))
                                    for unit in members if name in unit.sources]) for name in names},
        cost=paired_sums([(unit.stable_cost, unit.canary_cost, unit.priced) for unit in members if unit.priced]),
        latency=latency,
    )


def paired_sums(units: Iterable[tuple[float, float, int]]) -> Paired:
    """Paired sums from per-unit (Σ stable's side x_u, Σ the canary's y_u, pairs) of units with pairs.

    Unlike `Sums.of`, a unit whose stable side sums to 0 still counts: its
    canary side carries information about the ratio.
    """
    pairs = count = 0
    x = y = xx = yy = xy = 0.0
    for xu, yu, n in units:
        count += 1
        pairs += n
        x += xu
        y += yu
        xx += xu * xu
        yy += yu * yu
        xy += xu * yu
    return Paired(pairs, Sums(count, x, y, xx, yy, xy))


@dataclass(slots=True)
class _Check:
    policy: RolloutPolicy
    evidence: ShadowEvidence
    elapsed_s: float
    gate_alpha: float
    rollback_alpha: float
    tests: list[MetricTest] = field(default_factory=list)

    def pair_rate(self) -> float:
        return self.evidence.pairs / self.elapsed_s if self.elapsed_s > 0 else 0.0


def decide_shadow(evidence: ShadowEvidence, policy: RolloutPolicy, state: RolloutState, now: datetime) -> Decision:
    """Decide for a rollout in the shadow stage; see the module docstring for the rules and their order.

    `advance` carries the first percentage stage in `next_percent`; `promote`
    when that stage is 100 (or there is none below it).
    """
    elapsed = max((now - state.stage_started_at).total_seconds(), 0.0) if state.stage_started_at else 0.0
    shadow = policy.shadow
    canary, stable = evidence.canary, evidence.stable
    rate = canary.errors.ratio
    if canary.calls >= shadow.min_pairs and rate is not None and rate > policy.critical_error_rate:
        stable_rate = stable.errors.ratio or 0.0
        if rate > policy.rollback_when.error_rate_ratio_above * stable_rate:
            line = (f"critical: canary error rate {rate:.1%} on {canary.calls} shadow calls > critical_error_rate "
                    f"{policy.critical_error_rate:.0%} (stable {stable_rate:.1%} on the same calls) → rollback")
            return Decision("rollback", next_percent=0.0, headline=line, elapsed_s=elapsed)

    count = _test_count(evidence)
    check = _Check(policy, evidence, elapsed, gate_alpha=policy.false_promote_rate,
                   rollback_alpha=policy.false_rollback_rate / (policy.judged_stages * count))
    notes: list[str] = []
    _win_rate(check)
    for name, paired in sorted(evidence.sources.items()):
        _paired(check, f"quality:{name}", f"quality ({name}), paired", paired,
                policy.promote_when.quality_ratio_min, at_most=False)
    if evidence.win.x == 0 and not evidence.sources:
        notes.append("shadow: no quality signal (no pairwise judge, no evaluator scored both answers): "
                     "only errors, latency and cost can fail the stage")
    _errors(check)
    _latency(check)
    _paired(check, "cost", "cost per call (cache-neutral), paired", evidence.cost, policy.promote_when.cost_ratio_max,
            at_most=True, gate=False)
    tests = tuple(check.tests)
    following = next_stage(0.0, policy.stages)
    target = "promote" if following is None else f"{following:g} %"

    def verdict(outcome: Outcome, headline: str, next_percent: float | None = None) -> Decision:
        return Decision(outcome, tests, next_percent, (), None, tuple(notes), headline, elapsed,
                        policy.min_stage_duration, 0.0)

    if evidence.pairs < shadow.min_pairs:
        return _hold(verdict("hold", f"shadow: not enough pairs yet ({evidence.pairs} of min_pairs "
                                     f"{shadow.min_pairs}) → hold"), policy)
    failed = [test for test in tests if test.verdict == "rollback"]
    if failed:
        return verdict("rollback", f"shadow stage failed: {failed[0].line}", 0.0)
    undecided = [test.line for test in tests if test.role == "gate" and test.verdict != "pass"]
    if undecided:
        return _hold(verdict("hold", "shadow: hold: " + "; ".join(undecided)), policy)
    if elapsed < policy.min_stage_duration:
        return _hold(verdict("hold", f"shadow: every gate passed; the stage has run {_duration(elapsed)} of "
                                     f"min_stage_duration {_duration(policy.min_stage_duration)} → hold"), policy)
    if following is None:
        return verdict("promote", f"shadow stage passed on {evidence.pairs} pairs, no percentage stage below 100 "
                                  "→ promote")
    return verdict("advance", f"shadow stage passed on {evidence.pairs} pairs: shadow → {target}", following)


def _test_count(evidence: ShadowEvidence) -> int:
    """Rollback tests a check may run: win rate, each paired source, errors, latency, cost."""
    return 4 + len(evidence.sources)


def _win_rate(check: _Check) -> None:
    win, threshold = check.evidence.win, check.policy.shadow.win_rate_min
    need = check.policy.shadow.min_pairs
    if win.x == 0:
        return
    label = "judge win rate (pairwise, both orders)"
    if win.x < need:
        _short(check, "win_rate", label, threshold, int(win.x), at_most=False, unit="judged pairs")
        return
    estimate = win.y / win.x
    se = math.sqrt(win.ratio_variance())
    fail_radius = radius_multiplier(max(win.units, 1), check.rollback_alpha, check.policy.sequential_tuning) * se
    for role, alpha in _roles(check):
        radius = radius_multiplier(max(win.units, 1), alpha, check.policy.sequential_tuning) * se
        lower, upper = estimate - radius, estimate + radius
        head = f"{label} {estimate:.3f} [{lower:.3f}, {upper:.3f}]"
        if role == "gate":
            verdict: Verdict = "pass" if lower >= threshold else "undecided"
            if verdict == "pass":
                line = f"{head} ≥ {threshold:g}: gate passes"
            else:
                line = f"{head} not shown ≥ {threshold:g}: " + _advice(check, estimate - threshold, radius, fail_radius,
                                                                        win.x)
        else:
            verdict = "rollback" if upper < threshold else "no_rollback"
            line = (f"{head} < {threshold:g} → rollback" if verdict == "rollback"
                    else f"{head}: not shown below {threshold:g}")
        check.tests.append(MetricTest("win_rate", role, label, estimate, lower, upper, threshold, alpha, verdict,
                                      False, line))


def _paired(check: _Check, metric: str, label: str, paired: Paired, threshold: float, *, at_most: bool,
            gate: bool = True) -> None:
    """A paired ratio Σy/Σx decided at `threshold` on the log scale: a gate and a rollback test, or a rollback only."""
    need = check.policy.shadow.min_pairs
    sums = paired.sums
    if paired.pairs == 0:
        return
    if paired.pairs < need:
        if gate:
            _short(check, metric, label, threshold, paired.pairs, at_most=at_most, unit="pairs")
        return
    if sums.x <= 0 or sums.y <= 0:
        # A side that is 0 on every pair: no ratio to bound, and no doubt about the direction.
        zero = "canary" if sums.y <= 0 else "stable"
        if sums.x <= 0 and sums.y <= 0:
            bad, line = False, f"{label}: both sides are 0 on all {paired.pairs} pairs"
        else:
            bad = (zero == "stable") == at_most
            line = f"{label}: the {zero} side is 0 on all {paired.pairs} pairs"
        for role, alpha in _roles(check, gate):
            verdict: Verdict = ("undecided" if bad else "pass") if role == "gate" else \
                ("rollback" if bad else "no_rollback")
            check.tests.append(MetricTest(metric, role, label, None, None, None, threshold, alpha, verdict, at_most,
                                          line + (" → rollback" if verdict == "rollback" else "")))
        return
    ratio = sums.y / sums.x
    se = math.sqrt(sums.ratio_variance()) / ratio
    _decide_ratio(check, metric, label, ratio, math.log(ratio), se, max(sums.units, 1), threshold, at_most,
                  paired.pairs, gate=gate)


def _errors(check: _Check) -> None:
    canary, stable = check.evidence.canary, check.evidence.stable
    threshold = check.policy.promote_when.error_rate_ratio_max
    if canary.calls == 0:
        return
    if canary.errors.y == 0 and stable.errors.y == 0:
        return
    _arms(check, "error_rate", "error rate, on the same calls", canary.errors, stable.errors, threshold)


def _latency(check: _Check) -> None:
    canary, stable, thresholds = check.evidence.canary, check.evidence.stable, check.evidence.latency
    if thresholds is None or canary.slow.x == 0:
        return
    label = (f"p95 latency: canary's share of shadow answers slower than {thresholds.gate_ms:,.0f} ms vs stable's "
             f"slower than its p95 {thresholds.reference_ms:,.0f} ms")
    if canary.slow.y == 0:
        return
    _arms(check, "p95_latency", label, canary.slow, stable.slow_reference, 1.0)


def _arms(check: _Check, metric: str, label: str, canary: Sums, stable: Sums, threshold: float) -> None:
    """A count metric of the two sides compared as the canary stages compare it (`evidence.log_ratio`).

    Rollback only."""
    if min(canary.x, stable.x) < check.policy.shadow.min_pairs:
        return
    compared = log_ratio(canary, stable, counts=True)
    if compared is None:
        return
    _decide_ratio(check, metric, label, compared.ratio, compared.log_ratio, compared.se, max(compared.units, 1),
                  threshold, True, int(canary.x), gate=False)


def _decide_ratio(check: _Check, metric: str, label: str, ratio: float, log_value: float, se: float, units: int,
                  threshold: float, at_most: bool, pairs: int, *, gate: bool = True) -> None:
    """Gate and rollback tests (or the rollback test only) of one ratio at one threshold, on log-scale bounds."""
    tuning = check.policy.sequential_tuning
    fail_radius = radius_multiplier(units, check.rollback_alpha, tuning) * se
    for role, alpha in _roles(check, gate):
        radius = radius_multiplier(units, alpha, tuning) * se
        lower, upper = math.exp(log_value - radius), math.exp(log_value + radius)
        head = f"{label} ×{ratio:.3g} [{lower:.3g}, {upper:.3g}]"
        good, bad = ("≤", ">") if at_most else ("≥", "<")
        if role == "gate":
            passed = upper <= threshold if at_most else lower >= threshold
            verdict: Verdict = "pass" if passed else "undecided"
            margin = (math.log(threshold) - log_value) * (1 if at_most else -1)
            line = (f"{head} {good} {threshold:g}: gate passes" if passed else
                    f"{head} not shown {good} {threshold:g}: {_advice(check, margin, radius, fail_radius, pairs)}")
        else:
            failed = lower > threshold if at_most else upper < threshold
            verdict = "rollback" if failed else "no_rollback"
            line = f"{head} {bad} {threshold:g} → rollback" if failed else f"{head}: not shown {bad} {threshold:g}"
        check.tests.append(MetricTest(metric, role, label, ratio, lower, upper, threshold, alpha, verdict, at_most,
                                      line))


def _roles(check: _Check, gate: bool = True) -> tuple[tuple[Role, float], ...]:
    if not gate:
        return (("rollback", check.rollback_alpha),)
    return (("gate", check.gate_alpha), ("rollback", check.rollback_alpha))


def _advice(check: _Check, margin: float, radius: float, fail_radius: float, pairs: float) -> str:
    """How many more pairs a bound needs to clear the threshold (radius shrinks as 1/√n): the gate's bound
    when the estimate is on the good side (`margin` > 0), the rollback test's when it is on the wrong side."""
    if margin == 0 or radius <= 0:
        return "the estimate sits on the threshold: more pairs will not decide it unless it moves"
    needed = radius if margin > 0 else fail_radius
    more = max((needed / abs(margin)) ** 2 - 1.0, 0.0) * pairs
    rate = check.pair_rate()
    when = f" (~{_duration(more / rate)} at the current sampling)" if rate > 0 else ""
    direction = "to pass" if margin > 0 else "to fail"
    return f"needs ~{more:,.0f} more pairs {direction}{when}"


def _short(check: _Check, metric: str, label: str, threshold: float, have: int, *, at_most: bool, unit: str) -> None:
    need = check.policy.shadow.min_pairs
    line = f"{label}: not enough {unit} ({have} of {need})"
    check.tests.append(MetricTest(metric, "gate", label, None, None, None, threshold, check.gate_alpha, "undecided",
                                  at_most, line, float(need - have)))


def _hold(decision: Decision, policy: RolloutPolicy) -> Decision:
    """A hold, or what `on_timeout` says once the shadow stage has run `max_stage_duration`."""
    if decision.elapsed_s < policy.max_stage_duration:
        return decision
    timeout = (f"the shadow stage has run {_duration(decision.elapsed_s)}, past max_stage_duration "
               f"{_duration(policy.max_stage_duration)}, undecided")
    if policy.on_timeout == "rollback":
        return replace(decision, outcome="rollback", next_percent=0.0,
                       headline=f"{timeout} → rollback (on_timeout: rollback)",
                       notes=(*decision.notes, decision.summary))
    return replace(decision, alerts=(*decision.alerts, "stage_timeout"),
                   notes=(*decision.notes, f"{timeout}: holding (on_timeout: hold)"))


def _neutral_cost(record: RequestRecord) -> float | None:
    return record.uncached_cost_usd if record.uncached_cost_usd is not None else record.cost_usd


def _mean(total: float, count: int) -> float | None:
    return total / count if count else None


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"
