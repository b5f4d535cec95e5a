"""Pure: a chat-completions call to a provider whose wire is OpenAI's Responses API, both ways.

- `to_responses_request`: a chat-completions body (`CompletionCreateParams`,
  openai-python `types/chat/completion_create_params.py`) → a Responses
  request (`types/responses/response_create_params.py`). System and developer
  messages stay input items of their role; user content parts become
  `input_text` / `input_image` / `input_file`; assistant tool calls become
  `function_call` items and tool messages `function_call_output` items.
  `max_tokens` / `max_completion_tokens` → `max_output_tokens`,
  `response_format` → `text.format`, `verbosity` → `text.verbosity`,
  `reasoning_effort` → `reasoning.effort`, `logprobs` → `include` of
  `message.output_text.logprobs`; `store` is false unless the call sets it
  (chat's default; the Responses API's is true). What the Responses API has
  no field for (`stop`, `seed`, `n` above 1, the penalties, `logit_bias`,
  audio, `prediction`, `web_search_options`, legacy `functions`) is refused
  with InvalidRequest naming it.
- `to_chat_completion`: a `Response` → a `chat.completion`.
- `ChatChunks`: Responses stream events (decoded) → `chat.completion.chunk`s.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from gateway.errors import InvalidRequest

Body = dict[str, Any]

# Chat fields the Responses API takes under the same name.
_SAME_NAME = ("temperature", "top_p", "top_logprobs", "user", "safety_identifier", "metadata", "prompt_cache_key",
              "prompt_cache_options", "prompt_cache_retention", "service_tier", "parallel_tool_calls", "moderation",
              "store")
# Chat fields with no Responses counterpart: refused unless null (or, for `n`, 1).
_NO_COUNTERPART = ("stop", "seed", "frequency_penalty", "presence_penalty", "logit_bias", "audio", "modalities",
                   "prediction", "web_search_options", "functions", "function_call")
_KNOWN = frozenset({*_SAME_NAME, *_NO_COUNTERPART, "model", "messages", "n", "max_tokens", "max_completion_tokens",
                    "response_format", "verbosity", "reasoning_effort", "logprobs", "tools", "tool_choice", "stream",
                    "stream_options"})


def _refuse(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"'{param}' cannot be sent to this deployment's version, whose provider speaks the "
                          f"Responses API: {why}", param=param, code="unsupported_parameter")


def responses_refusal(name: str, value: object) -> str | None:
    """Why a chat-completions field with this value cannot reach the Responses API; None when it can.

    A field with no Responses counterpart is taken only at a value that
    changes nothing (null, false, 0, empty; `n: 1`); a field chat completions
    does not know is refused as OpenAI refuses it.
    """
    if name not in _KNOWN:
        return "not a field of OpenAI's chat request"
    if name == "n" and value not in (None, 1):
        return "the Responses API answers with one choice"
    neutral = value is None or value is False or value == 0 or value == [] or value == {}
    if name in _NO_COUNTERPART and not neutral:
        return "the Responses API has no such parameter"
    return None


def to_responses_request(body: Mapping[str, Any]) -> Body:
    """A chat-completions body as a Responses request; InvalidRequest names the first field it cannot carry."""
    for name, value in body.items():
        why = responses_refusal(name, value)
        if why is not None and name not in _KNOWN:
            raise InvalidRequest(f"Unrecognized request argument supplied: {name}", param=name)
        if why is not None:
            raise _refuse(name, why)

    request: Body = {"model": body["model"], "input": _input(body["messages"]), "store": False}
    for name in _SAME_NAME:
        if body.get(name) is not None:
            request[name] = body[name]
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        request["max_output_tokens"] = limit
    text: Body = {}
    text_format = text_format_of(body.get("response_format"))
    if text_format is not None:
        text["format"] = text_format
    if body.get("verbosity") is not None:
        text["verbosity"] = body["verbosity"]
    if text:
        request["text"] = text
    if body.get("reasoning_effort") is not None:
        request["reasoning"] = {"effort": body["reasoning_effort"]}
    if body.get("logprobs"):
        request["include"] = ["message.output_text.logprobs"]
    if body.get("tools"):
        request["tools"] = [_tool(tool, f"tools[{index}]") for index, tool in enumerate(body["tools"])]
    if body.get("tool_choice") is not None:
        request["tool_choice"] = _tool_choice(body["tool_choice"])
    if body.get("stream"):
        request["stream"] = True
        options = body.get("stream_options")
        if isinstance(options, dict) and "include_obfuscation" in options:
            request["stream_options"] = {"include_obfuscation": options["include_obfuscation"]}
    return request


def text_format_of(response_format: object) -> Body | None:
    """Chat's `response_format` as a Responses `text.format`; None for none (or plain text)."""
    if not isinstance(response_format, dict) or response_format.get("type") in (None, "text"):
        return None
    if response_format.get("type") == "json_object":
        return {"type": "json_object"}
    if response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema")
        spec = spec if isinstance(spec, dict) else {}
        return {"type": "json_schema", **{key: spec[key] for key in ("name", "description", "schema", "strict")
                                          if spec.get(key) is not None}}
    raise InvalidRequest("'response_format.type' must be text, json_object or json_schema",
                         param="response_format.type")


def _input(messages: list[Any]) -> list[Body]:
    items: list[Body] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer", "user"):
            items.append({"role": role, "content": _content(content, where) if isinstance(content, list)
                          else content or ""})
        elif role == "assistant":
            text = content if isinstance(content, str) else _text(content)
            if text or message.get("refusal"):
                items.append({"role": "assistant", "content": text or message.get("refusal") or ""})
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                items.append({"type": "function_call", "call_id": call.get("id"), "name": function.get("name"),
                              "arguments": function.get("arguments") or ""})
        elif role == "tool":
            items.append({"type": "function_call_output", "call_id": message.get("tool_call_id"),
                          "output": content if isinstance(content, str) else _text(content)})
        else:
            raise _refuse(f"{where}.role", f"'{role}' messages (legacy functions) have no Responses form")
    return items


def _text(content: object) -> str:
    if not isinstance(content, list):
        return ""
    return "".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text")


def _content(parts: list[Any], where: str) -> list[Body]:
    converted: list[Body] = []
    for index, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        extra = {"prompt_cache_breakpoint": part["prompt_cache_breakpoint"]} \
            if isinstance(part, dict) and "prompt_cache_breakpoint" in part else {}
        if kind == "text":
            converted.append({"type": "input_text", "text": part.get("text"), **extra})
        elif kind == "image_url":
            image = part.get("image_url") or {}
            converted.append({"type": "input_image", "image_url": image.get("url"),
                              "detail": image.get("detail") or "auto", **extra})
        elif kind == "file":
            converted.append({"type": "input_file", **(part.get("file") or {})})
        else:
            raise _refuse(f"{where}.content[{index}]", f"'{kind}' parts have no Responses form")
    return converted


def _tool(tool: Mapping[str, Any], where: str) -> Body:
    if tool.get("type") == "function" and isinstance(tool.get("function"), dict):
        function = tool["function"]
        return {"type": "function", "name": function.get("name"), "description": function.get("description"),
                "parameters": function.get("parameters"), "strict": function.get("strict")}
    if tool.get("type") == "custom" and isinstance(tool.get("custom"), dict):
        return {"type": "custom", **tool["custom"]}
    raise _refuse(f"{where}.type", f"'{tool.get('type')}' tools have no Responses form")


def _tool_choice(choice: object) -> Any:
    if isinstance(choice, str):
        return choice
    if not isinstance(choice, dict):
        raise InvalidRequest("'tool_choice' must be a string or an object", param="tool_choice")
    kind = choice.get("type")
    if kind in ("function", "custom"):
        named = choice.get(kind) or {}
        return {"type": kind, "name": named.get("name")}
    if kind == "allowed_tools":
        allowed = choice.get("allowed_tools") or {}
        tools = [{"type": tool.get("type"), "name": (tool.get(tool.get("type")) or {}).get("name")}
                 for tool in allowed.get("tools") or [] if isinstance(tool, dict)]
        return {"type": "allowed_tools", "mode": allowed.get("mode"), "tools": tools}
    raise _refuse("tool_choice", f"'{kind}' has no Responses form")


# -- answer ------------------------------------------------------------------------------------------------


def to_chat_completion(response: Mapping[str, Any]) -> Body:
    """A Responses `Response` as a `chat.completion` with one choice.

    Message text → `content` (refusal parts → `refusal`), reasoning items →
    `reasoning_content`, `function_call` items → `tool_calls`;
    `finish_reason` is `tool_calls` when there are calls, `length` or
    `content_filter` for an incomplete response, else `stop`.
    """
    message: Body = {"role": "assistant", "content": None, "refusal": None}
    texts: list[str] = []
    refusals: list[str] = []
    reasoning: list[str] = []
    calls: list[Body] = []
    output = response.get("output")
    for item in output if isinstance(output, list) else []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "output_text":
                    texts.append(str(part.get("text") or ""))
                elif isinstance(part, dict) and part.get("type") == "refusal":
                    refusals.append(str(part.get("refusal") or ""))
        elif item.get("type") == "function_call":
            calls.append({"id": item.get("call_id"), "type": "function",
                          "function": {"name": item.get("name"), "arguments": item.get("arguments") or ""}})
        elif item.get("type") == "reasoning":
            parts = item.get("content") or item.get("summary") or []
            reasoning.extend(str(part.get("text") or "") for part in parts if isinstance(part, dict))
    if texts or not (refusals or calls):
        message["content"] = "".join(texts)
    if refusals:
        message["refusal"] = "".join(refusals)
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    completion: Body = {
        "id": f"chatcmpl-{response.get('id') or time.time_ns()}", "object": "chat.completion",
        "created": _created(response), "model": response.get("model"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(response, bool(calls)),
                     "logprobs": None}],
    }
    usage = chat_usage(response.get("usage"))
    if usage is not None:
        completion["usage"] = usage
    return completion


def finish_reason(response: Mapping[str, Any], called: bool) -> str:
    """The chat `finish_reason` of a finished `Response`."""
    if called:
        return "tool_calls"
    details = response.get("incomplete_details")
    reason = details.get("reason") if isinstance(details, dict) else None
    if response.get("status") == "incomplete" or reason:
        return "content_filter" if reason == "content_filter" else "length"
    return "stop"


def chat_usage(usage: object) -> Body | None:
    """A Responses `ResponseUsage` as chat `usage` (`CompletionUsage`), cached and reasoning tokens kept."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("input_tokens"), usage.get("output_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    converted: Body = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    input_details, output_details = usage.get("input_tokens_details"), usage.get("output_tokens_details")
    if isinstance(input_details, dict) and isinstance(input_details.get("cached_tokens"), int):
        converted["prompt_tokens_details"] = {"cached_tokens": input_details["cached_tokens"]}
    if isinstance(output_details, dict) and isinstance(output_details.get("reasoning_tokens"), int):
        converted["completion_tokens_details"] = {"reasoning_tokens": output_details["reasoning_tokens"]}
    return converted


def _created(response: Mapping[str, Any]) -> int:
    created = response.get("created_at")
    return int(created) if isinstance(created, int | float) else int(time.time())


# -- stream ------------------------------------------------------------------------------------------------


class ChatChunks:
    """Responses stream events in (decoded `data:` objects), `chat.completion.chunk`s out, for one stream.

    `event` returns the chunks an event becomes (often none). At
    `response.completed` or `response.incomplete`: a last chunk with the
    `finish_reason`, then a usage chunk (`choices: []`), and `done` is set;
    `usage` holds the Responses usage. At `error` or `response.failed`,
    `error` holds (message, code) and `done` is set.
    """

    def __init__(self) -> None:
        self.done = False
        self.usage: Body | None = None
        self.error: tuple[str, str] | None = None
        self._id = f"chatcmpl-{time.time_ns():x}"
        self._created = int(time.time())
        self._model: object = None
        self._calls: dict[int, int] = {}  # output_index → tool call index

    def event(self, data: Mapping[str, Any]) -> list[Body]:
        kind = data.get("type")
        if kind == "response.created":
            response = data.get("response") if isinstance(data.get("response"), dict) else {}
            assert isinstance(response, dict)
            self._id = f"chatcmpl-{response.get('id') or self._id}"
            self._created, self._model = _created(response), response.get("model")
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "response.output_text.delta":
            return [self._chunk({"content": str(data.get("delta") or "")})]
        if kind == "response.refusal.delta":
            return [self._chunk({"refusal": str(data.get("delta") or "")})]
        if kind in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta"):
            return [self._chunk({"reasoning_content": str(data.get("delta") or "")})]
        if kind == "response.output_item.added":
            item = data.get("item")
            if isinstance(item, dict) and item.get("type") == "function_call":
                index = self._calls[_int(data.get("output_index"))] = len(self._calls)
                return [self._chunk({"tool_calls": [{"index": index, "id": item.get("call_id"), "type": "function",
                                                     "function": {"name": item.get("name"), "arguments": ""}}]})]
            return []
        if kind == "response.function_call_arguments.delta":
            position = self._calls.get(_int(data.get("output_index")))
            if position is None:
                return []
            arguments = str(data.get("delta") or "")
            return [self._chunk({"tool_calls": [{"index": position, "function": {"arguments": arguments}}]})]
        if kind in ("response.completed", "response.incomplete"):
            response = data.get("response") if isinstance(data.get("response"), dict) else {}
            assert isinstance(response, dict)
            self.done = True
            self.usage = response.get("usage") if isinstance(response.get("usage"), dict) else None
            last = self._chunk({}, finish=finish_reason(response, bool(self._calls)))
            usage = chat_usage(self.usage)
            return [last, {**self._chunk({}), "choices": [], "usage": usage}] if usage is not None else [last]
        if kind in ("error", "response.failed"):
            self.done = True
            error = data.get("response", {}).get("error") if kind == "response.failed" else data
            error = error if isinstance(error, dict) else {}
            self.error = (str(error.get("message") or "the upstream stream failed"),
                          str(error.get("code") or "stream_error"))
            return []
        return []

    def _chunk(self, delta: Body, *, finish: str | None = None) -> Body:
        return {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
