"""The shadow stage end to end: the OpenAI SDK against a running gateway, a strict fake upstream, a fake judge.

Users only ever get stable's answers; a sampled share of their calls is copied to the canary off the hot path
(plain, never retried), recorded apart, evaluated and judged pairwise in both orders; the scheduler's check
passes the stage into the first percentage or rolls the canary back without it ever serving a user.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import FAST_POLICY, SAME_PRICE, Gateway, dashboard, merge, query, wait_for
from tests.fakes import FakeAnthropic, FakeUpstream

pytestmark = pytest.mark.sqlite_only("the shadow records' storage is covered in test_evidence_store.py")

STABLE_ANSWER = "answer to [You are v1.]"
CANARY_ANSWER = "answer to [You are v2.]"


@pytest.fixture
def judge() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


def shadow_config(judge_url: str, *, policy: dict[str, Any] | None = None,
                  shadow: dict[str, Any] | None = None) -> dict[str, Any]:
    """support-bot with `v2` declared as a canary that starts in the shadow stage; evaluators and a judge."""
    return {
        "pricing": {**SAME_PRICE, "judge-model": {"input": 10.0, "output": 10.0}},
        "providers": {"judge": {"kind": "openai", "base_url": judge_url, "api_key": "sk-judge-key-000000",
                                "retries": 0, "timeout_s": 5}},
        "deployments": {"support-bot": {
            "policy": {**FAST_POLICY, "stages": ["shadow", 5, 25, 50, 100], "check_interval": "1h",
                       "shadow": {"sample_rate": 1.0, "max_per_minute": 100_000, "min_pairs": 5, **(shadow or {})},
                       **(policy or {})},
            "quality": {"evaluators": [{"type": "non_empty"}],
                        "judge": {"provider": "judge", "model": "judge-model", "sample_rate": 0.0,
                                  "max_per_minute": 100_000}},
        }},
    }


def ask(gateway: Gateway, user: str, *, stream: bool = False) -> tuple[str, str]:
    """One call through the OpenAI SDK: (the version header, the answer's text)."""
    client = gateway.openai()
    messages: Any = [{"role": "user", "content": f"question of {user}"}]
    if stream:
        with client.chat.completions.with_streaming_response.create(
                model="support-bot", user=user, messages=messages, stream=True) as response:
            text = "".join(chunk.choices[0].delta.content or "" for chunk in response.parse() if chunk.choices)
            return response.headers["x-canary-version"], text
    raw = client.chat.completions.with_raw_response.create(model="support-bot", user=user, messages=messages)
    return raw.headers["x-canary-version"], raw.parse().choices[0].message.content or ""


def records(gateway: Gateway, mode: str) -> list[dict[str, Any]]:
    return query(gateway.settings.database_url, "SELECT * FROM request_records WHERE mode = :mode ORDER BY id",
                 mode=mode)


def scores(gateway: Gateway) -> list[dict[str, Any]]:
    return query(gateway.settings.database_url, "SELECT request_id, source, score, cost_usd FROM quality_scores")


def metric(gateway: Gateway, name: str, **labels: str) -> float:
    with gateway.client() as http:
        text = http.get("/metrics").text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items()))


def to_canary(fake: FakeUpstream) -> list[dict[str, Any]]:
    return [call.body for call in fake.received if call.body and call.body.get("model") == "model-b"]


def deployment(gateway: Gateway) -> dict[str, Any]:
    with gateway.admin() as http:
        found: dict[str, Any] = http.get("/admin/deployments/support-bot").json()
        return found


def test_users_get_only_stables_answers_and_the_canary_answers_a_plain_copy_judged_both_ways(
    make_gateway: Any, fake: FakeUpstream, judge: FakeUpstream
) -> None:
    judge.behaviour.prefer = "You are v2."
    gateway = make_gateway(shadow_config(judge.url))
    state = deployment(gateway)
    assert (state["mode"], state["canary"], state["canary_percent"], state["shadow"]) == ("shadow", "v2", 0.0, True)

    answers = [ask(gateway, f"user-{index}", stream=index % 3 == 0) for index in range(12)]
    assert {version for version, _ in answers} == {"v1"}
    assert {text for (_, text), index in zip(answers, range(12), strict=True) if index % 3} == {STABLE_ANSWER}

    # A streamed call whose client closed its connection the moment it read [DONE] may be recorded as abandoned
    # (client_cancelled): such a call is not copied. Every answered call is.
    served = wait_for(lambda: len(records(gateway, "live")) == 12 and {
        row["id"]: row for row in records(gateway, "live") if row["status"] == "ok"}, timeout=20, what="12 records")
    assert {row["version"] for row in served.values()} == {"v1"} and len(served) >= 8
    count = len(served)
    copies = wait_for(lambda: len(records(gateway, "shadow")) == count and records(gateway, "shadow"), timeout=30,
                      what=f"{count} shadow copies")
    assert {row["version"] for row in copies} == {"v2"}
    assert {row["shadow_of"] for row in copies} == set(served)
    for copy in copies:
        user_call = served[copy["shadow_of"]]
        assert (copy["user_hash"], copy["stream"], copy["status"]) == (user_call["user_hash"], False, "ok")
        assert copy["cost_usd"] == pytest.approx((11 * 1.0 + 7 * 2.0) / 1e6)  # priced as model-b
    # The canary got every sampled call, plain (even when the user's streamed), with its own prompt.
    bodies = to_canary(fake)
    assert len(bodies) == count
    assert all("stream" not in body and "stream_options" not in body for body in bodies)
    assert all(body["messages"][0] == {"role": "system", "content": "You are v2."} for body in bodies)
    questions = [body["messages"][1]["content"] for body in bodies]
    assert {f"question of user-{index}" for index in range(12) if index % 3} <= set(questions)
    assert set(questions) <= {f"question of user-{index}" for index in range(12)} and len(set(questions)) == count

    # The judge saw each pair twice, once in each order (streamed users' answers read differently).
    judged = wait_for(lambda: len(judge.received) == 2 * count and judge.received, timeout=30,
                      what=f"{2 * count} judge calls")
    orders: Counter[tuple[str, str]] = Counter()
    for call in judged:
        prompt = call.body["messages"][-1]["content"]
        first = prompt.partition("<answer_a>\n")[2].partition("\n</answer_a>")[0]
        second = prompt.partition("<answer_b>\n")[2].partition("\n</answer_b>")[0]
        question = prompt.partition("<conversation>\n")[2].partition("\n</conversation>")[0]
        assert question.startswith("[user]\nquestion of user-") and "You are" not in question
        orders[(first, second)] += 1
    assert orders[(STABLE_ANSWER, CANARY_ANSWER)] == orders[(CANARY_ANSWER, STABLE_ANSWER)] == 8
    assert sum(number for (first, _), number in orders.items() if first == CANARY_ANSWER) == count

    # Both answers were evaluated; the canary's win (it won both orders) is on its copy, with the judge's cost.
    found = wait_for(lambda: len(scores(gateway)) == 3 * count and scores(gateway), timeout=30,
                     what=f"{3 * count} scores")
    by_call = {(row["request_id"], row["source"]): row for row in found}
    assert all((call, "evaluator:non_empty") in by_call for call in served)
    for copy in copies:
        assert by_call[(copy["id"], "evaluator:non_empty")]["score"] == 1.0
        win = by_call[(copy["id"], "pairwise")]
        assert win["score"] == 1.0 and win["cost_usd"] > 0

    assert metric(gateway, "canary_requests_total", version="v2", mode="shadow") == count
    assert metric(gateway, "canary_requests_total", version="v2", mode="live") == 0
    assert metric(gateway, "canary_rollout_mode", deployment="support-bot", mode="shadow") == 1
    with gateway.admin() as http:
        compare = http.get("/admin/deployments/support-bot/compare?hours=1").json()
        decision = http.get("/admin/deployments/support-bot/decision").json()
    assert (compare["mode"], compare["canary"]["requests"], compare["shadow"]["requests"]) == ("shadow", 0, count)
    assert compare["stable"]["requests"] == count
    assert decision["evidence"]["pairs"] == count and decision["evidence"]["win_rate"] == 1.0


def test_the_sampled_share_the_per_minute_budget_and_the_spend_cap(
    make_gateway: Any, fake: FakeUpstream, judge: FakeUpstream
) -> None:
    half = make_gateway(shadow_config(judge.url, shadow={"sample_rate": 0.5}))
    for index in range(200):
        ask(half, f"user-{index}")
    copies = wait_for(lambda: len(to_canary(fake)) == len(records(half, "shadow")) and records(half, "shadow"),
                      timeout=20, what="the copies recorded")
    # Binomial(200, 0.5): 100 ± 7 standard deviations.
    assert 65 <= len(copies) <= 135
    half.stop()

    fake.received.clear()
    budget = make_gateway(shadow_config(judge.url, shadow={"max_per_minute": 5}))
    for index in range(30):
        ask(budget, f"user-{index}")
    skipped = metric(budget, "canary_shadow_skipped_total", reason="budget")
    assert skipped > 0 and len(to_canary(fake)) + skipped == 30
    budget.stop()

    fake.received.clear()
    capped = make_gateway(shadow_config(judge.url, shadow={"max_cost_usd_per_day": 0.00002}))
    ask(capped, "first")  # a copy costs 0.000025 USD: over the day's cap
    wait_for(lambda: records(capped, "shadow"), timeout=20, what="the first copy")
    for index in range(10):
        ask(capped, f"user-{index}")
    assert len(to_canary(fake)) == 1
    assert metric(capped, "canary_shadow_skipped_total", reason="spend_cap") == 10


def test_a_copy_is_never_retried_and_its_failure_is_the_canarys_not_the_users(
    make_gateway: Any, fake: FakeUpstream, judge: FakeUpstream
) -> None:
    fake.behaviour.fail_models = frozenset({"model-b"})
    gateway = make_gateway(shadow_config(judge.url))
    answers = [ask(gateway, f"user-{index}") for index in range(5)]
    assert answers == [("v1", STABLE_ANSWER)] * 5
    copies = wait_for(lambda: len(records(gateway, "shadow")) == 5 and records(gateway, "shadow"), timeout=20,
                      what="5 failed copies")
    assert {(row["status"], row["http_status"], row["error_kind"]) for row in copies} == {("error", 502, "status")}
    assert len(to_canary(fake)) == 5  # the provider allows 2 retries; a copy gets none
    assert {row["status"] for row in records(gateway, "live")} == {"ok"}
    assert judge.received == []  # nothing to compare


def test_a_responses_call_is_copied_to_a_canary_on_another_provider_through_the_pivot(
    make_gateway: Any, fake: FakeUpstream, judge: FakeUpstream, claude: FakeAnthropic
) -> None:
    judge.behaviour.prefer = "claude answer"
    gateway = make_gateway(merge(shadow_config(judge.url), {
        "providers": {"claude": {"kind": "anthropic", "base_url": claude.url, "api_key": claude.api_key,
                                 "retries": 2}},
        "pricing": {"claude-sonnet-4-5": {"input": 3.0, "output": 15.0}},
        "deployments": {"support-bot": {"versions": {"v2": {"provider": "claude", "model": "claude-sonnet-4-5",
                                                            "params": {"max_tokens": 500}}}}},
    }))
    raw = gateway.openai().responses.with_raw_response.create(model="support-bot", input="question of u-1",
                                                              user="u-1")
    assert (raw.headers["x-canary-version"], raw.parse().output_text) == ("v1", STABLE_ANSWER)
    [copy] = wait_for(lambda: records(gateway, "shadow"), timeout=20, what="the copy")
    assert (copy["version"], copy["api"], copy["status"], copy["stream"]) == ("v2", "responses", "ok", False)
    assert copy["cost_usd"] > 0
    [sent] = [call.body for call in claude.received]  # the Messages API: translated, plain, sent once
    assert "stream" not in sent and sent["model"] == "claude-sonnet-4-5" and sent["max_tokens"] == 500
    assert "You are v2." in str(sent["system"]) and "question of u-1" in str(sent["messages"])
    judged = wait_for(lambda: len(judge.received) == 2 and judge.received, timeout=20, what="both orders")
    shown = {call.body["messages"][-1]["content"].partition("<answer_a>\n")[2].partition("\n</answer_a>")[0]
             for call in judged}
    assert shown == {STABLE_ANSWER, "claude answer to [You are v2.]"}
    win = wait_for(lambda: [row for row in scores(gateway) if row["source"] == "pairwise"], timeout=20,
                   what="the win score")
    assert win[0]["request_id"] == copy["id"] and win[0]["score"] == 1.0


def test_a_worse_canary_is_rolled_back_from_shadow_without_serving_a_single_user(
    make_gateway: Any, fake: FakeUpstream, judge: FakeUpstream
) -> None:
    judge.behaviour.prefer = "You are v1."
    gateway = make_gateway(shadow_config(judge.url, policy={"check_interval": "1s", "min_stage_duration": "1h"}))
    served: list[tuple[str, str]] = []
    index = 0
    while deployment(gateway)["status"] != "rolled_back":
        served.append(ask(gateway, f"user-{index % 50}"))
        index += 1
        assert index < 2000, "the worse canary was not rolled back"
    assert set(served) == {("v1", STABLE_ANSWER)}
    assert {row["version"] for row in records(gateway, "live")} == {"v1"}
    # A copy sent just before the rollback is recorded when it is answered: every copy sent gets its record.
    wait_for(lambda: len(to_canary(fake)) == len(records(gateway, "shadow")) > 0, timeout=10,
             what="a shadow record for every copy the canary answered")
    assert all("stream" not in body for body in to_canary(fake))

    with gateway.admin() as http:
        events = http.get("/admin/deployments/support-bot/events").json()["events"]
    changes = [event for event in reversed(events) if event["action"] not in ("hold", "dry_run")]
    assert [(event["action"], event["to"]["mode"], event["to"]["canary_percent"]) for event in changes] == [
        ("deployment_created", "shadow", 0.0), ("rolled_back", None, 0.0)]
    rollback = changes[-1]
    assert rollback["actor"] == "scheduler" and rollback["from"]["mode"] == "shadow"
    assert rollback["reason"].startswith("shadow stage failed: judge win rate (pairwise, both orders) 0.000")
    assert rollback["reason"].endswith("< 0.45 → rollback")
    assert rollback["snapshot"]["mode"] == "shadow" and rollback["snapshot"]["evidence"]["judged_pairs"] >= 5
    assert metric(gateway, "canary_rollbacks_total", deployment="support-bot") == 1


def test_a_canary_shown_not_worse_in_shadow_advances_to_the_first_percentage(
    make_gateway: Any, fake: FakeUpstream, judge: FakeUpstream
) -> None:
    judge.behaviour.prefer = "You are v2."
    gateway = make_gateway(shadow_config(judge.url, policy={"check_interval": "1s", "min_stage_duration": "1s"}))
    index = 0
    while deployment(gateway)["mode"] == "shadow":
        version, text = ask(gateway, f"user-{index % 50}")
        # Served by the canary only once the check has moved it out of the shadow stage.
        assert (version, text) == ("v1", STABLE_ANSWER) or deployment(gateway)["mode"] != "shadow"
        index += 1
        assert index < 2000, "the canary did not leave the shadow stage"
    state = deployment(gateway)
    assert (state["mode"], state["canary_percent"], state["shadow"]) == ("canary", 5.0, False)
    with gateway.admin() as http:
        advanced = next(event for event in http.get("/admin/deployments/support-bot/events").json()["events"]
                        if event["action"] == "advanced")
    assert advanced["reason"].startswith("shadow stage passed on ") and advanced["reason"].endswith(": shadow → 5 %")
    gates = {test["metric"]: test["verdict"] for test in advanced["snapshot"]["metrics"] if test["role"] == "gate"}
    assert gates == {"win_rate": "pass", "quality:evaluator:non_empty": "pass"}
    # Now at 5 %, the canary serves its users for real, and shadow copies stop.
    copies = len(records(gateway, "shadow"))
    versions = {ask(gateway, f"later-{n}")[0] for n in range(200)}
    assert versions == {"v1", "v2"}
    assert len(records(gateway, "shadow")) == copies


def test_the_dashboard_shows_the_shadow_stage_its_progress_and_the_copies(
    make_gateway: Any, fake: FakeUpstream, judge: FakeUpstream
) -> None:
    judge.behaviour.prefer = "You are v2."
    gateway = make_gateway(shadow_config(judge.url))
    for index in range(8):
        ask(gateway, f"user-{index}")
    wait_for(lambda: len([row for row in scores(gateway) if row["source"] == "pairwise"]) == 8, timeout=20,
             what="8 judged pairs")
    with dashboard(gateway) as page:
        page.wait_for_selector("#shadow-sides tr[data-metric='copies']")
        assert "shadow" in page.text_content("#state") and page.is_visible("#shadow") and page.is_hidden("#ab")
        progress = page.text_content("#shadow-progress")
        assert progress.startswith("8 pairs of 5 needed before a verdict (8 judged pairwise, canary win rate 1.000)")
        assert "Verdict now: shadow" in progress
        assert page.text_content("#shadow-sides tr[data-metric='copies']").endswith("8")
        assert page.text_content("#stage-title").startswith("Shadow stage")
        assert page.locator("#intervals tr[data-metric='win_rate']").count() == 2
