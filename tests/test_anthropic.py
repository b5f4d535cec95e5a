"""Anthropic Messages behind the OpenAI API: translation units, and the OpenAI SDK end to end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types.chat import (
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
)

from gateway.fields import DEFAULT_MAX_TOKENS
from gateway.models import Price, Usage
from gateway.providers.anthropic import (
    AnthropicStreamTranslator,
    anthropic_usage,
    to_chat_completion,
    to_messages_request,
)
from tests.conftest import Gateway, users_in
from tests.fakes import FakeAnthropic, FakeUpstream

pytestmark = pytest.mark.sqlite_only("translation to and from Anthropic Messages is under test, not storage")

ANTHROPIC_KEY = "sk-ant-SENTINEL-anthropic-key-000000"
TOOLS: list[ChatCompletionFunctionToolParam] = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


# -- request translation -----------------------------------------------------------------------


def test_system_messages_become_the_system_field() -> None:
    request = to_messages_request({"model": "claude-x", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]}, stream=False)
    assert request["system"] == "Be brief."
    assert request["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    assert request["max_tokens"] == DEFAULT_MAX_TOKENS
    assert "stream" not in request


def test_turns_are_merged_to_alternate_and_tools_translated() -> None:
    request = to_messages_request({
        "model": "claude-x", "max_tokens": 300, "temperature": 0.2, "top_p": 0.9, "stop": "END", "user": "u1",
        "tools": TOOLS, "tool_choice": "required", "stream": True, "n": 1, "presence_penalty": 0,
        "messages": [
            {"role": "user", "content": "What's the weather?"},
            {"role": "user", "content": [{"type": "text", "text": "In Paris."},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                                         {"type": "image_url", "image_url": {"url": "https://x.test/cat.png"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                                  "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18°C"},
            {"role": "user", "content": "Thanks"},
        ]}, stream=True)
    assert [turn["role"] for turn in request["messages"]] == ["user", "assistant", "user"]
    first, assistant, last = request["messages"]
    assert first["content"] == [
        {"type": "text", "text": "What's the weather?"},
        {"type": "text", "text": "In Paris."},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/cat.png"}},
    ]
    assert assistant["content"] == [{"type": "tool_use", "id": "call_1", "name": "get_weather",
                                     "input": {"city": "Paris"}}]
    assert last["content"] == [{"type": "tool_result", "tool_use_id": "call_1", "content": "18°C"},
                               {"type": "text", "text": "Thanks"}]
    assert request["tools"] == [{"name": "get_weather", "description": "Weather for a city",
                                 "input_schema": TOOLS[0]["function"]["parameters"]}]
    assert request["tool_choice"] == {"type": "any"}
    assert (request["max_tokens"], request["temperature"], request["top_p"]) == (300, 0.2, 0.9)
    assert request["stop_sequences"] == ["END"]
    assert request["metadata"] == {"user_id": "u1"}
    assert request["stream"] is True
    assert not {"n", "presence_penalty", "stream_options"} & request.keys()


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("auto", {"type": "auto"}), ("none", {"type": "none"}), ("required", {"type": "any"}),
     ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"})],
)
def test_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": TOOLS, "tool_choice": choice}
    assert to_messages_request(body, stream=False)["tool_choice"] == expected


# -- answers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("reason", "finish"), [("end_turn", "stop"), ("max_tokens", "length"),
                                                ("tool_use", "tool_calls"), ("stop_sequence", "stop")])
def test_answer_translation(reason: str, finish: str) -> None:
    completion, usage = to_chat_completion({
        "id": "msg_1", "type": "message", "model": "claude-x", "stop_reason": reason,
        "content": [{"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
        "usage": {"input_tokens": 10, "output_tokens": 4, "cache_read_input_tokens": 100,
                  "cache_creation_input_tokens": 50},
    })
    choice = completion["choices"][0]
    assert choice["finish_reason"] == finish
    assert choice["message"]["content"] == "Checking."
    assert choice["message"]["tool_calls"] == [{"id": "toolu_1", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Paris"}'}}]
    assert completion["usage"] == {"prompt_tokens": 160, "completion_tokens": 4, "total_tokens": 164,
                                   "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 50}}
    assert usage == Usage(prompt_tokens=160, completion_tokens=4, cache_read_tokens=100, cache_write_tokens=50)


def test_cost_uses_cache_prices() -> None:
    price = Price(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75)
    usage = anthropic_usage({"input_tokens": 1000, "output_tokens": 100, "cache_read_input_tokens": 10_000,
                             "cache_creation_input_tokens": 2000})
    assert price.cost(usage) == pytest.approx((1000 * 3.0 + 10_000 * 0.3 + 2000 * 3.75 + 100 * 15.0) / 1e6)


_STREAM_EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("message_start", {"message": {"id": "msg_1", "model": "claude-x", "usage": {"input_tokens": 12,
                                                                                 "output_tokens": 1}}}),
    ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
    ("ping", {}),
    ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Héllo"}}),
    ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": " world"}}),
    ("content_block_stop", {"index": 0}),
    ("content_block_start", {"index": 1, "content_block": {"type": "tool_use", "id": "toolu_1",
                                                           "name": "get_weather", "input": {}}}),
    ("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"city":'}}),
    ("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta", "partial_json": ' "Paris"}'}}),
    ("content_block_stop", {"index": 1}),
    ("message_delta", {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 7}}),
    ("message_stop", {}),
]
STREAM = b"".join(
    f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode() for kind, data in _STREAM_EVENTS
)


def chunks_of(raw: bytes) -> list[Any]:
    return [json.loads(line[6:]) if line != b"data: [DONE]" else "[DONE]"
            for line in raw.split(b"\n\n") if line.startswith(b"data: ")]


@pytest.mark.parametrize("piece", [1, 7, 64, len(STREAM)])
@pytest.mark.parametrize("wants_usage", [False, True])
def test_stream_translation_at_any_split(piece: int, wants_usage: bool) -> None:
    translator = AnthropicStreamTranslator(wants_usage=wants_usage, collect=True)
    out = b"".join(translator.feed(STREAM[i:i + piece]) for i in range(0, len(STREAM), piece)) + translator.finish()
    chunks = chunks_of(out)
    assert chunks[-1] == "[DONE]"
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1] if isinstance(c, dict) and c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content", "") for d in deltas) == "Héllo world"
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    assert calls[0]["id"] == "toolu_1" and calls[0]["function"]["name"] == "get_weather"
    assert "".join(call["function"]["arguments"] for call in calls) == '{"city": "Paris"}'
    finishes = [c["choices"][0]["finish_reason"] for c in chunks[:-1] if isinstance(c, dict) and c["choices"]]
    assert finishes[-1] == "tool_calls"
    usage_chunks = [c for c in chunks[:-1] if isinstance(c, dict) and not c["choices"]]
    assert len(usage_chunks) == (1 if wants_usage else 0)
    assert translator.usage == Usage(prompt_tokens=12, completion_tokens=7)
    assert translator.error_kind is None and translator.started
    [choice] = translator.choices or []
    assert choice["message"]["content"] == "Héllo world" and choice["finish_reason"] == "tool_calls"


def test_an_error_event_ends_the_stream_with_an_error() -> None:
    translator = AnthropicStreamTranslator(wants_usage=False)
    raw = STREAM.split(b"event: content_block_stop")[0]
    error = b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
    out = translator.feed(raw + error) + translator.finish()
    assert chunks_of(out)[-1] == {"error": {"message": "Overloaded", "type": "upstream_error",
                                            "code": "overloaded_error"}}
    assert translator.error_kind == "stream_error"


def test_a_cut_stream_is_truncated() -> None:
    translator = AnthropicStreamTranslator(wants_usage=False)
    out = translator.feed(STREAM[:400]) + translator.finish()
    assert chunks_of(out)[-1]["error"]["code"] == "stream_truncated"
    assert translator.error_kind == "stream_truncated"


# -- end to end with the OpenAI SDK ---------------------------------------------------------------


@pytest.fixture(scope="module")
def anthropic_server() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


@pytest.fixture
def claude(anthropic_server: FakeAnthropic) -> FakeAnthropic:
    anthropic_server.reset()
    return anthropic_server


@pytest.fixture
def mixed(make_gateway: Any, claude: FakeAnthropic) -> Gateway:
    gateway: Gateway = make_gateway({
        "providers": {"claude": {"kind": "anthropic", "base_url": claude.url, "api_key": ANTHROPIC_KEY,
                                 "retries": 0}},
        "pricing": {"claude-sonnet-4-5": {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75}},
        "deployments": {"support-bot": {"versions": {"v2": {"provider": "claude", "model": "claude-sonnet-4-5",
                                                            "params": {"max_tokens": 500}}},
                                        "policy": {"stages": [50, 100]}}},
    })
    return gateway


STABLE_USER = users_in(50, canary=False, count=1)[0]
CANARY_USER = users_in(50, canary=True, count=1)[0]


def sdk(gateway: Gateway) -> openai.OpenAI:
    return gateway.openai("client-secret")


@pytest.mark.parametrize("user", [STABLE_USER, CANARY_USER])
def test_both_versions_answer_the_same_sdk_calls(mixed: Gateway, claude: FakeAnthropic, fake: FakeUpstream,
                                                 user: str) -> None:
    client = sdk(mixed)
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "app prompt"},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    raw = client.chat.completions.with_raw_response.create(model="support-bot", messages=messages, user=user)
    plain = raw.parse()
    expected_version = "v2" if user == CANARY_USER else "v1"
    assert raw.headers["x-canary-version"] == expected_version
    assert (plain.choices[0].message.content or "").endswith("[You are v2.]" if expected_version == "v2" else
                                                     "[You are v1.]")
    streamed = "".join(event.choices[0].delta.content or "" for event in client.chat.completions.create(
        model="support-bot", messages=messages, user=user, stream=True) if event.choices)
    # The fake OpenAI upstream streams fixed pieces; the fake Anthropic streams its plain answer.
    assert streamed == (plain.choices[0].message.content if expected_version == "v2" else "piece0 piece1 piece2 ")

    tooled = client.chat.completions.create(model="support-bot", messages=messages, user=user, tools=TOOLS)
    [call] = tooled.choices[0].message.tool_calls or []
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert tooled.choices[0].finish_reason == "tool_calls"
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})
    arguments = "".join(
        (tool.function.arguments if tool.function else None) or "" for event in client.chat.completions.create(
            model="support-bot", messages=messages, user=user, tools=TOOLS, stream=True)
        if event.choices for tool in (event.choices[0].delta.tool_calls or []))
    assert json.loads(arguments) == {"city": "Paris"}
    expected = {  # provider, model, prompt and completion tokens, cost
        "v1": ("fake", "model-a", 11, 7, (11 * 1.0 + 7 * 2.0) / 1e6),
        "v2": ("claude", "claude-sonnet-4-5", 27, 9, (20 * 3.0 + 5 * 0.3 + 2 * 3.75 + 9 * 15.0) / 1e6),
    }[expected_version]
    rows = mixed.records(4)
    assert len(rows) == 4
    for row in rows:
        assert row["version"] == expected_version and row["status"] == "ok"
        assert (row["provider"], row["upstream_model"], row["prompt_tokens"], row["completion_tokens"]) == expected[:4]
        assert row["cost_usd"] == pytest.approx(expected[4])
    assert all(row["ttft_ms"] is not None for row in rows if row["stream"])


def test_what_the_anthropic_upstream_receives(mixed: Gateway, claude: FakeAnthropic) -> None:
    sdk(mixed).chat.completions.create(model="support-bot", user=CANARY_USER, messages=[
        {"role": "system", "content": "app prompt"}, {"role": "user", "content": "Hi"}])
    [received] = claude.received
    headers = {key.lower(): value for key, value in received.headers.items()}
    assert headers["x-api-key"] == ANTHROPIC_KEY
    assert "authorization" not in headers and "client-secret" not in json.dumps(headers)
    assert headers["anthropic-version"] == "2023-06-01"
    assert received.body["system"] == "You are v2."
    assert all(message["role"] != "system" for message in received.body["messages"])
    assert received.body["model"] == "claude-sonnet-4-5" and received.body["max_tokens"] == 500


@pytest.mark.parametrize(
    ("status", "error_type", "retry_after", "expected_status"),
    [(400, "invalid_request_error", None, 400), (401, "authentication_error", None, 502),
     (429, "rate_limit_error", "12", 429), (529, "overloaded_error", "30", 503)],
)
def test_anthropic_errors_reach_the_client_in_openai_shape(
    mixed: Gateway, claude: FakeAnthropic, status: int, error_type: str, retry_after: str | None,
    expected_status: int
) -> None:
    claude.behaviour.status, claude.behaviour.error_type = status, error_type
    claude.behaviour.retry_after = retry_after
    with mixed.client() as http:
        answer = http.post("/v1/chat/completions", json={
            "model": "support-bot", "user": CANARY_USER, "messages": [{"role": "user", "content": "Hi"}]})
    assert answer.status_code == expected_status
    assert set(answer.json()["error"]) >= {"message", "type", "code"}
    assert answer.headers.get("retry-after") == retry_after
    assert ANTHROPIC_KEY not in answer.text


def test_an_error_event_mid_stream_reaches_the_sdk(mixed: Gateway, claude: FakeAnthropic) -> None:
    claude.behaviour.error_after = 2
    seen = []
    with pytest.raises(openai.APIError, match="Overloaded"):
        for event in sdk(mixed).chat.completions.create(model="support-bot", user=CANARY_USER, stream=True,
                                                        messages=[{"role": "user", "content": "Hi"}]):
            seen.append(event)
    assert len(seen) == 3  # the role chunk and two text deltas
    [row] = mixed.records(1)
    assert (row["status"], row["error_kind"]) == ("error", "stream_error")
