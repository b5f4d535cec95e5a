"""The proxy's own routes served straight from the middleware, without the framework's per-call layers.

A POST to one of the routes given (chat completions, Responses, Messages)
goes to its handler from here, inside the gateway's middleware (the body
budget, CORS) and inside Starlette's error handling (an unexpected exception
still gets the gateway's 500 answer), but past the layers a proxied call does
not need: the exception middleware and its exit stack, the router's match of
every route, and FastAPI's request handler with its dependency solving. The
routes stay declared on the app, so the OpenAPI schema, 404 listings and
other methods (405) are unchanged. A `GatewayError` a handler lets through
gets the same answer the app's handler would give it.

Their streams go out through `EventStream`: Starlette's `StreamingResponse`
watches for the client going away with an anyio task group per stream (two
tasks, cancel scopes, a task's repr built on every cancel), a sixth of a
streamed call's CPU on the gateway's side; one plain task does the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway.api.errors import error_response
from gateway.errors import GatewayError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Endpoint = Callable[[Request], Awaitable[Response]]


class FastPath:
    """ASGI middleware: POSTs to `routes` (path → handler) are answered here; the rest goes on to `app`."""

    def __init__(self, app: ASGIApp, *, routes: Mapping[str, Endpoint]) -> None:
        self.app = app
        self.routes = dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = (self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST"
                    and not scope.get("root_path") else None)
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        try:
            response = await endpoint(Request(scope, receive, send))
        except GatewayError as exc:
            response = error_response(exc)
        await response(scope, receive, send)


class EventStream(StreamingResponse):
    """A `StreamingResponse` that stops when the client goes away, watched by one plain task.

    When `http.disconnect` arrives while the body is being sent, the task
    sending it is cancelled (the body iterator sees the cancellation where it
    waits) and the response ends without an error, as Starlette's does. An
    async generator body is closed at the end however it ended, so its
    `finally` runs at once rather than when it is collected.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        sending = True
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            if sending:
                gone = True
                task.cancel("the client went away")

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            sending = False
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone:
                raise
            task.uncancel()
        finally:
            sending = False
            watcher.cancel()
            if isinstance(self.body_iterator, AsyncGenerator):
                await self.body_iterator.aclose()
