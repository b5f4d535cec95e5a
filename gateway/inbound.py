"""Pure: what the three inbound APIs share before any version is chosen.

A call arrives as OpenAI chat completions (`chat`), OpenAI Responses
(`responses`) or Anthropic Messages (`messages`); each API's parser
(`gateway.chat`, `gateway.responses`, `gateway.messages`) checks what the
gateway relies on and returns an `InboundRequest`. This module holds the rules
they have in common: how the body is read as JSON, where the user id comes
from, and which keys are never forwarded.

User id, in order (the first non-empty string wins; which one is kept in
`InboundRequest.user_source` and logged at debug level):

1. body `user` (OpenAI chat and Responses; deprecated there but still sent);
2. body `safety_identifier` (OpenAI's replacement for `user`);
3. body `metadata.user_id` (Anthropic Messages; also read on the OpenAI APIs,
   whose `metadata` is a free string map);
4. the user-id header (`X-User-Id` unless `server.user_id_header` says
   otherwise).

`prompt_cache_key` is a cache-routing hint, not a user id, and is never read.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from gateway.errors import InvalidRequest

InboundApi = Literal["chat", "responses", "messages"]
UserSource = Literal["user", "safety_identifier", "metadata.user_id", "header"]

# Keys some SDKs and proxies honour to redirect a call or swap its credentials.
# They are dropped so that no request can aim the gateway's key elsewhere.
UNSAFE_KEYS = frozenset(
    {"api_base", "base_url", "api_key", "api_version", "extra_headers", "headers", "organization"}
)
MAX_USER_ID_CHARS = 1024
# Content part types that carry text: chat and Anthropic `text`, Responses `input_text` and `output_text`.
_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})


@dataclass(frozen=True, slots=True)
class InboundRequest:
    """A parsed call, in the shape of the API it came through.

    `body` is the client's JSON object minus `UNSAFE_KEYS`; `model` names the
    deployment; `wants_usage` is true when a chat client asked for the usage
    chunk of a stream itself (`stream_options.include_usage`).
    """

    api: InboundApi
    body: dict[str, Any]
    model: str
    stream: bool
    wants_usage: bool
    user: str | None
    user_source: UserSource | None = None


def load_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object; InvalidRequest for anything else (bad JSON, NaN, too deep, not an object)."""
    try:
        # As `json.loads(raw, parse_constant=..., parse_float=...)` reads bytes, without a decoder per call.
        body = _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except RecursionError:
        raise InvalidRequest("request body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    return body


def require_model(body: dict[str, Any]) -> str:
    """The body's `model`; InvalidRequest (param `model`) when it is missing or not a non-empty string."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a non-empty string", param="model")
    return model


def stream_flag(body: dict[str, Any]) -> bool:
    """`stream` as a boolean: absent or null is false; anything but a boolean is refused."""
    stream = body.get("stream")
    if stream is None:
        return False
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream")
    return stream


def user_id(body: dict[str, Any], header_user: str | None) -> tuple[str | None, UserSource | None]:
    """The user id and where it came from, in the module's documented order.

    Raises InvalidRequest (naming the field) for a non-string id or one longer
    than MAX_USER_ID_CHARS.
    """
    metadata = body.get("metadata")
    candidates: list[tuple[UserSource, object]] = [
        ("user", body.get("user")),
        ("safety_identifier", body.get("safety_identifier")),
        ("metadata.user_id", metadata.get("user_id") if isinstance(metadata, dict) else None),
    ]
    found: str | None = None
    source: UserSource | None = None
    for name, value in candidates:
        if value is not None and not isinstance(value, str):
            raise InvalidRequest(f"'{name}' must be a string", param=name)
        if value and found is None:
            found, source = value, name
    if found is None and header_user:
        found, source = header_user, "header"
    if found is not None and len(found) > MAX_USER_ID_CHARS:
        raise InvalidRequest(
            f"the user id is longer than {MAX_USER_ID_CHARS} characters", param=source if source != "header" else "user"
        )
    return found, source


def drop_unsafe(body: dict[str, Any]) -> None:
    """Remove the keys of UNSAFE_KEYS from `body`, in place: they would redirect or re-authenticate the call."""
    for key in UNSAFE_KEYS & body.keys():
        del body[key]


def _non_finite(literal: str) -> float:
    raise ValueError(f"{literal} is not valid JSON")


def _finite_float(literal: str) -> float:
    # NaN, Infinity and overflowing numbers are not JSON; relayed, they would break the upstream.
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"{literal} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_non_finite, parse_float=_finite_float)


def content_text(content: object) -> str:
    """The text of a message's `content`: the string itself, or its text parts joined with newlines.

    Takes OpenAI chat content (a string, or parts such as `{"type": "text",
    "text": ...}` and `{"type": "image_url", ...}`), OpenAI Responses content
    (`input_text` and `output_text` parts) and Anthropic content blocks alike
    (`{"type": "text", "text": ...}`): parts of any other type contribute
    nothing, and anything that is neither a string nor a list is no text at all.
    """
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") in _TEXT_PARTS and isinstance(part.get("text"), str)
        )
    return ""
