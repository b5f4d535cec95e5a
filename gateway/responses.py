"""Pure parsing of an OpenAI Responses request body (`POST /v1/responses`).

Checks what the gateway relies on (the deployment in `model`, the shape of
`input` and `instructions`, `stream`) and the types of the common sampling
parameters, so that a bad call is refused with a message naming the field
before any upstream is asked. Everything else is left to the version's path:
sent as it is when the call goes natively to a Responses provider, translated
field by field (or refused by name) on the chat pivot
(`gateway.translators.responses_chat`). Shared rules (JSON, user id, unsafe
keys) live in `gateway.inbound`.
"""

from __future__ import annotations

from gateway.chat import check_numbers
from gateway.errors import InvalidRequest
from gateway.inbound import InboundRequest, drop_unsafe, load_object, require_model, stream_flag, user_id

_NUMBER_PARAMS = ("temperature", "top_p")
_INTEGER_PARAMS = ("max_output_tokens", "max_tool_calls", "top_logprobs")
_OBJECT_PARAMS = ("text", "reasoning", "metadata", "stream_options")


def parse_responses_request(raw: bytes, *, header_user: str | None = None) -> InboundRequest:
    """A Responses call (openai-python `types/responses/response_create_params.py`); InvalidRequest names the field.

    The request's `wants_usage` is its `stream`: the usage of a Responses
    stream is always sent (in `response.completed`).
    """
    body = load_object(raw)
    model = require_model(body)
    stream = stream_flag(body)
    items = body.get("input")
    if items is not None and not isinstance(items, str | list):
        raise InvalidRequest("'input' must be a string or an array of input items", param="input")
    if isinstance(items, list):
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise InvalidRequest(f"'input[{index}]' must be an object", param=f"input[{index}]")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise InvalidRequest("'instructions' must be a string", param="instructions")
    if body.get("stream_options") is not None and not stream:
        raise InvalidRequest("'stream_options' is only allowed when 'stream' is true", param="stream_options")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array", param="tools")
    for name in _OBJECT_PARAMS:
        if body.get(name) is not None and not isinstance(body[name], dict):
            raise InvalidRequest(f"'{name}' must be an object", param=name)
    check_numbers(body, _NUMBER_PARAMS, _INTEGER_PARAMS)
    user, source = user_id(body, header_user)
    drop_unsafe(body)
    return InboundRequest(api="responses", body=body, model=model, stream=stream, wants_usage=stream, user=user,
                          user_source=source)
