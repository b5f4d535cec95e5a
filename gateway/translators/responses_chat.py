"""Pure: an OpenAI Responses call through the chat-completions pivot, both ways.

- `to_chat_request`: a Responses request (`ResponseCreateParams`, openai-python
  `types/responses/response_create_params.py`) → a chat-completions body.
  Every field of `ResponseCreateParams` is in `FIELDS`: mapped to its chat
  counterpart, accepted with a stated meaning, or refused with InvalidRequest
  naming it (`param`); a field not in `FIELDS` is refused as unknown. Nothing
  is dropped silently.
- `to_response`: a `chat.completion` → a Responses `Response` (`response.py`).
- `ResponsesEvents`: `chat.completion.chunk` SSE bytes → the Responses event
  stream (`response_stream_event.py`): `response.created`,
  `response.in_progress`, per output item `response.output_item.added`,
  `response.content_part.added`, `response.output_text.delta` / `.done`
  (`response.refusal.*`, `response.reasoning_text.*`),
  `response.function_call_arguments.delta` / `.done`,
  `response.output_item.done`, then `response.completed` (or
  `response.incomplete`) with usage; a failed stream ends in `error` and
  `response.failed`.
- `chat_view`: a Responses request read as chat for the evaluators, never raising.

The pivot answers for the app's request: a `Response` echoes the app's own
`instructions`, tools and settings, never the version's prompt.

Why one module over 400 lines: one translator per pair (Responses ⇄ chat),
request, answer and event stream together, so that a field's mapping and its
way back are read and tested side by side.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any

from gateway.errors import InvalidRequest
from gateway.providers.base import EVENT_END, data_of

Body = dict[str, Any]

MAPPED, ACCEPTED, REFUSED = "mapped", "accepted", "refused"
# Every field of ResponseCreateParams: what it becomes on the chat pivot (README's table is rendered from this).
FIELDS: dict[str, tuple[str, str]] = {
    "model": (MAPPED, "names the deployment; the version's model replaces it"),
    "input": (MAPPED, "`messages`: text, images (by URL or data URL), files (`file_data`, `file_id`), function "
                      "calls and their outputs; `reasoning` items are left out (chat takes no reasoning as input); "
                      "`item_reference` and the built-in tools' items are refused"),
    "instructions": (MAPPED, "a system message before the input; the version's prompt replaces it or joins it "
                             "(`prompt_mode`)"),
    "max_output_tokens": (MAPPED, "`max_tokens`"),
    "temperature": (MAPPED, "`temperature`"),
    "top_p": (MAPPED, "`top_p`"),
    "tools": (MAPPED, "function tools → chat function tools; built-in tools (`web_search`, `file_search`, "
                      "`code_interpreter`, `computer`, `mcp`, `image_generation`, `shell`, `custom`, ...) refused"),
    "tool_choice": (MAPPED, "`none`, `auto`, `required`, a function, `allowed_tools` of functions; a built-in "
                            "tool refused"),
    "parallel_tool_calls": (MAPPED, "`parallel_tool_calls` (with tools; without tools it means nothing)"),
    "text": (MAPPED, "`format` → `response_format` (`text`, `json_object`, `json_schema`); `verbosity` → "
                     "`verbosity`"),
    "reasoning": (MAPPED, "`effort` → `reasoning_effort`; `summary` accepted, and no summary comes back"),
    "stream": (MAPPED, "`stream`; the chat stream comes back as Responses events"),
    "stream_options": (MAPPED, "`include_obfuscation` → `stream_options.include_obfuscation`"),
    "user": (MAPPED, "`user` (and read as the user id)"),
    "safety_identifier": (MAPPED, "`safety_identifier` (and read as the user id)"),
    "metadata": (MAPPED, "`metadata` (`metadata.user_id` is read as the user id)"),
    "prompt_cache_key": (MAPPED, "`prompt_cache_key` (never a user id)"),
    "prompt_cache_options": (MAPPED, "`prompt_cache_options`"),
    "prompt_cache_retention": (MAPPED, "`prompt_cache_retention`"),
    "service_tier": (MAPPED, "`service_tier`"),
    "store": (ACCEPTED, "accepted and nothing is stored: the gateway keeps no responses, so a later "
                        "`previous_response_id` cannot refer to this one"),
    "include": (ACCEPTED, "accepted; the extra data it asks for (search results, encrypted reasoning, logprobs) "
                          "does not exist on the pivot, so none comes back"),
    "background": (REFUSED, "`true` refused (nothing runs in the background); `false` accepted"),
    "truncation": (REFUSED, "`auto` refused (the upstream does not drop input items for you); `disabled` accepted"),
    "previous_response_id": (REFUSED, "the gateway stores no responses; send the conversation in `input`"),
    "conversation": (REFUSED, "conversations live in OpenAI's storage"),
    "prompt": (REFUSED, "prompt templates live in OpenAI's storage"),
    "context_management": (REFUSED, "server-side compaction"),
    "max_tool_calls": (REFUSED, "a limit on built-in tool calls, which the pivot has none of"),
    "moderation": (REFUSED, "OpenAI-run moderation"),
    "top_logprobs": (REFUSED, "log probabilities are not translated"),
    "background_options": (REFUSED, "background execution"),
    "access_programs": (REFUSED, "OpenAI access programs"),
    "image": (REFUSED, "OpenAI's image context options"),
}
# Fields copied to the chat body under the same name.
_SAME_NAME = ("temperature", "top_p", "user", "safety_identifier", "metadata", "prompt_cache_key",
              "prompt_cache_options", "prompt_cache_retention", "service_tier")
# Refused whatever their value, unless null.
_REFUSED_ALWAYS = ("previous_response_id", "conversation", "prompt", "context_management", "max_tool_calls",
                   "moderation", "top_logprobs", "background_options", "access_programs", "image")
_NOT_TRANSLATED = "cannot be translated for this deployment's version, whose provider does not speak the Responses API"


def field_table() -> str:
    """The README's table of what each Responses request field becomes on the chat pivot, rendered from FIELDS."""
    rows = ["| field | on the chat pivot | |", "|---|---|---|"]
    for treatment in (MAPPED, ACCEPTED, REFUSED):
        rows += [f"| `{name}` | {kind} | {text} |" for name, (kind, text) in FIELDS.items() if kind == treatment]
    return "\n".join(rows) + "\n"


def _refuse(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"'{param}' {_NOT_TRANSLATED}: {why}", param=param, code="unsupported_parameter")


# -- request -----------------------------------------------------------------------------------------------


def to_chat_request(body: Mapping[str, Any]) -> Body:
    """A Responses request as a chat-completions body; InvalidRequest names the first field it cannot carry."""
    for name, value in body.items():
        if name not in FIELDS:
            raise InvalidRequest(f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
        if value is None:
            continue
        if name in _REFUSED_ALWAYS:
            raise _refuse(name, FIELDS[name][1])
    if body.get("background"):
        raise _refuse("background", "nothing runs in the background")
    if body.get("truncation") not in (None, "disabled"):
        raise _refuse("truncation", "only 'disabled' (the default) can be honoured")

    chat: Body = {"model": body["model"], "messages": _messages(body, strict=True)}
    for name in _SAME_NAME:
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    tools = body.get("tools")
    if tools:
        chat["tools"] = [_tool(tool, f"tools[{index}]") for index, tool in enumerate(_list(tools, "tools"))]
        if body.get("parallel_tool_calls") is not None:
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    if body.get("tool_choice") is not None:
        choice = _tool_choice(body["tool_choice"])
        if choice != "auto" or tools:
            chat["tool_choice"] = choice
    text = body.get("text")
    if text is not None:
        if not isinstance(text, dict):
            raise InvalidRequest("'text' must be an object", param="text")
        response_format = _response_format(text.get("format"))
        if response_format is not None:
            chat["response_format"] = response_format
        if text.get("verbosity") is not None:
            chat["verbosity"] = text["verbosity"]
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        chat["reasoning_effort"] = reasoning["effort"]
    if body.get("stream"):
        chat["stream"] = True
        options = body.get("stream_options")
        if isinstance(options, dict) and "include_obfuscation" in options:
            chat["stream_options"] = {"include_obfuscation": options["include_obfuscation"]}
    return chat


def chat_view(body: Mapping[str, Any]) -> Body:
    """A Responses request read as chat completions (`messages`, `response_format`), for the evaluators.

    Tolerant: items with no chat form are left out, and nothing is refused.
    """
    view: Body = {"messages": _messages(body, strict=False)}
    text = body.get("text")
    if isinstance(text, dict):
        try:
            response_format = _response_format(text.get("format"))
        except InvalidRequest:
            response_format = None
        if response_format is not None:
            view["response_format"] = response_format
    return view


def _list(value: object, param: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidRequest(f"'{param}' must be an array", param=param)
    return value


def _messages(body: Mapping[str, Any], *, strict: bool) -> list[Body]:
    messages: list[Body] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    items = body.get("input")
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
        return messages
    for index, item in enumerate(items if isinstance(items, list) else []):
        try:
            _add_item(messages, item, f"input[{index}]")
        except InvalidRequest:
            if strict:
                raise
    return messages


def _add_item(messages: list[Body], item: object, where: str) -> None:
    if not isinstance(item, dict):
        raise InvalidRequest(f"'{where}' must be an object", param=where)
    kind = item.get("type") or "message"
    if kind == "message":
        role = item.get("role")
        if role == "assistant":
            messages.append(_assistant_message(item.get("content"), where))
        elif role in ("user", "system", "developer"):
            messages.append({"role": role, "content": _input_content(item.get("content"), role, where)})
        else:
            raise InvalidRequest(f"'{where}.role' must be user, assistant, system or developer", param=f"{where}.role")
    elif kind == "function_call":
        call = {"id": _string(item, "call_id", where), "type": "function",
                "function": {"name": _string(item, "name", where), "arguments": _string(item, "arguments", where)}}
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant":
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item.get("output")
        content = output if isinstance(output, str) else _tool_output(output, f"{where}.output")
        messages.append({"role": "tool", "tool_call_id": _string(item, "call_id", where), "content": content})
    elif kind == "reasoning":
        return  # a model's earlier reasoning: chat completions take none as input
    elif kind == "item_reference":
        raise _refuse(f"{where}", "an item reference needs OpenAI's stored items; send the item itself")
    else:
        raise _refuse(f"{where}.type", f"'{str(kind)[:100]}' items belong to OpenAI's built-in tools")


def _string(item: Mapping[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise InvalidRequest(f"'{where}.{key}' must be a string", param=f"{where}.{key}")
    return value


def _assistant_message(content: object, where: str) -> Body:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    refusals: list[str] = []
    for index, part in enumerate(_list(content, f"{where}.content")):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("output_text", "input_text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            refusals.append(part["refusal"])
        else:
            raise InvalidRequest(f"'{where}.content[{index}]' must be an output_text or refusal part",
                                 param=f"{where}.content[{index}]")
    message: Body = {"role": "assistant", "content": "".join(texts) if texts or not refusals else None}
    if refusals:
        message["refusal"] = "".join(refusals)
    return message


def _input_content(content: object, role: str, where: str) -> Any:
    if isinstance(content, str):
        return content
    parts = [_input_part(part, f"{where}.content[{index}]")
             for index, part in enumerate(_list(content, f"{where}.content"))]
    if role != "user":
        for index, part in enumerate(parts):
            if part["type"] != "text":
                raise _refuse(f"{where}.content[{index}]", "a system or developer message takes text only in chat")
    return parts


def _input_part(part: object, where: str) -> Body:
    if not isinstance(part, dict):
        raise InvalidRequest(f"'{where}' must be an object", param=where)
    kind = part.get("type")
    extra = {"prompt_cache_breakpoint": part["prompt_cache_breakpoint"]} if "prompt_cache_breakpoint" in part else {}
    if kind == "input_text":
        return {"type": "text", "text": _string(part, "text", where), **extra}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise _refuse(f"{where}.file_id", "an image by file id needs OpenAI's file storage; send its URL")
        image: Body = {"url": url}
        if part.get("detail") is not None:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image, **extra}
    if kind == "input_file":
        if part.get("file_url") is not None:
            raise _refuse(f"{where}.file_url", "chat completions take a file's data or id, not its URL")
        file = {key: part[key] for key in ("file_data", "file_id", "filename") if part.get(key) is not None}
        return {"type": "file", "file": file}
    raise InvalidRequest(f"'{where}.type' must be input_text, input_image or input_file", param=f"{where}.type")


def _tool_output(output: object, where: str) -> list[Body]:
    parts = [_input_part(part, f"{where}[{index}]") for index, part in enumerate(_list(output, where))]
    for index, part in enumerate(parts):
        if part["type"] != "text":
            raise _refuse(f"{where}[{index}]", "a chat tool result is text only")
    return parts


def _tool(tool: object, where: str) -> Body:
    if not isinstance(tool, dict):
        raise InvalidRequest(f"'{where}' must be an object", param=where)
    kind = tool.get("type")
    if kind != "function":
        raise _refuse(f"{where}.type", f"'{str(kind)[:100]}' is one of OpenAI's built-in tools")
    for key in ("defer_loading", "output_schema"):
        if tool.get(key):
            raise _refuse(f"{where}.{key}", "chat function tools have no such option")
    if tool.get("allowed_callers") not in (None, ["direct"]):
        raise _refuse(f"{where}.allowed_callers", "chat function tools are called by the model only")
    function: Body = {"name": _string(tool, "name", where)}
    for key in ("description", "parameters", "strict"):
        if tool.get(key) is not None:
            function[key] = tool[key]
    return {"type": "function", "function": function}


def _tool_choice(choice: object) -> Any:
    if choice in ("none", "auto", "required"):
        return choice
    kind = choice.get("type") if isinstance(choice, dict) else None
    if isinstance(choice, dict) and kind == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    if isinstance(choice, dict) and kind == "allowed_tools":
        tools = []
        for index, tool in enumerate(_list(choice.get("tools"), "tool_choice.tools")):
            if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("name"), str):
                raise _refuse(f"tool_choice.tools[{index}]", "only function tools can be allowed in chat")
            tools.append({"type": "function", "function": {"name": tool["name"]}})
        return {"type": "allowed_tools", "allowed_tools": {"mode": choice.get("mode"), "tools": tools}}
    raise _refuse("tool_choice", f"'{str(kind)[:100]}' is one of OpenAI's built-in tools")


def _response_format(text_format: object) -> Body | None:
    if text_format is None:
        return None
    kind = text_format.get("type") if isinstance(text_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema" and isinstance(text_format, dict):
        spec = {key: text_format[key] for key in ("name", "description", "schema", "strict")
                if text_format.get(key) is not None}
        return {"type": "json_schema", "json_schema": spec}
    raise InvalidRequest("'text.format.type' must be text, json_object or json_schema", param="text.format.type")


# -- answer ------------------------------------------------------------------------------------------------


def echoed(request: Mapping[str, Any], sent: Mapping[str, Any]) -> Body:
    """What a `Response` echoes: the app's `request`, with the sampling settings of the chat body `sent` upstream
    (the version's params included) under their Responses names.

    `temperature`, `top_p`, `max_tokens` / `max_completion_tokens` →
    `max_output_tokens`, `reasoning_effort` → `reasoning.effort`,
    `verbosity` → `text.verbosity`; the version's prompt is never echoed.
    """
    reasoning = dict(request.get("reasoning") or {}) if isinstance(request.get("reasoning"), dict) else {}
    text = dict(request.get("text") or {}) if isinstance(request.get("text"), dict) else {}
    reasoning["effort"] = sent.get("reasoning_effort")
    text["verbosity"] = sent.get("verbosity")
    return {**request, "temperature": sent.get("temperature"), "top_p": sent.get("top_p"),
            "max_output_tokens": sent.get("max_completion_tokens", sent.get("max_tokens")),
            "reasoning": reasoning, "text": text}


def to_response(completion: Mapping[str, Any], *, request: Mapping[str, Any]) -> Body:
    """A `chat.completion` as the Responses API's `Response`, echoing `request` (see `echoed`).

    The first choice's reasoning, text or refusal, and tool calls become
    output items (`reasoning`, `message`, `function_call`); `finish_reason`
    `length` or `content_filter` makes the response `incomplete`.
    """
    choices = completion.get("choices")
    first = next((choice for choice in choices if isinstance(choice, dict) and choice.get("index", 0) == 0), None) \
        if isinstance(choices, list) else None
    message = first.get("message") if isinstance(first, dict) else None
    message = message if isinstance(message, dict) else {}
    finish = first.get("finish_reason") if isinstance(first, dict) else None
    base = _response_id(completion.get("id"))
    output: list[Body] = []
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        output.append(_reasoning_item(f"rs_{base}", reasoning))
    content, refusal = message.get("content"), message.get("refusal")
    if isinstance(refusal, str) and refusal:
        output.append(_message_item(f"msg_{base}", [_refusal_part(refusal)], "completed"))
    elif isinstance(content, str) and (content or not message.get("tool_calls")):
        output.append(_message_item(f"msg_{base}", [_text_part(content)], "completed"))
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            output.append(_function_item(str(call.get("id") or ""), function.get("name"),
                                         function.get("arguments") or "", "completed"))
    status, incomplete = _status(finish)
    return response_object(request, id=f"resp_{base}", created=completion.get("created"),
                           model=completion.get("model"), status=status, output=output,
                           usage=responses_usage(completion.get("usage")), incomplete=incomplete)


def response_object(request: Mapping[str, Any], *, id: str, created: object, model: object, status: str,
                    output: list[Body], usage: Body | None, incomplete: str | None = None,
                    error: Body | None = None) -> Body:
    """A `Response` (openai-python `types/responses/response.py`) echoing `request`'s settings."""
    text = request.get("text") if isinstance(request.get("text"), dict) else {}
    assert isinstance(text, dict)
    return {
        "id": id, "object": "response",
        "created_at": created if isinstance(created, int | float) else int(time.time()),
        "status": status, "background": False, "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete is not None else None,
        "instructions": request.get("instructions"), "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": None, "model": model if isinstance(model, str) else request.get("model"),
        "output": output, "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": None, "prompt_cache_key": request.get("prompt_cache_key"),
        "reasoning": {"effort": (request.get("reasoning") or {}).get("effort"),
                      "summary": (request.get("reasoning") or {}).get("summary")},
        "safety_identifier": request.get("safety_identifier"), "service_tier": request.get("service_tier"),
        "store": False, "temperature": request.get("temperature"),
        "text": {"format": text.get("format") or {"type": "text"}, "verbosity": text.get("verbosity") or "medium"},
        "tool_choice": request.get("tool_choice") or "auto", "tools": request.get("tools") or [],
        "top_logprobs": None, "top_p": request.get("top_p"), "truncation": request.get("truncation") or "disabled",
        "usage": usage, "user": request.get("user"), "metadata": request.get("metadata") or {},
    }


def responses_usage(usage: object) -> Body | None:
    """Chat `usage` as a Responses `ResponseUsage`; None when the chat answer had none."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    prompt_details = prompt_details if isinstance(prompt_details, dict) else {}
    cached, written = _count(prompt_details.get("cached_tokens")), _count(prompt_details.get("cache_write_tokens"))
    reasoning = _count(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else 0
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": prompt + completion}


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _status(finish: object) -> tuple[str, str | None]:
    if finish == "length":
        return "incomplete", "max_output_tokens"
    if finish == "content_filter":
        return "incomplete", "content_filter"
    return "completed", None


_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _response_id(chat_id: object) -> str:
    text = _ID_UNSAFE.sub("", str(chat_id or ""))[:64]
    return text.removeprefix("chatcmpl-") or f"{time.time_ns():x}"


def _text_part(text: str) -> Body:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _refusal_part(refusal: str) -> Body:
    return {"type": "refusal", "refusal": refusal}


def _message_item(item_id: str, content: list[Body], status: str) -> Body:
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content}


def _function_item(call_id: str, name: object, arguments: str, status: str) -> Body:
    return {"id": f"fc_{_ID_UNSAFE.sub('', call_id)[:64]}", "type": "function_call", "call_id": call_id,
            "name": name if isinstance(name, str) else "", "arguments": arguments, "status": status}


def _reasoning_item(item_id: str, text: str) -> Body:
    return {"id": item_id, "type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": text}]}


# -- stream ------------------------------------------------------------------------------------------------

_json_string = json.encoder.encode_basestring_ascii  # json.dumps of a str, in C


class _Item:
    """One output item being streamed: its index, id, kind and the text or arguments so far."""

    __slots__ = ("call_id", "id", "index", "kind", "name", "text")

    def __init__(self, index: int, item_id: str, kind: str, *, call_id: str = "", name: object = None) -> None:
        self.index, self.id, self.kind = index, item_id, kind
        self.call_id, self.name = call_id, name
        self.text = ""


class ResponsesEvents:
    """Chat SSE bytes in, Responses SSE bytes out, for one streamed call on the pivot.

    `feed` takes the bytes of the chat stream the relay sends (events may be
    split anywhere) and returns the Responses events to send now; `finish`
    returns what a stream that ended without `[DONE]` or an error still owes
    (an `error` and `response.failed`). Each event is written as
    `event: <type>` + `data: <json>` with a rising `sequence_number`.
    """

    def __init__(self, request: Mapping[str, Any]) -> None:
        self._request = request
        self._buffer = b""
        self._sequence = 0
        self._started = False
        self._ended = False
        self._base = f"{time.time_ns():x}"
        self._model: object = None
        self._created: object = None
        self._items: list[_Item] = []
        self._message: _Item | None = None
        self._reasoning: _Item | None = None
        self._calls: dict[int, _Item] = {}
        self._finish: object = None
        self._usage: Body | None = None

    def feed(self, chunk: bytes) -> bytes:
        buffer = self._buffer + chunk
        out: list[bytes] = []
        start = 0
        while match := EVENT_END.search(buffer, start):
            data = data_of(buffer[start:match.end()])
            start = match.end()
            if data is not None and not self._ended:
                out.append(self._chat_event(data))
        self._buffer = buffer[start:]
        return b"".join(out)

    def finish(self) -> bytes:
        if self._ended:
            return b""
        return self._fail("the upstream stream ended before it was complete", "stream_truncated")

    def _chat_event(self, data: bytes) -> bytes:
        if data.strip() == b"[DONE]":
            return self._complete()
        try:
            chunk = json.loads(data)
        except (ValueError, RecursionError):
            return b""
        if not isinstance(chunk, dict):
            return b""
        error = chunk.get("error")
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else str(error)
            code = error.get("code") if isinstance(error, dict) else None
            return self._fail(str(message or "the upstream stream failed"), str(code or "stream_error"))
        out = [self._start(chunk)] if not self._started else []
        if isinstance(chunk.get("usage"), dict):
            self._usage = responses_usage(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                out.append(self._delta(choice))
        return b"".join(out)

    def _start(self, chunk: Mapping[str, Any]) -> bytes:
        self._started = True
        self._model, self._created = chunk.get("model"), chunk.get("created")
        if isinstance(chunk.get("id"), str):
            self._base = _response_id(chunk["id"])
        snapshot = self._response("in_progress", [], None)
        return self._event("response.created", {"response": snapshot}) + self._event(
            "response.in_progress", {"response": snapshot})

    def _delta(self, choice: Mapping[str, Any]) -> bytes:
        out: list[bytes] = []
        delta = choice.get("delta")
        if isinstance(delta, dict):
            reasoning = delta.get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:
                out.append(self._text(self._reasoning_item(out), reasoning, "response.reasoning_text.delta"))
            content = delta.get("content")
            if isinstance(content, str) and content:
                out.append(self._text(self._message_item(out, "output_text"), content, "response.output_text.delta"))
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                out.append(self._text(self._message_item(out, "refusal"), refusal, "response.refusal.delta"))
            for call in delta.get("tool_calls") or []:
                if isinstance(call, dict):
                    out.append(self._tool_call(call))
        if choice.get("finish_reason"):
            self._finish = choice["finish_reason"]
        return b"".join(out)

    def _open(self, kind: str, item_id: str, **extra: Any) -> _Item:
        item = _Item(len(self._items), item_id, kind, **extra)
        self._items.append(item)
        return item

    def _reasoning_item(self, out: list[bytes]) -> _Item:
        if self._reasoning is None:
            item = self._reasoning = self._open("reasoning", f"rs_{self._base}")
            out.append(self._event("response.output_item.added", {
                "output_index": item.index, "item": {"id": item.id, "type": "reasoning", "summary": []}}))
            out.append(self._event("response.content_part.added", {
                "item_id": item.id, "output_index": item.index, "content_index": 0,
                "part": {"type": "reasoning_text", "text": ""}}))
        return self._reasoning

    def _message_item(self, out: list[bytes], part: str) -> _Item:
        if self._message is None:
            item = self._message = self._open(part, f"msg_{self._base}")
            out.append(self._event("response.output_item.added", {
                "output_index": item.index, "item": _message_item(item.id, [], "in_progress")}))
            out.append(self._event("response.content_part.added", {
                "item_id": item.id, "output_index": item.index, "content_index": 0,
                "part": _text_part("") if part == "output_text" else _refusal_part("")}))
        return self._message

    def _text(self, item: _Item, text: str, kind: str) -> bytes:
        item.text += text
        tail = ',"logprobs":[]}' if kind == "response.output_text.delta" else "}"
        return self._delta_event(kind, item, f',"content_index":0,"delta":{_json_string(text)}{tail}')

    def _delta_event(self, kind: str, item: _Item, rest: str) -> bytes:
        """A delta event written directly: the bulk of a stream, and the same bytes `_event` would write."""
        sequence = self._sequence
        self._sequence += 1
        return (f'event: {kind}\ndata: {{"type":"{kind}","sequence_number":{sequence},'
                f'"item_id":{_json_string(item.id)},"output_index":{item.index}{rest}\n\n').encode()

    def _tool_call(self, call: Mapping[str, Any]) -> bytes:
        position = call.get("index", 0)
        position = position if isinstance(position, int) else 0
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        assert isinstance(function, dict)
        out: list[bytes] = []
        item = self._calls.get(position)
        if item is None:
            call_id = str(call.get("id") or f"call_{self._base}_{position}")
            item = self._calls[position] = self._open("function_call", "", call_id=call_id, name=function.get("name"))
            item.id = _function_item(call_id, None, "", "in_progress")["id"]
            out.append(self._event("response.output_item.added", {
                "output_index": item.index, "item": _function_item(call_id, item.name, "", "in_progress")}))
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item.text += arguments
            out.append(self._delta_event("response.function_call_arguments.delta", item,
                                         f',"delta":{_json_string(arguments)}}}'))
        return b"".join(out)

    def _done_items(self, status: str, *, announce: bool = True) -> tuple[bytes, list[Body]]:
        """Every item as it ends (for the final response), and with `announce` the events that end each one."""
        out: list[bytes] = []
        output: list[Body] = []

        def event(kind: str, data: Body) -> None:
            if announce:
                out.append(self._event(kind, data))

        for item in self._items:
            where = {"item_id": item.id, "output_index": item.index}
            if item.kind == "function_call":
                done = _function_item(item.call_id, item.name, item.text, status)
                event("response.function_call_arguments.done", {**where, "name": item.name, "arguments": item.text})
            elif item.kind == "reasoning":
                part = {"type": "reasoning_text", "text": item.text}
                done = {"id": item.id, "type": "reasoning", "summary": [], "content": [part]}
                event("response.reasoning_text.done", {**where, "content_index": 0, "text": item.text})
                event("response.content_part.done", {**where, "content_index": 0, "part": part})
            else:
                if item.kind == "refusal":
                    part = _refusal_part(item.text)
                    event("response.refusal.done", {**where, "content_index": 0, "refusal": item.text})
                else:
                    part = _text_part(item.text)
                    event("response.output_text.done", {**where, "content_index": 0, "text": item.text,
                                                        "logprobs": []})
                event("response.content_part.done", {**where, "content_index": 0, "part": part})
                done = _message_item(item.id, [part], status)
            event("response.output_item.done", {"output_index": item.index, "item": done})
            output.append(done)
        return b"".join(out), output

    def _complete(self) -> bytes:
        self._ended = True
        start = self._start({}) if not self._started else b""
        status, incomplete = _status(self._finish)
        done, output = self._done_items("completed" if status == "completed" else "incomplete")
        kind = "response.completed" if status == "completed" else "response.incomplete"
        final = self._response(status, output, self._usage, incomplete=incomplete)
        return start + done + self._event(kind, {"response": final})

    def _fail(self, message: str, code: str) -> bytes:
        self._ended = True
        start = self._start({}) if not self._started else b""
        _, output = self._done_items("incomplete", announce=False)
        error = self._event("error", {"code": code, "message": message, "param": None})
        final = self._response("failed", output, self._usage, error={"code": "server_error", "message": message})
        return start + error + self._event("response.failed", {"response": final})

    def _response(self, status: str, output: list[Body], usage: Body | None, *, incomplete: str | None = None,
                  error: Body | None = None) -> Body:
        return response_object(self._request, id=f"resp_{self._base}", created=self._created, model=self._model,
                               status=status, output=output, usage=usage, incomplete=incomplete, error=error)

    def _event(self, kind: str, data: Body) -> bytes:
        payload = {"type": kind, "sequence_number": self._sequence, **data}
        self._sequence += 1
        return f"event: {kind}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()

