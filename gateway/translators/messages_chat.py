"""Pure: Anthropic Messages ⇄ OpenAI chat completions, for a Messages call served by a chat-completions version.

Request (`to_chat_request`, Messages `MessageCreateParams` → chat
`CompletionCreateParams`, from anthropic-sdk-python `types/` and
openai-python `types/chat/`): `system` (string or text blocks) → one system
message; text, image (base64 → data URL, or URL) and PDF/text document blocks
→ content parts; `tool_use` → `tool_calls`; `tool_result` → `tool` messages
(placed first, as chat wants them right after the calls they answer);
`thinking` blocks of earlier turns are left out (Anthropic itself does not
feed earlier turns' thinking back to the model); tools → function tools;
`tool_choice` auto/any/tool/none → auto/required/function/none, with
`disable_parallel_tool_use` → `parallel_tool_calls: false`; `stop_sequences`
→ `stop` (at most 4, chat's limit); `metadata.user_id` → `user`;
`temperature`, `top_p`, `max_tokens` as they are; `output_config.format` →
`response_format` json_schema; `output_config.effort` → `reasoning_effort`
(the same levels), else `thinking: enabled` → `reasoning_effort` by its
budget (below medium's budget low, below high's medium, else high: the
budgets `gateway.fields.THINKING_BUDGETS` gives a chat call's efforts on
Anthropic, so the two translations agree; `adaptive`
and `disabled` set none: the model's default); `service_tier` auto → auto,
standard_only → default. `cache_control` anywhere is a caching hint with no
chat counterpart (OpenAI caches prompts by itself) and is left out, as are
`citations` on text blocks. Everything else is refused with a 400 naming
the field: `top_k`, a final assistant message (prefill), server tools and
their blocks, `mid_conv_system` messages, images inside tool results,
`container`, `inference_geo`, `speed: fast`, `diagnostics`, unknown fields.

Answer (`to_message`, `chat.completion` → `Message`): `reasoning_content` →
a `thinking` block (signature ""), `content` → a `text` block, `tool_calls`
→ `tool_use` blocks (arguments parsed as the input object), a `refusal` →
`stop_details.explanation`; `finish_reason` → `stop_reason` by
`STOP_REASONS` (an unknown one relayed as it is, never `end_turn`); usage →
`input_tokens` (prompt tokens less the cached ones), `output_tokens`,
`cache_read_input_tokens`.

Stream (`MessagesEventStream`): the relay's `chat.completion.chunk` events →
`message_start`, `content_block_start` / `_delta` (`text_delta`,
`thinking_delta`, `input_json_delta`) / `_stop`, `message_delta` with the
stop reason and usage, `message_stop`; an error event, or a stream that ends
before `[DONE]`, → an `error` event, as Anthropic ends a failed stream.

`chat_view` reads a native Messages body as chat completions for the
evaluators and the judge: the same mapping, tolerant (what has no chat form
is left out, nothing is refused).

Why one module over 400 lines: one translator per pair (Messages ⇄ chat
completions), request, answer and stream together, with its tests beside it
(`tests/test_translation_messages_chat.py`), as the house keeps every pair.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii
from typing import Any

from gateway.errors import InvalidRequest, UpstreamBadResponse
from gateway.fields import THINKING_BUDGETS
from gateway.inbound import content_text
from gateway.messages import error_event
from gateway.providers.base import EVENT_END, data_of

log = logging.getLogger("gateway.translators")

# finish_reason (openai-python `chat_completion.py`) → stop_reason (anthropic-sdk-python `stop_reason.py`).
STOP_REASONS: Mapping[str, str] = {
    # Chat does not say whether a stop sequence ended the answer (it is cut from the text): end_turn.
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# Chat's limit on `stop` (completion_create_params.py: "Up to 4 sequences").
MAX_STOP_SEQUENCES = 4
# thinking.budget_tokens below each bound → reasoning_effort.
_EFFORT_BY_BUDGET = ((THINKING_BUDGETS["medium"], "low"), (THINKING_BUDGETS["high"], "medium"))
_SERVICE_TIERS = {"auto": "auto", "standard_only": "default"}
# Fields carried as they are or mapped below; `cache_control` is a hint left out (see the module docstring).
_KNOWN = frozenset({
    "model", "messages", "max_tokens", "system", "stop_sequences", "temperature", "top_p", "top_k", "metadata",
    "stream", "tools", "tool_choice", "thinking", "output_config", "service_tier", "cache_control", "speed",
})
_TOOL_FIELDS = frozenset({"name", "description", "input_schema", "strict", "type", "cache_control"})

Body = dict[str, Any]


def stop_reason(finish_reason: object) -> str | None:
    """Anthropic's stop_reason for a chat finish_reason; an unknown one as it is (never "end_turn"), None as None."""
    if not isinstance(finish_reason, str):
        return None
    mapped = STOP_REASONS.get(finish_reason)
    if mapped is None:
        log.warning("unknown finish_reason %r relayed as the stop_reason", finish_reason[:64])
        return finish_reason[:64]
    return mapped


# -- request -------------------------------------------------------------------------------------------


def to_chat_request(body: Mapping[str, Any]) -> Body:
    """A Messages request (already checked by `gateway.messages`) as a chat-completions request.

    Raises InvalidRequest naming the first field that has no chat
    counterpart (see the module docstring). `body` is not modified.
    """
    for name, value in body.items():
        if name not in _KNOWN and value is not None:
            raise InvalidRequest(f"'{name}' cannot be carried to this deployment's version, which runs on an "
                                 "OpenAI-compatible provider", param=name)
    if body.get("top_k") is not None:
        raise _no_counterpart("top_k", "chat completions have no top-k sampling")
    if body.get("speed") is not None and body.get("speed") != "standard":
        raise _no_counterpart("speed", "chat completions have no fast mode")
    if body.get("max_tokens") == 0:
        raise _no_counterpart("max_tokens", "chat completions cannot only warm a prompt cache (max_tokens 0)")
    messages = body["messages"]
    if messages and messages[-1].get("role") == "assistant":
        raise _no_counterpart(f"messages[{len(messages) - 1}]",
                              "a final assistant message (prefill) cannot be continued by chat completions")

    chat: Body = {"model": body["model"]}
    system = _system_text(body.get("system"))
    turns: list[Body] = [{"role": "system", "content": system}] if system else []
    turns.extend(_turns(messages, strict=True))
    chat["messages"] = turns
    if body.get("max_tokens") is not None:
        chat["max_tokens"] = body["max_tokens"]
    for name in ("temperature", "top_p", "stream"):
        if body.get(name) is not None:
            chat[name] = body[name]
    stops = body.get("stop_sequences")
    if stops:
        if len(stops) > MAX_STOP_SEQUENCES:
            raise InvalidRequest(f"'stop_sequences' has {len(stops)} sequences; a version on an OpenAI-compatible "
                                 f"provider takes at most {MAX_STOP_SEQUENCES}", param="stop_sequences")
        chat["stop"] = list(stops)
    metadata = body.get("metadata") or {}
    if isinstance(metadata.get("user_id"), str) and metadata["user_id"]:
        chat["user"] = metadata["user_id"]
    tools = body.get("tools")
    if tools:
        chat["tools"] = [_tool(tool, index) for index, tool in enumerate(tools)]
        choice = body.get("tool_choice")
        if choice is not None:
            chat["tool_choice"] = _tool_choice(choice)
            if choice.get("disable_parallel_tool_use") is True and choice.get("type") != "none":
                chat["parallel_tool_calls"] = False
    _reasoning(body, chat)
    tier = body.get("service_tier")
    if tier is not None:
        if not isinstance(tier, str) or tier not in _SERVICE_TIERS:
            raise InvalidRequest("'service_tier' must be auto or standard_only", param="service_tier")
        chat["service_tier"] = _SERVICE_TIERS[tier]
    return chat


def chat_view(body: Mapping[str, Any]) -> Body:
    """A native Messages request read as chat completions (`messages`, `response_format`), for the evaluators.

    Tolerant: what has no chat form is left out; never raises.
    """
    system = _system_text(body.get("system"))
    turns: list[Body] = [{"role": "system", "content": system}] if system else []
    messages = body.get("messages")
    turns.extend(_turns(messages if isinstance(messages, list) else [], strict=False))
    view: Body = {"model": body.get("model"), "messages": turns}
    output_format = (body.get("output_config") or {}).get("format") if isinstance(body.get("output_config"),
                                                                                 dict) else None
    if isinstance(output_format, dict) and isinstance(output_format.get("schema"), dict):
        view["response_format"] = _response_format(output_format["schema"])
    return view


def _no_counterpart(field: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"'{field}' cannot be carried to this deployment's version, which runs on an "
                          f"OpenAI-compatible provider: {why}", param=field)


def _system_text(system: object) -> str:
    if isinstance(system, str):
        return system
    return "\n\n".join(block["text"] for block in system if isinstance(block, dict)
                       and isinstance(block.get("text"), str)) if isinstance(system, list) else ""


def _turns(messages: list[Any], *, strict: bool) -> list[Body]:
    turns: list[Body] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        where = f"messages[{index}]"
        role, content = message.get("role"), message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            continue
        if role == "user":
            turns.extend(_user_turns(blocks, where, strict=strict))
        elif role == "assistant":
            turn = _assistant_turn(blocks, where, strict=strict)
            if turn is not None:
                turns.append(turn)
        elif strict:
            raise _no_counterpart(f"{where}.role", f"chat completions have no '{role}' turn between messages")
    return turns


def _user_turns(blocks: list[Any], where: str, *, strict: bool) -> list[Body]:
    results: list[Body] = []
    parts: list[Body] = []
    for index, block in enumerate(blocks):
        place = f"{where}.content[{index}]"
        kind = block.get("type") if isinstance(block, dict) else None
        try:
            if kind == "tool_result":
                results.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id")),
                                "content": _tool_result_text(block.get("content"), place)})
            elif kind in ("text", "image", "document"):
                parts.append(_part(block, place))
            else:
                raise _no_counterpart(f"{place}.type", f"a '{kind}' block has no chat-completions form")
        except InvalidRequest:
            if strict:
                raise
    turns = results
    if parts:
        only_text = all(part["type"] == "text" for part in parts)
        content: Any = "\n".join(part["text"] for part in parts) if only_text and len(parts) == 1 else parts
        turns.append({"role": "user", "content": content})
    return turns


def _part(block: Mapping[str, Any], place: str) -> Body:
    kind = block["type"]
    if kind == "text":
        return {"type": "text", "text": block.get("text", "")}
    source = _object(block.get("source"))
    source_type = source.get("type")
    if kind == "image":
        if source_type == "base64":
            return {"type": "image_url", "image_url": {"url": f"data:{source.get('media_type')};base64,"
                                                               f"{source.get('data')}"}}
        if source_type == "url":
            return {"type": "image_url", "image_url": {"url": source.get("url")}}
    elif source_type == "base64" and source.get("media_type") == "application/pdf":
        title = block.get("title")
        return {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{source.get('data')}",
                                         "filename": title if isinstance(title, str) and title else "document.pdf"}}
    elif source_type == "text" and isinstance(source.get("data"), str):
        return {"type": "text", "text": source["data"]}
    raise _no_counterpart(f"{place}.source.type", f"a {kind} from a '{source_type}' source has no chat-completions "
                                                  "form")


def _tool_result_text(content: object, place: str) -> str:
    """A tool result's content as the text of a `tool` message; `is_error` has no chat counterpart and the
    text says what happened."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        for index, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else None
                raise _no_counterpart(f"{place}.content[{index}].type",
                                      f"a chat tool message holds text only, not '{kind}'")
    return content_text(content)


def _assistant_turn(blocks: list[Any], where: str, *, strict: bool) -> Body | None:
    texts: list[str] = []
    calls: list[Body] = []
    for index, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            arguments = block.get("input") if isinstance(block.get("input"), dict) else {}
            calls.append({"id": str(block.get("id")), "type": "function",
                          "function": {"name": str(block.get("name")), "arguments": json.dumps(arguments)}})
        elif kind in ("thinking", "redacted_thinking"):
            continue  # the model's earlier reasoning: Anthropic does not feed it back either
        elif strict:
            raise _no_counterpart(f"{where}.content[{index}].type", f"a '{kind}' block has no chat-completions form")
    if not texts and not calls:
        return None
    turn: Body = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        turn["tool_calls"] = calls
    return turn


def _tool(tool: Mapping[str, Any], index: int) -> Body:
    if tool.get("type") not in (None, "custom"):
        raise _no_counterpart(f"tools[{index}].type", f"'{tool.get('type')}' is an Anthropic server tool")
    for name, value in tool.items():
        if name not in _TOOL_FIELDS and value not in (None, False):
            raise _no_counterpart(f"tools[{index}].{name}", "chat-completions function tools have no such field")
    function: Body = {"name": tool["name"], "parameters": tool.get("input_schema") or {"type": "object"}}
    if tool.get("description"):
        function["description"] = tool["description"]
    if tool.get("strict") is not None:
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _tool_choice(choice: Mapping[str, Any]) -> Any:
    kind = choice.get("type")
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return {"auto": "auto", "any": "required", "none": "none"}[str(kind)]


def _reasoning(body: Mapping[str, Any], chat: Body) -> None:
    output = body.get("output_config") or {}
    if not isinstance(output, dict):
        raise InvalidRequest("'output_config' must be an object", param="output_config")
    output_format = output.get("format")
    if output_format is not None:
        if not isinstance(output_format, dict) or not isinstance(output_format.get("schema"), dict):
            raise InvalidRequest("'output_config.format' must be a json_schema format with a 'schema' object",
                                 param="output_config.format")
        chat["response_format"] = _response_format(output_format["schema"])
    if output.get("effort") is not None:
        chat["reasoning_effort"] = output["effort"]
        return
    thinking = body.get("thinking")
    if thinking is not None and not isinstance(thinking, dict):
        raise InvalidRequest("'thinking' must be an object", param="thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if isinstance(budget, bool) or not isinstance(budget, int):
            raise InvalidRequest("'thinking.budget_tokens' must be an integer", param="thinking.budget_tokens")
        chat["reasoning_effort"] = next((effort for bound, effort in _EFFORT_BY_BUDGET if budget < bound), "high")


def _response_format(schema: Mapping[str, Any]) -> Body:
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": dict(schema)}}


# -- answer --------------------------------------------------------------------------------------------


def to_message(completion: Mapping[str, Any]) -> Body:
    """A `chat.completion` (its first choice) as an Anthropic `Message`.

    Raises UpstreamBadResponse when the completion has no choice, or a tool
    call whose arguments are not a JSON object (Anthropic's `input` is one).
    """
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
    message = choice.get("message") if choice is not None else None
    if not isinstance(message, dict):
        raise UpstreamBadResponse("upstream answered a chat completion without a message")
    content: list[Body] = []
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = content_text(message.get("content"))
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        content.append({"type": "tool_use", "id": str(call.get("id")), "name": str(function.get("name")),
                        "input": _arguments(function.get("arguments"))})
    refusal = message.get("refusal")
    reason = stop_reason(choice.get("finish_reason") if choice is not None else None)
    answer: Body = {
        "id": str(completion.get("id") or "msg_gateway"),
        "type": "message",
        "role": "assistant",
        "model": str(completion.get("model") or ""),
        "content": content,
        "stop_reason": reason,
        "stop_sequence": None,
        "usage": messages_usage(completion.get("usage")),
    }
    if isinstance(refusal, str) and refusal:
        answer["stop_reason"] = "refusal"
        answer["stop_details"] = _refusal(refusal)
    return answer


def _arguments(arguments: object) -> Body:
    if arguments in (None, ""):
        return {}
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) else None
    except (ValueError, RecursionError):
        parsed = None
    if not isinstance(parsed, dict):
        raise UpstreamBadResponse("upstream answered a tool call whose arguments are not a JSON object")
    return parsed


def _refusal(explanation: str) -> Body:
    return {"type": "refusal", "category": None, "explanation": explanation}


def messages_usage(usage: object) -> Body:
    """OpenAI `usage` as Anthropic's: input tokens exclude the cached ones, counted apart; missing counts are 0."""
    usage = usage if isinstance(usage, dict) else {}

    def count(value: object) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0

    details = usage.get("prompt_tokens_details")
    cached = count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    prompt = count(usage.get("prompt_tokens"))
    return {"input_tokens": max(prompt - cached, 0), "output_tokens": count(usage.get("completion_tokens")),
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached}


# -- stream --------------------------------------------------------------------------------------------


class MessagesEventStream:
    """The relay's `chat.completion.chunk` SSE bytes → Anthropic's `RawMessageStreamEvent`s, incrementally.

    `feed` takes bytes in arbitrary pieces and returns the events complete so
    far (possibly b""); `finish` returns the tail once the relay's stream
    ended: nothing after `[DONE]` or an error, else an `error` event (the
    stream was cut). Only the first choice is read (a Messages call never
    asks for more).
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._started = False
        self.ended = False
        self._index = -1
        self._open: str | None = None
        # chat tool-call index → content block index.
        self._tools: dict[int, int] = {}
        self._finish: object = None
        self._refusal = ""
        self._usage: object = None

    def feed(self, chunk: bytes) -> bytes:
        buffer = self._buffer + chunk
        out: list[bytes] = []
        start = 0
        while match := EVENT_END.search(buffer, start):
            out.append(self._event(buffer[start:match.start()]))
            start = match.end()
        self._buffer = buffer[start:]
        return b"".join(out)

    def finish(self) -> bytes:
        tail = self._event(self._buffer) if self._buffer.strip() else b""
        self._buffer = b""
        if self.ended:
            return tail
        self.ended = True
        return tail + error_event({"type": "api_error", "message": "the upstream stream ended before it was complete"})

    def _event(self, event: bytes) -> bytes:
        if self.ended:
            return b""
        payload = data_of(event)
        if payload is None:
            return _frame("ping", {}) if event.startswith(b":") and self._started else b""
        if payload == b"[DONE]":
            return self._end()
        try:
            data = json.loads(payload)
        except (ValueError, RecursionError):
            return b""
        if not isinstance(data, dict):
            return b""
        if isinstance(data.get("error"), dict) and not data.get("choices"):
            self.ended = True
            return error_event(_anthropic_error(data["error"]))
        out = [self._start(data)]
        if isinstance(data.get("usage"), dict):
            self._usage = data["usage"]
        choices = data.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
        if choice is not None:
            out.append(self._delta(_object(choice.get("delta"))))
            if choice.get("finish_reason") is not None:
                self._finish = choice["finish_reason"]
        return b"".join(out)

    def _start(self, data: Mapping[str, Any]) -> bytes:
        if self._started:
            return b""
        self._started = True
        message: Body = {"id": str(data.get("id") or "msg_gateway"), "type": "message", "role": "assistant",
                   "model": str(data.get("model") or ""), "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": 0, "output_tokens": 0}}
        return _frame("message_start", {"message": message})

    def _delta(self, delta: Mapping[str, Any]) -> bytes:
        out: list[bytes] = []
        reasoning = delta.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            out.append(self._block("thinking", {"type": "thinking", "thinking": "", "signature": ""}))
            out.append(_string_delta(self._index, b"thinking_delta", b"thinking", reasoning))
        text = delta.get("content")
        if isinstance(text, str) and text:
            out.append(self._block("text", {"type": "text", "text": ""}))
            out.append(_string_delta(self._index, b"text_delta", b"text", text))
        refusal = delta.get("refusal")
        if isinstance(refusal, str):
            self._refusal += refusal
        for call in delta.get("tool_calls") or []:
            if isinstance(call, dict):
                out.append(self._tool_call(call))
        return b"".join(out)

    def _tool_call(self, call: Mapping[str, Any]) -> bytes:
        out: list[bytes] = []
        position = call.get("index")
        position = position if isinstance(position, int) else 0
        function = _object(call.get("function"))
        index = self._tools.get(position)
        if index is None:
            out.append(self._block("tool", {"type": "tool_use", "id": str(call.get("id")),
                                            "name": str(function.get("name")), "input": {}}, new=True))
            index = self._tools[position] = self._index
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            out.append(_string_delta(index, b"input_json_delta", b"partial_json", arguments))
        return b"".join(out)

    def _block(self, kind: str, content_block: Mapping[str, Any], *, new: bool = False) -> bytes:
        """Start a block of `kind` unless one is open (a tool call always starts its own), closing the open one."""
        if self._open == kind and not new:
            return b""
        closing = self._close()
        self._index += 1
        self._open = kind
        return closing + _frame("content_block_start", {"index": self._index, "content_block": dict(content_block)})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return _frame("content_block_stop", {"index": self._index})

    def _end(self) -> bytes:
        self.ended = True
        out = [self._start({}), self._close()]
        delta: Body = {"stop_reason": stop_reason(self._finish), "stop_sequence": None}
        if self._refusal:
            delta["stop_reason"] = "refusal"
            delta["stop_details"] = _refusal(self._refusal)
        usage = messages_usage(self._usage)
        out.append(_frame("message_delta", {"delta": delta, "usage": usage}))
        out.append(_frame("message_stop", {}))
        return b"".join(out)


def _anthropic_error(error: Mapping[str, Any]) -> Body:
    """An OpenAI-shaped stream error (`sse_error_event`) as Anthropic's `{"type", "message"}`."""
    said = f"{error.get('code') or ''} {error.get('type') or ''}"
    # A gateway shutting down asks the client to come back, as Anthropic's overloaded_error does.
    kind = next((name for key, name in (("overloaded", "overloaded_error"), ("shutdown", "overloaded_error"),
                                        ("rate_limit", "rate_limit_error"), ("timeout", "timeout_error"))
                 if key in said), "api_error")
    return {"type": kind, "message": str(error.get("message") or "the upstream stream failed")}


def _string_delta(index: int, kind: bytes, field: bytes, value: str) -> bytes:
    """`_frame("content_block_delta", {"index": index, "delta": {"type": kind, field: value}})`, built
    directly: it is most of a stream's events."""
    return (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":' + str(index).encode()
            + b',"delta":{"type":"' + kind + b'","' + field + b'":' + encode_basestring_ascii(value).encode()
            + b"}}\n\n")


def _object(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _frame(kind: str, data: Mapping[str, Any]) -> bytes:
    payload = json.dumps({"type": kind, **data}, separators=(",", ":"))
    return f"event: {kind}\ndata: {payload}\n\n".encode()
