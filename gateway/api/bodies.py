"""A per-worker budget of request-body bytes held in memory, as plain ASGI middleware.

Each body is bounded by `server.max_body_bytes` (32 MiB by default: a few
base64 photos fit, and it is Anthropic's own Messages API limit); this budget
bounds all of them together, `server.max_body_bytes_in_flight` per worker,
so memory stays flat under any mix of large calls. A body's bytes count from
the moment they are received until its answer has been sent in full
(streams included), because the parsed request and the upstream's copy live
that long. A call whose body does not fit is refused with 503 and
`Retry-After` (Overloaded): the gateway's limit, not the caller's mistake.
With Content-Length the refusal comes before any byte is read.

Written as raw ASGI rather than a Starlette `BaseHTTPMiddleware`: it only
wraps `receive`, and it must see the end of streamed answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gateway.errors import Overloaded

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyBudget:
    """Bytes of request bodies this worker holds now, against a limit (one event loop, no lock needed)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> None:
        """Count `size` more bytes; raises Overloaded when they do not fit."""
        if self.held + size > self.limit:
            raise Overloaded("The gateway holds as many request bodies as it may; retry shortly")
        self.held += size


class BodyBudgetMiddleware:
    def __init__(self, app: ASGIApp, *, budget: BodyBudget) -> None:
        self.app = app
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        budget = self.budget
        taken = 0
        declared = _content_length(scope)

        async def counted() -> Message:
            nonlocal taken, declared
            if declared:
                # Refuse before reading when the whole body cannot fit; its bytes are counted as they come.
                if budget.held + declared > budget.limit:
                    raise Overloaded("The gateway holds as many request bodies as it may; retry shortly")
                declared = 0
            message = await receive()
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                if size:
                    budget.take(size)
                    taken += size
            return message

        try:
            await self.app(scope, counted, send)
        finally:
            budget.held -= taken


def _content_length(scope: Scope) -> int:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0
