"""The rollout decision: evidence since the stage started + the policy + the rollout state → what to do, and why.

Pure: `decide` is a function of numbers; the scheduler fetches, calls and
applies, the simulator (`benchmarks/rollout_sim.py`) and the what-if endpoint
call the same function.

Every metric is the ratio canary / stable of a per-user ratio metric (see
`evidence`), judged on one-sided anytime-valid bounds (see `sequential`):

- **gates** (`promote_when`): error rate ≤ `error_rate_ratio_max`, quality ≥
  `quality_ratio_min`, p95 latency ≤ `p95_latency_ratio_max` (or within
  `latency_slack_ms`), cost ≤ `cost_ratio_max`. A gate passes when its bound
  lies on the good side. Each gate runs at `false_promote_rate`: advancing
  needs every gate, so the chance that a canary failing any one gate
  advances is at most that rate (an intersection-union test, Berger 1982).
- **rollback bounds** (`rollback_when`): error rate above
  `error_rate_ratio_above`, quality (overall and per source) below
  `quality_ratio_below`, optional latency and cost bounds. `false_rollback_rate`
  is split evenly (Bonferroni) over the rollback tests of a check and the
  judged stages, so a rollout whose canary is within every bound is rolled
  back with at most that chance over its whole life.

Latency is compared as the share of answered calls slower than a threshold:
the gate holds when the share of canary calls slower than
max(ratio × stable p95, stable p95 + slack) is shown to be below the share of
stable calls slower than stable's p95 (about 5 %), i.e. the canary's p95 is
below the threshold.

Order of a check:

1. a canary at 100 % (or beyond the last stage) is promoted: stable has no
   traffic left to compare with;
2. a critical breach (canary error rate above `critical_error_rate` and above
   `error_rate_ratio_above` × stable's, with `min_requests` canary calls) rolls
   back at once;
3. fewer than `min_requests` calls on either version: hold;
4. a sample ratio mismatch (from a minute into the stage, users seen on
   both versions counted as moved to the canary): hold and alert, never a verdict;
5. any rollback bound shown: rollback;
6. every gate shown and `min_stage_duration` passed: advance, or promote after the last stage below 100 %;
7. otherwise hold, saying what each undecided gate still needs; a stage past
   `max_stage_duration` does what `on_timeout` says.

Why one module over 400 lines: the rules above are one ordered list, and
each rule's explanation is written next to its test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal, NamedTuple

from gateway.analysis.evidence import ArmEvidence, Evidence, Sums, log_ratio
from gateway.analysis.sequential import radius_multiplier
from gateway.analysis.srm import SrmResult, sample_ratio_mismatch
from gateway.models import RolloutState
from gateway.policy import RolloutPolicy, next_stage

Outcome = Literal["rollback", "advance", "promote", "hold"]
# Seconds into a stage before the sample ratio mismatch test runs.
SRM_SETTLE_S = 60.0
Role = Literal["gate", "rollback"]
Verdict = Literal["pass", "undecided", "rollback", "no_rollback"]
Alert = Literal["sample_ratio_mismatch", "no_canary_traffic", "stage_timeout"]


class MetricTest(NamedTuple):
    """One metric judged against one threshold: its estimate, interval, threshold, verdict and line.

    `estimate`, `lower`, `upper` and `threshold` are ratios canary / stable
    (None when there is nothing to estimate); the interval's two ends are
    one-sided anytime-valid bounds at the test's `alpha` each. `note` is the
    line of a test decided without an estimate (no data, not enough data).
    `needs_calls` / `needs_seconds`: more canary calls, and time at the
    stage's traffic so far, an undecided gate needs (None when unknown).
    Lines are built when read, so deciding costs no string formatting.
    """

    metric: str
    role: Role
    label: str
    estimate: float | None
    lower: float | None
    upper: float | None
    threshold: float
    alpha: float
    verdict: Verdict
    # True: the good side is below the threshold (error rate, latency, cost); False: above (quality).
    at_most: bool = True
    note: str | None = None
    needs_calls: float | None = None
    needs_seconds: float | None = None
    wrong_side: bool = False

    @property
    def line(self) -> str:
        """One readable line, e.g. `error rate ×1.9 [1.6, 2.3] > 1.5 → rollback`."""
        if self.note is not None:
            return self.note
        head = f"{self.label} ×{self.estimate:.3g} [{self.lower:.3g}, {self.upper:.3g}]"
        at_most = self.at_most
        if self.verdict == "rollback":
            return f"{head} {'>' if at_most else '<'} {self.threshold:g} → rollback"
        if self.verdict == "no_rollback":
            return f"{head}: not shown {'above' if at_most else 'below'} {self.threshold:g}, no rollback"
        if self.verdict == "pass":
            return f"{head} {'≤' if at_most else '≥'} {self.threshold:g}: gate passes"
        if self.wrong_side:
            advice = "the estimate itself is on the wrong side: more data will not pass it unless it changes"
        elif self.needs_calls is not None:
            when = f" (~{_duration(self.needs_seconds)} at the current traffic)" if self.needs_seconds else ""
            advice = f"needs ~{self.needs_calls:,.0f} more canary calls{when}"
        else:
            advice = "needs more data"
        return f"{head} not shown {'≤' if at_most else '≥'} {self.threshold:g}: {advice}"

    def public(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "role": self.role, "estimate": _rounded(self.estimate),
            "lower": _rounded(self.lower), "upper": _rounded(self.upper), "threshold": self.threshold,
            "alpha": self.alpha, "verdict": self.verdict, "line": self.line,
            "needs_calls": None if self.needs_calls is None else math.ceil(self.needs_calls),
            "needs_seconds": None if self.needs_seconds is None else round(self.needs_seconds),
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """What a check decided, with everything that explains it.

    `summary` is the one line a person reads; `reasons` the lines behind it
    (notes first, then one per test); `next_percent` the canary percentage an
    advance moves to.
    """

    outcome: Outcome
    tests: tuple[MetricTest, ...] = ()
    next_percent: float | None = None
    alerts: tuple[Alert, ...] = ()
    srm: SrmResult | None = None
    # Lines that come before the tests' (no traffic, not enough data, a mismatch, a timeout).
    notes: tuple[str, ...] = ()
    # The summary when it is not derived from the tests.
    headline: str | None = None
    elapsed_s: float = 0.0
    min_stage_s: float = 0.0
    percent: float = 0.0

    @property
    def summary(self) -> str:
        if self.headline is not None:
            return self.headline
        if self.outcome == "rollback":
            return next(test.line for test in self.tests if test.verdict == "rollback")
        if self.outcome == "promote":
            return f"every gate passed at {self.percent:g} %, the last stage → promote"
        if self.outcome == "advance":
            return f"every gate passed: {self.percent:g} % → {self.next_percent:g} %"
        undecided = [test.line for test in self.tests if test.role == "gate" and test.verdict != "pass"]
        if undecided:
            return "hold: " + "; ".join(undecided)
        return (f"every gate passed; the stage has run {_duration(self.elapsed_s)} of min_stage_duration "
                f"{_duration(self.min_stage_s)} → hold")

    @property
    def reasons(self) -> tuple[str, ...]:
        return (*self.notes, *(test.line for test in self.tests), self.summary)

    def public(self) -> dict[str, Any]:
        return {
            "decision": self.outcome,
            "summary": self.summary,
            "reasons": list(self.reasons),
            "next_percent": self.next_percent,
            "alerts": list(self.alerts),
            "srm_p_value": None if self.srm is None else self.srm.p_value,
            "metrics": [test.public() for test in self.tests],
        }


@dataclass(slots=True)
class _Context:
    policy: RolloutPolicy
    canary: ArmEvidence
    stable: ArmEvidence
    elapsed_s: float
    gate_alpha: float
    rollback_alpha: float
    tests: list[MetricTest] = field(default_factory=list)

    def canary_rate(self) -> float:
        """Canary calls per second so far in the stage."""
        return self.canary.calls / self.elapsed_s if self.elapsed_s > 0 else 0.0


def decide(evidence: Evidence, policy: RolloutPolicy, state: RolloutState, now: datetime) -> Decision:
    """Decide for one running canary; see the module docstring for the rules and their order."""
    percent = state.canary_percent
    elapsed = max((now - state.stage_started_at).total_seconds(), 0.0) if state.stage_started_at else 0.0
    if percent >= 100:
        line = f"at {percent:g} % stable gets no traffic to compare with → promote"
        return Decision("promote", headline=line, percent=percent)
    canary, stable = evidence.canary, evidence.stable
    need = policy.min_requests

    breach = _critical_breach(canary, stable, policy)
    if breach is not None:
        return Decision("rollback", next_percent=0.0, headline=breach, percent=percent)

    alerts: list[Alert] = []
    notes: list[str] = []
    if canary.calls == 0 and elapsed >= policy.canary_traffic_grace:
        alerts.append("no_canary_traffic")
        notes.append(f"no canary call in {_duration(elapsed)} at {percent:g} %: is traffic reaching it?")

    context = _Context(policy, canary, stable, elapsed, gate_alpha=policy.false_promote_rate,
                       rollback_alpha=_rollback_alpha(evidence, policy))
    _error_rate(context)
    _quality(context)
    _latency(context, evidence)
    _cost(context)
    tests = tuple(context.tests)
    # Routing is monotonic: a user seen on both versions was moved to the canary; count them there once.
    # Replicas route on a new percentage within a refresh interval: the first minute is not judged.
    srm = sample_ratio_mismatch(canary_users=canary.users, stable_users=stable.users - evidence.users_in_both,
                                canary_percent=percent) if elapsed >= SRM_SETTLE_S else None

    def hold(headline: str | None) -> Decision:
        return _hold(Decision("hold", tests, None, tuple(alerts), srm, tuple(notes), headline, elapsed,
                              policy.min_stage_duration, percent), policy)

    if canary.calls < need or stable.calls < need:
        missing = [f"{name} has {arm.calls} of {need} calls" for name, arm in (("canary", canary), ("stable", stable))
                   if arm.calls < need]
        headline = f"not enough data yet ({'; '.join(missing)}; min_requests {need} each) → hold"
        return hold(headline)
    if srm is not None and srm.mismatch:
        alerts.append("sample_ratio_mismatch")
        headline = (f"sample ratio mismatch: canary has {srm.observed_canary_share:.2%} of users, expected "
                    f"{srm.expected_canary_share:.2%} (χ² p = {srm.p_value:.2g} < 0.001) → hold, no verdict")
        return hold(headline)
    if any(test.verdict == "rollback" for test in tests):
        return Decision("rollback", tests, 0.0, tuple(alerts), srm, tuple(notes), None, elapsed,
                        policy.min_stage_duration, percent)
    passed = all(test.verdict == "pass" for test in tests if test.role == "gate")
    if passed and elapsed >= policy.min_stage_duration:
        following = next_stage(percent, policy.stages)
        return Decision("promote" if following is None else "advance", tests, following, tuple(alerts), srm,
                        tuple(notes), None, elapsed, policy.min_stage_duration, percent)
    return hold(None)


def _hold(decision: Decision, policy: RolloutPolicy) -> Decision:
    """A hold, or what `on_timeout` says once the stage has run `max_stage_duration`."""
    if decision.elapsed_s < policy.max_stage_duration:
        return decision
    timeout = (f"the stage has run {_duration(decision.elapsed_s)}, past max_stage_duration "
               f"{_duration(policy.max_stage_duration)}, undecided")
    if policy.on_timeout == "rollback":
        line = f"{timeout} → rollback (on_timeout: rollback)"
        return replace(decision, outcome="rollback", next_percent=0.0, headline=line,
                       notes=(*decision.notes, decision.summary))
    return replace(decision, alerts=(*decision.alerts, "stage_timeout"),
                   notes=(*decision.notes, f"{timeout}: holding (on_timeout: hold)"))


def _critical_breach(canary: ArmEvidence, stable: ArmEvidence, policy: RolloutPolicy) -> str | None:
    rate = canary.errors.ratio
    if canary.calls < policy.min_requests or rate is None or rate <= policy.critical_error_rate:
        return None
    stable_rate = stable.errors.ratio or 0.0
    if rate <= policy.rollback_when.error_rate_ratio_above * stable_rate:
        return None  # stable fails as badly: an upstream outage, not the canary
    return (f"critical: canary error rate {rate:.1%} in {canary.calls} calls > critical_error_rate "
            f"{policy.critical_error_rate:.0%} (stable {stable_rate:.1%}) → rollback")


def _rollback_alpha(evidence: Evidence, policy: RolloutPolicy) -> float:
    sources = set(evidence.canary.sources) | set(evidence.stable.sources)
    bounds = policy.rollback_when
    tests = 2 + len(sources) + (bounds.p95_latency_ratio_above is not None) + (bounds.cost_ratio_above is not None)
    return policy.false_rollback_rate / (policy.judged_stages * tests)


def _error_rate(context: _Context) -> None:
    policy, canary, stable = context.policy, context.canary, context.stable
    gate, bound = policy.promote_when.error_rate_ratio_max, policy.rollback_when.error_rate_ratio_above
    if canary.errors.y == 0 and stable.errors.y == 0:
        if min(canary.calls, stable.calls) >= policy.min_requests:
            note = (f"error rate: no errors on either version ({canary.calls} canary, {stable.calls} stable calls):"
                    " gate passes")
            context.tests.append(_plain("error_rate", "gate", gate, context.gate_alpha, "pass", note))
        else:
            _not_enough(context, "error_rate", "gate", gate, canary.errors, stable.errors, "calls", True)
        return
    _compare(context, "error_rate", "error rate", canary.errors, stable.errors, counts=True, unit="calls",
             gate=gate, rollback=bound, at_most=True)


def _quality(context: _Context) -> None:
    policy, canary, stable = context.policy, context.canary, context.stable
    gate, bound = policy.promote_when.quality_ratio_min, policy.rollback_when.quality_ratio_below
    if canary.quality.x == 0 and stable.quality.x == 0:
        context.tests.append(_plain("quality", "gate", gate, context.gate_alpha, "pass",
                                    "quality: no scores on either version: gate passes", at_most=False))
        return
    _compare(context, "quality", "quality", canary.quality, stable.quality, counts=False, unit="scored calls",
             gate=gate, rollback=bound, at_most=False)
    for source in sorted(set(canary.sources) | set(stable.sources)):
        _compare(context, f"quality:{source}", f"quality ({source})", canary.sources.get(source, _EMPTY),
                 stable.sources.get(source, _EMPTY), counts=False, unit="scores", gate=None, rollback=bound,
                 at_most=False)


def _latency(context: _Context, evidence: Evidence) -> None:
    policy, canary, stable = context.policy, context.canary, context.stable
    thresholds = evidence.latency
    if thresholds is None or (canary.slow.x == 0 and stable.slow.x == 0):
        context.tests.append(_plain("p95_latency", "gate", 1.0, context.gate_alpha, "pass",
                                    "p95 latency: no answered calls to compare: gate passes"))
        return
    if canary.slow.y == 0 and canary.slow.x >= policy.min_requests and stable.slow.x >= policy.min_requests:
        context.tests.append(_plain(
            "p95_latency", "gate", 1.0, context.gate_alpha, "pass",
            f"p95 latency: no canary call slower than {thresholds.gate_ms:,.0f} ms in {int(canary.slow.x)} "
            "answered calls: gate passes"))
    else:
        label = (f"p95 latency: canary's share of calls slower than {thresholds.gate_ms:,.0f} ms vs stable's "
                 f"slower than its p95 {thresholds.reference_ms:,.0f} ms")
        _compare(context, "p95_latency", label, canary.slow, stable.slow_reference, counts=True,
                 unit="answered calls", gate=1.0, rollback=None, at_most=True)
    if policy.rollback_when.p95_latency_ratio_above is not None and thresholds.rollback_ms is not None:
        label = (f"p95 latency: canary's share of calls slower than {thresholds.rollback_ms:,.0f} ms vs stable's "
                 f"slower than its p95 {thresholds.reference_ms:,.0f} ms")
        _compare(context, "p95_latency", label, canary.slow_rollback, stable.slow_reference, counts=True,
                 unit="answered calls", gate=None, rollback=1.0, at_most=True)


def _cost(context: _Context) -> None:
    policy, canary, stable = context.policy, context.canary, context.stable
    gate = policy.promote_when.cost_ratio_max
    missing = [name for name, arm in (("canary", canary), ("stable", stable)) if arm.cost.x == 0]
    if missing:
        context.tests.append(_plain("cost", "gate", gate, context.gate_alpha, "pass",
                                    f"cost: no priced calls on {' and '.join(missing)}: gate skipped"))
        return
    _compare(context, "cost", "cost per call (cache-neutral)", canary.cost, stable.cost, counts=False,
             unit="priced calls", gate=gate, rollback=policy.rollback_when.cost_ratio_above, at_most=True)


_EMPTY = Sums()


def _compare(context: _Context, metric: str, label: str, canary: Sums, stable: Sums, *, counts: bool, unit: str,
             gate: float | None, rollback: float | None, at_most: bool) -> None:
    """Add the gate and/or rollback test of one metric: `at_most` says which side of a threshold is good."""
    need = context.policy.min_requests
    roles: list[tuple[Role, float]] = []
    if gate is not None:
        roles.append(("gate", gate))
    if rollback is not None:
        roles.append(("rollback", rollback))
    if min(canary.x, stable.x) < need:
        for role, threshold in roles:
            _not_enough(context, metric, role, threshold, canary, stable, unit, at_most)
        return
    compared = log_ratio(canary, stable, counts=counts)
    if compared is None:
        for role, threshold in roles:
            context.tests.append(_plain(metric, role, threshold, _alpha(context, role),
                                        "pass" if role == "gate" else "no_rollback",
                                        f"{label}: nothing to compare on either version", at_most=at_most))
        return
    tuning = context.policy.sequential_tuning
    for role, threshold in roles:
        alpha = _alpha(context, role)
        radius = radius_multiplier(max(compared.units, 1), alpha, tuning) * compared.se
        lower, upper = math.exp(compared.log_ratio - radius), math.exp(compared.log_ratio + radius)
        if role == "gate":
            if upper <= threshold if at_most else lower >= threshold:
                context.tests.append(MetricTest(metric, role, label, compared.ratio, lower, upper, threshold, alpha,
                                                "pass", at_most))
                continue
            margin = math.log(threshold) - compared.log_ratio
            if not at_most:
                margin = -margin
            calls = seconds = None
            if margin > 0:
                per_unit = context.canary.calls / canary.x
                calls = max((radius / margin) ** 2 - 1.0, 0.0) * canary.x * per_unit
                rate = context.canary_rate()
                seconds = calls / rate if rate > 0 else None
            context.tests.append(MetricTest(metric, role, label, compared.ratio, lower, upper, threshold, alpha,
                                            "undecided", at_most, None, calls, seconds, margin <= 0))
        else:
            beyond = lower > threshold if at_most else upper < threshold
            context.tests.append(MetricTest(metric, role, label, compared.ratio, lower, upper, threshold, alpha,
                                            "rollback" if beyond else "no_rollback", at_most))


def _alpha(context: _Context, role: Role) -> float:
    return context.gate_alpha if role == "gate" else context.rollback_alpha


def _not_enough(context: _Context, metric: str, role: Role, threshold: float, canary: Sums, stable: Sums,
                unit: str, at_most: bool) -> None:
    need = context.policy.min_requests
    short = ", ".join(f"{name} has {int(sums.x)}" for name, sums in (("canary", canary), ("stable", stable))
                      if sums.x < need)
    calls: float | None = None
    seconds: float | None = None
    if 0 < canary.x < need:
        calls = (need - canary.x) * context.canary.calls / canary.x
        rate = context.canary_rate()
        seconds = calls / rate if rate > 0 else None
    line = f"{metric.replace('_', ' ')}: not enough {unit} ({short} of {need})"
    verdict: Verdict = "undecided" if role == "gate" else "no_rollback"
    context.tests.append(MetricTest(metric, role, metric, None, None, None, threshold, _alpha(context, role), verdict,
                                    at_most, line, calls, seconds))


def _plain(metric: str, role: Role, threshold: float, alpha: float, verdict: Verdict, line: str, *,
           at_most: bool = True) -> MetricTest:
    return MetricTest(metric, role, metric, None, None, None, threshold, alpha, verdict, at_most, line)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"
