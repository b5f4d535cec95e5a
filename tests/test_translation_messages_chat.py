"""Anthropic Messages ⇄ chat completions (gateway.translators.messages_chat), pure.

Requests are checked against the strict OpenAI fake's validator (what the
real API refuses), answers and events against the anthropic SDK's own types,
so a translation cannot drift from either wire.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import anthropic.types
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import InvalidRequest, UpstreamBadResponse
from gateway.fields import THINKING_BUDGETS
from gateway.messages import parse_count_tokens_request, parse_messages_request
from gateway.models import Version
from gateway.prompts import build_messages_body, build_upstream_body
from gateway.tokens import estimate_tokens
from gateway.translators.messages_chat import (
    STOP_REASONS,
    MessagesEventStream,
    chat_view,
    stop_reason,
    to_chat_request,
    to_message,
)
from tests.fakes.openai import validate_chat

EVENT = pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)
WEATHER = {"name": "get_weather", "description": "Weather for a city", "input_schema": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def request(**fields: Any) -> dict[str, Any]:
    return {"model": "support-bot", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}], **fields}


def translated(**fields: Any) -> dict[str, Any]:
    """The chat request for a Messages request; the strict OpenAI fake accepts it."""
    chat = to_chat_request(request(**fields))
    validate_chat(chat)
    return chat


def refused(**fields: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        to_chat_request(request(**fields))
    assert caught.value.param is not None and caught.value.param in caught.value.message
    return caught.value


# -- requests -------------------------------------------------------------------------------------------


def test_system_sampling_stops_and_the_user_id() -> None:
    chat = translated(system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
                              {"type": "text", "text": "Be kind."}],
                      temperature=0.2, top_p=0.9, stop_sequences=["END"], metadata={"user_id": "u-1"}, stream=True)
    assert chat == {"model": "support-bot", "max_tokens": 100, "temperature": 0.2, "top_p": 0.9, "stop": ["END"],
                    "user": "u-1", "stream": True,
                    "messages": [{"role": "system", "content": "Be brief.\n\nBe kind."},
                                 {"role": "user", "content": "Hi"}]}


def test_images_documents_and_text_blocks_become_content_parts() -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"},
         "title": "report.pdf"},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain notes"}},
    ]
    chat = translated(messages=[{"role": "user", "content": content}])
    assert chat["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBER", "filename": "report.pdf"}},
        {"type": "text", "text": "plain notes"},
    ]}]


def test_a_tool_conversation_becomes_tool_calls_and_tool_messages_in_chat_order() -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Two cities.", "signature": "sig"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}}]},
        # Text before the results: chat wants the tool messages right after the calls.
        {"role": "user", "content": [
            {"type": "text", "text": "Here you go."},
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "21 C"}],
             "is_error": False}]},
    ]
    chat = translated(messages=messages, tools=[WEATHER], tool_choice={"type": "auto"})
    assert chat["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "toolu_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "toolu_2", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
        ]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18 C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "21 C"},
        {"role": "user", "content": "Here you go."},
    ]
    assert chat["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city", "parameters": WEATHER["input_schema"]}}]
    assert chat["tool_choice"] == "auto" and "parallel_tool_calls" not in chat


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, "auto"),
    ({"type": "any"}, "required"),
    ({"type": "none"}, "none"),
    ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
])
def test_tool_choice(choice: dict[str, Any], expected: Any) -> None:
    assert translated(tools=[WEATHER], tool_choice=choice)["tool_choice"] == expected


def test_disable_parallel_tool_use_becomes_parallel_tool_calls_false() -> None:
    chat = translated(tools=[WEATHER], tool_choice={"type": "any", "disable_parallel_tool_use": True})
    assert chat["parallel_tool_calls"] is False


@pytest.mark.parametrize(("fields", "effort"), [
    # The budgets a chat call's efforts get on Anthropic come back as those efforts.
    *(({"thinking": {"type": "enabled", "budget_tokens": THINKING_BUDGETS[effort]}}, effort)
      for effort in ("low", "medium", "high")),
    ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "low"),
    ({"thinking": {"type": "enabled", "budget_tokens": 8191}}, "low"),
    ({"thinking": {"type": "enabled", "budget_tokens": 32000}}, "high"),
    ({"thinking": {"type": "enabled", "budget_tokens": 1024}, "output_config": {"effort": "xhigh"}}, "xhigh"),
    ({"output_config": {"effort": "max"}}, "max"),
    ({"thinking": {"type": "adaptive"}}, None),
    ({"thinking": {"type": "disabled"}}, None),
])
def test_thinking_and_effort_become_reasoning_effort(fields: dict[str, Any], effort: str | None) -> None:
    assert translated(**fields).get("reasoning_effort") == effort


def test_structured_output_becomes_a_json_schema_response_format() -> None:
    schema = {"type": "object", "properties": {"sum": {"type": "integer"}}}
    chat = translated(output_config={"format": {"type": "json_schema", "schema": schema}})
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def test_service_tier_and_cache_hints() -> None:
    chat = translated(service_tier="standard_only", cache_control={"type": "ephemeral"}, speed="standard")
    assert chat["service_tier"] == "default" and "cache_control" not in chat and "speed" not in chat


@pytest.mark.parametrize(("fields", "param"), [
    ({"top_k": 5}, "top_k"),
    ({"speed": "fast"}, "speed"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"container": "cnt_1"}, "container"),
    ({"inference_geo": "us"}, "inference_geo"),
    ({"context_management": {"edits": []}}, "context_management"),
    ({"stop_sequences": ["a", "b", "c", "d", "e"]}, "stop_sequences"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
    ({"tools": [{**WEATHER, "input_examples": [{"city": "Paris"}]}]}, "tools[0].input_examples"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "The answer is"}]},
     "messages[1]"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "system", "content": [
        {"type": "mid_conv_system", "content": [{"type": "text", "text": "Be brief."}]}]},
                   {"role": "user", "content": "Go"}]}, "messages[1].role"),
    ({"messages": [{"role": "user", "content": [{"type": "search_result", "source": "s", "title": "t",
                                                 "content": []}]}]}, "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]},
     "messages[0].content[0].source.type"),
    ({"messages": [{"role": "user", "content": "Hi"},
                   {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "x", "input": {}}]},
                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [
                       {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}]}]},
     "messages[2].content[0].content[0].type"),
])
def test_what_chat_cannot_carry_is_refused_naming_the_field(fields: dict[str, Any], param: str) -> None:
    assert refused(**fields).param == param


def test_the_request_is_not_modified() -> None:
    body = request(system="s", tools=[WEATHER])
    before = json.dumps(body)
    to_chat_request(body)
    assert json.dumps(body) == before


def test_the_chat_view_of_a_native_request_is_tolerant() -> None:
    body = request(system=[{"type": "text", "text": "Be brief."}], top_k=3, messages=[
        {"role": "user", "content": [{"type": "text", "text": "Hi"},
                                     {"type": "search_result", "source": "s", "title": "t", "content": []}]},
        {"role": "assistant", "content": "Prefill"}],
        output_config={"format": {"type": "json_schema", "schema": {"type": "object"}}})
    view = chat_view(body)
    assert view["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                                {"role": "assistant", "content": "Prefill"}]
    assert view["response_format"]["json_schema"]["schema"] == {"type": "object"}
    assert chat_view({"messages": "nonsense"})["messages"] == []


# -- answers --------------------------------------------------------------------------------------------


def completion(message: dict[str, Any], finish_reason: str | None = "stop", usage: Any = None) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish_reason}],
            "usage": usage if usage is not None else {"prompt_tokens": 30, "completion_tokens": 7,
                                                      "prompt_tokens_details": {"cached_tokens": 10}}}


def test_a_text_answer() -> None:
    message = to_message(completion({"content": "Hello."}))
    anthropic.types.Message.model_validate(message)
    assert message == {"id": "chatcmpl-1", "type": "message", "role": "assistant", "model": "gpt-4o",
                       "content": [{"type": "text", "text": "Hello."}], "stop_reason": "end_turn",
                       "stop_sequence": None, "usage": {"input_tokens": 20, "output_tokens": 7,
                                                        "cache_creation_input_tokens": 0,
                                                        "cache_read_input_tokens": 10}}


@pytest.mark.parametrize(("finish", "reason"), [*STOP_REASONS.items(), ("brand_new", "brand_new"), (None, None)])
def test_every_finish_reason_maps_deliberately(finish: str | None, reason: str | None) -> None:
    assert to_message(completion({"content": "x"}, finish))["stop_reason"] == reason
    assert stop_reason(finish) == reason
    assert reason != "end_turn" or finish == "stop"  # only a natural stop is end_turn


def test_a_tool_call_answer_with_reasoning() -> None:
    message = to_message(completion({"content": None, "reasoning_content": "Paris it is.", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}}]}, "tool_calls"))
    anthropic.types.Message.model_validate(message)
    assert message["content"] == [
        {"type": "thinking", "thinking": "Paris it is.", "signature": ""},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}}]
    assert message["stop_reason"] == "tool_use"


def test_a_refusal_answer() -> None:
    message = to_message(completion({"content": None, "refusal": "I can't help with that."}))
    anthropic.types.Message.model_validate(message)
    assert message["stop_reason"] == "refusal" and message["content"] == []
    assert message["stop_details"] == {"type": "refusal", "category": None, "explanation": "I can't help with that."}


def test_missing_usage_is_zero_and_bad_answers_are_refused() -> None:
    assert to_message(completion({"content": "x"}, usage={}))["usage"]["input_tokens"] == 0
    with pytest.raises(UpstreamBadResponse):
        to_message({"choices": []})
    with pytest.raises(UpstreamBadResponse):
        to_message(completion({"tool_calls": [{"id": "c", "type": "function",
                                               "function": {"name": "f", "arguments": "[1, 2"}}]}))


# -- streams --------------------------------------------------------------------------------------------


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    data = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
    return b"data: " + json.dumps(data).encode() + b"\n\n"


USAGE = b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[],' \
        b'"usage":{"prompt_tokens":30,"completion_tokens":7,"prompt_tokens_details":{"cached_tokens":10}}}\n\n'


def events(stream: bytes, *, pieces: int = 7, validate: bool = True) -> list[dict[str, Any]]:
    """Feed `stream` in awkward pieces; every event the translator produced, checked against the SDK's type
    (`validate=False` for a stop reason the SDK's Literal does not know yet; its client does not validate)."""
    translator = MessagesEventStream()
    out = b"".join(translator.feed(stream[start:start + pieces]) for start in range(0, len(stream), pieces))
    out += translator.finish()
    parsed = []
    for frame in out.decode().split("\n\n"):
        if not frame:
            continue
        name, data = frame.split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        # error and ping are not RawMessageStreamEvents: the SDK raises the one and skips the other.
        if validate and event["type"] not in ("error", "ping"):
            EVENT.validate_python(event)
        parsed.append(event)
    return parsed


def test_a_text_stream() -> None:
    got = events(chunk({"role": "assistant", "content": ""}) + chunk({"content": "Hel"}) + chunk({"content": "lo."})
                 + chunk({}, "stop") + USAGE + b"data: [DONE]\n\n")
    assert [event["type"] for event in got] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop"]
    assert "".join(event["delta"]["text"] for event in got if event["type"] == "content_block_delta") == "Hello."
    assert got[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert got[-2]["usage"] == {"input_tokens": 20, "output_tokens": 7, "cache_creation_input_tokens": 0,
                                "cache_read_input_tokens": 10}


@pytest.mark.parametrize(("finish", "reason"), [*STOP_REASONS.items(), ("brand_new", "brand_new")])
def test_every_finish_reason_maps_deliberately_streamed(finish: str, reason: str) -> None:
    got = events(chunk({"content": "x"}) + chunk({}, finish) + b"data: [DONE]\n\n", validate=finish in STOP_REASONS)
    assert got[-2]["delta"]["stop_reason"] == reason


def test_a_streamed_tool_call_after_reasoning_and_text() -> None:
    stream = (chunk({"role": "assistant", "reasoning_content": "Hmm."}) + chunk({"content": "Let me check."})
              + chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                       "function": {"name": "get_weather", "arguments": '{"city": '}}]})
              + chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]})
              + chunk({"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                                       "function": {"name": "get_time", "arguments": ""}}]}, "tool_calls")
              + b"data: [DONE]\n\n")
    got = events(stream)
    starts = [(event["index"], event["content_block"]) for event in got if event["type"] == "content_block_start"]
    assert starts == [(0, {"type": "thinking", "thinking": "", "signature": ""}), (1, {"type": "text", "text": ""}),
                      (2, {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}),
                      (3, {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}})]
    arguments = "".join(event["delta"]["partial_json"] for event in got if event["type"] == "content_block_delta"
                        and event["delta"]["type"] == "input_json_delta" and event["index"] == 2)
    assert json.loads(arguments) == {"city": "Paris"}
    assert [event["index"] for event in got if event["type"] == "content_block_stop"] == [0, 1, 2, 3]
    assert got[-2]["delta"]["stop_reason"] == "tool_use"


def test_a_streamed_refusal() -> None:
    got = events(chunk({"refusal": "I can't"}) + chunk({"refusal": " help."}) + chunk({}, "stop")
                 + b"data: [DONE]\n\n")
    assert got[-2]["delta"]["stop_reason"] == "refusal"
    assert got[-2]["delta"]["stop_details"]["explanation"] == "I can't help."


@pytest.mark.parametrize(("error", "kind"), [
    ({"message": "upstream timed out", "type": "upstream_error", "code": "timeout"}, "timeout_error"),
    ({"message": "Overloaded", "type": "upstream_error", "code": "overloaded_error"}, "overloaded_error"),
    ({"message": "cut", "type": "upstream_error", "code": "stream_truncated"}, "api_error"),
    ({"message": "stopping", "type": "upstream_error", "code": "shutdown"}, "overloaded_error"),
])
def test_a_failed_stream_ends_in_an_error_event(error: dict[str, Any], kind: str) -> None:
    got = events(chunk({"content": "Hel"}) + b"data: " + json.dumps({"error": error}).encode() + b"\n\n")
    assert got[-1] == {"type": "error", "error": {"type": kind, "message": error["message"]}}
    assert [event["type"] for event in got][:3] == ["message_start", "content_block_start", "content_block_delta"]


def test_a_stream_cut_without_done_ends_in_an_error_event() -> None:
    got = events(chunk({"content": "Hel"}))
    assert got[-1]["type"] == "error" and "ended before it was complete" in got[-1]["error"]["message"]


def test_crlf_and_keep_alive_comments() -> None:
    stream = (b": ping\r\n\r\n" + chunk({"content": "a"}).replace(b"\n\n", b"\r\n\r\n") + b": ping\r\n\r\n"
              + chunk({}, "length") + b"data: [DONE]\r\n\r\n")
    got = events(stream, pieces=3)
    assert [event["type"] for event in got] == ["message_start", "content_block_start", "content_block_delta", "ping",
                                                "content_block_stop", "message_delta", "message_stop"]
    assert got[-2]["delta"]["stop_reason"] == "max_tokens"


def test_the_readme_lists_every_finish_reason_as_it_is_mapped() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## Anthropic Messages"):]
    for finish, reason in STOP_REASONS.items():
        assert f"| `{finish}` | `{reason}`" in section, finish


# -- anything a client can send: a 400 or a translation, never a crash ------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=10)
TEXT = st.text(alphabet="ab \n", min_size=1, max_size=5).filter(str.strip)
SOURCE = st.fixed_dictionaries({"type": st.sampled_from(["base64", "url", "text", "file"])}, optional={
    "media_type": st.sampled_from(["image/png", "application/pdf", "text/plain"]), "data": TEXT | JSON,
    "url": TEXT, "file_id": TEXT})
BLOCK = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}, optional={"cache_control": JSON,
                                                                             "citations": JSON}),
    st.fixed_dictionaries({"type": st.sampled_from(["image", "document"]), "source": SOURCE | JSON},
                          optional={"title": JSON}),
    st.fixed_dictionaries({"type": st.just("tool_use"), "id": TEXT | JSON, "name": TEXT | JSON,
                           "input": st.dictionaries(TEXT, JSON, max_size=2) | JSON}),
    st.fixed_dictionaries({"type": st.just("tool_result"), "tool_use_id": TEXT | JSON}, optional={
        "content": TEXT | st.lists(BLOCK_LEAF := st.fixed_dictionaries({"type": st.just("text"), "text": TEXT})
                                   | JSON, max_size=2) | JSON, "is_error": JSON}),
    st.fixed_dictionaries({"type": st.sampled_from(["thinking", "redacted_thinking", "search_result",
                                                    "server_tool_use", "mid_conv_system"])},
                          optional={"thinking": TEXT, "signature": TEXT, "content": JSON}),
)
CONTENT = TEXT | st.lists(BLOCK, min_size=1, max_size=3)
MESSAGES = st.tuples(st.fixed_dictionaries({"role": st.just("user"), "content": CONTENT}),
                     st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]),
                                                     "content": CONTENT}), max_size=3)
                     ).map(lambda turns: [turns[0], *turns[1]])
TOOL = st.fixed_dictionaries({"name": TEXT}, optional={"input_schema": st.just({"type": "object"}) | JSON,
                                                       "type": st.sampled_from(["custom", "web_search_20250305"]),
                                                       "description": JSON, "strict": JSON, "input_examples": JSON})
BODY = st.fixed_dictionaries(
    {"model": st.just("support-bot"), "messages": MESSAGES, "max_tokens": st.integers(1, 500) | st.just(0)},
    optional={"system": TEXT | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}), max_size=2)
              | JSON, "tools": st.lists(TOOL, min_size=1, max_size=2),
              "tool_choice": st.fixed_dictionaries({"type": st.sampled_from(["auto", "any", "tool", "none"])},
                                                   optional={"name": TEXT | JSON,
                                                             "disable_parallel_tool_use": JSON}),
              "thinking": st.fixed_dictionaries({"type": st.sampled_from(["enabled", "adaptive", "disabled"])},
                                                optional={"budget_tokens": st.integers(0, 20000) | JSON}) | JSON,
              "output_config": st.fixed_dictionaries({}, optional={
                  "effort": st.sampled_from(["low", "max"]), "format": st.fixed_dictionaries(
                      {"type": st.just("json_schema"), "schema": st.just({"type": "object"}) | JSON})}) | JSON,
              "metadata": st.fixed_dictionaries({"user_id": TEXT | JSON}) | JSON,
              "stop_sequences": st.lists(TEXT, max_size=5) | JSON, "temperature": st.floats(0, 1) | JSON,
              "stream": st.booleans() | JSON, "service_tier": st.sampled_from(["auto", "standard_only"]) | JSON,
              "cache_control": JSON})


@given(body=BODY)
@settings(max_examples=300, deadline=None, database=None, derandomize=True)
def test_any_body_is_refused_or_translated_never_a_crash(body: dict[str, Any]) -> None:
    version = Version(name="v1", provider="p", model="gpt-4o", system_prompt="You are v1.", prompt_mode="append")
    raw = json.dumps(body).encode()
    with contextlib.suppress(InvalidRequest):  # a count: injected natively, or estimated
        counted = parse_count_tokens_request(raw)
        build_messages_body(version, counted.body, stream=False, params=False)
        estimate_tokens(version, counted.body, None)
    try:
        inbound = parse_messages_request(raw)
    except InvalidRequest:
        return
    build_messages_body(version, inbound.body, stream=inbound.stream)  # native
    chat_view(inbound.body)
    try:
        chat = to_chat_request(inbound.body)  # the pivot
    except InvalidRequest as refused:
        assert refused.param
        return
    build_upstream_body(version, chat, stream=inbound.stream)
