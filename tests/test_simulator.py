"""`kind: simulated`: the gateway answers with no network and no key, as strictly as the real APIs would."""

from __future__ import annotations

import asyncio
import json
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import jsonschema
import openai
import pytest

from gateway.config import SimulatedModel, SimulationSettings, settings_from_dict
from gateway.errors import ConfigError
from gateway.simulator import CHAT_FIELDS, MESSAGES_FIELDS, SimulatedTransport, judge_score
from tests.conftest import ADMIN_TOKEN, Gateway

pytestmark = pytest.mark.sqlite_only("the simulated upstream is under test, not storage")

QUESTION = [{"role": "user", "content": "How do I reset my password?"}]
FAST = {"latency_ms": 5, "latency_spread": 0, "tokens_per_second": 100_000, "completion_tokens": 40}


def simulated_config(database_url: str, spool: Path, api: str, models: dict[str, Any]) -> dict[str, Any]:
    return {
        "database_url": database_url,
        "user_id_salt": "test-salt",
        "admin_tokens": {"ops": ADMIN_TOKEN},
        "database": {"refresh_interval": "200ms"},
        "recorder": {"flush_interval": "50ms", "spool_dir": str(spool)},
        "providers": {"sim": {"kind": "simulated", "retries": 0, "simulation": {"api": api, "seed": 3,
                                                                                "models": models}}},
        "pricing": {"sim-good": {"input": 1.0, "output": 2.0}},
        "deployments": {"support-bot": {"stable": "v1", "versions": {
            "v1": {"provider": "sim", "model": "sim-good", "system_prompt": "You are v1."},
        }}},
    }


@pytest.fixture
def start(database_url: str, tmp_path: Path) -> Iterator[Any]:
    started: list[Gateway] = []

    def make(api: str, models: dict[str, Any]) -> Gateway:
        config = simulated_config(database_url, tmp_path / "spool", api, models)
        gateway = Gateway(settings_from_dict(config)).start()
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        gateway.stop()


@pytest.mark.parametrize("api", ["chat_completions", "messages"])
def test_the_openai_sdk_gets_plain_and_streamed_answers_recorded_with_usage_and_cost(start: Any, api: str) -> None:
    gateway = start(api, {"sim-good": FAST})
    client = gateway.openai()
    answer = client.chat.completions.with_raw_response.create(model="support-bot", user="u1", messages=QUESTION)
    completion = answer.parse()
    assert answer.headers["X-Canary-Version"] == "v1"
    assert completion.choices[0].message.content.startswith("Here is")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0

    stream = client.chat.completions.create(model="support-bot", user="u2", messages=QUESTION, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text.startswith("Here is") and chunks[-1].usage is not None

    records = gateway.records(2)
    assert [(r["status"], r["stream"]) for r in records] == [("ok", False), ("ok", True)]
    assert all(r["completion_tokens"] and r["prompt_tokens"] and r["cost_usd"] for r in records)


def test_the_anthropic_sdk_and_count_tokens_on_a_simulated_messages_provider(start: Any) -> None:
    gateway = start("messages", {"sim-good": FAST})
    ask: list[anthropic.types.MessageParam] = [{"role": "user", "content": "How do I reset my password?"}]
    client = anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0, timeout=20)
    try:
        message = client.messages.create(model="support-bot", max_tokens=300, messages=ask,
                                         metadata={"user_id": "u1"})
        short = client.messages.count_tokens(model="support-bot", messages=ask)
        longer = client.messages.count_tokens(model="support-bot", messages=[
            {"role": "user", "content": "How do I reset my password? " * 20}])
    finally:
        client.close()
    assert message.content[0].type == "text" and message.content[0].text.startswith("Here is")
    assert 0 < short.input_tokens < longer.input_tokens
    with gateway.client() as http:  # what the count endpoint refuses, as Anthropic's does
        answer = http.post("/v1/messages/count_tokens", json={"model": "support-bot", "messages": QUESTION,
                                                              "temperature": 0.5})
    assert answer.status_code == 400 and "temperature" in answer.json()["error"]["message"]


def test_an_error_rate_of_one_fails_every_call_as_an_upstream_error(start: Any) -> None:
    gateway = start("chat_completions", {"sim-good": {**FAST, "error_rate": 1.0}})
    with gateway.client() as client:
        answer = client.post("/v1/chat/completions", json={"model": "support-bot", "messages": QUESTION})
    assert answer.status_code == 502
    assert "HTTP 500" in answer.json()["error"]["message"]
    assert [r["status"] for r in gateway.records(1)] == ["error"]


def test_a_required_tool_is_called_with_arguments_that_fit_its_schema(start: Any) -> None:
    gateway = start("messages", {"sim-good": FAST})
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
              "required": ["city", "days"]}
    completion = gateway.openai().chat.completions.create(
        model="support-bot", messages=QUESTION, tool_choice="required",
        tools=[{"type": "function", "function": {"name": "forecast", "parameters": schema}}],
    )
    call = completion.choices[0].message.tool_calls[0]
    assert completion.choices[0].finish_reason == "tool_calls" and call.function.name == "forecast"
    jsonschema.validate(json.loads(call.function.arguments), schema)


async def call(transport: SimulatedTransport, body: dict[str, Any], *, api: str = "chat_completions",
               headers: dict[str, str] | None = None) -> httpx.Response:
    path = "/v1/chat/completions" if api == "chat_completions" else "/v1/messages"
    async with httpx.AsyncClient(transport=transport, base_url="http://simulated.invalid") as client:
        answer = await client.post(path, json=body, headers=headers or {"anthropic-version": "2023-06-01"})
        await answer.aread()
        return answer


def transport(api: str = "chat_completions", **model: Any) -> SimulatedTransport:
    async def no_wait(_seconds: float) -> None:
        return None

    return SimulatedTransport(SimulationSettings(api=api, seed=7, models={"m": SimulatedModel(**{**FAST, **model})}),
                              sleep=no_wait)


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        (
            {"model": "m", "messages": QUESTION, "api_base": "x"},
            None,
            "Unrecognized request argument supplied: api_base",
        ),
        ({"model": "m"}, "messages", "Missing required parameter: 'messages'."),
        ({"model": "m", "messages": []}, "messages", "Invalid 'messages': empty array."),
        (
            {"model": "m", "messages": [{"role": "robot", "content": "hi"}]},
            "messages[0].role",
            "Invalid value: 'robot'",
        ),
        (
            {"model": "m", "messages": QUESTION, "temperature": 2.5},
            "temperature",
            "Invalid 'temperature': decimal above maximum value",
        ),
        ({"model": "m", "messages": QUESTION, "temperature": "hot"}, "temperature", "Invalid type for 'temperature'"),
        (
            {"model": "m", "messages": QUESTION, "stream_options": {"include_usage": True}},
            "stream_options",
            "only allowed when 'stream' is enabled",
        ),
        ({"model": "m", "messages": QUESTION, "n": 0}, "n", "Invalid 'n': integer below minimum value"),
    ],
)
async def test_chat_completions_refuses_what_openai_refuses_in_its_error_shape(
    body: dict[str, Any], param: str | None, message: str
) -> None:
    answer = await call(transport(), body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert message in error["message"]


@pytest.mark.parametrize(("body", "message"), [
    ({"model": "m", "messages": QUESTION}, "max_tokens: Field required"),
    ({"model": "m", "max_tokens": 10, "messages": QUESTION, "user": "u1"}, "user: Extra inputs are not permitted"),
    ({"model": "m", "max_tokens": 10, "messages": [{"role": "system", "content": "x"}]},
     "messages.0.role: Input should be 'user' or 'assistant'"),
    ({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "text", "text": " "}]}]},
     "messages.0.content.0: text content blocks must be non-empty"),
    ({"model": "m", "max_tokens": 10, "messages": QUESTION, "temperature": 1.5},
     "temperature: Input should be between 0 and 1"),
])
async def test_messages_refuses_what_anthropic_refuses_in_its_error_shape(body: dict[str, Any], message: str) -> None:
    answer = await call(transport("messages"), body, api="messages")
    assert answer.status_code == 400
    assert answer.json() == {"type": "error", "error": {"type": "invalid_request_error", "message": message}}


async def test_messages_needs_the_anthropic_version_header() -> None:
    answer = await call(transport("messages"), {"model": "m", "max_tokens": 5, "messages": QUESTION},
                        api="messages", headers={"x-other": "1"})
    assert answer.status_code == 400 and "anthropic-version" in answer.json()["error"]["message"]


def test_every_field_the_openai_sdk_can_send_is_accepted() -> None:
    from openai.types.chat import completion_create_params

    fields = set(completion_create_params.CompletionCreateParamsBase.__annotations__) | {"stream"}
    assert fields <= CHAT_FIELDS


def test_every_field_the_anthropic_sdk_can_send_is_accepted() -> None:
    params = pytest.importorskip("anthropic.types.message_create_params")
    assert set(params.MessageCreateParamsBase.__annotations__) | {"stream"} <= MESSAGES_FIELDS


async def test_a_full_openai_request_is_answered_in_the_sdk_types() -> None:
    body = {"model": "m", "messages": [{"role": "system", "content": "Be brief."}, *QUESTION], "temperature": 0.2,
            "top_p": 0.9, "max_completion_tokens": 500, "n": 2, "seed": 1, "user": "u", "metadata": {"a": "b"},
            "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {
                "type": "object", "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
                "required": ["answer", "confidence"]}}}}
    answer = await call(transport(), body)
    completion = openai.types.chat.ChatCompletion.model_validate(answer.json())
    assert len(completion.choices) == 2
    content = json.loads(completion.choices[0].message.content or "")
    assert set(content) == {"answer", "confidence"}


async def test_max_tokens_cuts_the_answer_with_the_length_finish_reason() -> None:
    plain = await call(transport(completion_tokens=200), {"model": "m", "messages": QUESTION, "max_tokens": 10})
    assert plain.json()["choices"][0]["finish_reason"] == "length"
    assert plain.json()["usage"]["completion_tokens"] == 10
    anthropic = await call(transport("messages", completion_tokens=200),
                           {"model": "m", "messages": QUESTION, "max_tokens": 10}, api="messages")
    assert anthropic.json()["stop_reason"] == "max_tokens" and anthropic.json()["usage"]["output_tokens"] == 10


async def test_a_stream_takes_the_time_to_first_token_and_then_the_tokens() -> None:
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    simulated = SimulatedTransport(SimulationSettings(models={"m": SimulatedModel(
        latency_ms=200, latency_spread=0, tokens_per_second=100, completion_tokens=50)}), sleep=record)
    answer = await call(simulated, {"model": "m", "messages": QUESTION, "stream": True,
                                    "stream_options": {"include_usage": True}})
    events = [event for event in answer.text.split("\n\n") if event]
    assert events[-1] == "data: [DONE]"
    usage = json.loads(events[-2].removeprefix("data: "))["usage"]
    assert waits[0] == pytest.approx(0.2)
    # Each content event waits for its own tokens at 100 tokens/s (a piece's count rounds up).
    generation = sum(waits[1:])
    assert usage["completion_tokens"] / 100 <= generation <= 1.5 * usage["completion_tokens"] / 100


async def test_first_token_times_are_log_normal_around_the_median() -> None:
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    simulated = SimulatedTransport(SimulationSettings(seed=11, models={"m": SimulatedModel(
        latency_ms=300, latency_spread=0.5, tokens_per_second=1e9, completion_tokens=1)}), sleep=record)
    for _ in range(400):
        await call(simulated, {"model": "m", "messages": QUESTION})
    assert statistics.median(waits) == pytest.approx(0.3, rel=0.1)
    assert max(waits) > 2 * statistics.median(waits)


async def test_the_simulated_judge_reads_the_quality_of_the_simulated_answers() -> None:
    async def mean_verdict(quality: float) -> float:
        model = transport(quality=quality)
        judge = transport(judge=True)
        scores = []
        for _ in range(150):
            text = (await call(model, {"model": "m", "messages": QUESTION})).json()["choices"][0]["message"]["content"]
            verdict = await call(judge, {"model": "m", "messages": [
                {"role": "system", "content": "Judge."},
                {"role": "user", "content": f"<conversation>q</conversation>\n\n<answer>\n{text}\n</answer>"}]})
            scores.append(json.loads(verdict.json()["choices"][0]["message"]["content"])["score"])
        return statistics.fmean(scores)

    good, bad = await asyncio.gather(mean_verdict(0.85), mean_verdict(0.5))
    assert good == pytest.approx(0.85, abs=0.06)
    assert bad == pytest.approx(0.5, abs=0.08)
    assert judge_score("")[0] == 0.0 and judge_score("I'm sorry, but I can't help with that.")[0] < 0.2


async def test_the_simulated_judge_prefers_the_better_of_two_simulated_answers_in_either_order() -> None:
    good, bad, judge = transport(quality=0.9), transport(quality=0.4), transport(judge=True)
    wins = []
    for index in range(100):
        texts = [(await call(model, {"model": "m", "messages": QUESTION})).json()["choices"][0]["message"]["content"]
                 for model in (good, bad)]
        first, second = texts if index % 2 else texts[::-1]
        verdict = await call(judge, {"model": "m", "messages": [
            {"role": "system", "content": "Compare."},
            {"role": "user", "content": f"<conversation>q</conversation>\n\n<answer_a>\n{first}\n</answer_a>\n\n"
                                        f"<answer_b>\n{second}\n</answer_b>"}]})
        winner = json.loads(verdict.json()["choices"][0]["message"]["content"])["winner"]
        good_label = "A" if index % 2 else "B"
        wins.append(1.0 if winner == good_label else 0.5 if winner == "tie" else 0.0)
    assert statistics.fmean(wins) > 0.8


@pytest.mark.parametrize(("provider", "message"), [
    ({"kind": "simulated", "base_url": "http://x"}, "providers.p.base_url: a simulated provider has no base_url"),
    ({"kind": "openai", "base_url": "http://x", "simulation": {}},
     "providers.p.simulation: only a provider of kind simulated takes a simulation"),
    ({"kind": "openai"}, "providers.p.base_url: required key is missing"),
    ({"kind": "simulated", "simulation": {"api": "responses"}}, "providers.p.simulation.api"),
])
def test_a_provider_that_mixes_kinds_stops_the_start(provider: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        settings_from_dict({"providers": {"p": provider}})
    assert str(error.value).startswith(message)
