"""Anthropic answers normalised: every stop_reason, content block and delta type mapped on purpose.

The value lists below are copied from anthropic-sdk-python (`types/stop_reason.py`,
`types/content_block.py`, `types/raw_content_block_delta.py`); a test fails
when the translator's tables lose one of them. Streams are checked through
openai-python's own reassembly (`ChatCompletionStreamState`), so "the same as
the plain answer" means what an OpenAI client builds from the chunks.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from gateway.providers.anthropic import AnthropicStreamTranslator, to_chat_completion
from gateway.providers.normalise import BLOCKS, DELTAS, FINISH_REASONS, answer_table

SDK_STOP_REASONS = ("end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal",
                    "model_context_window_exceeded")
SDK_BLOCK_TYPES = ("text", "thinking", "redacted_thinking", "tool_use", "server_tool_use", "web_search_tool_result",
                   "web_fetch_tool_result", "code_execution_tool_result", "bash_code_execution_tool_result",
                   "text_editor_code_execution_tool_result", "tool_search_tool_result", "container_upload")
SDK_DELTA_TYPES = ("text_delta", "input_json_delta", "citations_delta", "thinking_delta", "signature_delta")
EXPECTED_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                   "model_context_window_exceeded": "length", "pause_turn": "length", "tool_use": "tool_calls",
                   "refusal": "content_filter"}
USAGE = {"input_tokens": 10, "output_tokens": 4}


def test_every_value_the_sdk_knows_is_mapped() -> None:
    assert set(FINISH_REASONS) == set(SDK_STOP_REASONS)
    assert set(BLOCKS) == set(SDK_BLOCK_TYPES)
    assert set(DELTAS) == set(SDK_DELTA_TYPES)


def message(content: list[dict[str, Any]], stop_reason: str | None, **extra: Any) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": content,
            "stop_reason": stop_reason, "stop_sequence": None, "usage": USAGE, **extra}


def events_of(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The event stream Anthropic sends for `answer` (raw_*_event.py shapes), deltas in two pieces."""
    start = {**answer, "content": [], "stop_reason": None, "usage": {**USAGE, "output_tokens": 1}}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(answer["content"]):
        kind = block["type"]
        opening = {"text": {"type": "text", "text": ""}, "thinking": {"type": "thinking", "thinking": "",
                                                                       "signature": ""},
                   "tool_use": {**block, "input": {}}}.get(kind, block)
        events.append({"type": "content_block_start", "index": index, "content_block": opening})
        if kind == "text":
            half = len(block["text"]) // 2
            for piece in (block["text"][:half], block["text"][half:]):
                events.append({"type": "content_block_delta", "index": index,
                               "delta": {"type": "text_delta", "text": piece}})
        elif kind == "thinking":
            events.append({"type": "content_block_delta", "index": index,
                           "delta": {"type": "thinking_delta", "thinking": block["thinking"]}})
            events.append({"type": "content_block_delta", "index": index,
                           "delta": {"type": "signature_delta", "signature": block["signature"]}})
        elif kind == "tool_use":
            # A tool without input streams one empty piece, as the API does.
            text = json.dumps(block["input"]) if block["input"] else ""
            for piece in (text[:5], text[5:]) if text else ("",):
                events.append({"type": "content_block_delta", "index": index,
                               "delta": {"type": "input_json_delta", "partial_json": piece}})
        events.append({"type": "content_block_stop", "index": index})
    delta: dict[str, Any] = {"stop_reason": answer["stop_reason"], "stop_sequence": None}
    if "stop_details" in answer:
        delta["stop_details"] = answer["stop_details"]
    events.append({"type": "message_delta", "delta": delta, "usage": {"output_tokens": 4}})
    events.append({"type": "message_stop"})
    return events


def streamed(answer: dict[str, Any], *, assemble: bool = True) -> tuple[list[dict[str, Any]], Any]:
    """The chunks the translator sends for `answer`'s stream, and what openai-python assembles from them."""
    translator = AnthropicStreamTranslator(wants_usage=False)
    raw = b"".join(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode() for event in events_of(answer))
    out = translator.feed(raw) + translator.finish()
    assert out.endswith(b"data: [DONE]\n\n") and translator.error_kind is None
    chunks = [json.loads(line[6:]) for line in out.decode().split("\n\n") if line.startswith("data: {")]
    if not assemble:
        return chunks, None
    state = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    return chunks, state.current_completion_snapshot


@pytest.mark.parametrize("reason", SDK_STOP_REASONS)
def test_every_stop_reason_plain_and_streamed(reason: str) -> None:
    answer = message([{"type": "text", "text": "Some answer."}], reason)
    plain, _ = to_chat_completion(answer)
    _, assembled = streamed(answer)
    assert plain["choices"][0]["finish_reason"] == EXPECTED_FINISH[reason]
    assert assembled.choices[0].finish_reason == EXPECTED_FINISH[reason]


def test_an_unknown_stop_reason_is_never_stop(caplog: pytest.LogCaptureFixture) -> None:
    answer = message([{"type": "text", "text": "Some answer."}], "brand_new_reason")
    with caplog.at_level(logging.WARNING, logger="gateway.providers"):
        plain, _ = to_chat_completion(answer)
        chunks, _ = streamed(answer, assemble=False)  # the SDK's types know no such reason
    assert plain["choices"][0]["finish_reason"] == "brand_new_reason"
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks if chunk["choices"][0]["finish_reason"]] == [
        "brand_new_reason"]
    assert any("brand_new_reason" in record.getMessage() for record in caplog.records)


def test_a_tool_without_parameters_has_arguments_braces_plain_and_streamed() -> None:
    answer = message([{"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {}}], "tool_use")
    plain, _ = to_chat_completion(answer)
    _, assembled = streamed(answer)
    assert plain["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert assembled.choices[0].message.tool_calls[0].function.arguments == "{}"


def test_tool_arguments_stream_unchanged_when_there_are_some() -> None:
    answer = message([{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                      {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}}], "tool_use")
    plain, _ = to_chat_completion(answer)
    _, assembled = streamed(answer)
    calls = [(call.id, call.function.name, call.function.arguments) for call in assembled.choices[0].message.tool_calls]
    assert calls == [(call["id"], call["function"]["name"], call["function"]["arguments"])
                     for call in plain["choices"][0]["message"]["tool_calls"]]
    assert calls == [("toolu_1", "get_weather", '{"city": "Paris"}'), ("toolu_2", "get_time", "{}")]


def test_thinking_becomes_reasoning_content_and_redacted_thinking_is_left_out() -> None:
    answer = message([{"type": "thinking", "thinking": "Paris is in France.", "signature": "sig=="},
                      {"type": "redacted_thinking", "data": "opaque=="},
                      {"type": "text", "text": "Paris."}], "end_turn")
    plain, _ = to_chat_completion(answer)
    chunks, assembled = streamed(answer)
    assert plain["choices"][0]["message"]["reasoning_content"] == "Paris is in France."
    assert plain["choices"][0]["message"]["content"] == "Paris."
    streamed_reasoning = "".join(chunk["choices"][0]["delta"].get("reasoning_content", "") for chunk in chunks)
    assert streamed_reasoning == "Paris is in France."
    assert assembled.choices[0].message.content == "Paris."
    assert "opaque" not in json.dumps(plain) + json.dumps(chunks)
    assert "sig==" not in json.dumps(plain) + json.dumps(chunks)


def test_a_refusal_is_a_refusal_with_content_filter() -> None:
    answer = message([{"type": "text", "text": "I"}], "refusal",
                     stop_details={"type": "refusal", "category": "cyber", "explanation": "Policy says no."})
    plain, _ = to_chat_completion(answer)
    _, assembled = streamed(answer)
    assert plain["choices"][0]["message"]["refusal"] == "Policy says no."
    assert plain["choices"][0]["finish_reason"] == "content_filter"
    assert assembled.choices[0].message.refusal == "Policy says no."
    assert assembled.choices[0].finish_reason == "content_filter"


def test_server_tool_blocks_are_left_out_and_their_text_kept() -> None:
    answer = message([
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "weather"}},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
        {"type": "text", "text": "It is sunny."},
    ], "end_turn")
    plain, _ = to_chat_completion(answer)
    _, assembled = streamed(answer)
    assert plain["choices"][0]["message"]["content"] == "It is sunny."
    assert "tool_calls" not in plain["choices"][0]["message"]
    assert assembled.choices[0].message.content == "It is sunny."
    assert not assembled.choices[0].message.tool_calls


def test_an_unknown_block_type_is_left_out_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    answer = message([{"type": "hologram", "data": "x"}, {"type": "text", "text": "Hi."}], "end_turn")
    with caplog.at_level(logging.WARNING, logger="gateway.providers"):
        plain, _ = to_chat_completion(answer)
        _, assembled = streamed(answer)
    assert plain["choices"][0]["message"]["content"] == assembled.choices[0].message.content == "Hi."
    assert any("hologram" in record.getMessage() for record in caplog.records)


def test_the_readme_table_is_the_one_the_tables_generate() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert answer_table() in readme, "README.md's Anthropic answer table is out of date: paste answer_table()"
