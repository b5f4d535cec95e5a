"""POST /v1/responses through a running gateway: native to a Responses provider, or through the chat pivot.

What the upstream received, what the client got, the stored records, the
evaluators' scores and the metrics are checked; chat completions to a
provider declaring `api: responses` are here too.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Gateway, query, users_in, wait_for
from tests.fakes import FakeUpstream

pytestmark = pytest.mark.sqlite_only

STABLE = users_in(5, canary=False, count=1)[0]
NATIVE = {"providers": {"fake": {"api": "responses", "retries": 0}}}
PIVOT = {"providers": {"fake": {"retries": 0}}}


def sse(response: httpx.Response) -> list[dict[str, Any]]:
    """The data of each event of a Responses stream, checking each `event:` line names its `type`."""
    events = []
    for frame in response.text.strip().split("\n\n"):
        kind, data = frame.split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert kind == f"event: {event['type']}"
        events.append(event)
    return events


def test_a_native_call_carries_the_versions_prompt_examples_and_params_and_comes_back_unchanged(
        make_gateway: Any, fake: FakeUpstream) -> None:
    gateway: Gateway = make_gateway({**NATIVE, "deployments": {"support-bot": {"versions": {"v1": {
        "prompt_mode": "prepend",
        "few_shot": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}],
        "params": {"max_tokens": 100, "temperature": None}}}}}})
    with gateway.client() as http:
        answer = http.post("/v1/responses", json={
            "model": "support-bot", "instructions": "app prompt", "user": STABLE, "temperature": 0.7,
            "input": [{"role": "developer", "content": "dev note"}, {"role": "user", "content": "Hi"}]})
    assert answer.status_code == 200 and answer.headers["X-Canary-Version"] == "v1"
    [received] = fake.received
    assert received.path == "/v1/responses"
    assert received.body == {
        "model": "model-a", "instructions": "You are v1.\n\napp prompt\n\ndev note", "user": STABLE,
        "input": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."},
                  {"role": "user", "content": "Hi"}],
        "max_output_tokens": 100}
    data = answer.json()
    assert data["object"] == "response" and data["usage"]["output_tokens"] == 7
    assert data["output"][0]["content"][0]["text"] == "answer to [You are v1.\n\napp prompt\n\ndev note]"
    [record] = gateway.records(1)
    assert (record["api"], record["version"], record["prompt_tokens"], record["completion_tokens"]) == (
        "responses", "v1", 11, 7)
    assert record["cost_usd"] == pytest.approx((11 * 1.0 + 7 * 2.0) / 1e6)
    with gateway.client() as http:
        metrics = http.get("/metrics").text
    samples = [s for family in text_string_to_metric_families(metrics) for s in family.samples]
    assert any(s.name == "canary_requests_total" and s.labels.get("api") == "responses" and s.value == 1
               for s in samples)


def test_a_native_stream_is_relayed_event_by_event_and_recorded_with_its_usage(
        make_gateway: Any, fake: FakeUpstream) -> None:
    gateway: Gateway = make_gateway(NATIVE)
    with gateway.client() as http:
        answer = http.post("/v1/responses", json={"model": "support-bot", "input": "Hi", "stream": True,
                                                  "user": STABLE})
    events = sse(answer)
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    text = "".join(event["delta"] for event in events if event["type"] == "response.output_text.delta")
    assert text == "answer to [You are v1.]"
    assert fake.received[0].body["stream"] is True and "stream_options" not in fake.received[0].body
    [record] = gateway.records(1)
    assert (record["api"], record["stream"], record["status"], record["prompt_tokens"],
            record["completion_tokens"]) == ("responses", True, "ok", 11, 7)
    assert record["ttft_ms"] is not None


def test_a_native_stream_cut_short_ends_with_an_error_event_and_an_error_record(
        make_gateway: Any, fake: FakeUpstream) -> None:
    gateway: Gateway = make_gateway(NATIVE)
    fake.behaviour.cut_after = 1
    with gateway.client() as http:
        answer = http.post("/v1/responses", json={"model": "support-bot", "input": "Hi", "stream": True,
                                                  "user": STABLE})
    events = sse(answer)
    assert events[-1]["type"] == "error" and events[-1]["code"] == "stream_truncated"
    assert events[-1]["sequence_number"] == events[-2]["sequence_number"] + 1
    [record] = gateway.records(1)
    assert (record["status"], record["error_kind"]) == ("error", "stream_truncated")


def test_the_pivot_renders_the_chat_answer_as_a_response(make_gateway: Any, fake: FakeUpstream) -> None:
    gateway: Gateway = make_gateway({**PIVOT, "deployments": {"support-bot": {"versions": {"v1": {
        "params": {"max_tokens": 100, "temperature": 0.1}}}}}})
    with gateway.client() as http:
        answer = http.post("/v1/responses", json={
            "model": "support-bot", "instructions": "app prompt", "input": "Hi", "user": STABLE,
            "max_output_tokens": 64, "store": False})
    assert answer.status_code == 200
    [received] = fake.received
    assert received.path == "/v1/chat/completions"
    assert received.body["messages"] == [{"role": "system", "content": "You are v1."},
                                         {"role": "user", "content": "Hi"}]
    assert received.body["max_tokens"] == 100 and "store" not in received.body  # the version's limit wins
    data = answer.json()
    assert data["instructions"] == "app prompt"  # the app's own, never the version's prompt
    assert (data["max_output_tokens"], data["temperature"]) == (100, 0.1)  # what ran, under Responses names
    assert data["output"][0]["content"][0]["text"] == "answer to [You are v1.]"
    assert data["usage"]["input_tokens"] > 0
    [record] = gateway.records(1)
    assert (record["api"], record["status"]) == ("responses", "ok")


@pytest.mark.parametrize(("extra", "param"), [
    ({"previous_response_id": "resp_123"}, "previous_response_id"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"background": True}, "background"),
    ({"conversation": {"id": "conv_1"}}, "conversation"),
])
def test_what_the_pivot_cannot_translate_is_a_400_naming_the_field(
        make_gateway: Any, fake: FakeUpstream, extra: dict[str, Any], param: str) -> None:
    gateway: Gateway = make_gateway(PIVOT)
    with gateway.client() as http:
        answer = http.post("/v1/responses", json={"model": "support-bot", "input": "Hi", "user": STABLE, **extra})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["code"] == "unsupported_parameter"
    assert not fake.received


def test_a_pivot_stream_cut_short_ends_with_error_and_response_failed(make_gateway: Any, fake: FakeUpstream) -> None:
    gateway: Gateway = make_gateway(PIVOT)
    fake.behaviour.cut_after = 1
    with gateway.client() as http:
        answer = http.post("/v1/responses", json={"model": "support-bot", "input": "Hi", "stream": True,
                                                  "user": STABLE})
    events = sse(answer)
    assert [event["type"] for event in events[-2:]] == ["error", "response.failed"]
    assert events[-1]["response"]["status"] == "failed"
    [record] = gateway.records(1)
    assert (record["status"], record["error_kind"]) == ("error", "stream_truncated")


@pytest.mark.parametrize("config", [NATIVE, PIVOT], ids=["native", "pivot"])
def test_the_json_evaluator_scores_answers_to_a_json_schema_text_format(
        make_gateway: Any, fake: FakeUpstream, config: dict[str, Any]) -> None:
    gateway: Gateway = make_gateway({**config, "deployments": {"support-bot": {
        "quality": {"sample_rate": 1.0, "evaluators": [{"type": "json"}]}}}})
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    with gateway.client() as http:
        for stream in (False, True):
            answer = http.post("/v1/responses", json={
                "model": "support-bot", "input": "Where?", "user": STABLE, "stream": stream,
                "text": {"format": {"type": "json_schema", "name": "place", "schema": schema, "strict": True}}})
            assert answer.status_code == 200

    def scores() -> list[dict[str, Any]] | None:
        rows = query(gateway.settings.database_url, "SELECT source, score FROM quality_scores")
        return rows if len(rows) == 2 else None

    assert wait_for(scores, timeout=10, what="the evaluations") == [{"source": "evaluator:json", "score": 1.0}] * 2


def test_chat_completions_reach_a_responses_provider_translated(make_gateway: Any, fake: FakeUpstream) -> None:
    gateway: Gateway = make_gateway(NATIVE)
    client = gateway.openai()
    messages: list[ChatCompletionMessageParam] = [{"role": "system", "content": "app prompt"},
                                                  {"role": "user", "content": "Hi"}]
    answer = client.chat.completions.create(model="support-bot", messages=messages, user=STABLE, max_tokens=50)
    assert answer.choices[0].message.content == "answer to [You are v1.]"
    assert answer.usage is not None and answer.usage.completion_tokens == 7
    received = fake.received[-1]
    assert received.path == "/v1/responses"
    assert (received.body["max_output_tokens"], received.body["store"]) == (50, False)
    chunks = list(client.chat.completions.create(model="support-bot", messages=messages, user=STABLE, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "answer to [You are v1.]"
    assert all(chunk.usage is None for chunk in chunks)
    records = gateway.records(2)
    assert [(r["api"], r["completion_tokens"]) for r in records] == [("chat", 7), ("chat", 7)]


def test_stored_response_routes_are_404_naming_the_path(make_gateway: Any, fake: FakeUpstream) -> None:
    gateway: Gateway = make_gateway(PIVOT)
    with gateway.client() as http:
        answer = http.get("/v1/responses/resp_123")
    assert answer.status_code == 404
    assert "GET /v1/responses/resp_123" in answer.json()["error"]["message"]
    assert not fake.received
