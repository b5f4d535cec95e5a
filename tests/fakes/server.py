"""What every fake shares: a real HTTP server on 127.0.0.1 in a thread, the record of a call,
a webhook receiver, and a deterministic value for a JSON schema (structured output, tool input).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass
from typing import Any

from aiohttp import web

# Request bodies the fakes accept: the real APIs take tens of MB (vision calls).
MAX_BODY = 64 * 1024 * 1024


@dataclass
class Received:
    """One call as the fake saw it: path, headers, parsed JSON body (None for a GET), time.monotonic()."""

    path: str
    headers: dict[str, str]
    body: Any
    at: float


class ServerThread:
    """An aiohttp application served on 127.0.0.1 from a thread with its own event loop."""

    def __init__(self, app: web.Application) -> None:
        self.port = free_port()
        self._app = app
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._serve, name="fake-server", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake server did not start")

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        # Handlers are cancelled when their client goes away, like a real server's would stop sending.
        self._runner = web.AppRunner(
            self._app, access_log=None, handle_signals=False, handler_cancellation=True, shutdown_timeout=0.5
        )
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()


class WebhookReceiver:
    """A real HTTP server that collects the JSON POSTed to it (alert webhooks)."""

    def __init__(self, *, fail_first: int = 0) -> None:
        self.received: list[dict[str, Any]] = []
        self.attempts = 0
        self._fail_first = fail_first
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/hook", self._collect)
        self._server = ServerThread(app)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}/hook"

    def start(self) -> WebhookReceiver:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    async def _collect(self, request: web.Request) -> web.StreamResponse:
        self.attempts += 1
        if self.attempts <= self._fail_first:
            return web.Response(status=503)
        self.received.append(await request.json())
        return web.json_response({"ok": True})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def sample(schema: Any) -> Any:
    """A fixed value that satisfies a (simple) JSON schema: what the fake model "generates".

    Strings are "Paris", numbers 1, booleans true, arrays one item, enums their
    first value, objects every property (required or not); `anyOf`/`oneOf` take
    the first branch. `$ref`s into `$defs`/`definitions` are followed.
    """
    return _sample(schema, schema if isinstance(schema, dict) else {}, 0)


def _sample(schema: Any, root: dict[str, Any], depth: int) -> Any:
    if not isinstance(schema, dict) or depth > 8:
        return None
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        target = (root.get("$defs") or root.get("definitions") or {}).get(name, {})
        return _sample(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return _sample(schema[key][0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        return {name: _sample(sub, root, depth + 1) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [_sample(schema.get("items") or {"type": "string"}, root, depth + 1)]
    if kind == "string":
        return "Paris"
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return {}
