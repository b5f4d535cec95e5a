"""The A/B test report: per metric, each version's value and their difference with an anytime-valid interval.

An A/B test (`mode: ab_test`) splits users between two versions at a fixed
share and changes nothing by itself: the report tells an operator what the
numbers say, and the operator concludes. For every metric of the evidence
(the per-user sums of `gateway.analysis.evidence` over the test so far):

- each version's value R = Σy / Σx (error rate, quality and each quality
  source, cost per call, and the share of answered calls slower than
  stable's p95);
- the difference D = R_candidate − R_stable, with the variance of two
  independent arms, Var(R_c) + Var(R_s), each by the delta method over
  users (Deng, Knoblich and Lu, KDD 2018);
- a two-sided anytime-valid interval D ± m_t · SE(D), where m_t is the
  asymptotic confidence sequence's two-sided multiplier at t users of both
  versions (Waudby-Smith et al. 2024, Theorem 2.2; `sequential.two_sided_multiplier`)
  at the test's `ab.alpha`: the chance that two identical versions are ever
  reported as significantly different on a metric stays at most `alpha`
  however often the report is read;
- significant when the interval excludes 0;
- for an undecided metric, how many more calls (both versions) the interval
  needs to exclude 0 if the difference stays what it is now, from the
  per-user variance so far (SE shrinks as 1/√n while m_t grows slowly), and
  the half-width it has now (the smallest difference it could show).

The sample ratio mismatch check (`srm`) runs first: with a mismatch the
comparison is biased and the report says not to conclude from it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from gateway.analysis.evidence import Evidence, Sums
from gateway.analysis.sequential import two_sided_multiplier
from gateway.analysis.srm import SrmResult, sample_ratio_mismatch

# The largest number of users the traffic projection looks at (beyond: "more than a lifetime").
_MAX_UNITS = 10**12


@dataclass(frozen=True, slots=True)
class MetricReport:
    """One metric: both versions' values, the difference candidate − stable and its interval.

    `lower` / `upper`: the two-sided anytime-valid interval of the difference
    at the report's alpha (None without data on both versions). `relative`:
    the difference in percent of stable's value. `needs_calls` /
    `needs_seconds`: more calls (both versions) and time at the test's traffic
    so far before an undecided difference of this size would be significant;
    None when significant, or when there is no difference to show.
    """

    metric: str
    label: str
    stable: float | None
    candidate: float | None
    stable_n: int
    candidate_n: int
    difference: float | None
    lower: float | None
    upper: float | None
    significant: bool
    needs_calls: float | None = None
    needs_seconds: float | None = None

    @property
    def relative(self) -> float | None:
        if self.difference is None or not self.stable:
            return None
        return self.difference / self.stable * 100

    @property
    def line(self) -> str:
        if self.difference is None or self.lower is None or self.upper is None:
            return f"{self.label}: no data on both versions yet"
        head = (f"{self.label}: {_number(self.stable)} → {_number(self.candidate)}, difference "
                f"{self.difference:+.4g} [{self.lower:+.4g}, {self.upper:+.4g}]")
        if self.significant:
            return f"{head}: significant ({'higher' if self.difference > 0 else 'lower'})"
        if self.needs_calls is None:
            return f"{head}: not significant"
        when = f", ~{_duration(self.needs_seconds)} at this traffic" if self.needs_seconds else ""
        return f"{head}: not significant; ~{self.needs_calls:,.0f} more calls{when} if the difference holds"

    def public(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "label": self.label, "stable": _rounded(self.stable),
            "candidate": _rounded(self.candidate), "stable_n": self.stable_n, "candidate_n": self.candidate_n,
            "difference": _rounded(self.difference), "relative_pct": _rounded(self.relative, 4),
            "lower": _rounded(self.lower), "upper": _rounded(self.upper), "significant": self.significant,
            "needs_calls": None if self.needs_calls is None else math.ceil(self.needs_calls),
            "needs_seconds": None if self.needs_seconds is None else round(self.needs_seconds),
            "line": self.line,
        }


@dataclass(frozen=True, slots=True)
class ABReport:
    """The whole report: the split, both versions' traffic, the SRM check and one `MetricReport` per metric."""

    stable: str
    candidate: str
    split: float
    alpha: float
    elapsed_s: float
    stable_users: int
    candidate_users: int
    stable_calls: int
    candidate_calls: int
    srm: SrmResult | None
    metrics: tuple[MetricReport, ...]

    @property
    def summary(self) -> str:
        if self.srm is not None and self.srm.mismatch:
            return (f"sample ratio mismatch: {self.candidate} has {self.srm.observed_canary_share:.2%} of users, "
                    f"expected {self.split:g} % (χ² p = {self.srm.p_value:.2g}): the comparison is biased, "
                    "do not conclude from it")
        significant = [report.metric for report in self.metrics if report.significant]
        if not significant:
            return f"no significant difference yet ({self.alpha:g} level, valid at any look)"
        return f"significant at the {self.alpha:g} level: {', '.join(significant)}"

    def public(self) -> dict[str, Any]:
        return {
            "stable": self.stable, "candidate": self.candidate, "split": self.split, "alpha": self.alpha,
            "elapsed_s": round(self.elapsed_s), "users": {"stable": self.stable_users,
                                                          "candidate": self.candidate_users},
            "calls": {"stable": self.stable_calls, "candidate": self.candidate_calls},
            "srm": None if self.srm is None else {
                "p_value": self.srm.p_value, "expected_candidate_share": self.srm.expected_canary_share,
                "observed_candidate_share": self.srm.observed_canary_share, "mismatch": self.srm.mismatch},
            "summary": self.summary,
            "metrics": [report.public() for report in self.metrics],
        }


def ab_report(evidence: Evidence, *, split: float, alpha: float, tuning: float, elapsed_s: float) -> ABReport:
    """The report of an A/B test whose candidate (`evidence.canary`) gets `split` percent of users.

    `alpha`: the two-sided level of every interval; `tuning`: the users
    (both versions) at which the confidence sequence is narrowest
    (`policy.sequential_tuning`); `elapsed_s`: how long the test has run,
    for the traffic projections.
    """
    stable, candidate = evidence.stable, evidence.canary
    calls = stable.calls + candidate.calls
    rate = calls / elapsed_s if elapsed_s > 0 else 0.0
    reports = tuple(
        _metric(metric, label, stable_sums, candidate_sums, alpha=alpha, tuning=tuning, calls=calls, rate=rate)
        for metric, label, stable_sums, candidate_sums in _metrics(evidence)
    )
    return ABReport(
        stable=stable.version, candidate=candidate.version, split=split, alpha=alpha, elapsed_s=elapsed_s,
        stable_users=stable.users, candidate_users=candidate.users, stable_calls=stable.calls,
        candidate_calls=candidate.calls,
        srm=sample_ratio_mismatch(canary_users=candidate.users, stable_users=stable.users, canary_percent=split),
        metrics=reports,
    )


def _metrics(evidence: Evidence) -> Iterator[tuple[str, str, Sums, Sums]]:
    stable, candidate = evidence.stable, evidence.canary
    yield "error_rate", "error rate", stable.errors, candidate.errors
    yield "quality", "quality", stable.quality, candidate.quality
    for source in sorted(set(stable.sources) | set(candidate.sources)):
        yield (f"quality:{source}", f"quality ({source})", stable.sources.get(source, Sums()),
               candidate.sources.get(source, Sums()))
    yield "cost", "cost per call (cache-neutral, USD)", stable.cost, candidate.cost
    if evidence.latency is not None:
        label = f"share of answers slower than stable's p95 ({evidence.latency.reference_ms:,.0f} ms)"
        yield "slow_share", label, stable.slow_reference, candidate.slow_reference


def _metric(metric: str, label: str, stable: Sums, candidate: Sums, *, alpha: float, tuning: float, calls: int,
            rate: float) -> MetricReport:
    base = MetricReport(metric, label, stable.ratio, candidate.ratio, int(stable.x), int(candidate.x), None, None,
                        None, False)
    if stable.ratio is None or candidate.ratio is None:
        return base
    difference = candidate.ratio - stable.ratio
    se = math.sqrt(stable.ratio_variance() + candidate.ratio_variance())
    units = max(stable.units + candidate.units, 1)
    radius = two_sided_multiplier(units, alpha, tuning) * se
    lower, upper = difference - radius, difference + radius
    significant = lower > 0 or upper < 0
    needs_calls = needs_seconds = None
    if not significant and difference != 0 and se > 0:
        target = units_needed(units, se, abs(difference), alpha, tuning)
        if target is not None:
            needs_calls = calls * (target / units - 1.0)
            needs_seconds = needs_calls / rate if rate > 0 else None
    return MetricReport(metric, label, stable.ratio, candidate.ratio, int(stable.x), int(candidate.x), difference,
                        lower, upper, significant, needs_calls, needs_seconds)


def units_needed(units: int, se: float, effect: float, alpha: float, tuning: float) -> int | None:
    """The fewest users (both versions) at which an interval around `effect` would exclude 0.

    Assumes the per-user variance stays what it is (SE scales as √(units/n))
    and the effect stays `effect` > 0: the smallest n with
    m_n · se · √(units / n) < effect, found by doubling then bisection
    (m_n / √n decreases). None beyond 10¹² users.
    """
    def clears(n: int) -> bool:
        return two_sided_multiplier(n, alpha, tuning) * se * math.sqrt(units / n) < effect

    if clears(units):
        return units
    high = units
    while not clears(high):
        high *= 2
        if high > _MAX_UNITS:
            return None
    low = high // 2
    while high - low > max(1, low // 1000):
        middle = (low + high) // 2
        if clears(middle):
            high = middle
        else:
            low = middle
    return high


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _rounded(value: float | None, digits: int = 7) -> float | None:
    """`digits` significant digits: costs per call are thousandths of a dollar, their differences smaller."""
    return None if value is None else float(f"{value:.{digits}g}")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"
