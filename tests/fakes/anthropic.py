"""A strict fake Anthropic Messages API: `POST /v1/messages` (plain and SSE) and `/v1/messages/count_tokens`.

Requests are checked the way the real API checks them, and refused with its
error shape `{"type": "error", "error": {"type", "message"}, "request_id"}`:

- headers: the key required, as `x-api-key` or `Authorization: Bearer` (the
  anthropic SDK 2.x sends the latter), and equal to the fake's key (401
  `authentication_error`); `anthropic-version` required (400);
- body: the fields of `MessageCreateParams` / `MessageCountTokensParams`
  (anthropic-sdk-python `src/anthropic/types/message_create_params.py`,
  `message_count_tokens_params.py`; with `diagnostics` and `speed` of the
  2.x SDK, which drops the sampling fields the 2023-06-01 API version takes)
  and no others, at every depth (`<path>:
  Extra inputs are not permitted`); `model`, `messages` and (to create)
  `max_tokens` required (`<path>: Field required`); block, tool, tool_choice,
  thinking, metadata, output_config and cache_control shapes from their
  `*_param.py` types;
- the rules the API states in its 400s: at least one message, the first one
  `user`; every message's content non-empty except an optional final
  assistant one; text blocks non-empty and not only whitespace; a final
  assistant turn not ending in whitespace; every `tool_use` answered by a
  `tool_result` in the next message and every `tool_result` naming a
  `tool_use` of the message before; `tool_choice` only with `tools`; tool
  names matching `^[a-zA-Z0-9_-]{1,128}$`; a thinking budget of at least 1024
  and below `max_tokens`; with thinking on, no `temperature` but 1, no
  `top_k`, a `top_p` of at least 0.95 and no forced tool (`tool_choice` any
  or tool), as Anthropic's extended-thinking guide states; `temperature`
  within [0, 1]. Consecutive turns of one role are accepted: the API
  documents that it merges them.

Answers use the shapes of `Message` and `RawMessageStreamEvent` (`message.py`,
`raw_*_event.py`, `text_delta.py`, `input_json_delta.py`, `thinking_delta.py`,
`signature_delta.py`): text "claude answer to [<system>]", a `tool_use` for each
offered tool (one only with `disable_parallel_tool_use`) whose input is a sample of
its `input_schema`, a `thinking` block first when thinking is enabled, and JSON
matching `output_config.format` when one is asked for.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.schema import (
    Check,
    Invalid,
    anything,
    array,
    boolean,
    either,
    integer,
    literal,
    mapping,
    nullable,
    number,
    obj,
    string,
    tagged,
)
from tests.fakes.server import MAX_BODY, Received, ServerThread, sample

API_KEY = "sk-ant-SENTINEL-anthropic-key-000000"
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
# Every server tool type of `ToolUnionParam` (tool_union_param.py); the fake checks only their tag.
SERVER_TOOLS = (
    "bash_20250124", "code_execution_20250522", "code_execution_20250825", "code_execution_20260120",
    "code_execution_20260521", "memory_20250818", "text_editor_20250124", "text_editor_20250429",
    "text_editor_20250728", "web_search_20250305", "web_fetch_20250910", "web_search_20260209",
    "web_fetch_20260209", "web_fetch_20260309", "web_search_20260318", "web_fetch_20260318",
    "tool_search_tool_bm25_20251119", "tool_search_tool_regex_20251119",
)
# Server-side result blocks a client may send back; checked by tag only.
SERVER_BLOCKS = (
    "server_tool_use", "web_search_tool_result", "web_fetch_tool_result", "code_execution_tool_result",
    "bash_code_execution_tool_result", "text_editor_code_execution_tool_result", "tool_search_tool_result",
    "container_upload", "search_result",
)
ERROR_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
                "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
                "rate_limit_error": 429, "api_error": 500, "timeout_error": 504, "overloaded_error": 529}

CACHE_CONTROL = obj({"type": literal("ephemeral")}, {"ttl": literal("5m", "1h")})
CACHE = {"cache_control": nullable(CACHE_CONTROL)}
TEXT = obj({"type": literal("text"), "text": string()}, {**CACHE, "citations": nullable(array(anything))})
IMAGE = obj({"type": literal("image"), "source": tagged({
    "base64": obj({"type": literal("base64"), "data": string(),
                   "media_type": literal("image/jpeg", "image/png", "image/gif", "image/webp")}),
    "url": obj({"type": literal("url"), "url": string()}),
})}, CACHE)
DOCUMENT = obj({"type": literal("document"), "source": tagged({
    "base64": obj({"type": literal("base64"), "data": string(), "media_type": literal("application/pdf")}),
    "text": obj({"type": literal("text"), "data": string(), "media_type": literal("text/plain")}),
    "content": obj({"type": literal("content"), "content": either(string(), array(anything))}),
    "url": obj({"type": literal("url"), "url": string()}),
})}, {**CACHE, "citations": nullable(obj(None, {"enabled": boolean})), "context": nullable(string()),
      "title": nullable(string())})
THINKING = obj({"type": literal("thinking"), "thinking": string(), "signature": string()})
REDACTED_THINKING = obj({"type": literal("redacted_thinking"), "data": string()})
TOOL_USE = obj({"type": literal("tool_use"), "id": string(), "name": string(), "input": mapping()},
               {**CACHE, "caller": anything})
TOOL_RESULT = obj({"type": literal("tool_result"), "tool_use_id": string()}, {
    **CACHE, "is_error": boolean,
    "content": either(string(), array(tagged({"text": TEXT, "image": IMAGE, "document": DOCUMENT},
                                             loose=("search_result", "tool_reference")))),
})
MID_CONVERSATION_SYSTEM = obj({"type": literal("mid_conv_system"), "content": array(TEXT)}, CACHE)
BLOCK = tagged({"text": TEXT, "image": IMAGE, "document": DOCUMENT, "thinking": THINKING,
                "redacted_thinking": REDACTED_THINKING, "tool_use": TOOL_USE, "tool_result": TOOL_RESULT,
                "mid_conv_system": MID_CONVERSATION_SYSTEM}, loose=SERVER_BLOCKS)
MESSAGE = obj({"role": literal("user", "assistant", "system"), "content": either(string(), array(BLOCK))})
CLIENT_TOOL = obj({"name": string(pattern=lambda name: TOOL_NAME.match(name) is not None,
                                  describe="matching '^[a-zA-Z0-9_-]{1,128}$'"),
                   "input_schema": mapping()}, {
    **CACHE, "type": nullable(literal("custom")), "description": string(), "strict": boolean,
    "allowed_callers": array(string()), "defer_loading": boolean, "eager_input_streaming": nullable(boolean),
    "input_examples": array(mapping()),
})
TOOL = tagged({"custom": CLIENT_TOOL}, default="custom", loose=SERVER_TOOLS)
PARALLEL = {"disable_parallel_tool_use": boolean}
TOOL_CHOICE = tagged({
    "auto": obj({"type": literal("auto")}, PARALLEL),
    "any": obj({"type": literal("any")}, PARALLEL),
    "tool": obj({"type": literal("tool"), "name": string()}, PARALLEL),
    "none": obj({"type": literal("none")}),
})
DISPLAY = {"display": nullable(literal("summarized", "omitted"))}
THINKING_CONFIG = tagged({
    "enabled": obj({"type": literal("enabled"), "budget_tokens": integer()}, DISPLAY),
    "disabled": obj({"type": literal("disabled")}),
    "adaptive": obj({"type": literal("adaptive")}, DISPLAY),
})
OUTPUT_CONFIG = obj(None, {
    "effort": nullable(literal("low", "medium", "high", "xhigh", "max")),
    "format": nullable(obj({"type": literal("json_schema"), "schema": mapping()})),
})
SYSTEM = either(string(), array(TEXT))
# Fields both endpoints take (MessageCountTokensParams is the subset without sampling and metadata).
COMMON = {"cache_control": nullable(CACHE_CONTROL), "output_config": OUTPUT_CONFIG, "system": SYSTEM,
          "thinking": THINKING_CONFIG, "tool_choice": TOOL_CHOICE, "tools": array(TOOL)}
CREATE = obj({"model": string(), "messages": array(MESSAGE), "max_tokens": integer(minimum=0)}, {
    **COMMON, "container": nullable(string()), "inference_geo": nullable(string()),
    "metadata": obj(None, {"user_id": nullable(string())}), "speed": nullable(literal("standard", "fast")),
    "diagnostics": nullable(obj(None, {"previous_message_id": nullable(string())})),
    "service_tier": literal("auto", "standard_only"),
    "stop_sequences": array(string()), "temperature": number(minimum=0, maximum=1), "top_k": integer(minimum=0),
    "top_p": number(minimum=0, maximum=1), "stream": boolean,
})
COUNT_TOKENS = obj({"model": string(), "messages": array(MESSAGE)}, COMMON)


class Refused(Exception):
    """A request the real API would refuse: HTTP status, Anthropic error type, message."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def validate(body: Any, shape: Check = CREATE) -> None:
    """Raise `Refused` for what the real Messages API would refuse; return for a valid body."""
    try:
        shape(body, ())
    except Invalid as error:
        raise Refused(400, "invalid_request_error", f"{error.dotted()}: {error.detail}") from None
    _check_messages(body["messages"])
    _check_system(body.get("system"))
    if "tool_choice" in body and not body.get("tools"):
        raise Refused(400, "invalid_request_error", "tool_choice: tool_choice may only be specified while "
                                                    "providing tools")
    thinking = body.get("thinking") or {}
    if thinking.get("type") == "enabled":
        budget = thinking["budget_tokens"]
        if budget < 1024:
            raise Refused(400, "invalid_request_error", "thinking.enabled.budget_tokens: Input should be "
                                                        "greater than or equal to 1024")
        if "max_tokens" in body and budget >= body["max_tokens"]:
            raise Refused(400, "invalid_request_error", "`max_tokens` must be greater than "
                                                        "`thinking.budget_tokens`")
    if thinking.get("type") in ("enabled", "adaptive"):
        _check_thinking_compatible(body)


def _check_thinking_compatible(body: dict[str, Any]) -> None:
    if body.get("temperature", 1) != 1:
        raise Refused(400, "invalid_request_error", "`temperature` may only be set to 1 when thinking is enabled.")
    if "top_k" in body:
        raise Refused(400, "invalid_request_error", "`top_k` is not supported when thinking is enabled.")
    if body.get("top_p", 1) < 0.95:
        raise Refused(400, "invalid_request_error", "`top_p` must be greater than or equal to 0.95 when thinking "
                                                    "is enabled.")
    if (body.get("tool_choice") or {}).get("type") in ("any", "tool"):
        raise Refused(400, "invalid_request_error", "Thinking may not be enabled when tool_choice forces tool use.")


def _blocks(content: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def _check_system(system: Any) -> None:
    for block in [] if system is None or isinstance(system, str) else system:
        _check_text(block["text"], "system")


def _check_text(text: str, where: str) -> None:
    if not text:
        raise Refused(400, "invalid_request_error", f"{where}: text content blocks must be non-empty")
    if not text.strip():
        raise Refused(400, "invalid_request_error", f"{where}: text content blocks must contain non-whitespace text")


def _check_messages(messages: list[dict[str, Any]]) -> None:
    if not messages:
        raise Refused(400, "invalid_request_error", "messages: at least one message is required")
    if messages[0]["role"] != "user":
        raise Refused(400, "invalid_request_error", 'messages: first message must use the "user" role')
    last = len(messages) - 1
    for index, message in enumerate(messages):
        blocks = _blocks(message["content"])
        final_assistant = index == last and message["role"] == "assistant"
        if message["role"] == "system" and any(block.get("type") != "mid_conv_system" for block in blocks):
            raise Refused(400, "invalid_request_error", f"messages.{index}.role: a system message may only hold "
                                                        "mid_conv_system blocks; use the top-level `system` field")
        if not blocks or (isinstance(message["content"], str) and not message["content"] and not final_assistant):
            if not final_assistant:
                raise Refused(400, "invalid_request_error", f"messages.{index}: all messages must have non-empty "
                                                            "content except for the optional final assistant message")
            continue
        for block in blocks:
            if block.get("type") == "text":
                _check_text(block["text"], "messages")
        if final_assistant and blocks[-1].get("type") == "text" and blocks[-1]["text"] != blocks[-1]["text"].rstrip():
            raise Refused(400, "invalid_request_error", "messages: final assistant content cannot end with "
                                                        "trailing whitespace")
        _check_tool_pairs(messages, index, blocks)


def _check_tool_pairs(messages: list[dict[str, Any]], index: int, blocks: list[dict[str, Any]]) -> None:
    uses = [block["id"] for block in blocks if block.get("type") == "tool_use"]
    if uses and messages[index]["role"] == "assistant":
        following = _blocks(messages[index + 1]["content"]) if index + 1 < len(messages) else []
        answered = {block.get("tool_use_id") for block in following if block.get("type") == "tool_result"}
        missing = [use for use in uses if use not in answered]
        if missing and index + 1 < len(messages):
            raise Refused(400, "invalid_request_error", f"messages.{index}: `tool_use` ids were found without "
                          f"`tool_result` blocks immediately after: {', '.join(missing)}. Each `tool_use` block "
                          "must have a corresponding `tool_result` block in the next message.")
    results = [(position, block["tool_use_id"]) for position, block in enumerate(blocks)
               if block.get("type") == "tool_result"]
    if results:
        before = _blocks(messages[index - 1]["content"]) if index > 0 else []
        offered = {block.get("id") for block in before if block.get("type") == "tool_use"}
        for position, tool_use_id in results:
            if messages[index]["role"] != "user" or tool_use_id not in offered:
                raise Refused(400, "invalid_request_error", f"messages.{index}.content.{position}: unexpected "
                              f"`tool_use_id` found in `tool_result` blocks: {tool_use_id}. Each `tool_result` "
                              "block must have a corresponding `tool_use` block in the previous message.")


def count_tokens(body: dict[str, Any]) -> int:
    """The fake's token count: whitespace-separated words of every text (system, messages, tool results) + tools."""
    words = 0

    def count(text: str) -> None:
        nonlocal words
        words += len(text.split())

    system = body.get("system")
    for block in _blocks(system) if system is not None else []:
        count(block["text"])
    for message in body["messages"]:
        for block in _blocks(message["content"]):
            if block.get("type") == "text":
                count(block["text"])
            elif block.get("type") == "tool_result":
                content = block.get("content")
                for part in _blocks(content) if content is not None else []:
                    if part.get("type") == "text":
                        count(part["text"])
    return words + 10 * len(body.get("tools") or [])


def system_text(body: dict[str, Any]) -> str:
    """The system prompt the fake saw, its blocks joined with a blank line."""
    system = body.get("system")
    if system is None:
        return ""
    return system if isinstance(system, str) else "\n\n".join(block["text"] for block in system)


@dataclass
class AnthropicBehaviour:
    """What the next calls get; tests set fields before calling."""

    status: int = 200
    error_type: str = "api_error"
    retry_after: str | None = None
    # Streams: send an `error` event after this many text deltas.
    error_after: int | None = None
    chunk_delay: float = 0.0
    # Answer with this stop_reason instead of the natural one (e.g. one the gateway does not know).
    stop_reason: str | None = None
    # Answer with exactly this text (None: "claude answer to [<system>]").
    text: str | None = None
    # Headers added to error answers (anthropic-ratelimit-*, retry-after).
    error_headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeAnthropic:
    """The fake Anthropic API on 127.0.0.1; `received` holds every call, valid or not, in order."""

    behaviour: AnthropicBehaviour = field(default_factory=AnthropicBehaviour)
    received: list[Received] = field(default_factory=list)
    # The answers the fake refused, as (status, error body), in order.
    refused: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    api_key: str = API_KEY

    def __post_init__(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        self._server = ServerThread(app)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}"

    def start(self) -> FakeAnthropic:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def reset(self) -> None:
        self.behaviour = AnthropicBehaviour()
        self.received.clear()
        self.refused.clear()

    def _error(self, status: int, error_type: str, message: str,
               headers: dict[str, str] | None = None) -> web.Response:
        body = {"type": "error", "error": {"type": error_type, "message": message},
                "request_id": f"req_fake{len(self.received)}"}
        self.refused.append((status, body))
        return web.json_response(body, status=status, headers=headers or {})

    async def _accept(self, request: web.Request, shape: Check) -> dict[str, Any] | web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        self.received.append(Received(request.path, dict(request.headers), body, time.monotonic()))
        bearer = request.headers.get("authorization", "")
        key = request.headers.get("x-api-key") or (bearer[7:] if bearer.lower().startswith("bearer ") else None)
        if key is None:
            return self._error(401, "authentication_error", "x-api-key header is required")
        if key != self.api_key:
            return self._error(401, "authentication_error", "invalid x-api-key")
        if "anthropic-version" not in request.headers:
            return self._error(400, "invalid_request_error", "anthropic-version: header is required")
        if not isinstance(body, dict):
            return self._error(400, "invalid_request_error", "The request body is not valid JSON.")
        try:
            validate(body, shape)
        except Refused as refused:
            return self._error(refused.status, refused.error_type, refused.message)
        return body

    async def _count_tokens(self, request: web.Request) -> web.StreamResponse:
        body = await self._accept(request, COUNT_TOKENS)
        if isinstance(body, web.Response):
            return body
        return web.json_response({"input_tokens": count_tokens(body)})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await self._accept(request, CREATE)
        if isinstance(body, web.Response):
            return body
        b = self.behaviour
        if b.status >= 400:
            headers = {**({"retry-after": b.retry_after} if b.retry_after else {}), **b.error_headers}
            return self._error(b.status, b.error_type, f"fake anthropic {b.status}", headers)
        content = answer_content(body, b.text)
        stop_reason = b.stop_reason or ("tool_use" if any(c["type"] == "tool_use" for c in content) else "end_turn")
        if body.get("stream"):
            return await self._stream(request, body, content, stop_reason)
        return web.json_response({
            "id": "msg_fake", "type": "message", "role": "assistant", "model": body["model"], "content": content,
            "stop_reason": stop_reason, "stop_sequence": None, "usage": usage(),
        })

    async def _stream(self, request: web.Request, body: dict[str, Any], content: list[dict[str, Any]],
                      stop_reason: str) -> web.StreamResponse:
        b = self.behaviour
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(kind: str, data: dict[str, Any]) -> None:
            await response.write(f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode())
            if b.chunk_delay:
                await asyncio.sleep(b.chunk_delay)

        await send("message_start", {"message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": body["model"], "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {**usage(), "output_tokens": 1}}})
        text_deltas = 0
        for index, block in enumerate(content):
            if block["type"] == "text":
                await send("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}})
                if index == 0:
                    await send("ping", {})
                for ordinal, piece in enumerate(block["text"].split(" ")):
                    if b.error_after is not None and text_deltas >= b.error_after:
                        await send("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})
                        return response
                    await send("content_block_delta", {"index": index, "delta": {
                        "type": "text_delta", "text": piece if ordinal == 0 else " " + piece}})
                    text_deltas += 1
            elif block["type"] == "thinking":
                await send("content_block_start", {"index": index, "content_block": {
                    "type": "thinking", "thinking": "", "signature": ""}})
                await send("content_block_delta", {"index": index, "delta": {
                    "type": "thinking_delta", "thinking": block["thinking"]}})
                await send("content_block_delta", {"index": index, "delta": {
                    "type": "signature_delta", "signature": block["signature"]}})
            else:
                await send("content_block_start", {"index": index, "content_block": {**block, "input": {}}})
                # The real API streams an input of {} as one empty partial_json.
                pieces = _json_pieces(block["input"])
                for piece in pieces:
                    await send("content_block_delta", {"index": index, "delta": {
                        "type": "input_json_delta", "partial_json": piece}})
            await send("content_block_stop", {"index": index})
        await send("message_delta", {"delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                     "usage": {"output_tokens": usage()["output_tokens"]}})
        await send("message_stop", {})
        await response.write_eof()
        return response


def _json_pieces(value: dict[str, Any]) -> list[str]:
    if not value:
        return [""]
    text = json.dumps(value)
    middle = text.index(":") + 1 if ":" in text else len(text) // 2
    return [text[:middle], text[middle:]]


def usage() -> dict[str, Any]:
    """The usage every fake answer reports (`Usage` in usage.py)."""
    return {"input_tokens": 20, "output_tokens": 9, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 2}


def answer_content(body: dict[str, Any], text: str | None = None) -> list[dict[str, Any]]:
    """The content blocks the fake answers `body` with (see the module docstring)."""
    content: list[dict[str, Any]] = []
    thinking = body.get("thinking") or {}
    if thinking.get("type") in ("enabled", "adaptive"):
        content.append({"type": "thinking", "thinking": "Let me think.", "signature": "sig_fake"})
    output_format = (body.get("output_config") or {}).get("format")
    choice = body.get("tool_choice") or {"type": "auto"}
    tools = [tool for tool in body.get("tools") or [] if tool.get("type") in (None, "custom")]
    if choice["type"] == "tool":
        tools = [tool for tool in tools if tool["name"] == choice["name"]]
    if choice["type"] == "none":
        tools = []
    if choice.get("disable_parallel_tool_use"):
        tools = tools[:1]
    if output_format:
        content.append({"type": "text", "text": json.dumps(sample(output_format["schema"]))})
    elif choice["type"] not in ("any", "tool") or not tools:
        content.append({"type": "text", "text": text if text is not None else
                        f"claude answer to [{system_text(body)}]"})
    for ordinal, tool in enumerate(tools, start=1):
        content.append({"type": "tool_use", "id": f"toolu_fake{ordinal}", "name": tool["name"],
                        "input": sample(tool["input_schema"]) or {}})
    return content
