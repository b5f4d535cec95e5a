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
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

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
