"""The Responses ⇄ chat pivot translator: requests the strict chat fake accepts, answers and events the SDK reads.

Requests are checked with the OpenAI fake's chat validator (the rules of
`CompletionCreateParams`); answers and events are parsed with openai-python's
own models (`Response`, `ResponseStreamEvent`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from openai.types.responses.response_create_params import ResponseCreateParamsStreaming
from pydantic import TypeAdapter

from gateway.errors import InvalidRequest
from gateway.translators.responses_chat import (
    FIELDS,
    ResponsesEvents,
    chat_view,
    field_table,
    to_chat_request,
    to_response,
)
from tests.fakes.openai import validate_chat

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
TOOL = {"type": "function", "name": "get_weather", "description": "Weather", "strict": True,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


# -- the field table -----------------------------------------------------------------------------------------


def test_every_field_of_the_sdks_request_type_is_mapped_accepted_or_refused_on_purpose() -> None:
    keys = ResponseCreateParamsStreaming.__required_keys__ | ResponseCreateParamsStreaming.__optional_keys__
    assert set(FIELDS) == keys


def test_the_readme_table_is_the_one_the_fields_generate() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert field_table() in readme, "README.md's Responses field table is out of date: paste field_table()"


# -- requests ------------------------------------------------------------------------------------------------


def test_a_simple_request_becomes_a_valid_chat_request() -> None:
    chat = to_chat_request({"model": "bot", "instructions": "Be brief.", "input": "Hi", "max_output_tokens": 50,
                            "temperature": 0.2, "user": "u1", "store": True, "include": ["reasoning.encrypted_content"],
                            "metadata": {"team": "a"}, "reasoning": {"effort": "low", "summary": "auto"}})
    validate_chat(chat)
    assert chat == {"model": "bot", "messages": [{"role": "system", "content": "Be brief."},
                                                 {"role": "user", "content": "Hi"}],
                    "max_tokens": 50, "temperature": 0.2, "user": "u1", "metadata": {"team": "a"},
                    "reasoning_effort": "low"}


def test_a_conversation_with_tools_images_and_files_becomes_valid_chat_messages() -> None:
    chat = to_chat_request({"model": "bot", "tools": [TOOL], "tool_choice": {"type": "function", "name": "get_weather"},
                            "parallel_tool_calls": False, "input": [
        {"role": "developer", "content": [{"type": "input_text", "text": "Use tools."}]},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Weather here?"},
            {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "low"},
            {"type": "input_file", "file_data": "data:application/pdf;base64,AAAA", "filename": "a.pdf"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
    ]})
    validate_chat(chat)
    assert chat["messages"] == [
        {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
        {"role": "user", "content": [
            {"type": "text", "text": "Weather here?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,AAAA", "filename": "a.pdf"}}]},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    assert chat["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather", "parameters": TOOL["parameters"], "strict": True}}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat["parallel_tool_calls"] is False


def test_structured_output_and_streaming_are_translated() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    chat = to_chat_request({"model": "bot", "input": "Where?", "stream": True,
                            "stream_options": {"include_obfuscation": False},
                            "text": {"format": {"type": "json_schema", "name": "place", "schema": schema,
                                                "strict": True}, "verbosity": "low"}})
    validate_chat(chat)
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {"name": "place", "schema": schema,
                                                                              "strict": True}}
    assert (chat["verbosity"], chat["stream"], chat["stream_options"]) == ("low", True, {"include_obfuscation": False})


@pytest.mark.parametrize(("body", "param"), [
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"background": True}, "background"),
    ({"truncation": "auto"}, "truncation"),
    ({"max_tool_calls": 3}, "max_tool_calls"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"tools": [TOOL, {"type": "file_search", "vector_store_ids": ["vs"]}]}, "tools[1].type"),
    ({"tools": [TOOL], "tool_choice": {"type": "code_interpreter"}}, "tool_choice"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
    ({"input": [{"type": "web_search_call", "id": "ws_1", "status": "completed"}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1", "detail": "auto"}]}]},
     "input[0].content[0].file_id"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_url": "https://x/a.pdf"}]}]},
     "input[0].content[0].file_url"),
    ({"service": "x"}, "service"),
])
def test_what_the_pivot_cannot_carry_is_refused_by_name(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        to_chat_request({"model": "bot", "input": "Hi", **body})
    assert refused.value.param == param
    assert param.split("[")[0].split(".")[0] in refused.value.message


def test_null_refused_fields_and_their_defaults_are_accepted() -> None:
    chat = to_chat_request({"model": "bot", "input": "Hi", "previous_response_id": None, "background": False,
                            "truncation": "disabled", "store": False, "tool_choice": "auto"})
    assert chat == {"model": "bot", "messages": [{"role": "user", "content": "Hi"}]}


def test_the_chat_view_of_a_native_request_never_refuses() -> None:
    view = chat_view({"model": "bot", "instructions": "Sys", "previous_response_id": "resp_1",
                      "input": [{"type": "item_reference", "id": "x"}, {"role": "user", "content": "Hi"}],
                      "text": {"format": {"type": "json_object"}}})
    assert view == {"messages": [{"role": "system", "content": "Sys"}, {"role": "user", "content": "Hi"}],
                    "response_format": {"type": "json_object"}}


# -- answers -------------------------------------------------------------------------------------------------

REQUEST = {"model": "support-bot", "instructions": "app prompt", "input": "Hi", "tools": [TOOL], "user": "u1"}


def completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {"id": "chatcmpl-abc", "object": "chat.completion", "created": 7, "model": "model-a",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18,
                      "prompt_tokens_details": {"cached_tokens": 3}}}


def test_a_chat_answer_becomes_a_response_the_sdk_reads() -> None:
    response = Response.model_validate(to_response(completion({"content": "Hello"}), request=REQUEST))
    assert (response.output_text, response.status, response.model, response.instructions) == (
        "Hello", "completed", "model-a", "app prompt")
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens,
            response.usage.input_tokens_details.cached_tokens) == (11, 7, 18, 3)
    assert response.user == "u1" and response.tools[0].type == "function"


def test_tool_calls_reasoning_and_refusals_become_output_items() -> None:
    message = {"content": None, "reasoning_content": "Thinking.", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]}
    response = Response.model_validate(to_response(completion(message, "tool_calls"), request=REQUEST))
    assert [item.type for item in response.output] == ["reasoning", "function_call"]
    call = response.output[1]
    assert call.type == "function_call"
    assert (call.call_id, call.name, call.arguments) == ("call_1", "get_weather", '{"city":"Paris"}')
    refused = Response.model_validate(to_response(completion({"content": None, "refusal": "No."}, "content_filter"),
                                                  request=REQUEST))
    assert refused.status == "incomplete" and refused.incomplete_details is not None
    assert refused.incomplete_details.reason == "content_filter"
    assert refused.output[0].type == "message" and refused.output[0].content[0].type == "refusal"


def test_a_cut_answer_is_incomplete_for_max_output_tokens() -> None:
    response = Response.model_validate(to_response(completion({"content": "Hel"}, "length"), request=REQUEST))
    assert response.status == "incomplete" and response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"


# -- streams -------------------------------------------------------------------------------------------------


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    data = {"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 7, "model": "model-a",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(data).encode() + b"\n\n"


USAGE = (b'data: {"id":"chatcmpl-abc","object":"chat.completion.chunk","created":7,"model":"model-a","choices":[],'
         b'"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}\n\n')


def render(stream: bytes, *, piece: int = 7) -> list[Any]:
    """The events a chat stream becomes, fed in pieces of `piece` bytes, each parsed by the SDK's event type."""
    events = ResponsesEvents(REQUEST)
    out = b"".join(events.feed(stream[at:at + piece]) for at in range(0, len(stream), piece)) + events.finish()
    frames = [frame for frame in out.decode().split("\n\n") if frame]
    parsed = []
    for frame in frames:
        kind, data = frame.split("\n")
        event = EVENTS.validate_python(json.loads(data.removeprefix("data: ")))
        assert kind == f"event: {event.type}"
        parsed.append(event)
    assert [event.sequence_number for event in parsed] == list(range(len(parsed)))
    return parsed


def test_a_text_stream_becomes_the_responses_event_sequence() -> None:
    stream = chunk({"role": "assistant", "content": ""}) + chunk({"content": "Hel"}) + chunk({"content": "lo"}) + \
        chunk({}, "stop") + USAGE + b"data: [DONE]\n\n"
    events = render(stream)
    assert [event.type for event in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed"]
    completed = events[-1].response
    assert completed.output_text == "Hello" and completed.usage.output_tokens == 7
    assert events[6].text == "Hello"


def test_streamed_tool_calls_become_function_call_argument_events() -> None:
    stream = chunk({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                         "function": {"name": "get_weather", "arguments": ""}}]}) + \
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}) + \
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}) + \
        chunk({}, "tool_calls") + b"data: [DONE]\n\n"
    events = render(stream, piece=13)
    deltas = [event.delta for event in events if event.type == "response.function_call_arguments.delta"]
    assert "".join(deltas) == '{"city":"Paris"}'
    [done] = [event for event in events if event.type == "response.function_call_arguments.done"]
    assert done.arguments == '{"city":"Paris"}'
    item = events[-1].response.output[0]
    assert (item.type, item.call_id, item.name, item.arguments) == ("function_call", "call_1", "get_weather",
                                                                    '{"city":"Paris"}')


def test_a_failed_stream_ends_in_an_error_and_response_failed() -> None:
    error = (b'data: {"error": {"message": "upstream went away", "type": "upstream_error", '
             b'"code": "stream_truncated"}}\n\n')
    events = render(chunk({"content": "Hel"}) + error)
    assert [event.type for event in events[-2:]] == ["error", "response.failed"]
    assert (events[-2].code, events[-2].message) == ("stream_truncated", "upstream went away")
    assert events[-1].response.status == "failed" and events[-1].response.error.message == "upstream went away"


def test_a_stream_cut_without_its_end_still_ends_failed() -> None:
    events = render(chunk({"content": "Hel"}))
    assert [event.type for event in events[-2:]] == ["error", "response.failed"]
