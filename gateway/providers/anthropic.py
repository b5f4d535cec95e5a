"""Anthropic Messages, translated both ways, so an OpenAI client can call a Claude version.

Request: system messages → top-level `system`; user/assistant turns merged
where Anthropic requires alternation; tool results → `tool_result` blocks;
image parts → image blocks; function tools and `tool_choice` → Anthropic
tools; `stop` → `stop_sequences`; `max_tokens` from the request, else the
version's params, else DEFAULT_MAX_TOKENS (Anthropic requires one).
Answer: every content block type and `stop_reason` as `gateway.providers.normalise`
maps it (text → `content`, thinking → `reasoning_content`, tool_use →
`tool_calls`, a refusal → `refusal` and `content_filter`; an unknown stop
reason is never "stop"); usage (with cache tokens) → OpenAI usage.
Stream: Anthropic's events → `chat.completion.chunk` events ending in
`data: [DONE]`, the same mapping delta by delta (a tool without input gets
arguments `"{}"`, as in the plain answer); an `error` event ends the stream
with an SSE error event.

Why one module over 400 lines: one translator per pair (OpenAI chat ↔
Anthropic Messages), request, answer and stream together, as the house
keeps every translation pair in one module with its tests beside it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gateway.errors import UpstreamBadResponse, UpstreamOverloaded, UpstreamStatusError
from gateway.inbound import content_text
from gateway.messages import error_event
from gateway.models import Usage, WireApi
from gateway.providers.base import (
    Answer,
    Provider,
    StreamTranslator,
    UpstreamRequest,
    data_of,
    error_body,
    sse_error_event,
)
from gateway.providers.normalise import (
    CONTENT,
    REASONING,
    TOOL_CALL,
    block_role,
    delta_role,
    finish_reason,
    refusal_text,
)

API_VERSION = "2023-06-01"
# Anthropic requires max_tokens; used when neither the app nor the version sets one.
DEFAULT_MAX_TOKENS = 4096
# The HTTP status each of Anthropic's error types comes with (anthropic-sdk-python
# types/shared/*_error.py and `_make_status_error`), for an error inside a 200 answer.
ERROR_STATUSES = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
# Anthropic's 529 means overloaded: the client should come back later, like a 503.
_OVERLOADED = 529


class AnthropicProvider(Provider):
    wire: WireApi = "messages"

    def build_request(self, body: dict[str, Any], *, stream: bool) -> UpstreamRequest:
        headers = {**self.json_headers(stream=stream), **self.auth_headers()}
        return UpstreamRequest(
            path="/v1/messages",
            headers=headers,
            content=json.dumps(to_messages_request(body, stream=stream), separators=(",", ":")).encode(),
        )

    def build_native_request(self, body: dict[str, Any], *, stream: bool) -> UpstreamRequest:
        """`POST /v1/messages` with `body`, a Messages request already injected, as it is (`MessageCreateParams`)."""
        return UpstreamRequest(
            path="/v1/messages",
            headers={**self.json_headers(stream=stream), **self.auth_headers()},
            content=json.dumps(body, separators=(",", ":")).encode(),
        )

    def parse_native_answer(self, content: bytes) -> Answer:
        """The upstream's `Message` bytes unchanged, with its usage (cache tokens included) and, for the
        evaluators, its chat-completion choices (`to_chat_completion`)."""
        message = self._native_message(content)
        completion, usage = to_chat_completion(message)
        return Answer(content=content, usage=usage, choices=completion["choices"])

    def native_stream_relay(self, *, wants_usage: bool, collect: bool = False) -> StreamTranslator:
        """Anthropic's events relayed unchanged (`AnthropicNativeRelay`); `wants_usage` is moot: the stream
        always carries usage."""
        return AnthropicNativeRelay(collect=collect)

    def _native_message(self, content: bytes) -> dict[str, Any]:
        try:
            message = json.loads(content)
        except (ValueError, RecursionError) as exc:
            raise UpstreamBadResponse("upstream answered with a body that is not JSON") from exc
        if isinstance(message, dict) and message.get("type") == "error":
            error = message.get("error")
            kind = error.get("type") if isinstance(error, dict) else None
            raise self.error_from(ERROR_STATUSES.get(str(kind), 500), content, {})
        if not isinstance(message, dict) or message.get("type") != "message" or not isinstance(
            message.get("content"), list
        ):
            raise UpstreamBadResponse("upstream answered with JSON that is not an Anthropic message")
        return message

    def count_tokens_request(self, body: dict[str, Any]) -> UpstreamRequest:
        """`POST /v1/messages/count_tokens` for `body`, a Messages request already injected
        (`MessageCountTokensParams` of anthropic-sdk-python); answered with `{"input_tokens": N}`."""
        return UpstreamRequest(
            path="/v1/messages/count_tokens",
            headers={**self.json_headers(stream=False), **self.auth_headers()},
            content=json.dumps(body, separators=(",", ":")).encode(),
        )

    def auth_headers(self) -> dict[str, str]:
        """Anthropic's `x-api-key` and the API version every call names."""
        headers = {"anthropic-version": API_VERSION}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        return headers

    def parse_answer(self, content: bytes) -> Answer:
        try:
            message = json.loads(content)
        except (ValueError, RecursionError) as exc:
            raise UpstreamBadResponse("upstream answered with a body that is not JSON") from exc
        if isinstance(message, dict) and message.get("type") == "error":
            error = message.get("error")
            kind = error.get("type") if isinstance(error, dict) else None
            raise self.error_from(ERROR_STATUSES.get(str(kind), 500), content, {})
        if not isinstance(message, dict) or message.get("type") != "message" or not isinstance(
            message.get("content"), list
        ):
            raise UpstreamBadResponse("upstream answered with JSON that is not an Anthropic message")
        completion, usage = to_chat_completion(message)
        return Answer(content=json.dumps(completion, separators=(",", ":")).encode(), usage=usage)

    def answer_text(self, content: bytes) -> str | None:
        try:
            text = json.loads(content)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError, RecursionError):
            return None
        return text if isinstance(text, str) else None

    def stream_translator(self, *, wants_usage: bool, collect: bool = False) -> StreamTranslator:
        return AnthropicStreamTranslator(wants_usage=wants_usage, collect=collect)

    def error_from(self, status: int, content: bytes, headers: Mapping[str, str]) -> UpstreamStatusError:
        error = error_body(content, status)
        message, error_type = error.message, error.type
        retry_after = headers.get("retry-after")
        relayed = self.relayed_headers(headers)
        if status == _OVERLOADED:
            return UpstreamOverloaded(
                self.scrub(f"upstream provider '{self.name}' is overloaded: {message}")[:2000],
                upstream_status=status,
                code=error_type or "overloaded_error",
                retry_after=retry_after,
                headers=relayed,
            )
        return self.status_error(
            status, message, error_type=_openai_type(error_type), code=error_type, retry_after=retry_after,
            headers=relayed,
        )

    def relayed_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """Anthropic's `anthropic-ratelimit-*` headers, and the same limits as OpenAI names them.

        `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}` become
        `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`; a reset time
        (RFC 3339) becomes OpenAI's duration until it (`"1m30s"`, `"250ms"`).
        The `anthropic-ratelimit-*` headers are relayed too (the input and
        output token limits have no OpenAI name).
        """
        relayed: dict[str, str] = {}
        for name, value in headers.items():
            if not name.startswith("anthropic-ratelimit-"):
                continue
            relayed[name] = value
            kind, _, what = name.removeprefix("anthropic-ratelimit-").rpartition("-")
            if kind in ("requests", "tokens") and what in ("limit", "remaining", "reset"):
                openai_value = _until(value) if what == "reset" else value
                if openai_value is not None:
                    relayed[f"x-ratelimit-{what}-{kind}"] = openai_value
        return relayed


def _until(moment: str) -> str | None:
    """The time from now until an RFC 3339 moment, in OpenAI's rate-limit duration format ("6m0s", "20ms")."""
    try:
        reset = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    except ValueError:
        return None
    if reset.tzinfo is None:
        return None
    return openai_duration((reset - datetime.now(UTC)).total_seconds())


def openai_duration(seconds: float) -> str:
    """Seconds as OpenAI writes them in `x-ratelimit-reset-*`: "20ms", "12s", "6m0s", "1h2m3s"."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _openai_type(anthropic_type: str | None) -> str | None:
    return {"invalid_request_error": "invalid_request_error", "rate_limit_error": "rate_limit_error",
            "request_too_large": "invalid_request_error"}.get(anthropic_type or "")


def to_messages_request(body: Mapping[str, Any], *, stream: bool) -> dict[str, Any]:
    """An OpenAI chat-completions body as an Anthropic Messages request."""
    system_parts: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in body["messages"]:
        role = message.get("role")
        if role in ("system", "developer"):
            text = content_text(message.get("content"))
            if text:
                system_parts.append(text)
            continue
        if role in ("tool", "function"):
            block = {"type": "tool_result", "tool_use_id": str(message.get("tool_call_id") or message.get("name")),
                     "content": content_text(message.get("content"))}
            _append(turns, "user", [block])
        elif role == "assistant":
            _append(turns, "assistant", _assistant_blocks(message))
        else:
            _append(turns, "user", _user_blocks(message.get("content")))

    request: dict[str, Any] = {
        "model": body["model"],
        "messages": turns,
        "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS,
    }
    if system_parts:
        request["system"] = "\n\n".join(system_parts)
    for name in ("temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            request[name] = body[name]
    stop = body.get("stop")
    if stop:
        request["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if isinstance(body.get("tools"), list):
        request["tools"] = [_tool(tool) for tool in body["tools"] if isinstance(tool, dict)]
    choice = _tool_choice(body.get("tool_choice"))
    if choice is not None:
        request["tool_choice"] = choice
    if isinstance(body.get("user"), str):
        request["metadata"] = {"user_id": body["user"]}
    if stream:
        request["stream"] = True
    return request


def _append(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Anthropic wants user and assistant turns to alternate: merge neighbours of one role."""
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _user_blocks(content: object) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            blocks.append({"type": "text", "text": part["text"]})
        elif part.get("type") == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if isinstance(url, str):
                blocks.append({"type": "image", "source": _image_source(url)})
    return blocks


def _image_source(url: str) -> dict[str, Any]:
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "url", "url": url}


def _assistant_blocks(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = content_text(message.get("content"))
    if text:
        blocks.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        if not isinstance(call, dict):
            continue
        function: dict[str, Any] = call["function"] if isinstance(call.get("function"), dict) else {}
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except (ValueError, TypeError, RecursionError):
            arguments = {}
        blocks.append({"type": "tool_use", "id": call.get("id"), "name": function.get("name"),
                       "input": arguments if isinstance(arguments, dict) else {"value": arguments}})
    return blocks


def _tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool.get("function"), dict) else tool
    assert isinstance(function, Mapping)
    converted: dict[str, Any] = {
        "name": function.get("name"),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        converted["description"] = function["description"]
    return converted


def _tool_choice(choice: object) -> dict[str, Any] | None:
    if choice == "auto":
        return {"type": "auto"}
    if choice == "none":
        return {"type": "none"}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"type": "tool", "name": choice["function"].get("name")}
    return None


def anthropic_usage(data: object) -> Usage:
    """Token usage from Anthropic's `usage` object (`Usage` in anthropic-sdk-python) in OpenAI's terms.

    Prompt tokens include the cache reads and writes, which are also counted
    apart; anything malformed becomes None (never an error).
    """
    if not isinstance(data, dict):
        return Usage()

    def count(key: str) -> int | None:
        value = data.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

    fresh, output = count("input_tokens"), count("output_tokens")
    read, write = count("cache_read_input_tokens") or 0, count("cache_creation_input_tokens") or 0
    return Usage(
        prompt_tokens=fresh + read + write if fresh is not None else None,
        completion_tokens=output,
        cache_read_tokens=read,
        cache_write_tokens=write,
    )


def _openai_usage(usage: Usage) -> dict[str, Any] | None:
    if usage.prompt_tokens is None or usage.completion_tokens is None:
        return None
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
    }


def to_chat_completion(message: Mapping[str, Any]) -> tuple[dict[str, Any], Usage]:
    """An Anthropic `Message` as an OpenAI `chat.completion`, with its usage.

    Each content block goes where `normalise.BLOCKS` says: text → `content`,
    thinking → `reasoning_content`, tool_use → `tool_calls` (arguments `"{}"`
    for a tool without input); `stop_reason` → `finish_reason` and, for a
    refusal, `refusal` (`normalise`).
    """
    texts: list[str] = []
    reasoning: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in message["content"]:
        if not isinstance(block, dict):
            continue
        role = block_role(block.get("type"))
        if role == CONTENT and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif role == REASONING and isinstance(block.get("thinking"), str):
            reasoning.append(block["thinking"])
        elif role == TOOL_CALL:
            arguments = block.get("input")
            tool_calls.append({"id": block.get("id"), "type": "function", "function": {
                "name": block.get("name"), "arguments": json.dumps(arguments if isinstance(arguments, dict) else {})}})
    usage = anthropic_usage(message.get("usage"))
    stop_reason = message.get("stop_reason")
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not tool_calls else None,
        "refusal": refusal_text(stop_reason, message.get("stop_details")),
    }
    if reasoning:
        reply["reasoning_content"] = "".join(reasoning)
    if tool_calls:
        reply["tool_calls"] = tool_calls
    completion = {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model"),
        "choices": [{"index": 0, "message": reply, "finish_reason": finish_reason(stop_reason)}],
        "usage": _openai_usage(usage),
    }
    return completion, usage


class AnthropicStreamTranslator(StreamTranslator):
    """Anthropic's `RawMessageStreamEvent`s as `chat.completion.chunk` events, one at a time.

    Blocks and deltas go where `normalise` says; a tool call whose input
    streamed nothing (a tool without parameters) gets arguments `"{}"` when
    its block stops, as the plain answer has. Event types Anthropic may add
    later are skipped, as its versioning policy asks of clients.
    """

    def __init__(self, *, wants_usage: bool, collect: bool = False) -> None:
        super().__init__(collect=collect)
        self._wants_usage = wants_usage
        self._id = ""
        self._model = ""
        self._created = int(time.time())
        self._input: Mapping[str, Any] = {}
        self._output_tokens: int | None = None
        # Anthropic content block index → OpenAI tool call index.
        self._tools: dict[int, int] = {}
        # Tool calls (OpenAI index) whose arguments have not streamed a character yet.
        self._no_arguments: set[int] = set()

    def _event(self, event: bytes, terminator: bytes) -> bytes:
        payload = data_of(event)
        if payload is None:
            return b""
        try:
            data = json.loads(payload)
        except (ValueError, RecursionError):
            return b""
        if not isinstance(data, dict):
            return b""
        kind = data.get("type")
        if kind == "message_start":
            message = data.get("message") or {}
            self._id, self._model = str(message.get("id", "")), str(message.get("model", ""))
            self._input = message.get("usage") or {}
            self.usage = anthropic_usage(self._input)
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "content_block_delta":
            return self._delta(data)
        if kind == "content_block_stop":
            index = self._tools.get(_int(data.get("index")))
            if index is not None and index in self._no_arguments:
                self._no_arguments.discard(index)
                return self._chunk({"tool_calls": [{"index": index, "function": {"arguments": "{}"}}]})
            return b""
        if kind == "message_delta":
            usage = data.get("usage") or {}
            if isinstance(usage.get("output_tokens"), int):
                self._output_tokens = usage["output_tokens"]
                self.usage = anthropic_usage({**self._input, **usage})
            delta = data.get("delta") or {}
            reason = delta.get("stop_reason")
            refusal = refusal_text(reason, delta.get("stop_details"))
            closing = self._chunk({"refusal": refusal}) if refusal is not None else b""
            return closing + self._chunk({}, finish=finish_reason(reason))
        if kind == "message_stop":
            self.done = True
            closing = b""
            if self._wants_usage:
                closing = self._frame({"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                                       "model": self._model, "choices": [], "usage": _openai_usage(self.usage)})
            return closing + b"data: [DONE]\n\n"
        if kind == "error":
            error = data.get("error") or {}
            self.error_kind = "stream_error"
            self.done = True  # the stream ends here, with this error
            return sse_error_event(str(error.get("message") or "upstream stream error"),
                                   str(error.get("type") or "stream_error"))
        if kind == "ping":
            return b": ping\n\n"
        return b""

    def _block_start(self, data: Mapping[str, Any]) -> bytes:
        block = data.get("content_block") or {}
        role = block_role(block.get("type"))
        if role == TOOL_CALL:
            index = self._tools.setdefault(_int(data.get("index")), len(self._tools))
            given = block.get("input")
            arguments = json.dumps(given) if isinstance(given, dict) and given else ""
            if not arguments:
                self._no_arguments.add(index)
            self.started = True
            return self._chunk({"tool_calls": [{"index": index, "id": block.get("id"), "type": "function",
                                                "function": {"name": block.get("name"), "arguments": arguments}}]})
        if role == CONTENT and isinstance(block.get("text"), str) and block["text"]:
            return self._content(block["text"])
        if role == REASONING and isinstance(block.get("thinking"), str) and block["thinking"]:
            self.started = True
            return self._chunk({"reasoning_content": block["thinking"]})
        return b""

    def _delta(self, data: Mapping[str, Any]) -> bytes:
        delta = data.get("delta") or {}
        role = delta_role(delta.get("type"))
        if role == CONTENT and isinstance(delta.get("text"), str):
            return self._content(delta["text"])
        if role == REASONING and isinstance(delta.get("thinking"), str):
            self.started = True
            return self._chunk({"reasoning_content": delta["thinking"]})
        if role == TOOL_CALL:
            index = self._tools.get(_int(data.get("index")))
            partial = delta.get("partial_json")
            if index is not None and isinstance(partial, str) and partial:
                self._no_arguments.discard(index)
                return self._chunk({"tool_calls": [{"index": index, "function": {"arguments": partial}}]})
        return b""

    def _content(self, text: str) -> bytes:
        self.started = True
        return self._chunk({"content": text})

    def _chunk(self, delta: dict[str, Any], *, finish: str | None = None) -> bytes:
        chunk = {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        self._collect(chunk)
        return self._frame(chunk)

    @staticmethod
    def _frame(payload: Mapping[str, Any]) -> bytes:
        return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class AnthropicNativeRelay(StreamTranslator):
    """Anthropic's event stream for a Messages client: every event relayed unchanged as it arrives.

    Reads the usage from `message_start` and `message_delta` (cumulative),
    `done` at `message_stop`, `error_kind` at an `error` event (which ends the
    stream); `started` at the first content block. A stream cut before
    `message_stop` ends with Anthropic's own `error` event. With `collect`,
    the events are also read as chat-completion chunks
    (`AnthropicStreamTranslator`) to reassemble the answer for the
    evaluators; without it, content deltas (the bulk) are not parsed.
    """

    def __init__(self, *, collect: bool = False) -> None:
        super().__init__()
        self._reader = AnthropicStreamTranslator(wants_usage=False, collect=True) if collect else None
        self._input: Mapping[str, Any] = {}

    def _event(self, event: bytes, terminator: bytes) -> bytes:
        if self._reader is not None:
            self._reader.feed(event)
        if event.startswith((b"event: content_block", b"event:content_block")):
            self.started = True
            return event
        payload = data_of(event)
        if payload is None:
            return event
        try:
            data = json.loads(payload)
        except (ValueError, RecursionError):
            return event
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "message_start":
            message = data.get("message")
            usage = message.get("usage") if isinstance(message, dict) else None
            self._input = usage if isinstance(usage, dict) else {}
            self.usage = anthropic_usage(self._input)
        elif kind == "message_delta":
            usage = data.get("usage")
            if isinstance(usage, dict):
                self.usage = anthropic_usage({**self._input, **usage})
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            self.error_kind = "stream_error"
            self.done = True  # the stream ends here, with this error
        elif kind in ("content_block_start", "content_block_delta"):
            self.started = True
        return event

    def finish(self) -> bytes:
        tail = super().finish()
        if self._reader is not None:
            self._reader.finish()
            self.choices = self._reader.choices
        return tail

    def error_event(self, message: str, code: str) -> bytes:
        """Anthropic's `error` event: `{"type": "error", "error": {"type", "message"}}`."""
        kind = "timeout_error" if code == "timeout" else "overloaded_error" if code == "shutdown" else "api_error"
        return error_event({"type": kind, "message": message})
