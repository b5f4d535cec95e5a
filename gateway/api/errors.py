"""The one mapping from the gateway's errors to HTTP answers.

The error tree (`gateway.errors`) carries no HTTP status; this module is the
only place that gives one, with the body in OpenAI's error shape
(`{"error": {"message", "type", "param", "code"}}`, from openai-python's
`types/shared/error_object.py`), or Anthropic's on the Messages routes
(`anthropic_error_response`, see `gateway.messages`), and `Retry-After`
where waiting helps.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse

from gateway import messages
from gateway.errors import (
    ClientError,
    Conflict,
    Forbidden,
    GatewayError,
    InvalidRequest,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    ShuttingDown,
    StoreRejected,
    StoreUnavailable,
    Unauthorized,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRefused,
    UpstreamStatusError,
    UpstreamTimeout,
)

# The provider's own status, relayed: UpstreamRefused is only raised for 400, 413, 422 and 429
# (and, on pass-through routes, 404, 409 and 415).
RELAYED = 0

# Error class → (HTTP status, OpenAI error type). The first class the error is an
# instance of wins, so subclasses come before their bases; an UpstreamRefused
# carries the provider's own type.
ANSWERS: dict[type[GatewayError], tuple[int, str]] = {
    InvalidRequest: (400, "invalid_request_error"),
    Unauthorized: (401, "authentication_error"),
    Forbidden: (403, "permission_error"),
    NotFound: (404, "invalid_request_error"),
    Conflict: (409, "invalid_request_error"),
    PayloadTooLarge: (413, "invalid_request_error"),
    RateLimited: (429, "rate_limit_error"),
    ClientError: (400, "invalid_request_error"),
    Overloaded: (503, "server_error"),
    UpstreamRefused: (RELAYED, "invalid_request_error"),
    UpstreamOverloaded: (503, "server_error"),
    ShuttingDown: (503, "server_error"),
    UpstreamTimeout: (504, "upstream_error"),
    UpstreamError: (502, "upstream_error"),
    StoreUnavailable: (503, "server_error"),
    # Values a client sent that the database refuses (checked at the API where it can be): the client's to fix.
    StoreRejected: (400, "invalid_request_error"),
    GatewayError: (500, "server_error"),
}


def _answer(exc: GatewayError) -> tuple[int, str]:
    return next(answer for cls, answer in ANSWERS.items() if isinstance(exc, cls))


def http_status(exc: GatewayError) -> int:
    """The HTTP status the client gets for `exc`."""
    status, _ = _answer(exc)
    if status == RELAYED and isinstance(exc, UpstreamStatusError):
        return exc.upstream_status
    return status


def error_body(exc: GatewayError) -> dict[str, Any]:
    """OpenAI's error object for `exc`: message, type, param, code."""
    _, error_type = _answer(exc)
    if isinstance(exc, UpstreamRefused):
        error_type = exc.error_type
    if isinstance(exc, UpstreamRefused):
        code = exc.code  # the provider's own, null included
    else:
        code = exc.code_or_kind if isinstance(exc, UpstreamError) else exc.code
    return {"message": exc.message, "type": error_type, "param": exc.param, "code": code}


class ErrorResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: an error message may quote what the client
    sent (a model name, a path), and a lone surrogate in it cannot be encoded as UTF-8."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def error_response(exc: GatewayError, *, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The HTTP answer for `exc`: OpenAI's error shape, its status, `Retry-After` where given, and
    the upstream's rate-limit headers on an error the provider answered."""
    answer_headers = dict(headers or {})
    if isinstance(exc, UpstreamStatusError):
        answer_headers.update(exc.headers)
    if exc.retry_after:
        answer_headers["Retry-After"] = exc.retry_after
    return ErrorResponse({"error": error_body(exc)}, status_code=http_status(exc), headers=answer_headers)


def anthropic_error_response(exc: GatewayError, *, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The HTTP answer for `exc` on the Messages routes: the same status and headers as `error_response`,
    the body in Anthropic's shape, `{"type": "error", "error": {"type", "message"}}`, its type by status
    (`gateway.messages.error_type`), the message prefixed with the field it names."""
    answer_headers = dict(headers or {})
    if isinstance(exc, UpstreamStatusError):
        answer_headers.update(exc.headers)
    if exc.retry_after:
        answer_headers["Retry-After"] = exc.retry_after
    status = http_status(exc)
    # Anthropic's errors have no `param`: the message names the field, as Anthropic's own do ("max_tokens: ...").
    message = exc.message if not exc.param or exc.param in exc.message else f"{exc.param}: {exc.message}"
    return ErrorResponse(messages.error_body(status, message), status_code=status, headers=answer_headers)
