"""Pure parsing of an OpenAI chat-completions request body.

Checks only what the gateway relies on, and the types of the common sampling
parameters, so that a bad call is refused with a message naming the field
before any upstream is asked. Everything else passes through untouched.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from gateway.errors import InvalidRequest

_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
_NUMBER_PARAMS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_INTEGER_PARAMS = ("max_tokens", "max_completion_tokens", "n", "seed", "top_logprobs")
# Keys some SDKs and proxies honour to redirect a call or swap its credentials.
# They are dropped so that no request can aim the gateway's key elsewhere.
UNSAFE_KEYS = frozenset(
    {"api_base", "base_url", "api_key", "api_version", "extra_headers", "headers", "organization"}
)
MAX_USER_ID_CHARS = 1024


@dataclass(frozen=True, slots=True)
class ChatRequest:
    body: dict[str, Any]
    model: str
    stream: bool
    # The client asked for the final usage chunk of a stream itself.
    wants_usage: bool
    user: str | None


def parse_chat_request(raw: bytes, *, header_user: str | None = None) -> ChatRequest:
    try:
        body = json.loads(raw, parse_constant=_non_finite, parse_float=_finite_float)
    except RecursionError:
        raise InvalidRequest("request body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")

    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a non-empty string", param="model")

    _check_messages(body.get("messages"))

    stream = body.get("stream")
    if stream is None:
        stream = False
    elif not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream")

    wants_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise InvalidRequest("'stream_options' must be an object", param="stream_options")
        if not stream:
            raise InvalidRequest(
                "'stream_options' is only allowed when 'stream' is true", param="stream_options"
            )
        include = options.get("include_usage", False)
        if not isinstance(include, bool):
            raise InvalidRequest(
                "'stream_options.include_usage' must be a boolean", param="stream_options.include_usage"
            )
        wants_usage = include

    for name in _NUMBER_PARAMS:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InvalidRequest(f"'{name}' must be a number", param=name)
    for name in _INTEGER_PARAMS:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidRequest(f"'{name}' must be an integer", param=name)

    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("'user' must be a string", param="user")
    user_id = user or header_user or None
    if user_id is not None and len(user_id) > MAX_USER_ID_CHARS:
        raise InvalidRequest(f"the user id is longer than {MAX_USER_ID_CHARS} characters", param="user")

    for key in UNSAFE_KEYS & body.keys():
        del body[key]
    return ChatRequest(body=body, model=model, stream=stream, wants_usage=wants_usage, user=user_id)


def _non_finite(literal: str) -> float:
    raise ValueError(f"{literal} is not valid JSON")


def _finite_float(literal: str) -> float:
    # NaN, Infinity and overflowing numbers are not JSON; relayed, they would break the upstream.
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"{literal} is out of range")
    return value


def _check_messages(messages: object) -> None:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"'{where}' must be an object", param=where)
        role = message.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise InvalidRequest(
                f"'{where}.role' must be one of {', '.join(sorted(_ROLES))}", param=f"{where}.role"
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise InvalidRequest(
                f"'{where}.content' must be a string or an array of content parts",
                param=f"{where}.content",
            )
