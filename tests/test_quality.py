"""Quality signals end to end: a real fake judge, built-in evaluators, and the automation using them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import FAST_POLICY, SAME_PRICE, Gateway, Traffic, users_in, wait_for
from tests.fakes import FakeUpstream, free_port

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def judge() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


def with_judge(judge_url: str, policy: dict[str, Any], **judge_options: Any) -> dict[str, Any]:
    return {
        "pricing": {**SAME_PRICE, "judge-model": {"input": 10.0, "output": 10.0}},
        "providers": {"judge": {"kind": "openai", "base_url": judge_url, "api_key": "sk-judge-key-000000",
                                "retries": 0, "timeout_s": 5}},
        "deployments": {"support-bot": {
            "policy": policy,
            "quality": {"judge": {"provider": "judge", "model": "judge-model", "sample_rate": 1.0,
                                  "max_per_minute": 100_000, **judge_options}},
        }},
    }


def status_of(gateway: Gateway) -> str:
    with gateway.admin() as http:
        return str(http.get("/admin/deployments/support-bot").json()["status"])


def metric_samples(gateway: Gateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with gateway.client() as http:
        text = http.get("/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_a_canary_the_judge_scores_lower_is_rolled_back_on_quality_alone(
    make_gateway: Any, judge: FakeUpstream
) -> None:
    judge.behaviour.judge_scores = {"You are v2.": 0.5, "You are v1.": 0.9}
    gateway = make_gateway(with_judge(judge.url, {**FAST_POLICY, "min_stage_duration": "1h"}))
    with Traffic(gateway) as traffic:
        wait_for(lambda: status_of(gateway) == "rolled_back", timeout=30, what="the rollback")
    assert set(traffic.statuses) == {200}
    with gateway.admin() as http:
        events = http.get("/admin/deployments/support-bot/events").json()["events"]
        compare = http.get("/admin/deployments/support-bot/compare?hours=1").json()
    [rollback] = [e for e in events if e["action"] == "rolled_back"]
    assert "quality ×0.556" in rollback["reason"] and "< 0.9 → rollback" in rollback["reason"]
    assert compare["canary"]["quality_by_source"]["judge"]["avg"] == pytest.approx(0.5)
    assert compare["stable"]["quality_by_source"]["judge"]["avg"] == pytest.approx(0.9)
    assert compare["stable"]["avg_cost"] == pytest.approx((11 + 7 * 2) / 1e6)  # the judge's cost is not in it
    samples = metric_samples(gateway)
    scored = samples[("canary_judge_calls_total", (("deployment", "support-bot"), ("outcome", "scored")))]
    assert scored >= 10
    assert samples[("canary_judge_cost_usd_total", (("deployment", "support-bot"),))] > 0
    assert samples[("canary_quality_score_count", (("deployment", "support-bot"), ("source", "judge"),
                                                   ("version", "v2")))] >= 5


def test_a_canary_the_judge_scores_equal_is_promoted(make_gateway: Any, judge: FakeUpstream) -> None:
    judge.behaviour.judge_scores = {"You are": 0.8}
    gateway = make_gateway(with_judge(judge.url, FAST_POLICY))
    with Traffic(gateway):
        wait_for(lambda: status_of(gateway) == "promoted", timeout=50, what="the promotion")
    with gateway.admin() as http:
        events = http.get("/admin/deployments/support-bot/events?limit=1000").json()["events"]
    promoted = next(e for e in events if e["action"] == "promoted")
    assert any(reason.startswith("quality ×1") and "≥ 0.95" in reason for reason in promoted["snapshot"]["reasons"])


def test_evaluators_give_zero_to_empty_and_non_json_answers(make_gateway: Any, fake: FakeUpstream) -> None:
    fake.behaviour.empty_models = frozenset({"model-b"})
    gateway = make_gateway({"deployments": {"support-bot": {
        "policy": {**FAST_POLICY, "check_interval": "1h"},
        "quality": {"sample_rate": 1.0, "evaluators": [{"type": "non_empty"}, {"type": "json"}]},
    }}})
    users = users_in(5, canary=True, count=5) + users_in(5, canary=False, count=5)
    with gateway.client() as http:
        for user in users:
            assert http.post("/v1/chat/completions", json={
                "model": "support-bot", "messages": MESSAGES, "user": user,
                "response_format": {"type": "json_object"}}).status_code == 200
        for user in users:  # a stream is judged on its reassembled text
            assert http.post("/v1/chat/completions", json={
                "model": "support-bot", "messages": MESSAGES, "user": user, "stream": True}).status_code == 200

    def compared() -> dict[str, Any] | None:
        with gateway.admin() as http:
            result: dict[str, Any] = http.get("/admin/deployments/support-bot/compare?hours=1").json()
        done = all(result[side]["quality_by_source"].get("evaluator:non_empty", {}).get("count") == 10
                   for side in ("stable", "canary"))
        return result if done else None

    result = wait_for(compared, timeout=10, what="the evaluations")
    stable, canary = result["stable"]["quality_by_source"], result["canary"]["quality_by_source"]
    assert stable["evaluator:non_empty"] == {"avg": 1.0, "count": 10}
    assert canary["evaluator:non_empty"]["avg"] == pytest.approx(0.5)  # empty plain answers, non-empty streams
    assert stable["evaluator:json"] == {"avg": 0.0, "count": 5}  # JSON asked for, prose answered
    assert canary["evaluator:json"] == {"avg": 0.0, "count": 5}
    assert result["stable"]["scored"] == 10


def test_with_the_judge_down_the_proxy_is_unaffected_and_failures_are_counted(
    make_gateway: Any, fake: FakeUpstream
) -> None:
    policy = {**FAST_POLICY, "check_interval": "1h"}
    baseline = make_gateway({"deployments": {"support-bot": {"policy": policy}}})
    down = make_gateway(with_judge(f"http://127.0.0.1:{free_port()}/v1", policy))

    def codes(gateway: Gateway) -> list[int]:
        with gateway.client() as http:
            return [http.post("/v1/chat/completions", json={
                "model": "support-bot", "messages": MESSAGES, "user": f"u{index}"}).status_code
                for index in range(60)]

    # Latency with the judge down is measured by benchmarks, not asserted here: the judge's
    # failures must neither fail nor block a call.
    assert codes(baseline) == codes(down) == [200] * 60
    failed = ("canary_judge_calls_total", (("deployment", "support-bot"), ("outcome", "failed")))
    wait_for(lambda: metric_samples(down).get(failed, 0) >= 60, timeout=10, what="the counted failures")
    [rows] = [down.records(60)]
    assert {row["status"] for row in rows} == {"ok"}  # the judge's failures are not the version's errors


def test_an_unreadable_verdict_is_counted_not_scored(make_gateway: Any, judge: FakeUpstream) -> None:
    judge.behaviour.judge_text = "I think the answer is quite good."
    gateway = make_gateway(with_judge(judge.url, {**FAST_POLICY, "check_interval": "1h"}))
    with gateway.client() as http:
        for index in range(5):
            http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES,
                                                    "user": f"u{index}"})
    key = ("canary_judge_calls_total", (("deployment", "support-bot"), ("outcome", "unparsable")))
    wait_for(lambda: metric_samples(gateway).get(key) == 5, timeout=10, what="the unparsable verdicts")
    recorder = gateway.app.state.services.recorder
    wait_for(lambda: recorder.depth == 0, timeout=10, what="the recorder to write everything it holds")
    assert all(row["quality"] is None for row in gateway.records(5))


def test_the_judge_is_rate_limited(make_gateway: Any, judge: FakeUpstream) -> None:
    judge.behaviour.judge_scores = {"You are": 0.7}
    gateway = make_gateway(with_judge(judge.url, {**FAST_POLICY, "check_interval": "1h"}, max_per_minute=3))
    with gateway.client() as http:
        for index in range(8):
            http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES,
                                                    "user": f"u{index}"})
    skipped = ("canary_evaluations_skipped_total", (("deployment", "support-bot"), ("reason", "judge_rate_limit")))
    wait_for(lambda: metric_samples(gateway).get(skipped) == 5, timeout=10, what="the skipped samples")
    assert judge.hits == 3
