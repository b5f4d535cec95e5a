"""The fake upstreams are as strict as the real APIs: each rule refuses what it should, in the API's error shape,
and what they answer parses as the official SDKs' types (the SDKs themselves are the clients here)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types.responses import Response, ResponseStreamEvent

from tests.fakes import FakeAnthropic, FakeUpstream
from tests.fakes.anthropic import API_KEY, count_tokens

WEATHER = {"name": "get_weather", "description": "Weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
NO_ARGS = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}
HEADERS = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}


@pytest.fixture(scope="module")
def claude_server() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


@pytest.fixture
def claude(claude_server: FakeAnthropic) -> FakeAnthropic:
    claude_server.reset()
    return claude_server


@pytest.fixture
def claude_sdk(claude: FakeAnthropic) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(base_url=claude.url, api_key=API_KEY, max_retries=0)
    yield client
    client.close()


def post(url: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(url, json=body, headers=HEADERS if headers is None else headers, timeout=10)


def user(text: str = "Hi") -> dict[str, Any]:
    return {"role": "user", "content": text}


def create(**fields: Any) -> dict[str, Any]:
    return {"model": "claude-x", "max_tokens": 100, "messages": [user()], **fields}


# -- Anthropic: what is refused ------------------------------------------------------------------------

ASSISTANT_CALL = {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                                    "input": {"city": "Paris"}}]}
RESULT = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18°C"}]}

ANTHROPIC_REFUSALS = [
    ("no max_tokens", {"model": "claude-x", "messages": [user()]}, "max_tokens: Field required"),
    ("no model", {"max_tokens": 10, "messages": [user()]}, "model: Field required"),
    ("unknown top-level field", create(n=1), "n: Extra inputs are not permitted"),
    ("OpenAI's stop", create(stop=["x"]), "stop: Extra inputs are not permitted"),
    ("unknown message field", create(messages=[{**user(), "name": "bob"}]),
     "messages.0.name: Extra inputs are not permitted"),
    ("unknown block field", create(messages=[{"role": "user", "content": [{"type": "text", "text": "a", "x": 1}]}]),
     "messages.0.content.0.x: Extra inputs are not permitted"),
    ("OpenAI content part", create(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]}]), "does not match any of"),
    ("empty text block", create(messages=[{"role": "user", "content": [{"type": "text", "text": ""}]}]),
     "messages: text content blocks must be non-empty"),
    ("whitespace text block", create(messages=[{"role": "user", "content": [{"type": "text", "text": "  "}]}]),
     "text content blocks must contain non-whitespace text"),
    ("empty string content", create(messages=[user(""), {"role": "assistant", "content": "ok"}, user()]),
     "messages.0: all messages must have non-empty content"),
    ("empty block list", create(messages=[{"role": "user", "content": []}]), "must have non-empty content"),
    ("empty system block", create(system=[{"type": "text", "text": ""}]),
     "system: text content blocks must be non-empty"),
    ("system as OpenAI message list", create(system=[{"role": "system", "content": "x"}]), "system"),
    ("system role message", create(messages=[{"role": "system", "content": "Be brief."}, user()]),
     'first message must use the "user" role'),
    ("system role later", create(messages=[user(), {"role": "system", "content": "Be brief."}]),
     "mid_conv_system"),
    ("OpenAI tool role", create(messages=[user(), {"role": "tool", "content": "x"}]), "messages.1.role"),
    ("assistant first", create(messages=[{"role": "assistant", "content": "Hello"}, user()]),
     'first message must use the "user" role'),
    ("no messages", create(messages=[]), "at least one message"),
    ("trailing whitespace in prefill", create(messages=[user(), {"role": "assistant", "content": "The answer is "}]),
     "final assistant content cannot end with trailing whitespace"),
    ("tool_use without result", create(messages=[user(), ASSISTANT_CALL, user("and?")], tools=[WEATHER]),
     "`tool_use` ids were found without `tool_result` blocks immediately after: toolu_1"),
    ("tool_result without tool_use", create(messages=[user(), {"role": "assistant", "content": "ok"}, RESULT]),
     "unexpected `tool_use_id` found in `tool_result` blocks: toolu_1"),
    ("OpenAI-shaped tool", create(tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}]),
     "tools.0.type"),
    ("tool without input_schema", create(tools=[{"name": "f"}]), "tools.0.input_schema: Field required"),
    ("tool name with a space", create(tools=[{**WEATHER, "name": "get weather"}]), "tools.0.name"),
    ("OpenAI tool_choice string", create(tools=[WEATHER], tool_choice="auto"), "tool_choice"),
    ("tool_choice without tools", create(tool_choice={"type": "auto"}), "tool_choice may only be specified"),
    ("tool_choice tool without name", create(tools=[WEATHER], tool_choice={"type": "tool"}),
     "tool_choice.name: Field required"),
    ("parallel flag on none", create(tools=[WEATHER], tool_choice={"type": "none", "disable_parallel_tool_use": True}),
     "tool_choice.disable_parallel_tool_use: Extra inputs are not permitted"),
    ("metadata beyond user_id", create(metadata={"user_id": "u", "team": "x"}),
     "metadata.team: Extra inputs are not permitted"),
    ("temperature above 1", create(temperature=1.5), "temperature: Input should be less than or equal to 1"),
    ("small thinking budget", create(max_tokens=4000, thinking={"type": "enabled", "budget_tokens": 100}),
     "greater than or equal to 1024"),
    ("thinking budget above max_tokens", create(max_tokens=2000, thinking={"type": "enabled",
                                                                            "budget_tokens": 3000}),
     "`max_tokens` must be greater than `thinking.budget_tokens`"),
    ("temperature with thinking", create(max_tokens=2000, temperature=0.5, thinking={
        "type": "enabled", "budget_tokens": 1024}), "`temperature` may only be set to 1 when thinking is enabled"),
    ("top_k with thinking", create(top_k=5, thinking={"type": "adaptive"}), "`top_k` is not supported"),
    ("low top_p with thinking", create(top_p=0.5, thinking={"type": "adaptive"}), "`top_p` must be greater"),
    ("forced tool with thinking", create(max_tokens=2000, tools=[WEATHER], tool_choice={"type": "any"}, thinking={
        "type": "enabled", "budget_tokens": 1024}), "Thinking may not be enabled when tool_choice forces tool use"),
    ("cache_control of another type", create(system=[{"type": "text", "text": "x", "cache_control": {
        "type": "persistent"}}]), "system.0.cache_control.type"),
    ("image media type", create(messages=[{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/bmp", "data": "AAAA"}}]}]), "media_type"),
    ("OpenAI response_format", create(response_format={"type": "json_object"}),
     "response_format: Extra inputs are not permitted"),
    ("structured output without schema", create(output_config={"format": {"type": "json_schema"}}),
     "output_config.format.schema: Field required"),
]


@pytest.mark.parametrize(("body", "message"), [case[1:] for case in ANTHROPIC_REFUSALS],
                         ids=[case[0] for case in ANTHROPIC_REFUSALS])
def test_the_anthropic_fake_refuses_what_the_api_refuses(claude: FakeAnthropic, body: dict[str, Any],
                                                         message: str) -> None:
    for stream in (False, True):
        answer = post(f"{claude.url}/v1/messages", {**body, "stream": True} if stream else body)
        assert answer.status_code == 400, answer.text
        error = answer.json()
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
        assert message in error["error"]["message"]
        assert set(error) == {"type", "error", "request_id"}


@pytest.mark.parametrize(("headers", "status", "error_type", "message"), [
    ({"anthropic-version": "2023-06-01"}, 401, "authentication_error", "x-api-key header is required"),
    ({"x-api-key": "sk-ant-wrong", "anthropic-version": "2023-06-01"}, 401, "authentication_error",
     "invalid x-api-key"),
    ({"authorization": "Bearer sk-ant-wrong", "anthropic-version": "2023-06-01"}, 401, "authentication_error",
     "invalid x-api-key"),
    ({"x-api-key": API_KEY}, 400, "invalid_request_error", "anthropic-version: header is required"),
])
def test_the_anthropic_fake_checks_headers(claude: FakeAnthropic, headers: dict[str, str], status: int,
                                           error_type: str, message: str) -> None:
    answer = post(f"{claude.url}/v1/messages", create(), headers)
    assert answer.status_code == status
    assert answer.json()["error"]["type"] == error_type and message in answer.json()["error"]["message"]


def test_count_tokens_takes_its_own_fields_only(claude: FakeAnthropic) -> None:
    url = f"{claude.url}/v1/messages/count_tokens"
    refused = post(url, create())
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == "max_tokens: Extra inputs are not permitted"
    body = {"model": "claude-x", "system": "Be brief now.", "messages": [user("one two three")], "tools": [WEATHER]}
    answer = post(url, body)
    assert answer.status_code == 200 and answer.json() == {"input_tokens": 3 + 3 + 10}
    assert count_tokens(body) == 16


# -- Anthropic: what is accepted, read by the anthropic SDK ------------------------------------------------

VALID_CONVERSATION = [
    {"role": "user", "content": [{"type": "text", "text": "Weather?", "cache_control": {"type": "ephemeral"}},
                                 {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}]},
    {"role": "user", "content": "In Paris."},  # consecutive turns of one role: the API merges them
    ASSISTANT_CALL,
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                  "content": [{"type": "text", "text": "18°C"}]}, {"type": "text", "text": "Thanks"}]},
    {"role": "assistant", "content": "It is"},  # prefill
]


def test_the_sdk_reads_a_plain_answer(claude: FakeAnthropic, claude_sdk: anthropic.Anthropic) -> None:
    message = claude_sdk.messages.create(
        model="claude-x", max_tokens=2000, messages=VALID_CONVERSATION,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        tools=[WEATHER, NO_ARGS], tool_choice={"type": "auto", "disable_parallel_tool_use": False},
        metadata={"user_id": "u-1"}, stop_sequences=["END"],
        thinking={"type": "enabled", "budget_tokens": 1024})
    assert isinstance(message, Message)
    assert [block.type for block in message.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert message.content[1].text == "claude answer to [Be brief.]"
    assert [(block.name, block.input) for block in message.content[2:]] == [
        ("get_weather", {"city": "Paris"}), ("get_time", {})]
    assert message.stop_reason == "tool_use"
    assert claude.received[0].headers["anthropic-version"]


def test_disable_parallel_tool_use_gives_one_call(claude_sdk: anthropic.Anthropic) -> None:
    message = claude_sdk.messages.create(model="claude-x", max_tokens=100, messages=[user()],
                                         tools=[WEATHER, NO_ARGS],
                                         tool_choice={"type": "any", "disable_parallel_tool_use": True})
    assert [block.type for block in message.content] == ["tool_use"]


def test_structured_output_answers_json_of_the_schema(claude_sdk: anthropic.Anthropic) -> None:
    schema = {"type": "object", "properties": {"total": {"type": "integer"}}, "required": ["total"],
              "additionalProperties": False}
    message = claude_sdk.messages.create(model="claude-x", max_tokens=100, messages=[user("1+1?")],
                                         output_config={"format": {"type": "json_schema", "schema": schema}})
    assert json.loads(message.content[0].text) == {"total": 1}


def test_the_stream_is_the_sdks_event_types(claude: FakeAnthropic) -> None:
    body = create(stream=True, system="Be brief.", tools=[WEATHER, NO_ARGS],
                  max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 1024})
    with httpx.stream("POST", f"{claude.url}/v1/messages", json=body, headers=HEADERS) as answer:
        raw = answer.read().decode()
    adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RawMessageStreamEvent)
    events = []
    for frame in raw.strip().split("\n\n"):
        name, data = frame.split("\n")
        assert name.startswith("event: ") and data.startswith("data: ")
        payload = json.loads(data[6:])
        assert payload["type"] == name[7:]
        if payload["type"] != "ping":
            events.append(adapter.validate_python(payload))
    assert [e.type for e in events][:2] == ["message_start", "content_block_start"]
    assert [e.type for e in events][-2:] == ["message_delta", "message_stop"]
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    assert {d.type for d in deltas} == {"thinking_delta", "signature_delta", "text_delta", "input_json_delta"}
    # A tool without parameters streams its {} input as one empty partial_json, as the API does.
    by_block: dict[int, str] = {}
    for event in events:
        if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
            by_block[event.index] = by_block.get(event.index, "") + event.delta.partial_json
    assert list(by_block.values()) == ['{"city": "Paris"}', ""]


def test_the_sdk_reads_a_stream(claude_sdk: anthropic.Anthropic) -> None:
    with claude_sdk.messages.stream(model="claude-x", max_tokens=100, system="S", messages=[user()]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "claude answer to [S]" == final.content[0].text
    assert final.usage.output_tokens == 9 and final.stop_reason == "end_turn"


def test_errors_have_the_apis_shape_and_status(claude: FakeAnthropic, claude_sdk: anthropic.Anthropic) -> None:
    claude.behaviour.status, claude.behaviour.error_type, claude.behaviour.retry_after = 529, "overloaded_error", "3"
    with pytest.raises(anthropic.APIStatusError) as raised:
        claude_sdk.messages.create(model="claude-x", max_tokens=10, messages=[user()])
    assert raised.value.status_code == 529 and raised.value.body["error"]["type"] == "overloaded_error"


def test_a_stream_error_event_is_the_sdks_error(claude: FakeAnthropic, claude_sdk: anthropic.Anthropic) -> None:
    claude.behaviour.error_after = 1
    with pytest.raises(anthropic.APIStatusError, match="Overloaded"), claude_sdk.messages.stream(
            model="claude-x", max_tokens=10, messages=[user()]) as stream:
        for _ in stream:
            pass


# -- OpenAI: what is refused ----------------------------------------------------------------------------


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "model-a", "messages": [{"role": "user", "content": "Hi"}], **fields}


CHAT_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}
CALL = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}

CHAT_REFUSALS = [
    ("unknown field", chat(max_output_tokens=5), "Unrecognized request argument supplied: max_output_tokens", None),
    ("no model", {"messages": [{"role": "user", "content": "Hi"}]}, "Missing required parameter: 'model'.",
     "missing_required_parameter"),
    ("no messages", {"model": "m"}, "Missing required parameter: 'messages'.", "missing_required_parameter"),
    ("empty messages", chat(messages=[]), "messages", "invalid_value"),
    ("unknown message field", chat(messages=[{"role": "user", "content": "Hi", "reasoning_content": "x"}]),
     "Unknown parameter: 'messages[0].reasoning_content'.", "unknown_parameter"),
    ("Anthropic content block", chat(messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}]}]), "messages[0].content",
     "invalid_value"),
    ("unknown role", chat(messages=[{"role": "human", "content": "Hi"}]), "messages[0].role", "invalid_value"),
    ("stream_options without stream", chat(stream_options={"include_usage": True}),
     "The 'stream_options' parameter is only allowed when 'stream' is enabled.", None),
    ("tool_choice without tools", chat(tool_choice="auto"), "'tool_choice' is only allowed when 'tools'", None),
    ("parallel_tool_calls without tools", chat(parallel_tool_calls=False), "'parallel_tool_calls' is only", None),
    ("tool message without a call", chat(messages=[{"role": "user", "content": "Hi"},
                                                   {"role": "tool", "tool_call_id": "call_1", "content": "x"}]),
     "messages with role 'tool' must be a response", None),
    ("call without tool message", chat(messages=[{"role": "user", "content": "Hi"}, CALL,
                                                 {"role": "user", "content": "?"}]),
     "did not have response messages: call_1", None),
    ("assistant without content or calls", chat(messages=[{"role": "user", "content": "Hi"},
                                                          {"role": "assistant", "content": None}]),
     "expected a string, got null", None),
    ("temperature above 2", chat(temperature=3), "temperature", "invalid_value"),
    ("Anthropic-shaped tool", chat(tools=[{"name": "f", "input_schema": {}}]), "tools[0].type", "invalid_value"),
    ("n of 0", chat(n=0), "'n'", "invalid_value"),
    ("max_tokens on a reasoning model", chat(model="o3-mini", max_tokens=50),
     "'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.", "unsupported_parameter"),
    ("temperature on a reasoning model", chat(model="gpt-5-mini", temperature=0.3),
     "'temperature' does not support 0.3 with this model", "unsupported_value"),
]


@pytest.fixture(scope="module")
def openai_server() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture
def oai(openai_server: FakeUpstream) -> FakeUpstream:
    openai_server.reset()
    return openai_server


@pytest.fixture
def oai_sdk(oai: FakeUpstream) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=oai.url, api_key="sk-test", max_retries=0)
    yield client
    client.close()


@pytest.mark.parametrize(("body", "message", "code"), [case[1:] for case in CHAT_REFUSALS],
                         ids=[case[0] for case in CHAT_REFUSALS])
def test_the_chat_fake_refuses_what_the_api_refuses(oai: FakeUpstream, body: dict[str, Any], message: str,
                                                    code: str | None) -> None:
    answer = httpx.post(f"{oai.url}/chat/completions", json=body, timeout=10)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert message in error["message"]
    assert error["code"] == code


def test_the_sdk_reads_chat_answers(oai_sdk: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}, CALL,
                           {"role": "tool", "tool_call_id": "call_1", "content": "18°C"}]
    answer = oai_sdk.chat.completions.create(model="m", messages=messages, tools=[CHAT_TOOL], parallel_tool_calls=False,
                                             tool_choice="auto", user="u")
    assert answer.choices[0].message.content == "answer to [S]"
    assert answer.choices[0].message.tool_calls[0].function.arguments == '{"city": "Paris"}'
    streamed = list(oai_sdk.chat.completions.create(model="m", messages=messages, stream=True,
                                                    stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "piece0 piece1 piece2 "
    assert streamed[-1].usage is not None and streamed[-1].usage.total_tokens == 18


# -- OpenAI Responses ----------------------------------------------------------------------------------

RESPONSES_TOOL = {"type": "function", "name": "get_weather", "strict": True, "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}}

RESPONSES_REFUSALS = [
    ("unknown field", {"model": "m", "input": "Hi", "messages": []}, "Unknown parameter: 'messages'.",
     "unknown_parameter"),
    ("chat's max_tokens", {"model": "m", "input": "Hi", "max_tokens": 5}, "Unknown parameter: 'max_tokens'.",
     "unknown_parameter"),
    ("no model", {"input": "Hi"}, "Missing required parameter: 'model'.", "missing_required_parameter"),
    ("chat content part in input", {"model": "m", "input": [{"role": "user", "content": [
        {"type": "text", "text": "Hi"}]}]}, "input[0].content", "invalid_value"),
    ("chat-shaped tool", {"model": "m", "input": "Hi", "tools": [CHAT_TOOL]}, "Unknown parameter: 'tools[0].function'.",
     "unknown_parameter"),
    ("tool without name", {"model": "m", "input": "Hi", "tools": [{"type": "function", "parameters": {}}]},
     "Missing required parameter: 'tools[0].name'.", "missing_required_parameter"),
    ("output for no call", {"model": "m", "input": [{"role": "user", "content": "Hi"}, {
        "type": "function_call_output", "call_id": "call_9", "output": "x"}]}, "call_id call_9", None),
    ("call without arguments", {"model": "m", "input": [{"type": "function_call", "call_id": "c", "name": "f"}]},
     "Missing required parameter: 'input[0].arguments'.", "missing_required_parameter"),
    ("chat response_format", {"model": "m", "input": "Hi", "response_format": {"type": "json_object"}},
     "Unknown parameter: 'response_format'.", "unknown_parameter"),
    ("json_schema without name", {"model": "m", "input": "Hi", "text": {"format": {"type": "json_schema",
                                                                                   "schema": {}}}},
     "Missing required parameter: 'text.format.name'.", "missing_required_parameter"),
    ("tiny max_output_tokens", {"model": "m", "input": "Hi", "max_output_tokens": 5}, "max_output_tokens",
     "invalid_value"),
]


@pytest.mark.parametrize(("body", "message", "code"), [case[1:] for case in RESPONSES_REFUSALS],
                         ids=[case[0] for case in RESPONSES_REFUSALS])
def test_the_responses_fake_refuses_what_the_api_refuses(oai: FakeUpstream, body: dict[str, Any], message: str,
                                                         code: str | None) -> None:
    answer = httpx.post(f"{oai.url}/responses", json=body, timeout=10)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert message in error["message"] and error["code"] == code


def test_the_responses_fake_takes_every_field_of_the_sdks_request_type(oai: FakeUpstream) -> None:
    """One value per field of `ResponseCreateParams`: a field the fake does not know would be a 400."""
    from openai.types.responses.response_create_params import ResponseCreateParamsStreaming

    values: dict[str, Any] = {
        "model": "m", "input": "Hi", "access_programs": {"cyber": "standard"}, "background": False,
        "background_options": {"completion_window": "soonest"}, "context_management": None, "conversation": None,
        "image": {"context_compression": "auto"}, "include": [], "instructions": "x", "max_output_tokens": 16,
        "max_tool_calls": 1, "metadata": {}, "moderation": None, "parallel_tool_calls": True,
        "previous_response_id": None, "prompt": None, "prompt_cache_key": "k", "prompt_cache_options": {},
        "prompt_cache_retention": None, "reasoning": None, "safety_identifier": "s", "service_tier": "auto",
        "store": False, "stream": False, "stream_options": None, "temperature": 1, "text": {}, "tool_choice": "auto",
        "tools": [], "top_logprobs": 0, "top_p": 1, "truncation": "disabled", "user": "u"}
    params = ResponseCreateParamsStreaming
    assert set(values) == params.__required_keys__ | params.__optional_keys__
    answer = httpx.post(f"{oai.url}/responses", json=values, timeout=10)
    assert answer.status_code == 200, answer.text


def test_the_sdk_reads_a_responses_answer(oai: FakeUpstream, oai_sdk: openai.OpenAI) -> None:
    answer = oai_sdk.responses.create(
        model="m", instructions="Be brief.", tools=[RESPONSES_TOOL], store=False, safety_identifier="u-1",
        input=[{"role": "developer", "content": "Also kind."},
               {"role": "user", "content": [{"type": "input_text", "text": "Weather?"},
                                            {"type": "input_image", "image_url": "https://x.test/a.png"}]},
               {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
               {"type": "function_call_output", "call_id": "call_1", "output": "18°C"},
               {"role": "assistant", "content": [{"type": "output_text", "text": "It is 18°C."}]}])
    assert isinstance(answer, Response)
    assert answer.output_text == "answer to [Be brief.]"
    call = answer.output[1]
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Paris"}
    assert answer.usage is not None and answer.usage.total_tokens == 18


def test_the_responses_stream_is_the_sdks_event_types(oai: FakeUpstream, oai_sdk: openai.OpenAI) -> None:
    events = list(oai_sdk.responses.create(model="m", input="Hi", instructions="Be brief.", stream=True,
                                           tools=[RESPONSES_TOOL]))
    adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)
    for event in events:
        adapter.validate_python(event.model_dump())
    kinds = [event.type for event in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-1] == "response.completed"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    arguments = "".join(event.delta for event in events if event.type == "response.function_call_arguments.delta")
    assert text == "answer to [Be brief.]" and json.loads(arguments) == {"city": "Paris"}
    completed = events[-1].response
    assert completed.usage is not None and completed.output_text == text


def test_structured_output_on_responses(oai_sdk: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"total": {"type": "integer"}}, "required": ["total"],
              "additionalProperties": False}
    answer = oai_sdk.responses.create(model="m", input="1+1?", text={"format": {
        "type": "json_schema", "name": "sum", "schema": schema, "strict": True}})
    assert json.loads(answer.output_text) == {"total": 1}


def test_embeddings_and_models(oai: FakeUpstream, oai_sdk: openai.OpenAI) -> None:
    embedded = oai_sdk.embeddings.create(model="text-embedding-3-small", input=["a", "b"])  # base64 by default
    assert [len(item.embedding) for item in embedded.data] == [4, 4]
    assert embedded.data[1].embedding[0] == pytest.approx(0.2)
    assert oai_sdk.models.retrieve("text-embedding-3-small").id == "text-embedding-3-small"
    refused = httpx.post(f"{oai.url}/embeddings", json={"model": "e", "input": "a", "encoding": "float"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "unknown_parameter"


def test_a_reasoning_model_takes_max_completion_tokens(oai_sdk: openai.OpenAI) -> None:
    answer = oai_sdk.chat.completions.create(model="o3-mini", max_completion_tokens=50, temperature=1,
                                             messages=[{"role": "user", "content": "Hi"}])
    assert answer.choices[0].message.content == "answer to []"


def test_misbehaviours_of_openai_compatible_upstreams(oai: FakeUpstream) -> None:
    oai.behaviour.refuse_stream_options = True
    refused = httpx.post(f"{oai.url}/chat/completions", json=chat(stream=True, stream_options={"include_usage": True}))
    assert refused.status_code == 400
    oai.behaviour = type(oai.behaviour)(error_in_200={"message": "Rate limit exceeded", "code": 429})
    embedded = httpx.post(f"{oai.url}/chat/completions", json=chat())
    assert embedded.status_code == 200 and embedded.json() == {"error": {"message": "Rate limit exceeded",
                                                                         "code": 429}}
    oai.behaviour = type(oai.behaviour)(gzip=True)
    with httpx.stream("POST", f"{oai.url}/chat/completions", json=chat(stream=True),
                      headers={"Accept-Encoding": "identity"}) as answer:
        assert answer.headers["content-encoding"] == "gzip"
        assert b"data: [DONE]" in answer.read()  # httpx decodes it; a relay that does not would send gzip bytes
