"""Anthropic Messages, translated both ways, so an OpenAI client can call a Claude version.

Request: every field of OpenAI's chat request is mapped, accepted without
effect, or refused with InvalidRequest naming it, as `gateway.fields` lists
it (the README's field table is rendered from there): system messages →
top-level `system` (blocks keeping `cache_control` when the app sent parts);
user/assistant turns merged where Anthropic requires alternation; tool
results → `tool_result` blocks; image and PDF parts → image and document
blocks; function tools, `tool_choice` and `parallel_tool_calls` → Anthropic
tools and `tool_choice`; `response_format` → structured output
(`output_config.format`) or, for a JSON object, a forced tool; `stop` →
`stop_sequences`; `reasoning_effort` → a thinking budget; `user` →
`metadata.user_id`; `max_tokens` from the request, else the version's params,
else DEFAULT_MAX_TOKENS (Anthropic requires one).
Answer: every content block type and `stop_reason` as `gateway.providers.normalise`
maps it (text → `content`, thinking → `reasoning_content`, tool_use →
`tool_calls`, the forced JSON tool's input → `content` with "stop", a
refusal → `refusal` and `content_filter`; an unknown stop reason is never
"stop"); usage (with cache tokens) → OpenAI usage; `service_tier`.
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
import logging
import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gateway.errors import InvalidRequest, UpstreamBadResponse, UpstreamOverloaded, UpstreamStatusError
from gateway.fields import (
    DEFAULT_MAX_TOKENS,
    JSON_OBJECT_TOOL,
    REQUEST,
    SERVICE_TIERS,
    THINKING_BUDGETS,
    anthropic_refusal,
)
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

log = logging.getLogger("gateway.providers")

API_VERSION = "2023-06-01"
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

    def check_chat_messages(self, messages: list[Any]) -> None:
        """Refuse what `to_messages_request` cannot translate in the client's messages (see `gateway.fields`)."""
        _conversation(messages)

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
    """An OpenAI chat-completions body as an Anthropic Messages request (`MessageCreateParams`).

    Every field goes where `gateway.fields.REQUEST` and `MESSAGE_FIELDS` say:
    mapped, accepted without effect, or refused. Raises InvalidRequest naming
    the field (`param`, as `messages[2].content[1].image_url.detail`) for a
    field or value Anthropic has no counterpart for, and for a field OpenAI
    does not know either (code `unknown_parameter`).
    """
    for name, value in body.items():
        why = anthropic_refusal(name, value)
        if why is None:
            continue
        if name not in REQUEST:
            raise InvalidRequest(f"Unrecognized request argument supplied: {name}", param=name,
                                 code="unknown_parameter")
        raise InvalidRequest(f"'{name}': {why} (the version serving this call runs on Anthropic)", param=name,
                             code="unsupported_value")
    thinking = _thinking(body.get("reasoning_effort"))
    system, turns = _conversation(body["messages"])
    limit_name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    limit = body.get(limit_name)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
        raise InvalidRequest(f"'{limit_name}' must be an integer", param=limit_name)
    request: dict[str, Any] = {
        "model": body["model"],
        "messages": turns,
        "max_tokens": (DEFAULT_MAX_TOKENS if limit is None else limit) + _budget(thinking),
    }
    if system:
        request["system"] = system
    if thinking is not None:
        request["thinking"] = thinking
    _sampling(body, request, thinking_on=_budget(thinking) > 0)
    _tools(body, request, thinking_on=_budget(thinking) > 0)
    stop = body.get("stop")
    if isinstance(stop, list) and all(isinstance(sequence, str) for sequence in stop):
        if stop:
            request["stop_sequences"] = stop
    elif isinstance(stop, str):
        if stop:
            request["stop_sequences"] = [stop]
    elif stop is not None:
        raise InvalidRequest("'stop' must be a string or an array of strings", param="stop")
    user = _user_id(body)
    if user is not None:
        request["metadata"] = {"user_id": user}
    if body.get("service_tier") is not None:
        request["service_tier"] = SERVICE_TIERS[body["service_tier"]]
    if stream:
        request["stream"] = True
    return request


def native_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """A version's params (chat-completions names) as the Messages fields a chat call to this provider gets
    them as (`to_messages_request`), for a native Messages call; and the thinking budget they add.

    `max_tokens` is in the result only when the params set a limit
    (`max_tokens` or `max_completion_tokens`), the budget included; else the
    caller adds the budget to the app's limit. Params set to null are left
    out (they remove the app's field). Raises InvalidRequest for a param
    Anthropic cannot take (a version the configuration does not load).
    """
    given = {name: value for name, value in params.items() if value is not None}
    if not given:
        return {}, 0
    probe = to_messages_request({"model": "", "messages": [{"role": "user", "content": "."}], **given},
                                stream=False)
    fields = {name: value for name, value in probe.items() if name not in ("model", "messages")}
    if not given.keys() & {"max_tokens", "max_completion_tokens"}:
        del fields["max_tokens"]
    return fields, _budget(fields.get("thinking"))


def _thinking(effort: object) -> dict[str, Any] | None:
    """Anthropic's `thinking` for OpenAI's `reasoning_effort` (budgets: `gateway.fields.THINKING_BUDGETS`)."""
    if effort is None:
        return None
    if effort == "none":
        return {"type": "disabled"}
    return {"type": "enabled", "budget_tokens": THINKING_BUDGETS[str(effort)]}


def _budget(thinking: Mapping[str, Any] | None) -> int:
    budget = thinking.get("budget_tokens") if thinking is not None else None
    return budget if isinstance(budget, int) else 0


def _sampling(body: Mapping[str, Any], request: dict[str, Any], *, thinking_on: bool) -> None:
    """temperature (capped at Anthropic's 1), top_p, top_k; none of them with thinking, which takes none."""
    removed = []
    for name in ("temperature", "top_p", "top_k"):
        value = body.get(name)
        if value is None:
            continue
        if thinking_on:
            removed.append(name)
        elif name == "temperature" and isinstance(value, int | float) and value > 1:
            request[name] = 1
        else:
            request[name] = value
    if removed:
        log.debug("removed %s: Anthropic takes no sampling parameters with thinking", ", ".join(removed))


def _user_id(body: Mapping[str, Any]) -> str | None:
    """`user`, else `safety_identifier`, else `metadata.user_id`: the order `gateway.inbound` reads them in."""
    metadata = body.get("metadata")
    for value in (body.get("user"), body.get("safety_identifier"),
                  metadata.get("user_id") if isinstance(metadata, dict) else None):
        if isinstance(value, str) and value:
            return value
    return None


def _tools(body: Mapping[str, Any], request: dict[str, Any], *, thinking_on: bool) -> None:
    """tools, tool_choice, parallel_tool_calls, response_format and web_search_options, together.

    They share Anthropic's `tools` and `tool_choice`: a JSON object answer is a
    forced tool, and web search a server tool.
    """
    tools = _function_tools(body.get("tools"))
    choice, allowed = _tool_choice(body.get("tool_choice"))
    if allowed is not None:
        tools = [tool for tool in tools if tool["name"] in allowed]
    search = body.get("web_search_options")
    if isinstance(search, dict):
        tools.append(_web_search_tool(search))
    if choice is not None and choice["type"] in ("any", "tool") and not tools:
        raise InvalidRequest("'tool_choice' asks for a tool call, but the call offers no tools", param="tool_choice")

    output_format, json_tool = _response_format(body.get("response_format"))
    if output_format is not None:
        request["output_config"] = {"format": output_format}
    if json_tool and (choice is None or choice["type"] in ("auto", "none")):
        if thinking_on:
            raise InvalidRequest("'response_format': a JSON object answer comes from a forced tool on Anthropic, "
                                 "which does not think when a tool is forced; drop 'reasoning_effort' or send a "
                                 "json_schema", param="response_format")
        forced = not tools or (choice is not None and choice["type"] == "none")
        tools.append({"name": JSON_OBJECT_TOOL, "description": "Answer with a JSON object: the tool's input is the "
                      "whole answer.", "input_schema": {"type": "object"}})
        choice = {"type": "tool", "name": JSON_OBJECT_TOOL} if forced else {"type": "any"}

    if not tools:
        return
    if choice is not None and choice["type"] in ("any", "tool") and thinking_on:
        raise InvalidRequest("'tool_choice' forces a tool call, which Anthropic does not allow with thinking "
                             "('reasoning_effort')", param="tool_choice")
    if body.get("parallel_tool_calls") is False:
        choice = choice or {"type": "auto"}
        if choice["type"] != "none":
            choice = {**choice, "disable_parallel_tool_use": True}
    request["tools"] = tools
    if choice is not None:
        request["tool_choice"] = choice


def _function_tools(tools: object) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array", param="tools")
    converted = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict) or not isinstance(tool.get("function"), dict) or \
                tool.get("type", "function") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise InvalidRequest(f"'{where}': only function tools can be translated to Anthropic, not {kind!r} "
                                 "(Anthropic has no custom grammar tools)", param=where)
        function = tool["function"]
        if function.get("name") == JSON_OBJECT_TOOL:
            raise InvalidRequest(f"'{where}.function.name': {JSON_OBJECT_TOOL} is the name the gateway gives "
                                 "JSON object answers on Anthropic", param=f"{where}.function.name")
        entry: dict[str, Any] = {
            "name": function.get("name"),
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            entry["description"] = function["description"]
        if isinstance(function.get("strict"), bool):
            entry["strict"] = function["strict"]
        converted.append(entry)
    return converted


def _tool_choice(choice: object) -> tuple[dict[str, Any] | None, set[str] | None]:
    """Anthropic's tool_choice, and the names `allowed_tools` restricts the tools to (None: all)."""
    if choice is None:
        return None, None
    simple = {"auto": "auto", "none": "none", "required": "any"}
    if isinstance(choice, str) and choice in simple:
        return {"type": simple[choice]}, None
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        return {"type": "tool", "name": choice["function"].get("name")}, None
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools" and \
            isinstance(choice.get("allowed_tools"), dict):
        allowed = choice["allowed_tools"]
        names = {tool["function"].get("name") for tool in allowed.get("tools") or []
                 if isinstance(tool, dict) and isinstance(tool.get("function"), dict)}
        if allowed.get("mode") in simple:
            return {"type": simple[allowed["mode"]]}, names
    kind = choice.get("type") if isinstance(choice, dict) else choice
    raise InvalidRequest(f"'tool_choice': {kind!r} cannot be translated to Anthropic (none, auto, required, a "
                         "function or allowed_tools can)", param="tool_choice")


def _response_format(response_format: object) -> tuple[dict[str, Any] | None, bool]:
    """Anthropic's `output_config.format` for a JSON schema, or whether a JSON object tool is needed."""
    if response_format is None:
        return None, False
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None, False
    if kind == "json_schema":
        spec = response_format.get("json_schema") if isinstance(response_format, dict) else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            return {"type": "json_schema", "schema": schema}, False
        return None, True
    if kind == "json_object":
        return None, True
    raise InvalidRequest(f"'response_format': type {kind!r} is not one of text, json_schema, json_object",
                         param="response_format")


def _web_search_tool(options: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI's `web_search_options` as Anthropic's web search server tool (`WebSearchTool20250305Param`)."""
    tool: dict[str, Any] = {"type": "web_search_20250305", "name": "web_search"}
    location = options.get("user_location")
    approximate = location.get("approximate") if isinstance(location, dict) else None
    if isinstance(approximate, dict):
        tool["user_location"] = {"type": "approximate", **approximate}
    return tool


# The fields each role's message may have (openai-python `chat_completion_*_message_param.py`), with
# `cache_control` as OpenAI-compatible gateways take it, and the answer fields an app sends back.
_MESSAGE_KEYS = {
    "system": frozenset({"role", "content", "name", "cache_control"}),
    "developer": frozenset({"role", "content", "name", "cache_control"}),
    "user": frozenset({"role", "content", "name", "cache_control"}),
    "assistant": frozenset({"role", "content", "name", "cache_control", "refusal", "tool_calls", "function_call",
                            "audio", "reasoning_content", "annotations"}),
    "tool": frozenset({"role", "content", "tool_call_id", "cache_control"}),
}
# The keys of each content part type (`chat_completion_content_part_*_param.py`), cache marks included.
_CACHE_MARKS = frozenset({"cache_control", "prompt_cache_breakpoint"})
_PART_KEYS = {
    "text": frozenset({"type", "text"}) | _CACHE_MARKS,
    "image_url": frozenset({"type", "image_url"}) | _CACHE_MARKS,
    "file": frozenset({"type", "file"}) | _CACHE_MARKS,
    "refusal": frozenset({"type", "refusal"}),
}


def _conversation(messages: list[Any]) -> tuple[str | list[dict[str, Any]] | None, list[dict[str, Any]]]:
    """Anthropic's `system` and alternating `messages` for OpenAI's messages.

    `system` is one string, the app's system texts joined by blank lines,
    unless one of them came as parts or with a cache mark: then text blocks,
    keeping each block's `cache_control`.
    """
    system: list[dict[str, Any]] = []
    as_blocks = False
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        role = message.get("role")
        if role not in _MESSAGE_KEYS:
            raise InvalidRequest(f"'{where}.role': {role!r} messages cannot be translated to Anthropic "
                                 "(deprecated function calling: send tool messages)", param=f"{where}.role")
        for key, value in message.items():
            if key not in _MESSAGE_KEYS[role] and value is not None:
                raise InvalidRequest(f"'{where}.{key}': not a field of a {role} message", param=f"{where}.{key}")
        if role in ("system", "developer"):
            content = message.get("content")
            as_blocks = as_blocks or isinstance(content, list) or message.get("cache_control") is not None
            system.extend(_marked(_text_blocks(content, where), message.get("cache_control")))
        elif role == "tool":
            _append(turns, "user", [_tool_result(message, where)])
        elif role == "assistant":
            _append(turns, "assistant", _marked(_assistant_blocks(message, where), message.get("cache_control")))
        else:
            _append(turns, "user", _marked(_user_blocks(message.get("content"), where), message.get("cache_control")))
    if not system:
        return None, turns
    if as_blocks:
        return system, turns
    return "\n\n".join(block["text"] for block in system), turns


def _marked(blocks: list[dict[str, Any]], cache_control: object) -> list[dict[str, Any]]:
    """A message-level `cache_control` marks the message's last block."""
    if cache_control is not None and blocks:
        blocks[-1] = {**blocks[-1], "cache_control": cache_control}
    return blocks


def _append(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Anthropic wants user and assistant turns to alternate: merge neighbours of one role."""
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _parts(content: object, where: str) -> list[tuple[str, dict[str, Any]]]:
    """The content parts of a message with their param paths; unknown part fields refused."""
    if not isinstance(content, list):
        return []
    parts = []
    for index, part in enumerate(content):
        path = f"{where}.content[{index}]"
        if not isinstance(part, dict):
            raise InvalidRequest(f"'{path}' must be an object", param=path)
        kind = part.get("type")
        if kind == "input_audio":
            raise InvalidRequest(f"'{path}': input_audio parts cannot be translated to Anthropic, which takes no "
                                 "audio", param=path)
        keys = _PART_KEYS.get(kind) if isinstance(kind, str) else None
        if keys is None:
            raise InvalidRequest(f"'{path}.type': {kind!r} parts cannot be translated to Anthropic",
                                 param=f"{path}.type")
        for key, value in part.items():
            if key not in keys and value is not None:
                raise InvalidRequest(f"'{path}.{key}': not a field of a {kind} part", param=f"{path}.{key}")
        parts.append((path, part))
    return parts


def _cache_mark(part: Mapping[str, Any]) -> dict[str, Any]:
    """The block's `cache_control`: the app's own, or OpenAI's `prompt_cache_breakpoint` as a 1-hour mark."""
    if part.get("cache_control") is not None:
        return {"cache_control": part["cache_control"]}
    if part.get("prompt_cache_breakpoint") is not None:
        return {"cache_control": {"type": "ephemeral", "ttl": "1h"}}
    return {}


def _text_blocks(content: object, where: str) -> list[dict[str, Any]]:
    """Text blocks for a system, developer or tool message's content; other part types refused."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for path, part in _parts(content, where):
        if part["type"] != "text":
            raise InvalidRequest(f"'{path}': only text parts can be translated here", param=f"{path}.type")
        if isinstance(part.get("text"), str) and part["text"]:
            blocks.append({"type": "text", "text": part["text"], **_cache_mark(part)})
    return blocks


def _user_blocks(content: object, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for path, part in _parts(content, where):
        kind = part["type"]
        if kind == "text":
            if isinstance(part.get("text"), str) and part["text"]:
                blocks.append({"type": "text", "text": part["text"], **_cache_mark(part)})
        elif kind == "image_url":
            blocks.append({"type": "image", "source": _image_source(part.get("image_url"), path), **_cache_mark(part)})
        elif kind == "file":
            blocks.append({"type": "document", "source": _document_source(part.get("file"), path),
                           **_cache_mark(part)})
        else:
            raise InvalidRequest(f"'{path}.type': {kind!r} parts cannot be translated in a user message",
                                 param=f"{path}.type")
    return blocks


def _image_source(image: object, path: str) -> dict[str, Any]:
    if not isinstance(image, dict) or not isinstance(image.get("url"), str):
        raise InvalidRequest(f"'{path}.image_url.url' must be a string", param=f"{path}.image_url.url")
    if image.get("detail") not in (None, "auto", "high"):
        raise InvalidRequest(f"'{path}.image_url.detail': {image['detail']!r} has no Anthropic counterpart "
                             "(Anthropic reads images at full resolution: auto and high are taken)",
                             param=f"{path}.image_url.detail")
    url: str = image["url"]
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "url", "url": url}


def _document_source(file: object, path: str) -> dict[str, Any]:
    """A PDF sent as `file_data` (a `data:application/pdf;base64,` URL, or bare base64 of a `.pdf` file)."""
    data = file.get("file_data") if isinstance(file, dict) else None
    name = file.get("filename") if isinstance(file, dict) else None
    if isinstance(data, str):
        if data.startswith("data:application/pdf;base64,"):
            return {"type": "base64", "media_type": "application/pdf", "data": data.split(",", 1)[1]}
        if not data.startswith("data:") and isinstance(name, str) and name.lower().endswith(".pdf"):
            return {"type": "base64", "media_type": "application/pdf", "data": data}
    raise InvalidRequest(f"'{path}.file': only a PDF's file_data can be translated to Anthropic (OpenAI file ids "
                         "and other file types cannot)", param=f"{path}.file")


def _assistant_blocks(message: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    for key in ("function_call", "audio"):
        if message.get(key) is not None:
            raise InvalidRequest(f"'{where}.{key}' cannot be translated to Anthropic", param=f"{where}.{key}")
    content = message.get("content")
    blocks: list[dict[str, Any]] = []
    if isinstance(content, str):
        blocks = [{"type": "text", "text": content}] if content else []
    for path, part in _parts(content, where):
        text = part.get("text") if part["type"] == "text" else part.get("refusal")
        if part["type"] not in ("text", "refusal"):
            raise InvalidRequest(f"'{path}.type': an assistant message takes text and refusal parts",
                                 param=f"{path}.type")
        if isinstance(text, str) and text:
            blocks.append({"type": "text", "text": text, **_cache_mark(part)})
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        blocks.append({"type": "text", "text": refusal})
    tool_calls = message.get("tool_calls") or []
    if not isinstance(tool_calls, list):
        raise InvalidRequest(f"'{where}.tool_calls' must be an array", param=f"{where}.tool_calls")
    for index, call in enumerate(tool_calls):
        path = f"{where}.tool_calls[{index}]"
        if not isinstance(call, dict) or call.get("type", "function") != "function" or \
                not isinstance(call.get("function"), dict):
            raise InvalidRequest(f"'{path}': only function tool calls can be translated to Anthropic", param=path)
        function = call["function"]
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except (ValueError, TypeError, RecursionError):
            arguments = {}
        blocks.append({"type": "tool_use", "id": call.get("id"), "name": function.get("name"),
                       "input": arguments if isinstance(arguments, dict) else {"value": arguments}})
    return blocks


def _tool_result(message: Mapping[str, Any], where: str) -> dict[str, Any]:
    tool_call_id = message.get("tool_call_id")
    if not isinstance(tool_call_id, str) or not tool_call_id:
        raise InvalidRequest(f"'{where}.tool_call_id' is required", param=f"{where}.tool_call_id")
    content = message.get("content")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_call_id}
    if isinstance(content, list):
        block["content"] = _text_blocks(content, where)
    else:
        block["content"] = content if isinstance(content, str) else ""
    return block


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
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens,
                                  "cache_write_tokens": usage.cache_write_tokens},
    }


# Anthropic's `usage.service_tier` → OpenAI's answer `service_tier`.
_SERVICE_TIERS_BACK = {"standard": "default", "priority": "priority"}


def _service_tier(usage: object) -> str | None:
    tier = usage.get("service_tier") if isinstance(usage, dict) else None
    return _SERVICE_TIERS_BACK.get(tier) if isinstance(tier, str) else None


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
    json_answer = False
    for block in message["content"]:
        if not isinstance(block, dict):
            continue
        role = block_role(block.get("type"))
        if role == CONTENT and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif role == REASONING and isinstance(block.get("thinking"), str):
            reasoning.append(block["thinking"])
        elif role == TOOL_CALL:
            arguments = json.dumps(block["input"] if isinstance(block.get("input"), dict) else {})
            if block.get("name") == JSON_OBJECT_TOOL:
                texts.append(arguments)
                json_answer = True
            else:
                tool_calls.append({"id": block.get("id"), "type": "function", "function": {
                    "name": block.get("name"), "arguments": arguments}})
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
        "choices": [{"index": 0, "message": reply,
                     "finish_reason": _finish(stop_reason, json_answer=json_answer and not tool_calls)}],
        "usage": _openai_usage(usage),
    }
    tier = _service_tier(message.get("usage"))
    if tier is not None:
        completion["service_tier"] = tier
    return completion, usage


def _finish(stop_reason: object, *, json_answer: bool) -> str | None:
    """`finish_reason`; the `tool_use` stop of an answer that is the forced JSON tool's input alone is "stop"."""
    if stop_reason == "tool_use" and json_answer:
        return "stop"
    return finish_reason(stop_reason)


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
        # Content block index of the forced JSON tool (`response_format`) → whether its input streamed yet.
        self._json: dict[int, bool] = {}
        self._service_tier: str | None = None

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
            self._service_tier = _service_tier(self._input)
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "content_block_delta":
            return self._delta(data)
        if kind == "content_block_stop":
            if self._json.get(_int(data.get("index"))) is False:
                self._json[_int(data.get("index"))] = True
                return self._content("{}")
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
            return closing + self._chunk({}, finish=_finish(reason, json_answer=bool(self._json) and not self._tools))
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
        if role == TOOL_CALL and block.get("name") == JSON_OBJECT_TOOL:
            given = block.get("input")
            self._json[_int(data.get("index"))] = bool(given)
            return self._content(json.dumps(given)) if isinstance(given, dict) and given else b""
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
        if role == TOOL_CALL and _int(data.get("index")) in self._json:
            partial = delta.get("partial_json")
            if isinstance(partial, str) and partial:
                self._json[_int(data.get("index"))] = True
                return self._content(partial)
            return b""
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
        chunk: dict[str, Any] = {"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                                 "model": self._model,
                                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if self._service_tier is not None:
            chunk["service_tier"] = self._service_tier
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
    evaluators; without it, only the events that carry usage or an error are
    parsed (their `event:` line names the others).
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
        if event.startswith((b"event: ping", b"event:ping")):
            return event
        if event.startswith((b"event: message_stop", b"event:message_stop")):
            self.done = True
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
