"""Rollouts of known truth through the real decision code, on a simulated clock.

    python benchmarks/rollout_sim.py            # the README table: 1,000 runs per row (tens of minutes)
    python benchmarks/rollout_sim.py --smoke    # a few runs, one simulated day: seconds

Each run is one rollout of a canary whose effect we set (identical to stable,
10 % better quality, 10 % / 20 % worse quality, p95 latency 30 % worse, cost
50 % higher, error rate doubled from 1 % to 2 %), at a total traffic of 1,000
or 10,000 calls per hour, with the default policy and with
`min_stage_duration: 1h`, for 7 simulated days, checked every 15 minutes.

Traffic (numba-compiled, one call at a time):

- calls arrive as a Poisson process; each picks a user from a heavy-tailed
  activity distribution (lognormal weights, σ = 1.2: the busiest 1 % of
  users make ~15 % of the calls), 2 users per hourly call of traffic;
- each user has a bucket in [0, 10000) and is routed as `gateway.routing`
  routes (canary when bucket < percent × 100): sticky and monotonic;
- an answered call's latency is lognormal (median 1 s, σ 0.5), its cost
  lognormal (mean 0.002 USD); errors are answered by neither;
- quality: each user has a quality level (normal, mean 0.8, sd 0.1); feedback
  comes on 5 % of answered calls (0/1), evaluators on 20 % (0/1), the judge on
  5 % (0, .25, .5, .75 or 1), each drawn around the user's level times the
  version's effect; a call's quality is its feedback, else the mean of its
  automatic scores (the store's QUALITY_RULE);
- the latency threshold of each stage comes from stable's p95 over the hour
  before it (drawn as the order statistic of that hour's calls).

The new engine gets, at every check, the per-user sums since the stage
started, exactly the `Evidence` the store computes, and calls
`gateway.analysis.decide` with the real `RolloutPolicy`. The seed's rule
(`seed_rule.py`) gets the trailing hour's numbers per version, as the seed's
`window_stats` computed them (p95 latency drawn as the order statistic of the
window's answered calls, a simplification that keeps its distribution at each
check). Both apply their decisions as the scheduler does: advance resets the
stage, promote and rollback end the run.

Printed per row: rolled back %, promoted %, still running % after 7 days
(each with a 95 % Wilson interval), the median time to a decision and the
median canary calls served before a rollback (each with a 95 %
distribution-free interval from the binomial order statistics).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numba
import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from seed_rule import SeedPolicy, WindowNumbers, seed_decide

from gateway.analysis import ArmEvidence, Evidence, LatencyThresholds, Sums, decide
from gateway.models import RolloutState
from gateway.policy import RolloutPolicy

CHECK_S = 900.0
LATENCY_MEDIAN_MS = 1000.0
LATENCY_SIGMA = 0.5
COST_MEAN = 0.002
COST_SIGMA = 0.5
BASE_ERROR = 0.01
# Per-user variables (cumulative over the stage) and ratio metrics (pairs of them).
N, E, M, Q, A, S1, S0, C, FBM, FBQ, EVM, EVQ, JDM, JDQ = range(14)
METRICS = ((N, E), (M, Q), (A, S1), (A, S0), (A, C), (FBM, FBQ), (EVM, EVQ), (JDM, JDQ))
# Trailing-window ring per interval and version: calls, errors, answered, scored, Σquality, Σcost.
RING = 4


@dataclass(frozen=True)
class Scenario:
    name: str
    quality: float = 1.0
    latency: float = 1.0
    cost: float = 1.0
    error: float = BASE_ERROR


SCENARIOS = (
    Scenario("identical"),
    Scenario("quality +10 %", quality=1.10),
    Scenario("quality -10 %", quality=0.90),
    Scenario("p95 latency +30 %", latency=1.30),
    Scenario("cost +50 %", cost=1.50),
    Scenario("quality -20 %", quality=0.80),
    Scenario("errors x2 (1 % → 2 %)", error=2 * BASE_ERROR),
)


@numba.njit(cache=True)
def _interval(active: np.ndarray, rate_per_interval: float, alias_prob: np.ndarray, alias: np.ndarray,
              buckets: np.ndarray, user_quality: np.ndarray, threshold: np.ndarray, slow_p: np.ndarray,
              error_p: np.ndarray, cost_factor: np.ndarray, quality_factor: np.ndarray, per_user: np.ndarray,
              sums: np.ndarray, ring: np.ndarray, slot: int, served: np.ndarray, track_users: bool) -> None:
    """Simulate one check interval of traffic for every active run, updating the stage's sums.

    Users are drawn with Vose's alias method from the activity weights.
    slow_p[r, arm, 0 / 1]: chance that an answered call is slower than the
    stage's latency reference / gate threshold (exact for the lognormal latency).
    sums[r, arm, metric, :] = units, Σx, Σy, Σx², Σy², Σxy, updated call by call.
    """
    users = alias.shape[0]
    delta = np.zeros(14)
    for r in range(active.shape[0]):
        if not active[r]:
            continue
        for k in range(6):
            ring[r, slot, 0, k] = 0.0
            ring[r, slot, 1, k] = 0.0
        calls = np.random.poisson(rate_per_interval)
        for _ in range(calls):
            pick = np.random.random() * users
            u = int(pick)
            if pick - u >= alias_prob[u]:
                u = alias[u]
            arm = 1 if buckets[r, u] < threshold[r] else 0
            if arm == 1:
                served[r] += 1
            delta[:] = 0.0
            delta[N] = 1.0
            if np.random.random() < error_p[arm]:
                delta[E] = 1.0
            else:
                delta[A] = 1.0
                draw = np.random.random()
                if draw < slow_p[r, arm, 1]:
                    delta[S1] = 1.0
                if draw < slow_p[r, arm, 0]:
                    delta[S0] = 1.0
                delta[C] = COST_MEAN * cost_factor[arm] * math.exp(
                    COST_SIGMA * np.random.normal() - 0.5 * COST_SIGMA * COST_SIGMA)
                source = np.random.random()
                feedback = source < 0.05
                evaluated = np.random.random() < 0.20
                judged = 0.05 <= source < 0.10
                if feedback or evaluated or judged:
                    level = min(max(user_quality[r, u] * quality_factor[arm], 0.0), 1.0)
                    automatic = 0.0
                    count = 0.0
                    if feedback:
                        delta[FBM] = 1.0
                        delta[FBQ] = 1.0 if np.random.random() < level else 0.0
                    if evaluated:
                        delta[EVM] = 1.0
                        delta[EVQ] = 1.0 if np.random.random() < level else 0.0
                        automatic += delta[EVQ]
                        count += 1.0
                    if judged:
                        delta[JDM] = 1.0
                        delta[JDQ] = np.random.binomial(4, level) / 4.0
                        automatic += delta[JDQ]
                        count += 1.0
                    delta[M] = 1.0
                    delta[Q] = delta[FBQ] if feedback else automatic / count
            ring[r, slot, arm, 0] += 1.0
            ring[r, slot, arm, 1] += delta[E]
            ring[r, slot, arm, 2] += delta[A]
            ring[r, slot, arm, 3] += delta[M]
            ring[r, slot, arm, 4] += delta[Q]
            ring[r, slot, arm, 5] += delta[C]
            if not track_users:
                continue
            for m in range(8):
                xi = METRICS_X[m]
                yi = METRICS_Y[m]
                dx = delta[xi]
                dy = delta[yi]
                if dx == 0.0 and dy == 0.0:
                    continue
                x = per_user[r, u, xi]
                y = per_user[r, u, yi]
                if x == 0.0 and dx > 0.0:
                    sums[r, arm, m, 0] += 1.0
                sums[r, arm, m, 1] += dx
                sums[r, arm, m, 2] += dy
                sums[r, arm, m, 3] += 2.0 * x * dx + dx * dx
                sums[r, arm, m, 4] += 2.0 * y * dy + dy * dy
                sums[r, arm, m, 5] += x * dy + y * dx + dx * dy
            for v in range(14):
                if delta[v] != 0.0:
                    per_user[r, u, v] += delta[v]


def _alias_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vose's alias method: O(1) draws from a discrete distribution."""
    n = len(weights)
    scaled = weights * n / weights.sum()
    prob = np.zeros(n)
    alias = np.zeros(n, dtype=np.int64)
    small = [i for i in range(n) if scaled[i] < 1.0]
    large = [i for i in range(n) if scaled[i] >= 1.0]
    while small and large:
        s_i, l_i = small.pop(), large.pop()
        prob[s_i], alias[s_i] = scaled[s_i], l_i
        scaled[l_i] -= 1.0 - scaled[s_i]
        (small if scaled[l_i] < 1.0 else large).append(l_i)
    for i in small + large:
        prob[i], alias[i] = 1.0, i
    return prob, alias


METRICS_X = np.array([x for x, _ in METRICS], dtype=np.int64)
METRICS_Y = np.array([y for _, y in METRICS], dtype=np.int64)


@dataclass
class Outcome:
    kind: str  # rollback, promote, running
    hours: float | None
    canary_calls: int


def _p95_order_statistic(rng: np.random.Generator, n: int, factor: float) -> float | None:
    """The p95 of n lognormal latencies, drawn as an order statistic (Beta) of the uniform."""
    if n < 2:
        return None
    k = 0.95 * (n - 1) + 1
    u = rng.beta(k, n + 1 - k)
    return float(LATENCY_MEDIAN_MS * factor * math.exp(LATENCY_SIGMA * stats.norm.ppf(u)))


def simulate(scenario: Scenario, rate: float, min_stage_s: float, engine: str, runs: int, days: float,
             seed: int, batch: int = 125) -> list[Outcome]:
    """`runs` rollouts of `scenario` at `rate` calls/hour; engine "new" (decide) or "seed" (seed_rule)."""
    rng = np.random.default_rng(seed)
    np_seed = int(rng.integers(2**31))
    _seed_numba(np_seed)
    users = int(2 * rate)
    alias_prob, alias = _alias_table(rng.lognormal(0.0, 1.2, users))
    policy = RolloutPolicy(min_stage_duration=min_stage_s)
    seed_policy = SeedPolicy(min_stage_duration_s=min_stage_s)
    checks = int(days * 86400 / CHECK_S)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    error_p = np.array([BASE_ERROR, scenario.error])
    cost_factor = np.array([1.0, scenario.cost])
    quality_factor = np.array([1.0, scenario.quality])
    outcomes: list[Outcome] = []
    track = engine == "new"
    for first in range(0, runs, batch):
        size = min(batch, runs - first)
        buckets = rng.integers(0, 10000, (size, users)).astype(np.int32)
        user_quality = np.clip(rng.normal(0.8, 0.1, (size, users)), 0.05, 0.98)
        per_user = np.zeros((size, users if track else 1, 14))
        sums = np.zeros((size, 2, 8, 6))
        ring = np.zeros((size, RING, 2, 6))
        served = np.zeros(size, dtype=np.int64)
        active = np.ones(size, dtype=np.bool_)
        percent = np.full(size, policy.stages[0])
        stage_start = np.zeros(size)
        t0 = np.zeros(size)
        t1 = np.zeros(size)
        slow_p = np.zeros((size, 2, 2))
        result: list[Outcome | None] = [None] * size

        def new_stage(r: int, previous: float) -> None:
            stable_calls = rng.poisson(rate * (1 - previous / 100) * (1 - BASE_ERROR))
            reference = _p95_order_statistic(rng, int(stable_calls), 1.0) or LATENCY_MEDIAN_MS
            thresholds = LatencyThresholds.of(reference, policy)
            t0[r], t1[r] = thresholds.reference_ms, thresholds.gate_ms
            for arm, factor in ((0, 1.0), (1, scenario.latency)):
                for index, limit in ((0, t0[r]), (1, t1[r])):
                    z = (math.log(limit / (LATENCY_MEDIAN_MS * factor))) / LATENCY_SIGMA
                    slow_p[r, arm, index] = float(stats.norm.sf(z))
            per_user[r] = 0.0
            sums[r] = 0.0

        for r in range(size):
            new_stage(r, 0.0)
        for check in range(checks):
            slot = check % RING
            threshold = np.round(percent * 100).astype(np.int32)
            _interval(active, rate * CHECK_S / 3600, alias_prob, alias, buckets, user_quality, threshold, slow_p,
                      error_p, cost_factor, quality_factor, per_user, sums, ring, slot, served, track)
            now_s = (check + 1) * CHECK_S
            now = start + timedelta(seconds=now_s)
            for r in np.flatnonzero(active).tolist():
                elapsed = now_s - stage_start[r]
                if track:
                    outcome, following = _decide_new(sums[r], t0[r], t1[r], policy, percent[r], now,
                                                     start + timedelta(seconds=float(stage_start[r])))
                else:
                    outcome, following = _decide_seed(ring[r], rng, scenario, seed_policy, percent[r], elapsed,
                                                      min(check + 1, RING))
                if outcome == "advance":
                    assert following is not None
                    previous = percent[r]
                    percent[r] = following
                    stage_start[r] = now_s
                    new_stage(r, previous)
                elif outcome in ("rollback", "promote"):
                    active[r] = False
                    result[r] = Outcome(outcome, now_s / 3600, int(served[r]))
            if not active.any():
                break
        for r in range(size):
            outcomes.append(result[r] or Outcome("running", None, int(served[r])))
    return outcomes


@numba.njit(cache=True)
def _seed_numba(seed: int) -> None:
    np.random.seed(seed)


def _decide_new(sums: np.ndarray, t0: float, t1: float, policy: RolloutPolicy, percent: float, now: datetime,
                stage_started: datetime) -> tuple[str, float | None]:
    rows = sums.tolist()

    def arm(index: int, version: str) -> ArmEvidence:
        metric = rows[index]
        errors = Sums(int(metric[0][0]), *metric[0][1:])
        return ArmEvidence(
            version=version, users=errors.units, calls=int(errors.x), errors=errors,
            quality=Sums(int(metric[1][0]), *metric[1][1:]), slow=Sums(int(metric[2][0]), *metric[2][1:]),
            slow_reference=Sums(int(metric[3][0]), *metric[3][1:]), cost=Sums(int(metric[4][0]), *metric[4][1:]),
            actual_cost=metric[4][2],
            sources={name: Sums(int(metric[i][0]), *metric[i][1:])
                     for i, name in ((5, "feedback"), (6, "evaluator:relevance"), (7, "judge")) if metric[i][1] > 0},
        )

    evidence = Evidence(stable=arm(0, "v1"), canary=arm(1, "v2"), since=stage_started, until=now,
                        latency=LatencyThresholds(t0, t1, None))
    state = RolloutState(stable="v1", canary="v2", canary_percent=float(percent), status="canary",
                         stage_started_at=stage_started)
    decision = decide(evidence, policy, state, now)
    return decision.outcome, decision.next_percent


def _decide_seed(ring: np.ndarray, rng: np.random.Generator, scenario: Scenario, policy: SeedPolicy,
                 percent: float, elapsed: float, slots: int) -> tuple[str, float | None]:
    window = ring[:slots].sum(axis=0)

    def numbers(arm: int, latency_factor: float) -> WindowNumbers:
        calls, errors, answered, scored, quality, cost = window[arm].tolist()
        return WindowNumbers(
            requests=int(calls), errors=int(errors),
            avg_quality=quality / scored if scored else None,
            p95_latency_ms=_p95_order_statistic(rng, int(answered), latency_factor),
            avg_cost=cost / answered if answered else None,
        )

    return seed_decide(stable=numbers(0, 1.0), canary=numbers(1, scenario.latency), policy=policy,
                       percent=float(percent), stage_elapsed_s=elapsed)


def wilson(successes: int, total: int) -> tuple[float, float]:
    if total == 0:
        return (0.0, 0.0)
    z = 1.959963984540054
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def median_interval(values: list[float]) -> tuple[float, float, float] | None:
    """The median with a 95 % distribution-free interval (binomial order statistics)."""
    if not values:
        return None
    ordered = sorted(values)
    n = len(ordered)
    low = int(stats.binom.ppf(0.025, n, 0.5))
    high = min(int(stats.binom.ppf(0.975, n, 0.5)), n - 1)
    return float(np.median(ordered)), ordered[max(low - 1, 0)], ordered[high]


def summarize(outcomes: list[Outcome]) -> dict[str, str]:
    total = len(outcomes)

    def share(kind: str) -> str:
        count = sum(o.kind == kind for o in outcomes)
        low, high = wilson(count, total)
        return f"{100 * count / total:.1f} ({100 * low:.1f}–{100 * high:.1f})"

    decided = [o.hours for o in outcomes if o.hours is not None]
    exposure = [float(o.canary_calls) for o in outcomes if o.kind == "rollback"]
    rolled_hours = [o.hours for o in outcomes if o.kind == "rollback" and o.hours is not None]

    def median(values: list[float], unit: str, digits: int) -> str:
        found = median_interval(values)
        if found is None:
            return "—"
        mid, low, high = found
        return f"{mid:,.{digits}f} ({low:,.{digits}f}–{high:,.{digits}f}){unit}"

    return {
        "rollback": share("rollback"), "promote": share("promote"), "running": share("running"),
        "decision_h": median(decided, " h", 1), "rollback_h": median(rolled_hours, " h", 1),
        "exposure": median(exposure, "", 0),
    }


def _job(args: tuple[Scenario, float, float, str, int, float, int]) -> tuple[tuple[str, float, float, str],
                                                                              dict[str, str], float]:
    scenario, rate, min_stage, engine, runs, days, seed = args
    started = time.perf_counter()
    outcomes = simulate(scenario, rate, min_stage, engine, runs, days, seed)
    return (scenario.name, rate, min_stage, engine), summarize(outcomes), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--rates", default="1000,10000")
    parser.add_argument("--engines", default="new,seed")
    parser.add_argument("--scenarios", default="all", help="comma-separated indexes into the scenario list, or all")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=20261129)
    parser.add_argument("--smoke", action="store_true", help="20 runs, 1 day, 1,000 calls/hour: seconds")
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.days, args.rates = 20, 1.0, "1000"
    scenarios = SCENARIOS if args.scenarios == "all" else tuple(SCENARIOS[int(i)] for i in args.scenarios.split(","))
    jobs = []
    for index, scenario in enumerate(scenarios):
        for rate in (float(r) for r in args.rates.split(",")):
            for min_stage in (86400.0, 3600.0):
                for engine in args.engines.split(","):
                    seed = args.seed + index * 1000 + int(rate) + int(min_stage) % 997
                    jobs.append((scenario, rate, min_stage, engine, args.runs, args.days, seed))
    print(f"{len(jobs)} rows × {args.runs} runs, {args.days:g} days, checks every 15 min", flush=True)
    header = ("| canary | calls/h | min_stage | engine | rolled back % | promoted % | still running % | "
              "median time to decision | median time to rollback | median canary calls before rollback |")
    rows = []
    with multiprocessing.get_context("fork").Pool(args.workers) as pool:
        for key, summary, seconds in pool.imap(_job, jobs):
            name, rate, min_stage, engine = key
            row = (f"| {name} | {rate:,.0f} | {'24h' if min_stage == 86400 else '1h'} | {engine} | "
                   f"{summary['rollback']} | {summary['promote']} | {summary['running']} | {summary['decision_h']} | "
                   f"{summary['rollback_h']} | {summary['exposure']} |")
            rows.append(row)
            print(f"{row}  [{seconds:.0f} s]", flush=True)
    print()
    print(header)
    print("|" + "---|" * 10)
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
