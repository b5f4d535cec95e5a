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
from statistics import NormalDist

import numba
import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway.analysis import ArmEvidence, Evidence, LatencyThresholds, Sums, decide
from gateway.models import RolloutState
from gateway.policy import RolloutPolicy
from seed_rule import SeedPolicy, WindowNumbers, seed_decide

CHECK_S = 900.0
_NORMAL = NormalDist()
LATENCY_MEDIAN_MS = 1000.0
LATENCY_SIGMA = 0.5
COST_MEAN = 0.002
COST_SIGMA = 0.5
BASE_ERROR = 0.01
# Per-user variables (cumulative over the stage) and ratio metrics (pairs of them).
N, E, M, Q, A, S1, S0, C, FBM, FBQ, EVM, EVQ, JDM, JDQ = range(14)
METRICS = ((N, E), (M, Q), (A, S1), (A, S0), (A, C), (FBM, FBQ), (EVM, EVQ), (JDM, JDQ))
_CHOOSE_4 = np.array([1.0, 4.0, 6.0, 4.0, 1.0])
METRICS_X = np.array([x for x, _ in METRICS], dtype=np.int64)
METRICS_Y = np.array([y for _, y in METRICS], dtype=np.int64)
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
def _fill(delta: np.ndarray, u_error: float, u_latency: float, z_cost: float, u_source: float, u_eval: float,
          u_feedback: float, u_evaluator: float, u_judge: float, error_p: float, slow_reference: float,
          slow_gate: float, cost_factor: float, level: float) -> None:
    """One call's outcome from its random draws and a version's truth (common random numbers)."""
    delta[:] = 0.0
    delta[N] = 1.0
    if u_error < error_p:
        delta[E] = 1.0
        return
    delta[A] = 1.0
    if u_latency < slow_gate:
        delta[S1] = 1.0
    if u_latency < slow_reference:
        delta[S0] = 1.0
    delta[C] = COST_MEAN * cost_factor * math.exp(COST_SIGMA * z_cost - 0.5 * COST_SIGMA * COST_SIGMA)
    feedback = u_source < 0.05
    judged = 0.05 <= u_source < 0.10
    evaluated = u_eval < 0.20
    if not (feedback or judged or evaluated):
        return
    automatic = 0.0
    count = 0.0
    if feedback:
        delta[FBM] = 1.0
        delta[FBQ] = 1.0 if u_feedback < level else 0.0
    if evaluated:
        delta[EVM] = 1.0
        delta[EVQ] = 1.0 if u_evaluator < level else 0.0
        automatic += delta[EVQ]
        count += 1.0
    if judged:
        # Binomial(4, level) / 4 by its inverse distribution function.
        k = 0
        cumulative = (1.0 - level) ** 4
        while u_judge > cumulative and k < 4:
            k += 1
            cumulative += _CHOOSE_4[k] * level**k * (1.0 - level) ** (4 - k)
        delta[JDM] = 1.0
        delta[JDQ] = k / 4.0
        automatic += delta[JDQ]
        count += 1.0
    delta[M] = 1.0
    delta[Q] = delta[FBQ] if feedback else automatic / count


@numba.njit(cache=True)
def _add(delta: np.ndarray, state: np.ndarray, sums: np.ndarray) -> None:
    """Add one call to a user's stage totals and to its version's Σx, Σy, Σx², Σy², Σxy (and units)."""
    for m in range(8):
        xi = METRICS_X[m]
        yi = METRICS_Y[m]
        dx = delta[xi]
        dy = delta[yi]
        if dx == 0.0 and dy == 0.0:
            continue
        x = state[xi]
        y = state[yi]
        if x == 0.0 and dx > 0.0:
            sums[m, 0] += 1.0
        sums[m, 1] += dx
        sums[m, 2] += dy
        sums[m, 3] += 2.0 * x * dx + dx * dx
        sums[m, 4] += 2.0 * y * dy + dy * dy
        sums[m, 5] += x * dy + y * dx + dx * dy
    for v in range(14):
        state[v] += delta[v]


@numba.njit(cache=True)
def _interval(calls_mean: float, alias_prob: np.ndarray, alias: np.ndarray, buckets: np.ndarray,
              user_quality: np.ndarray, active: np.ndarray, new_engine: np.ndarray, shared: np.ndarray,
              threshold: np.ndarray, error_p: np.ndarray, slow_p: np.ndarray, cost_factor: np.ndarray,
              quality_factor: np.ndarray, shared_slow: np.ndarray, shared_users: np.ndarray,
              shared_sums: np.ndarray, per_user: np.ndarray, sums: np.ndarray, ring: np.ndarray, slot: int,
              served: np.ndarray) -> None:
    """One check interval of one run's traffic, for every lane (scenario × policy × engine) at once.

    Lanes still at the first stage share the stable version's users, answers
    and sums (their stable traffic is the same); a lane that moved on keeps
    its own. Outcomes use common random numbers across lanes.
    """
    users = alias.shape[0]
    lanes = active.shape[0]
    delta = np.zeros(14)
    stable_delta = np.zeros(14)
    for lane in range(lanes):
        for k in range(6):
            ring[lane, slot, 0, k] = 0.0
            ring[lane, slot, 1, k] = 0.0
    for _ in range(np.random.poisson(calls_mean)):
        pick = np.random.random() * users
        u = int(pick)
        if pick - u >= alias_prob[u]:
            u = alias[u]
        u_error = np.random.random()
        u_latency = np.random.random()
        z_cost = np.random.normal()
        u_source = np.random.random()
        u_eval = np.random.random()
        u_feedback = np.random.random()
        u_evaluator = np.random.random()
        u_judge = np.random.random()
        # The stable version's answer to this call: the same in every lane (only slow flags differ by stage).
        _fill(stable_delta, u_error, u_latency, z_cost, u_source, u_eval, u_feedback, u_evaluator, u_judge,
              BASE_ERROR, shared_slow[0], shared_slow[1], 1.0, min(user_quality[u], 1.0))
        shared_done = False
        for lane in range(lanes):
            if not active[lane]:
                continue
            arm = 1 if buckets[u] < threshold[lane] else 0
            if arm == 1:
                served[lane] += 1
            if not new_engine[lane]:
                # The seed's rule reads window counts only (its p95 is drawn at the check).
                if arm == 0:
                    outcome = stable_delta
                else:
                    level = min(max(user_quality[u] * quality_factor[lane, 1], 0.0), 1.0)
                    _fill(delta, u_error, u_latency, z_cost, u_source, u_eval, u_feedback, u_evaluator, u_judge,
                          error_p[lane, 1], 0.0, 0.0, cost_factor[lane, 1], level)
                    outcome = delta
                ring[lane, slot, arm, 0] += 1.0
                ring[lane, slot, arm, 1] += outcome[E]
                ring[lane, slot, arm, 2] += outcome[A]
                ring[lane, slot, arm, 3] += outcome[M]
                ring[lane, slot, arm, 4] += outcome[Q]
                ring[lane, slot, arm, 5] += outcome[C]
                continue
            if shared[lane] and arm == 0:
                if not shared_done:
                    _add(stable_delta, shared_users[u], shared_sums)
                    shared_done = True
                continue
            level = min(max(user_quality[u] * quality_factor[lane, arm], 0.0), 1.0)
            _fill(delta, u_error, u_latency, z_cost, u_source, u_eval, u_feedback, u_evaluator, u_judge,
                  error_p[lane, arm], slow_p[lane, arm, 0], slow_p[lane, arm, 1], cost_factor[lane, arm], level)
            _add(delta, per_user[lane, u], sums[lane, arm])


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
    return float(LATENCY_MEDIAN_MS * factor * math.exp(LATENCY_SIGMA * _NORMAL.inv_cdf(u)))


@dataclass(frozen=True)
class Lane:
    scenario: int
    min_stage_s: float
    engine: str


def simulate(rate: float, lanes: list[Lane], runs: int, days: float, seed: int) -> dict[Lane, list[Outcome]]:
    """`runs` independent runs at `rate` calls/hour; in each, every lane's rollout over the same traffic."""
    rng = np.random.default_rng(seed)
    _seed_numba(int(rng.integers(2**31)))
    users = int(2 * rate)
    checks = int(days * 86400 / CHECK_S)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    count = len(lanes)
    policies = {lane: RolloutPolicy(min_stage_duration=lane.min_stage_s) for lane in lanes}
    seed_policies = {lane: SeedPolicy(min_stage_duration_s=lane.min_stage_s) for lane in lanes}
    new_engine = np.array([lane.engine == "new" for lane in lanes])
    error_p = np.array([[BASE_ERROR, SCENARIOS[lane.scenario].error] for lane in lanes])
    cost_factor = np.array([[1.0, SCENARIOS[lane.scenario].cost] for lane in lanes])
    quality_factor = np.array([[1.0, SCENARIOS[lane.scenario].quality] for lane in lanes])
    latency_factor = [(1.0, SCENARIOS[lane.scenario].latency) for lane in lanes]
    outcomes: dict[Lane, list[Outcome]] = {lane: [] for lane in lanes}
    first_stage = RolloutPolicy().stages[0]

    def slow_chances(reference: float, factor: float, policy: RolloutPolicy) -> tuple[float, float]:
        thresholds = LatencyThresholds.of(reference, policy)
        return tuple(1.0 - _NORMAL.cdf(math.log(limit / (LATENCY_MEDIAN_MS * factor)) / LATENCY_SIGMA)
                     for limit in (thresholds.reference_ms, thresholds.gate_ms))  # type: ignore[return-value]

    def reference_p95(previous_percent: float) -> float:
        stable_calls = rng.poisson(rate * (1 - previous_percent / 100) * (1 - BASE_ERROR))
        return _p95_order_statistic(rng, int(stable_calls), 1.0) or LATENCY_MEDIAN_MS

    for _ in range(runs):
        alias_prob, alias = _alias_table(rng.lognormal(0.0, 1.2, users))
        buckets = rng.integers(0, 10000, users).astype(np.int32)
        user_quality = np.clip(rng.normal(0.8, 0.1, users), 0.05, 0.98)
        active = np.ones(count, dtype=np.bool_)
        shared = np.ones(count, dtype=np.bool_)
        percent = np.full(count, first_stage)
        stage_start = np.zeros(count)
        references = np.zeros(count)
        slow_p = np.zeros((count, 2, 2))
        shared_users = np.zeros((users, 14))
        shared_sums = np.zeros((8, 6))
        per_user = np.zeros((count, users, 14))
        sums = np.zeros((count, 2, 8, 6))
        ring = np.zeros((count, RING, 2, 6))
        served = np.zeros(count, dtype=np.int64)
        result: list[Outcome | None] = [None] * count
        shared_reference = reference_p95(0.0)
        default = RolloutPolicy()
        shared_slow = np.array(slow_chances(shared_reference, 1.0, default))
        for index, lane in enumerate(lanes):
            references[index] = shared_reference
            for arm in (0, 1):
                slow_p[index, arm] = slow_chances(shared_reference, latency_factor[index][arm], policies[lane])
        for check in range(checks):
            slot = check % RING
            threshold = np.round(percent * 100).astype(np.int32)
            _interval(rate * CHECK_S / 3600, alias_prob, alias, buckets, user_quality, active, new_engine, shared,
                      threshold, error_p, slow_p, cost_factor, quality_factor, shared_slow, shared_users,
                      shared_sums, per_user, sums, ring, slot, served)
            now_s = (check + 1) * CHECK_S
            now = start + timedelta(seconds=now_s)
            shared_stable: ArmEvidence | None = None
            outcome: str
            for index in (int(position) for position in np.flatnonzero(active)):
                lane = lanes[index]
                if lane.engine == "new":
                    if shared[index] and shared_stable is None:
                        shared_stable = _arm_evidence(shared_sums.tolist(), "v1")
                    stable = shared_stable if shared[index] else _arm_evidence(sums[index, 0].tolist(), "v1")
                    assert stable is not None
                    since = start + timedelta(seconds=float(stage_start[index]))
                    policy = policies[lane]
                    thresholds = LatencyThresholds.of(float(references[index]), policy)
                    evidence = Evidence(stable=stable, canary=_arm_evidence(sums[index, 1].tolist(), "v2"),
                                        since=since, until=now, latency=thresholds)
                    state = RolloutState(stable="v1", canary="v2", canary_percent=float(percent[index]),
                                         status="canary", stage_started_at=since)
                    decision = decide(evidence, policy, state, now)
                    outcome, following = decision.outcome, decision.next_percent
                else:
                    outcome, following = _decide_seed(ring[index], rng, SCENARIOS[lane.scenario].latency,
                                                      seed_policies[lane], float(percent[index]),
                                                      now_s - stage_start[index], min(check + 1, RING))
                if outcome == "advance":
                    assert following is not None
                    previous = float(percent[index])
                    percent[index] = following
                    stage_start[index] = now_s
                    if lane.engine == "new":
                        shared[index] = False
                        per_user[index] = 0.0
                        sums[index] = 0.0
                        references[index] = reference_p95(previous)
                        for arm in (0, 1):
                            slow_p[index, arm] = slow_chances(references[index], latency_factor[index][arm],
                                                              policies[lane])
                elif outcome in ("rollback", "promote"):
                    active[index] = False
                    result[index] = Outcome(outcome, now_s / 3600, int(served[index]))
            if not active.any():
                break
        for index, lane in enumerate(lanes):
            outcomes[lane].append(result[index] or Outcome("running", None, int(served[index])))
    return outcomes


def _arm_evidence(metric: list[list[float]], version: str) -> ArmEvidence:
    """An `ArmEvidence` from the simulator's sums (metric × units, Σx, Σy, Σx², Σy², Σxy)."""
    errors = Sums(int(metric[0][0]), *metric[0][1:])
    return ArmEvidence(
        version=version, users=errors.units, calls=int(errors.x), errors=errors,
        quality=Sums(int(metric[1][0]), *metric[1][1:]), slow=Sums(int(metric[2][0]), *metric[2][1:]),
        slow_reference=Sums(int(metric[3][0]), *metric[3][1:]), cost=Sums(int(metric[4][0]), *metric[4][1:]),
        actual_cost=metric[4][2],
        sources={name: Sums(int(metric[i][0]), *metric[i][1:])
                 for i, name in ((5, "feedback"), (6, "evaluator:relevance"), (7, "judge")) if metric[i][1] > 0},
    )


@numba.njit(cache=True)
def _seed_numba(seed: int) -> None:
    np.random.seed(seed)


def _decide_seed(ring: np.ndarray, rng: np.random.Generator, latency_factor: float, policy: SeedPolicy,
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

    return seed_decide(stable=numbers(0, 1.0), canary=numbers(1, latency_factor), policy=policy,
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


def _job(args: tuple[float, list[Lane], int, float, int]) -> tuple[float, dict[Lane, list[Outcome]], float]:
    rate, lanes, runs, days, seed = args
    started = time.perf_counter()
    return rate, simulate(rate, lanes, runs, days, seed), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--rates", default="10000,1000")
    parser.add_argument("--engines", default="new,seed")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=20, help="runs per job")
    parser.add_argument("--seed", type=int, default=20261129)
    parser.add_argument("--table", help="rewrite this file with the table after every job")
    parser.add_argument("--smoke", action="store_true", help="10 runs, 1 day, 1,000 calls/hour: seconds")
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.days, args.rates, args.chunk = 10, 1.0, "1000", 10
    lanes = [Lane(index, min_stage, engine) for engine in args.engines.split(",")
             for index in range(len(SCENARIOS)) for min_stage in (86400.0, 3600.0)]
    rates = [float(rate) for rate in args.rates.split(",")]
    # Chunks of runs, the rates interleaved so that every row grows as jobs finish.
    jobs = [(rate, lanes, min(args.chunk, args.runs - first), args.days, args.seed + int(rate) * 7919 + first)
            for first in range(0, args.runs, args.chunk) for rate in rates]
    print(f"{len(lanes)} lanes × {args.runs} runs at {', '.join(f'{r:,.0f}' for r in rates)} calls/h, "
          f"{args.days:g} days, checks every 15 min; {len(jobs)} jobs", flush=True)
    merged: dict[tuple[float, Lane], list[Outcome]] = {}
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(args.workers) as pool:
        for done, (rate, outcomes, seconds) in enumerate(pool.imap_unordered(_job, jobs), 1):
            for lane, found in outcomes.items():
                merged.setdefault((rate, lane), []).extend(found)
            print(f"job {done}/{len(jobs)} ({rate:,.0f}/h) {seconds:.0f} s; {time.perf_counter() - started:.0f} s "
                  "elapsed", flush=True)
            if args.table:
                Path(args.table).write_text(table(merged, rates, args.engines.split(",")) + "\n")
    print()
    print(table(merged, rates, args.engines.split(",")))


def table(merged: dict[tuple[float, Lane], list[Outcome]], rates: list[float], engines: list[str]) -> str:
    """The README table: one row per rate, engine, scenario and policy, over the runs done so far."""
    lines = ["| canary | calls/h | min_stage | engine | runs | rolled back % | promoted % | still running % | "
             "median time to decision | median time to rollback | median canary calls before rollback |",
             "|" + "---|" * 11]
    for rate in rates:
        for engine in engines:
            for index, scenario in enumerate(SCENARIOS):
                for min_stage in (86400.0, 3600.0):
                    found = merged.get((rate, Lane(index, min_stage, engine)))
                    if not found:
                        continue
                    summary = summarize(found)
                    lines.append(
                        f"| {scenario.name} | {rate:,.0f} | {'24h' if min_stage == 86400 else '1h'} | {engine} | "
                        f"{len(found)} | {summary['rollback']} | {summary['promote']} | {summary['running']} | "
                        f"{summary['decision_h']} | {summary['rollback_h']} | {summary['exposure']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
