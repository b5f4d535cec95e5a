"""The shadow stage and A/B tests of known truth through the real decision code, on a simulated clock.

    python benchmarks/shadow_ab_sim.py            # the README rows: 1,000 runs per row
    python benchmarks/shadow_ab_sim.py --smoke    # a few runs, one simulated day: seconds

Traffic is `rollout_sim.py`'s: Poisson arrivals, heavy-tailed user activity
(lognormal weights, σ 1.2, 2 users per hourly call), per-user quality levels
(normal, mean 0.8, sd 0.1), 1 % errors, lognormal latency (median 1 s, σ 0.5)
and cost (mean 0.002 USD), checks every 15 minutes for 7 days; the users and
arrivals are drawn per run (runs are independent).

**Shadow stage** (`--experiment shadow`): a rollout of `[shadow, 5, 25, 50,
100]` with the default `shadow` settings (10 % of stable's calls, at most 60
copies a minute and 10 USD a day, copies and their judging counted; the
copies stop for the rest of the UTC day once the cap is reached). Each copy
is one pair: both answers have a latent quality (the user's level, times
the canary's effect for the canary, plus normal noise sd 0.1); the evaluator
scores each answered side 0/1 with that chance; the pairwise judge compares
the two in both orders, each order seeing the quality difference plus noise
(sd 0.1) and a bias of 0.05 for the first position, and prefers an answer by
more than 0.05, else a tie (its two calls cost 0.001 USD). Each check builds
the stage's `ShadowEvidence` from the per-user sums, exactly as
`gateway.analysis.shadow.shadow_evidence_from_pairs` defines them (the latency
reference is stable's analytic p95), and calls
`gateway.analysis.shadow.decide_shadow` with the real policy. A run ends when
the canary is rolled back in shadow (stopped, no user exposed) or passes into
its first percentage stage (users exposed).

**A/B test** (`--experiment ab`): two identical versions split 50/50 by user
bucket (the router's), evaluators on 20 % of answered calls; at every check
`gateway.analysis.ab.ab_report` (alpha 0.05, the default tuning) over
everything since the start. A run counts a false positive for a metric when
that metric is *ever* reported significant in 7 days of looks (672 looks).

Printed: per row, the shares of runs (each with a 95 % Wilson interval), and
for the shadow stage the median time to its verdict and the median number of
pairs (each with a 95 % distribution-free interval).
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rollout_sim import (
    BASE_ERROR,
    CHECK_S,
    COST_MEAN,
    COST_SIGMA,
    LATENCY_MEDIAN_MS,
    LATENCY_SIGMA,
    _alias_table,
    median_interval,
    wilson,
)

from gateway.analysis import ArmEvidence, Evidence, LatencyThresholds, Sums
from gateway.analysis.ab import ab_report
from gateway.analysis.shadow import Paired, ShadowEvidence, decide_shadow
from gateway.models import RolloutState
from gateway.policy import RolloutPolicy

START = datetime(2026, 1, 1, tzinfo=UTC)
ANSWER_NOISE = 0.1
JUDGE_NOISE = 0.1
POSITION_BIAS = 0.05
PREFERENCE_MARGIN = 0.05
JUDGE_COST_PER_PAIR = 0.001
EVALUATED = 0.20
# Stable's p95 latency, and the share of answers slower than a threshold (lognormal latencies).
STABLE_P95_MS = LATENCY_MEDIAN_MS * math.exp(LATENCY_SIGMA * NormalDist().inv_cdf(0.95))


@dataclass(frozen=True)
class ShadowScenario:
    name: str
    quality: float = 1.0
    min_stage: str = "24h"


SHADOW_SCENARIOS = (
    ShadowScenario("quality -10 %", 0.90, "24h"),
    ShadowScenario("quality -10 %", 0.90, "1h"),
    ShadowScenario("identical", 1.0, "24h"),
    ShadowScenario("identical", 1.0, "1h"),
)


class Traffic:
    """One run's users: activity weights (alias table), buckets and quality levels."""

    def __init__(self, rng: np.random.Generator, rate: float) -> None:
        self.rng = rng
        self.users = int(2 * rate)
        self.prob, self.alias = _alias_table(rng.lognormal(0.0, 1.2, self.users))
        self.buckets = rng.integers(0, 10000, self.users)
        self.level = np.clip(rng.normal(0.8, 0.1, self.users), 0.05, 0.98)

    def pick(self, n: int) -> np.ndarray:
        draw = self.rng.random(n) * self.users
        users = draw.astype(np.int64)
        swap = draw - users >= self.prob[users]
        users[swap] = self.alias[users[swap]]
        return users


def sums(x: np.ndarray, y: np.ndarray) -> Sums:
    """`Sums.of` over per-user arrays: the users with x > 0."""
    keep = x > 0
    x, y = x[keep], y[keep]
    return Sums(int(keep.sum()), float(x.sum()), float(y.sum()), float((x * x).sum()), float((y * y).sum()),
                float((x * y).sum()))


def paired(x: np.ndarray, y: np.ndarray, n: np.ndarray) -> Paired:
    """`paired_sums` over per-user arrays: every user with pairs, even when its stable side is 0."""
    keep = n > 0
    x, y = x[keep], y[keep]
    return Paired(int(n.sum()), Sums(int(keep.sum()), float(x.sum()), float(y.sum()), float((x * x).sum()),
                                     float((y * y).sum()), float((x * y).sum())))


def _lognormal_cost(rng: np.random.Generator, n: int, factor: float = 1.0) -> np.ndarray:
    return COST_MEAN * factor * np.exp(COST_SIGMA * rng.standard_normal(n) - 0.5 * COST_SIGMA**2)


def _slow(rng: np.random.Generator, n: int, threshold_ms: float) -> np.ndarray:
    latency = LATENCY_MEDIAN_MS * np.exp(LATENCY_SIGMA * rng.standard_normal(n))
    return (latency > threshold_ms).astype(float)


def shadow_run(rng: np.random.Generator, rate: float, scenario: ShadowScenario,
               days: float) -> tuple[str, float | None, int]:
    """One rollout in the shadow stage: ("rollback" | "pass" | "running", hours to the verdict, pairs)."""
    policy = RolloutPolicy.model_validate({"stages": ["shadow", 5, 25, 50, 100],
                                           "min_stage_duration": scenario.min_stage})
    shadow = policy.shadow
    traffic = Traffic(rng, rate)
    fields = ("pairs", "s_err", "c_err", "s_ans", "c_ans", "s_slow", "c_slow", "judged", "win", "ev_n", "ev_s",
              "ev_c", "priced", "s_cost", "c_cost")
    acc = {name: np.zeros(traffic.users) for name in fields}
    thresholds = LatencyThresholds.of(STABLE_P95_MS, policy)
    state = RolloutState(stable="v1", canary="v2", status="canary", shadow=True, stage_started_at=START)
    spent, day, total = 0.0, 0, 0
    for check in range(int(days * 86400 / CHECK_S)):
        now_s = (check + 1) * CHECK_S
        if int(now_s // 86400) != day:
            day, spent = int(now_s // 86400), 0.0
        calls = rng.poisson(rate * CHECK_S / 3600)
        copies = min(rng.binomial(calls, shadow.sample_rate), shadow.max_per_minute * int(CHECK_S / 60))
        cap = shadow.max_cost_usd_per_day
        if cap is not None:
            per_copy = COST_MEAN + JUDGE_COST_PER_PAIR
            copies = max(0, min(copies, math.ceil((cap - spent) / per_copy)))
        if copies:
            spent += _add_pairs(rng, traffic, acc, copies, scenario.quality, thresholds)
            total += copies
        now = START + timedelta(seconds=now_s)
        decision = decide_shadow(_shadow_evidence(acc, now, thresholds), policy, state, now)
        if decision.outcome == "rollback":
            return "rollback", now_s / 3600, total
        if decision.outcome in ("advance", "promote"):
            return "pass", now_s / 3600, total
    return "running", None, total


def _add_pairs(rng: np.random.Generator, traffic: Traffic, acc: dict[str, np.ndarray], n: int, effect: float,
               thresholds: LatencyThresholds) -> float:
    """Draw `n` pairs into the per-user sums; returns what they cost (answers and judging)."""
    users = traffic.pick(n)
    level = traffic.level[users]
    s_ok = rng.random(n) >= BASE_ERROR
    c_ok = rng.random(n) >= BASE_ERROR
    s_quality = np.clip(level + ANSWER_NOISE * rng.standard_normal(n), 0, 1)
    c_quality = np.clip(level * effect + ANSWER_NOISE * rng.standard_normal(n), 0, 1)
    both = s_ok & c_ok
    s_score = (rng.random(n) < s_quality).astype(float)
    c_score = (rng.random(n) < c_quality).astype(float)

    def order(bias: float) -> np.ndarray:
        seen = c_quality - s_quality + JUDGE_NOISE * rng.standard_normal(n) + bias
        return np.where(seen > PREFERENCE_MARGIN, 1.0, np.where(seen < -PREFERENCE_MARGIN, 0.0, 0.5))

    win = (order(POSITION_BIAS) + order(-POSITION_BIAS)) / 2  # the canary first (A), then second (B)
    s_cost = _lognormal_cost(rng, n)
    c_cost = _lognormal_cost(rng, n)
    added = {
        "pairs": np.ones(n), "s_err": (~s_ok).astype(float), "c_err": (~c_ok).astype(float),
        "s_ans": s_ok.astype(float), "c_ans": c_ok.astype(float),
        "s_slow": s_ok * _slow(rng, n, thresholds.reference_ms), "c_slow": c_ok * _slow(rng, n, thresholds.gate_ms),
        "judged": both.astype(float), "win": both * win, "ev_n": both.astype(float), "ev_s": both * s_score,
        "ev_c": both * c_score, "priced": both.astype(float), "s_cost": both * s_cost, "c_cost": both * c_cost,
    }
    for name, values in added.items():
        np.add.at(acc[name], users, values)
    return float((s_cost * s_ok).sum() + (c_cost * c_ok).sum() + JUDGE_COST_PER_PAIR * both.sum())


def _shadow_evidence(acc: dict[str, np.ndarray], now: datetime, thresholds: LatencyThresholds) -> ShadowEvidence:
    pairs = acc["pairs"]

    def side(version: str, prefix: str) -> ArmEvidence:
        slow = sums(acc[f"{prefix}_ans"], acc[f"{prefix}_slow"])
        return ArmEvidence(version=version, users=int((pairs > 0).sum()), calls=int(pairs.sum()),
                           errors=sums(pairs, acc[f"{prefix}_err"]), slow=slow, slow_reference=slow,
                           cost=sums(acc["priced"], acc[f"{prefix}_cost"]))

    evaluated = paired(acc["ev_s"], acc["ev_c"], acc["ev_n"])
    return ShadowEvidence(
        since=START, until=now, pairs=int(pairs.sum()), users=int((pairs > 0).sum()),
        stable=side("v1", "s"), canary=side("v2", "c"), win=sums(acc["judged"], acc["win"]),
        sources={"evaluator:quality": evaluated} if evaluated.pairs else {},
        cost=paired(acc["s_cost"], acc["c_cost"], acc["priced"]), latency=thresholds,
    )


AB_METRICS = ("error_rate", "quality", "cost", "slow_share")


def ab_run(rng: np.random.Generator, rate: float, days: float, alpha: float) -> dict[str, bool]:
    """One A/B test of two identical versions: which metrics were ever reported significant."""
    policy = RolloutPolicy.model_validate({"mode": "ab_test", "ab": {"split": 50, "alpha": alpha}})
    traffic = Traffic(rng, rate)
    arm_of = traffic.buckets < round(policy.ab.split * 100)
    fields = ("calls", "errors", "scored", "quality", "answered", "slow", "cost")
    acc = {name: np.zeros(traffic.users) for name in fields}
    thresholds = LatencyThresholds.of(STABLE_P95_MS, policy)
    ever = dict.fromkeys(AB_METRICS, False)
    for check in range(int(days * 86400 / CHECK_S)):
        n = rng.poisson(rate * CHECK_S / 3600)
        users = traffic.pick(n)
        ok = rng.random(n) >= BASE_ERROR
        scored = ok & (rng.random(n) < EVALUATED)
        added = {"calls": np.ones(n), "errors": (~ok).astype(float), "scored": scored.astype(float),
                 "quality": scored * (rng.random(n) < traffic.level[users]), "answered": ok.astype(float),
                 "slow": ok * _slow(rng, n, thresholds.reference_ms), "cost": ok * _lognormal_cost(rng, n)}
        for name, values in added.items():
            np.add.at(acc[name], users, values)
        now_s = (check + 1) * CHECK_S

        def arm(version: str, members: np.ndarray) -> ArmEvidence:
            part = {name: values[members] for name, values in acc.items()}
            return ArmEvidence(version=version, users=int((part["calls"] > 0).sum()), calls=int(part["calls"].sum()),
                               errors=sums(part["calls"], part["errors"]), quality=sums(part["scored"],
                                                                                         part["quality"]),
                               slow_reference=sums(part["answered"], part["slow"]),
                               cost=sums(part["answered"], part["cost"]))

        evidence = Evidence(stable=arm("v1", ~arm_of), canary=arm("v2", arm_of), since=START,
                            until=START + timedelta(seconds=now_s), latency=thresholds)
        report = ab_report(evidence, split=policy.ab.split, alpha=alpha, tuning=policy.sequential_tuning,
                           elapsed_s=now_s)
        for metric in report.metrics:
            if metric.significant:
                ever[metric.metric] = True
    return ever


def _share(count: int, total: int) -> str:
    low, high = wilson(count, total)
    return f"{100 * count / total:.1f} ({100 * low:.1f}–{100 * high:.1f})"


def _median(values: list[float], unit: str, digits: int) -> str:
    found = median_interval(values)
    if found is None:
        return "—"
    mid, low, high = found
    return f"{mid:,.{digits}f} ({low:,.{digits}f}–{high:,.{digits}f}){unit}"


def _shadow_job(args: tuple[float, int, int, float, int]) -> tuple[int, list[tuple[str, float | None, int]]]:
    rate, scenario, runs, days, seed = args
    rng = np.random.default_rng(seed)
    return scenario, [shadow_run(rng, rate, SHADOW_SCENARIOS[scenario], days) for _ in range(runs)]


def _ab_job(args: tuple[float, int, float, float, int]) -> list[dict[str, bool]]:
    rate, runs, days, alpha, seed = args
    rng = np.random.default_rng(seed)
    return [ab_run(rng, rate, days, alpha) for _ in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", choices=("shadow", "ab", "both"), default="both")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--rate", type=float, default=10000.0, help="calls per hour")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=10, help="runs per job")
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument("--smoke", action="store_true", help="4 runs, 1 day, 1,000 calls/hour: seconds")
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.days, args.rate, args.chunk = 4, 1.0, 1000.0, 2
    started = time.perf_counter()
    chunks = [(first, min(args.chunk, args.runs - first)) for first in range(0, args.runs, args.chunk)]
    with multiprocessing.get_context("fork").Pool(args.workers) as pool:
        if args.experiment in ("shadow", "both"):
            jobs = [(args.rate, scenario, size, args.days, args.seed + 7919 * scenario + first)
                    for first, size in chunks for scenario in range(len(SHADOW_SCENARIOS))]
            found: dict[int, list[tuple[str, float | None, int]]] = {}
            for position, outcomes in pool.imap_unordered(_shadow_job, jobs):
                found.setdefault(position, []).extend(outcomes)
            print("| canary | calls/h | min_stage | runs | stopped in shadow (no user exposed) % | "
                  "passed into 5 % % | still in shadow % | median time to the verdict | median pairs |")
            print("|" + "---|" * 9)
            for index, row in enumerate(SHADOW_SCENARIOS):
                outcomes = found.get(index, [])
                total = len(outcomes)
                if not total:
                    continue
                hours = [h for _, h, _ in outcomes if h is not None]
                pairs = [float(p) for kind, _, p in outcomes if kind != "running"]
                print(f"| {row.name} | {args.rate:,.0f} | {row.min_stage} | {total} | "
                      f"{_share(sum(k == 'rollback' for k, _, _ in outcomes), total)} | "
                      f"{_share(sum(k == 'pass' for k, _, _ in outcomes), total)} | "
                      f"{_share(sum(k == 'running' for k, _, _ in outcomes), total)} | "
                      f"{_median(hours, ' h', 1)} | {_median(pairs, '', 0)} |", flush=True)
            print()
        if args.experiment in ("ab", "both"):
            alpha = 0.05
            ab_jobs = [(args.rate, size, args.days, alpha, args.seed + 104729 + first) for first, size in chunks]
            runs: list[dict[str, bool]] = []
            for outcomes_ab in pool.imap_unordered(_ab_job, ab_jobs):
                runs.extend(outcomes_ab)
            total = len(runs)
            print(f"| A/B, identical versions | calls/h | looks | runs | alpha | "
                  f"{' | '.join(f'{m} ever significant %' for m in AB_METRICS)} | any metric % |")
            print("|" + "---|" * (6 + len(AB_METRICS)))
            print(f"| 50/50 | {args.rate:,.0f} | {int(args.days * 86400 / CHECK_S)} | {total} | {alpha:g} | "
                  + " | ".join(_share(sum(run[m] for run in runs), total) for m in AB_METRICS)
                  + f" | {_share(sum(any(run.values()) for run in runs), total)} |")
    print(f"\n{time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
