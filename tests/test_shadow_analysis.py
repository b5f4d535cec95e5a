"""The shadow stage's pure parts: the policy's `shadow` stage, the transitions, the pairwise judge's
prompt and verdicts, and the shadow verdict on pairs of known truth."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from gateway import rollout
from gateway.analysis.sequential import radius_multiplier
from gateway.analysis.shadow import ShadowPair, decide_shadow, paired_sums, shadow_evidence_from_pairs
from gateway.errors import Conflict, InvalidRequest
from gateway.evaluators import DEFAULT_PAIRWISE_RUBRIC, pairwise_body, parse_preference, win_score
from gateway.models import Deployment, RequestRecord, RolloutState, Version
from gateway.policy import RolloutPolicy

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
SINCE = NOW - timedelta(days=1)
POLICY = RolloutPolicy.model_validate({"stages": ["shadow", 5, 25, 50], "min_stage_duration": "1h"})


# --- the policy and the transitions ---------------------------------------------------------------------------


def test_stages_may_start_with_shadow_and_the_json_form_writes_it_back() -> None:
    assert (POLICY.stages, POLICY.shadow_stage, POLICY.judged_stages) == ((5.0, 25.0, 50.0), True, 4)
    stored = POLICY.model_dump(mode="json")
    assert stored["stages"] == ["shadow", 5.0, 25.0, 50.0] and "shadow_stage" not in stored
    assert RolloutPolicy.model_validate(stored) == POLICY
    assert RolloutPolicy().model_dump(mode="json")["stages"] == [5.0, 25.0, 50.0, 100.0]
    for bad in ([5, "shadow"], ["shadow", "shadow", 5], ["shadow"]):
        with pytest.raises(ValidationError):
            RolloutPolicy.model_validate({"stages": bad})


def test_shadow_and_ab_settings_are_validated() -> None:
    policy = RolloutPolicy.model_validate({"mode": "ab_test", "ab": {"split": 30, "alpha": 0.01},
                                           "shadow": {"sample_rate": 0.25, "max_per_minute": 10,
                                                      "max_cost_usd_per_day": None}})
    assert (policy.mode, policy.ab.split, policy.shadow.max_cost_usd_per_day) == ("ab_test", 30.0, None)
    for bad in ({"ab": {"split": 100}}, {"ab": {"split": 33.333}}, {"shadow": {"sample_rate": 0}},
                {"shadow": {"win_rate_min": 1}}, {"mode": "shadow"}):
        with pytest.raises(ValidationError):
            RolloutPolicy.model_validate(bad)


def deployment(state: RolloutState) -> Deployment:
    versions = {name: Version(name=name, provider="p", model="m") for name in ("v1", "v2", "v3")}
    return Deployment(name="bot", versions=versions, rollout=state)


def test_a_canary_starts_in_shadow_at_zero_percent_and_the_first_percentage_ends_it() -> None:
    started = rollout.start_canary(deployment(RolloutState(stable="v1")), version="v2", percent=None,
                                   stages=POLICY.stages, now=NOW, shadow=True)
    assert (started.canary, started.canary_percent, started.shadow, started.status) == ("v2", 0.0, True, "canary")
    advanced = rollout.set_percent(deployment(started), percent=5.0, stages=POLICY.stages, now=NOW)
    assert (advanced.canary_percent, advanced.shadow, advanced.stage_started_at) == (5.0, False, NOW)
    assert rollout.rollback(deployment(started), now=NOW).shadow is False
    # An explicit percentage skips the shadow stage.
    direct = rollout.start_canary(deployment(RolloutState(stable="v1")), version="v2", percent=25.0,
                                  stages=POLICY.stages, now=NOW, shadow=True)
    assert (direct.canary_percent, direct.shadow) == (25.0, False)


def test_an_ab_test_runs_at_its_split_and_only_conclude_ends_it() -> None:
    idle = deployment(RolloutState(stable="v1"))
    with pytest.raises(InvalidRequest):
        rollout.start_canary(idle, version="v2", percent=None, stages=POLICY.stages, now=NOW, kind="ab_test")
    running = rollout.start_canary(idle, version="v2", percent=50.0, stages=POLICY.stages, now=NOW,
                                   kind="ab_test", shadow=True)
    assert (running.kind, running.canary_percent, running.shadow) == ("ab_test", 50.0, False)
    test = deployment(running)
    stable_wins = rollout.conclude_ab(test, winner="v1", start_canary=False, stages=POLICY.stages, shadow=True,
                                      now=NOW)
    assert (stable_wins.stable, stable_wins.canary, stable_wins.canary_percent, stable_wins.status) == (
        "v1", None, 0.0, "stable")
    promoted = rollout.conclude_ab(test, winner="v2", start_canary=False, stages=POLICY.stages, shadow=True, now=NOW)
    assert (promoted.stable, promoted.canary, promoted.status) == ("v2", None, "promoted")
    as_canary = rollout.conclude_ab(test, winner="v2", start_canary=True, stages=POLICY.stages, shadow=True, now=NOW)
    assert (as_canary.kind, as_canary.canary, as_canary.canary_percent, as_canary.shadow) == ("canary", "v2", 0.0,
                                                                                              True)
    with pytest.raises(InvalidRequest):
        rollout.conclude_ab(test, winner="v3", start_canary=False, stages=POLICY.stages, shadow=False, now=NOW)
    canary = deployment(rollout.start_canary(idle, version="v2", percent=5.0, stages=POLICY.stages, now=NOW))
    with pytest.raises(Conflict):
        rollout.conclude_ab(canary, winner="v2", start_canary=False, stages=POLICY.stages, shadow=False, now=NOW)


# --- the pairwise judge ---------------------------------------------------------------------------------------


def test_the_pairwise_request_is_blind_and_keeps_the_apps_conversation_only() -> None:
    messages = [{"role": "system", "content": "You are v1."}, {"role": "user", "content": "hi"}]
    body = pairwise_body(messages, "first answer", "second answer", model="judge", rubric=None,
                         params={"temperature": 0})
    assert body["model"] == "judge" and body["temperature"] == 0
    assert body["messages"][0] == {"role": "system", "content": DEFAULT_PAIRWISE_RUBRIC}
    prompt = body["messages"][1]["content"]
    assert "You are v1." not in prompt and "[user]\nhi" in prompt
    assert prompt.index("<answer_a>\nfirst answer") < prompt.index("<answer_b>\nsecond answer")
    assert "v1" not in prompt and "v2" not in prompt and "canary" not in prompt.lower()


@pytest.mark.parametrize(("text", "expected"), [
    ('{"winner": "A", "reason": "more correct"}', "A"), ('{"winner": "b"}', "B"), ('{"winner": "tie"}', "tie"),
    ('Verdict: {"winner": "Answer B", "reason": "x"}', "B"), ("A", "A"), ("Answer B.", "B"), (" TIE ", "tie"),
    ('{"winner": "C"}', None), ("both are fine", None), ('{"winner": 1}', None), ("", None),
])
def test_a_pairwise_verdict_is_read_as_json_first_then_a_bare_label(text: str, expected: str | None) -> None:
    assert parse_preference(text) == expected


def test_both_orders_are_averaged_so_a_position_bias_cancels() -> None:
    assert win_score("A", "B") == 1.0  # the canary won as A and as B
    assert win_score("B", "A") == 0.0
    assert win_score("A", "A") == 0.5  # the judge always picked the first answer: no information
    assert win_score("B", "B") == 0.5
    assert (win_score("tie", "B"), win_score("A", "tie"), win_score("tie", "A")) == (0.75, 0.75, 0.25)


# --- the verdict ----------------------------------------------------------------------------------------------


def record(request_id: str, version: str, user: str | None, *, status: str = "ok", latency: float = 1000.0,
           cost: float | None = 0.002, at: datetime = NOW - timedelta(hours=2)) -> RequestRecord:
    return RequestRecord(id=request_id, created_at=at, deployment="bot", version=version, user_hash=user,
                         provider="p", upstream_model="m", stream=False, status=status,  # type: ignore[arg-type]
                         http_status=200 if status == "ok" else 502, error_kind=None if status == "ok" else "x",
                         latency_ms=latency, ttft_ms=None, prompt_tokens=10, completion_tokens=10, cost_usd=cost)


def pairs(n: int, *, users: int = 400, quality: float = 0.8, canary_quality: float = 0.8, judge: float = 0.0,
          canary_errors: float = 0.01, latency: float = 1.0, cost: float = 1.0, seed: int = 1,
          judged: bool = True) -> list[ShadowPair]:
    """`n` pairs of known truth: Bernoulli evaluator scores, a judge that prefers the better answer of the two
    (plus `judge` in favour of the canary), lognormal latencies and costs."""
    rng = np.random.default_rng(seed)
    level = np.clip(rng.normal(0, 0.05, users), -0.2, 0.2)
    made: list[ShadowPair] = []
    for index in range(n):
        user = int(rng.integers(users))
        stable_score = float(rng.random() < quality + level[user])
        canary_score = float(rng.random() < canary_quality + level[user])
        stable_error = rng.random() < 0.01
        canary_error = rng.random() < canary_errors
        stable = record(f"s{index}", "v1", f"u{user}", status="error" if stable_error else "ok",
                        latency=float(rng.lognormal(math.log(1000), 0.4)), cost=float(rng.lognormal(-6.2, 0.3)))
        canary = record(f"c{index}", "v2", f"u{user}", status="error" if canary_error else "ok",
                        latency=float(rng.lognormal(math.log(1000 * latency), 0.4)),
                        cost=float(rng.lognormal(-6.2, 0.3)) * cost)
        win = None
        if judged and not (stable_error or canary_error):
            edge = canary_score - stable_score + judge + rng.normal(0, 0.3)
            win = 1.0 if edge > 0.25 else 0.0 if edge < -0.25 else 0.5
        made.append(ShadowPair(stable, canary,
                               {} if stable_error else {"evaluator:refusal": stable_score},
                               {} if canary_error else {"evaluator:refusal": canary_score}, win))
    return made


def shadow_state(elapsed: timedelta = timedelta(days=1)) -> RolloutState:
    return RolloutState(stable="v1", canary="v2", canary_percent=0.0, status="canary", shadow=True,
                        stage_started_at=NOW - elapsed)


def run(made: list[ShadowPair], policy: RolloutPolicy = POLICY, elapsed: timedelta = timedelta(days=1)) -> Any:
    evidence = shadow_evidence_from_pairs(made, since=SINCE, until=NOW, policy=policy)
    return decide_shadow(evidence, policy, shadow_state(elapsed), NOW)


def test_a_canary_as_good_as_stable_passes_shadow_into_the_first_percentage_stage() -> None:
    decision = run(pairs(6000))
    assert (decision.outcome, decision.next_percent) == ("advance", 5.0)
    assert decision.summary == "shadow stage passed on 6000 pairs: shadow → 5 %"
    gates = {test.metric: test for test in decision.tests if test.role == "gate"}
    assert set(gates) == {"win_rate", "quality:evaluator:refusal"}  # answer quality decides the pass
    assert all(test.verdict == "pass" for test in gates.values())
    assert gates["win_rate"].lower is not None and gates["win_rate"].lower >= 0.45
    # Errors, latency and cost are measured on the shadow calls and could only fail the stage.
    watched = {test.metric: test for test in decision.tests if test.role == "rollback"}
    assert {"error_rate", "p95_latency", "cost"} <= set(watched)
    assert all(test.verdict == "no_rollback" for test in watched.values())


def test_a_canary_ten_percent_worse_fails_shadow_into_a_rollback() -> None:
    decision = run(pairs(8000, canary_quality=0.72))
    assert (decision.outcome, decision.next_percent) == ("rollback", 0.0)
    failed = [test for test in decision.tests if test.verdict == "rollback"]
    assert {test.metric for test in failed} >= {"quality:evaluator:refusal"}
    assert decision.summary.startswith("shadow stage failed: ")
    quality = next(test for test in failed if test.metric == "quality:evaluator:refusal")
    assert quality.upper is not None and quality.upper < 0.95
    assert quality.line.endswith("< 0.95 → rollback")


def test_the_judge_alone_can_fail_the_stage() -> None:
    made = [ShadowPair(pair.stable, pair.canary, {}, {}, pair.win) for pair in pairs(3000, judge=-0.5)]
    decision = run(made)
    assert decision.outcome == "rollback"
    assert "judge win rate" in decision.summary and decision.summary.endswith("< 0.45 → rollback")


def test_too_few_pairs_hold_and_say_how_many_are_missing() -> None:
    decision = run(pairs(60))
    assert decision.outcome == "hold"
    assert decision.summary == "shadow: not enough pairs yet (60 of min_pairs 100) → hold"


def test_a_passing_canary_waits_for_min_stage_duration() -> None:
    decision = run(pairs(6000), elapsed=timedelta(minutes=20))
    assert decision.outcome == "hold" and "min_stage_duration 1.0h → hold" in decision.summary


def test_an_undecided_metric_says_how_many_more_pairs_it_needs_either_way() -> None:
    good = run(pairs(300, seed=4))
    assert good.outcome == "hold"
    undecided = [test for test in good.tests if test.role == "gate" and test.verdict == "undecided"]
    assert undecided and all("more pairs to pass" in test.line for test in undecided)
    worse = run(pairs(4000, canary_quality=0.72))
    assert worse.outcome == "hold"
    [quality] = [test for test in worse.tests if test.metric == "quality:evaluator:refusal" and test.role == "gate"]
    needed = int(quality.line.split("needs ~")[1].split(" ")[0].replace(",", ""))
    assert "more pairs to fail" in quality.line and 500 < needed < 20000


def test_shadow_before_a_single_stage_of_100_promotes() -> None:
    policy = RolloutPolicy.model_validate({"stages": ["shadow", 100], "min_stage_duration": 0})
    decision = run(pairs(6000), policy)
    assert (decision.outcome, decision.next_percent) == ("promote", None)


def test_a_critical_error_rate_on_the_shadow_calls_rolls_back_at_once() -> None:
    decision = run(pairs(400, canary_errors=0.5))
    assert decision.outcome == "rollback" and decision.summary.startswith("critical: canary error rate")


def test_a_slow_or_costly_canary_fails_on_latency_or_cost() -> None:
    slow = run(pairs(6000, latency=1.8))
    assert slow.outcome == "rollback" and "p95 latency" in slow.summary
    costly = run(pairs(6000, cost=1.6))
    assert costly.outcome == "rollback" and "cost per call" in costly.summary


def test_a_stage_past_max_stage_duration_does_what_on_timeout_says() -> None:
    policy = RolloutPolicy.model_validate({"stages": ["shadow", 5], "max_stage_duration": "2d",
                                           "on_timeout": "rollback"})
    decision = run(pairs(60), policy, elapsed=timedelta(days=3))
    assert decision.outcome == "rollback" and "on_timeout: rollback" in decision.summary


def test_evidence_counts_users_pairs_and_scores_as_defined() -> None:
    made = [
        ShadowPair(record("a", "v1", "u1"), record("A", "v2", "u1", cost=0.004), {"e": 1.0}, {"e": 0.0}, 0.25),
        ShadowPair(record("b", "v1", "u1"), record("B", "v2", "u1", status="error", cost=None), {"e": 1.0}, {}, None),
        ShadowPair(record("c", "v1", None), record("C", "v2", None), {"e": 0.0}, {"e": 1.0}, 1.0),
        ShadowPair(record("d", "v1", "u2", status="client_cancelled"), record("D", "v2", "u2"), {}, {}, None),
        ShadowPair(record("e", "v1", "u3", at=SINCE - timedelta(seconds=1)), record("E", "v2", "u3"), {}, {}, 1.0),
    ]
    evidence = shadow_evidence_from_pairs(made, since=SINCE, until=NOW, policy=POLICY)
    assert (evidence.pairs, evidence.users) == (3, 2)  # u1, and the anonymous call as a unit of its own
    assert (evidence.win.x, evidence.win.y, evidence.win.units) == (2.0, 1.25, 2)
    assert evidence.sources["e"] == paired_sums([(1.0, 0.0, 1), (0.0, 1.0, 1)])
    assert evidence.sources["e"].sums.units == 2  # the unit whose stable side is 0 still counts
    assert evidence.cost.pairs == 2
    assert (evidence.cost.sums.x, evidence.cost.sums.y) == pytest.approx((0.004, 0.006))
    assert (evidence.canary.errors.x, evidence.canary.errors.y) == (3.0, 1.0)
    assert evidence.public()["win_rate"] == pytest.approx(0.625)


def test_the_win_rate_interval_is_the_delta_method_with_the_engines_radius() -> None:
    made = pairs(2000, seed=9)
    evidence = shadow_evidence_from_pairs(made, since=SINCE, until=NOW, policy=POLICY)
    decision = decide_shadow(evidence, POLICY, shadow_state(), NOW)
    [gate] = [test for test in decision.tests if test.metric == "win_rate" and test.role == "gate"]
    by_user: dict[str, list[float]] = {}
    for pair in made:
        if pair.win is not None:
            by_user.setdefault(pair.stable.user_hash or "", [0.0, 0.0])
            by_user[pair.stable.user_hash or ""][0] += 1
            by_user[pair.stable.user_hash or ""][1] += pair.win
    x = np.array([v[0] for v in by_user.values()])
    y = np.array([v[1] for v in by_user.values()])
    n, rate = len(x), y.sum() / x.sum()
    variance = n / (n - 1) * ((y - rate * x) ** 2).sum() / x.sum() ** 2
    radius = radius_multiplier(n, POLICY.false_promote_rate, POLICY.sequential_tuning) * math.sqrt(variance)
    assert gate.estimate == pytest.approx(rate)
    assert (gate.lower, gate.upper) == pytest.approx((rate - radius, rate + radius))
