"""Pure: Anthropic's Messages API at the gateway's door: parsing a call, and the API's error shape.

`parse_messages_request` (`POST /v1/messages`) and `parse_count_tokens_request`
(`POST /v1/messages/count_tokens`) check what the gateway relies on and what
the real API refuses before any upstream is asked, each refusal naming the
field; everything else is kept as the client sent it (a native upstream
judges it, the translation to chat completions refuses what it cannot carry).
The fields and their types come from anthropic-sdk-python
`types/message_create_params.py` and `message_count_tokens_params.py`; the
rules from the API's own 400s: `model` and a non-empty `messages` (and, to
create, an integer `max_tokens` ≥ 0) required, the first message the user's,
roles `user` and `assistant` (and `system`, which carries only
`mid_conv_system` blocks), every message's content non-empty but an optional
final assistant one, no empty or whitespace-only text block.

Errors on these routes use the API's shape (anthropic-sdk-python
`types/shared/error_response.py`): `{"type": "error", "error": {"type",
"message"}}`, the type given by the HTTP status (`error_type`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway.errors import InvalidRequest
from gateway.inbound import InboundRequest, drop_unsafe, load_object, require_model, stream_flag, user_id

# Anthropic's error type for each HTTP status the gateway answers (types/shared/*_error.py);
# 502 and any other status without a type of its own is `api_error`.
ERROR_TYPES: Mapping[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_ROLES = ("user", "assistant", "system")
_NUMBERS = ("temperature", "top_p")
_INTEGERS = ("top_k",)


def error_type(status: int) -> str:
    """Anthropic's error `type` for an answer of HTTP `status` (`api_error` for one it has no name for)."""
    return ERROR_TYPES.get(status, "invalid_request_error" if 400 <= status < 500 else "api_error")


def error_body(status: int, message: str) -> dict[str, Any]:
    """The body of an error answer of HTTP `status`: `{"type": "error", "error": {"type", "message"}}`."""
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


def error_event(error: Mapping[str, Any]) -> bytes:
    """The SSE `error` event that ends a Messages stream (`error`: `{"type", "message"}`); the SDKs raise it."""
    data = json.dumps({"type": "error", "error": dict(error)}, separators=(",", ":"))
    return b"event: error\ndata: " + data.encode() + b"\n\n"


def parse_messages_request(raw: bytes, *, header_user: str | None = None) -> InboundRequest:
    """A `POST /v1/messages` call (`MessageCreateParams`); InvalidRequest names the field.

    The `InboundRequest` holds the body as sent (minus `inbound.UNSAFE_KEYS`),
    with `api` "messages"; the user id comes from `metadata.user_id` (or the
    header, see `gateway.inbound`).
    """
    body = load_object(raw)
    model = require_model(body)
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
        raise InvalidRequest("'max_tokens' is required and must be an integer of at least 0", param="max_tokens")
    _check_common(body)
    for name in _NUMBERS:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InvalidRequest(f"'{name}' must be a number", param=name)
    for name in _INTEGERS:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidRequest(f"'{name}' must be an integer", param=name)
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidRequest("'metadata' must be an object", param="metadata")
    stops = body.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(stop, str) for stop in stops)):
        raise InvalidRequest("'stop_sequences' must be an array of strings", param="stop_sequences")
    stream = stream_flag(body)
    user, source = user_id(body, header_user)
    drop_unsafe(body)
    # wants_usage: through the chat pivot, the stream's usage chunk is what message_delta reports.
    return InboundRequest(api="messages", body=body, model=model, stream=stream, wants_usage=True, user=user,
                          user_source=source)


def parse_count_tokens_request(raw: bytes, *, header_user: str | None = None) -> InboundRequest:
    """A `POST /v1/messages/count_tokens` call (`MessageCountTokensParams`); InvalidRequest names the field.

    The user id (which picks the version whose prompt is counted) comes from
    the header, or `metadata.user_id` if a client sends one.
    """
    body = load_object(raw)
    model = require_model(body)
    _check_common(body)
    if "stream" in body:
        raise InvalidRequest("'stream' is not a field of count_tokens", param="stream")
    user, source = user_id(body, header_user)
    drop_unsafe(body)
    return InboundRequest(api="messages", body=body, model=model, stream=False, wants_usage=False, user=user,
                          user_source=source)


def _check_common(body: Mapping[str, Any]) -> None:
    """`messages`, `system`, `tools` and `tool_choice`: what both endpoints take."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array: at least one message is required",
                             param="messages")
    last = len(messages) - 1
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"'{where}' must be an object", param=where)
        role = message.get("role")
        if role not in _ROLES:
            raise InvalidRequest(f"'{where}.role' must be one of {', '.join(_ROLES)}", param=f"{where}.role")
        if index == 0 and role != "user":
            raise InvalidRequest("the first message must use the 'user' role", param=f"{where}.role")
        _check_content(message.get("content"), where, optional=index == last and role == "assistant")
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        if not isinstance(system, list):
            raise InvalidRequest("'system' must be a string or an array of text blocks", param="system")
        for index, block in enumerate(system):
            where = f"system[{index}]"
            if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
                raise InvalidRequest(f"'{where}' must be a text block", param=where)
            _check_text(block["text"], f"{where}.text")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidRequest("'tools' must be an array", param="tools")
        for index, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise InvalidRequest(f"'tools[{index}]' must be an object with a 'name'", param=f"tools[{index}]")
            if tool.get("type") in (None, "custom") and not isinstance(tool.get("input_schema"), dict):
                raise InvalidRequest(f"'tools[{index}].input_schema' must be a JSON schema object",
                                     param=f"tools[{index}].input_schema")
    choice = body.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
            raise InvalidRequest("'tool_choice' must be an object whose type is auto, any, tool or none",
                                 param="tool_choice")
        if not tools:
            raise InvalidRequest("'tool_choice' may only be specified while providing tools", param="tool_choice")


def _check_content(content: object, where: str, *, optional: bool) -> None:
    if isinstance(content, str):
        if not optional:
            _check_text(content, f"{where}.content")
        return
    if not isinstance(content, list):
        raise InvalidRequest(f"'{where}.content' must be a string or an array of content blocks",
                             param=f"{where}.content")
    if not content and not optional:
        raise InvalidRequest(f"'{where}.content' must be non-empty: only the final assistant message may be empty",
                             param=f"{where}.content")
    for index, block in enumerate(content):
        place = f"{where}.content[{index}]"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise InvalidRequest(f"'{place}' must be a content block: an object with a 'type'", param=place)
        if block["type"] == "text":
            if not isinstance(block.get("text"), str):
                raise InvalidRequest(f"'{place}.text' must be a string", param=f"{place}.text")
            _check_text(block["text"], f"{place}.text")


def _check_text(text: str, where: str) -> None:
    if not text.strip():
        raise InvalidRequest(f"'{where}': text content blocks must contain non-whitespace text", param=where)
