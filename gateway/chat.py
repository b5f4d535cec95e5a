"""Pure parsing of an OpenAI chat-completions request body.

Checks only what the gateway relies on, and the types of the common sampling
parameters, so that a bad call is refused with a message naming the field
before any upstream is asked. Everything else passes through untouched.
Shared rules (JSON, user id, unsafe keys) live in `gateway.inbound`.
"""

from __future__ import annotations

from gateway.errors import InvalidRequest
from gateway.inbound import (
    MAX_USER_ID_CHARS,
    UNSAFE_KEYS,
    InboundRequest,
    drop_unsafe,
    load_object,
    require_model,
    stream_flag,
    user_id,
)

__all__ = ["MAX_USER_ID_CHARS", "UNSAFE_KEYS", "parse_chat_request"]

_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
_NUMBER_PARAMS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_INTEGER_PARAMS = ("max_tokens", "max_completion_tokens", "n", "seed", "top_logprobs")


def parse_chat_request(raw: bytes, *, header_user: str | None = None) -> InboundRequest:
    """A chat-completions call (openai-python `completion_create_params.py`); InvalidRequest names the field."""
    body = load_object(raw)
    model = require_model(body)
    _check_messages(body.get("messages"))
    stream = stream_flag(body)

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

    check_numbers(body, _NUMBER_PARAMS, _INTEGER_PARAMS)
    user, source = user_id(body, header_user)
    drop_unsafe(body)
    return InboundRequest(api="chat", body=body, model=model, stream=stream, wants_usage=wants_usage, user=user,
                          user_source=source)


def check_numbers(body: dict[str, object], numbers: tuple[str, ...], integers: tuple[str, ...]) -> None:
    """Refuse a non-number in `numbers` or a non-integer in `integers`, naming it; null is allowed."""
    for name in numbers:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InvalidRequest(f"'{name}' must be a number", param=name)
    for name in integers:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidRequest(f"'{name}' must be an integer", param=name)


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
