"""Chat completions to a provider whose wire is the Responses API, and that wire's native relay.

Requests are checked with the OpenAI fake's Responses validator (the rules of
`ResponseCreateParams`); answers and chunks are parsed with openai-python's
chat models; the fake's own Responses answers and event streams are the input.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import ResponseErrorEvent

from gateway.errors import InvalidRequest
from gateway.providers.openai_responses import OpenAIResponsesProvider, ResponsesStreamRelay
from gateway.translators.chat_responses import to_chat_completion, to_responses_request
from tests.fakes.openai import response_object, validate_responses

PARAMETERS = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOL: dict[str, Any] = {"type": "function", "function": {"name": "get_weather", "parameters": PARAMETERS}}
PROVIDER = OpenAIResponsesProvider("fake", api_key="sk-test")


def test_a_chat_request_becomes_a_valid_responses_request() -> None:
    request = to_responses_request({
        "model": "gpt-4o", "max_tokens": 64, "temperature": 0.5, "user": "u1", "tools": [TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}}, "parallel_tool_calls": False,
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
        "reasoning_effort": "low", "stream": True, "stream_options": {"include_usage": True},
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                                         {"type": "image_url", "image_url": {"url": "https://x/a.png"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ]})
    validate_responses(request)
    assert request["input"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "input_text", "text": "Weather?"},
                                     {"type": "input_image", "image_url": "https://x/a.png", "detail": "auto"}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
    ]
    assert (request["max_output_tokens"], request["store"], request["stream"]) == (64, False, True)
    assert request["text"] == {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}}
    assert request["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert request["tools"][0]["name"] == "get_weather" and request["reasoning"] == {"effort": "low"}
    assert "stream_options" not in request  # the Responses stream always carries its usage


@pytest.mark.parametrize(("field", "value"), [("stop", ["\n"]), ("seed", 7), ("n", 2), ("presence_penalty", 0.5),
                                              ("logit_bias", {"1": 2}),
                                              ("web_search_options", {"search_context_size": "low"})])
def test_chat_fields_without_a_responses_counterpart_are_refused_by_name(field: str, value: object) -> None:
    with pytest.raises(InvalidRequest) as refused:
        to_responses_request({"model": "m", "messages": [{"role": "user", "content": "Hi"}], field: value})
    assert refused.value.param == field


def answer(body: dict[str, Any]) -> dict[str, Any]:
    usage = {"input_tokens": 11, "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
             "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 18}
    return response_object(body, status="completed", usage=usage)


def test_a_responses_answer_becomes_a_chat_completion() -> None:
    completion = ChatCompletion.model_validate(to_chat_completion(answer({"model": "m", "instructions": "Sys"})))
    assert completion.choices[0].message.content == "answer to [Sys]"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens_details is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens,
            completion.usage.prompt_tokens_details.cached_tokens) == (11, 7, 4)
    called = ChatCompletion.model_validate(to_chat_completion(answer({"model": "m", "tools": [
        {"type": "function", "name": "get_weather", "parameters": PARAMETERS}]})))
    assert called.choices[0].finish_reason == "tool_calls"
    [call] = called.choices[0].message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"


def test_the_provider_reads_usage_and_answer_of_a_native_answer_and_keeps_its_bytes() -> None:
    content = json.dumps(answer({"model": "m", "instructions": "Sys"})).encode()
    native = PROVIDER.parse_native_answer(content)
    assert native.content == content
    assert (native.usage.prompt_tokens, native.usage.completion_tokens, native.usage.cache_read_tokens) == (11, 7, 4)
    assert native.chat_choices()[0]["message"]["content"] == "answer to [Sys]"


def events(body: dict[str, Any], *, cut: int | None = None, separators: tuple[str, str] = (", ", ": ")) -> bytes:
    """The Responses event stream the OpenAI fake would send for `body` (the same events, in SSE)."""
    final = answer(body)
    item: dict[str, Any] = final["output"][0]
    text = item["content"][0]["text"]
    sequence: list[dict[str, Any]] = [
        {"type": "response.created", "response": {**final, "status": "in_progress", "output": [], "usage": None}},
        {"type": "response.output_item.added", "output_index": 0, "item": {**item, "content": []}},
        *({"type": "response.output_text.delta", "item_id": item["id"], "output_index": 0, "content_index": 0,
           "delta": word, "logprobs": []} for word in (text[:6], text[6:])),
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": final},
    ]
    if cut is not None:
        sequence = sequence[:cut]
    return b"".join(f"event: {e['type']}\n"
                    f"data: {json.dumps({**e, 'sequence_number': n}, separators=separators)}\n\n".encode()
                    for n, e in enumerate(sequence))


@pytest.mark.parametrize("separators", [(",", ":"), (", ", ": ")], ids=["compact", "spaced"])
@pytest.mark.parametrize("collect", [True, False])
def test_the_native_relay_passes_events_unchanged_and_reads_usage_and_the_answer(
        separators: tuple[str, str], collect: bool) -> None:
    stream = events({"model": "m", "instructions": "Sys"}, separators=separators)
    relay = ResponsesStreamRelay(collect=collect)
    out = b"".join(relay.feed(stream[at:at + 10]) for at in range(0, len(stream), 10)) + relay.finish()
    assert out == stream
    assert (relay.usage.prompt_tokens, relay.usage.completion_tokens) == (11, 7)
    assert relay.error_kind is None and relay.done
    if collect:
        assert relay.choices is not None and relay.choices[0]["message"]["content"] == "answer to [Sys]"


def test_a_native_stream_cut_short_ends_with_a_responses_error_event() -> None:
    relay = ResponsesStreamRelay()
    out = relay.feed(events({"model": "m"}, cut=3)) + relay.finish()
    last = out.decode().strip().split("\n\n")[-1]
    assert last.startswith("event: error\n")
    error = ResponseErrorEvent.model_validate_json(last.split("data: ", 1)[1])
    assert (error.code, error.sequence_number) == ("stream_truncated", 3)
    assert relay.error_kind == "stream_truncated"


def test_a_responses_stream_becomes_chat_chunks_for_a_chat_client() -> None:
    translator = PROVIDER.stream_translator(wants_usage=False, collect=True)
    out = translator.feed(events({"model": "m", "instructions": "Sys"})) + translator.finish()
    frames = [frame.removeprefix("data: ") for frame in out.decode().strip().split("\n\n")]
    assert frames[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(frame) for frame in frames[:-1]]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "answer to [Sys]"
    assert all(chunk.usage is None for chunk in chunks)  # not asked for: read, not sent
    assert (translator.usage.prompt_tokens, translator.usage.completion_tokens) == (11, 7)
    assert translator.choices is not None and translator.choices[0]["finish_reason"] == "stop"


def test_a_reasoning_model_gets_neither_temperature_nor_top_p_on_either_path() -> None:
    chat = {"model": "o3-mini", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0.2,
            "max_tokens": 50}
    translated = json.loads(PROVIDER.build_request(chat, stream=False).content)
    assert "temperature" not in translated and translated["max_output_tokens"] == 50
    native = json.loads(PROVIDER.build_native_request({"model": "o3-mini", "input": "Hi", "top_p": 0.5,
                                                       "max_output_tokens": 50}, stream=False).content)
    assert native == {"model": "o3-mini", "input": "Hi", "max_output_tokens": 50}
    kept = json.loads(PROVIDER.build_native_request({"model": "gpt-4.1", "input": "Hi", "top_p": 0.5},
                                                    stream=False).content)
    assert kept["top_p"] == 0.5
