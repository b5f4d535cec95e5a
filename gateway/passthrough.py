"""Pass-through: the rest of an OpenAI base URL, relayed to one configured provider.

`/v1/embeddings`, `/v1/moderations`, `/v1/completions`, `/v1/audio/*`,
`/v1/images/*` and `GET /v1/models/{id}` (the defaults of
`passthrough.routes`) go to `passthrough.provider` as the app sent them: the
same method, path below `/v1`, query string and body bytes (the `model` is the
app's, not a deployment's), with the gateway's key instead of the client's.
The answer comes back byte for byte and streamed as it arrives, with its
status and an allowlist of headers. The proxy's limits apply: client auth,
the rate limit, `max_body_bytes`, the concurrency limit and the provider's
deadlines. An upstream error is answered in OpenAI's error shape (scrubbed of
anything like a key); 404, 409 and 415, which concern the app's own request
here, keep their status.

Each call is one request record with `api = "passthrough"`, an empty
deployment, the route as its version and the app's `model`; token counts and
cost come from the answer's `usage` when it has one (embeddings, completions).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.config import PassthroughSettings
from gateway.errors import GatewayError, ShuttingDown, UpstreamError, UpstreamRefused, UpstreamStatusError
from gateway.logs import AccessLog
from gateway.metrics import Metrics
from gateway.models import RecordStatus, Usage
from gateway.providers import UpstreamRequest
from gateway.recorder import Recorder
from gateway.relay import CLIENT_CLOSED, Relay, loop_deadline, shutdown_error
from gateway.upstream import UpstreamClient, UpstreamResponse

access_log = AccessLog(logging.getLogger("gateway.access"))

# Request headers an upstream may see; everything else (auth, cookies, hop-by-hop) stays here.
_REQUEST_HEADERS = ("content-type", "accept")
# Answer headers a client may see besides the gateway's own.
_ANSWER_HEADERS = ("content-type", "content-encoding", "content-disposition", "cache-control", "retry-after")
_ANSWER_PREFIXES = ("x-ratelimit-",)
# Statuses about the app's own request on these routes (an unknown model id, say): kept as they are.
_RELAYED = (404, 409, 415)
# Where a JSON answer's usage is looked for: its tail (OpenAI puts `usage` last).
_TAIL_BYTES = 4096
_USAGE = re.compile(rb'"usage"\s*:\s*(\{(?:[^{}]|\{[^{}]*\})*\})')
_MAX_MODEL_CHARS = 256
# Segments of a path that may be relayed (model ids have ':', '@', '+' and '/', never '%' or spaces).
_SAFE_PATH = re.compile(r"^(/[A-Za-z0-9._~:@+=,-]+)+$")


@dataclass(slots=True, eq=False)
class PassCall:
    request_id: str
    route: str
    model: str
    stream: bool
    received: float
    deadline: float
    first_byte_by: float | None
    created_at: datetime
    upstream: UpstreamRequest
    # The task waiting on the upstream, and whether a shutdown ended the call (gateway.relay.end_calls).
    task: asyncio.Task[Any] | None = None
    ended: bool = False


class PassThrough:
    """Relays the configured routes to one provider and records each call."""

    def __init__(
        self,
        settings: PassthroughSettings,
        *,
        client: UpstreamClient,
        relay: Relay,
        recorder: Recorder,
        metrics: Metrics,
        http_status: Callable[[GatewayError], int],
        access_log: bool = True,
    ) -> None:
        self.routes = settings.routes
        self._http_status = http_status
        self._exact = {route for route in settings.routes if not route.endswith("/*")}
        self._prefixes = tuple(route[:-1] for route in settings.routes if route.endswith("/*"))
        self._client = client
        self._relay = relay
        self._recorder = recorder
        self._metrics = metrics
        self._access_log = access_log
        self._closing: set[asyncio.Future[None]] = set()

    def match(self, path: str) -> str | None:
        """The configured route that covers `path` (decoded), or None.

        A path with characters outside a plain set, or with `.`/`..` segments,
        matches nothing: the upstream must not resolve it to another endpoint.
        """
        if not _SAFE_PATH.match(path) or "/./" in path + "/" or "/../" in path + "/":
            return None
        if path in self._exact:
            return path
        for prefix in self._prefixes:
            if path.startswith(prefix) and len(path) > len(prefix):
                return prefix + "*"
        return None

    def begin(
        self,
        *,
        route: str,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
        request_id: str,
        received: float,
    ) -> PassCall:
        """Admit the call (Overloaded at the concurrency limit) and build what goes upstream. No I/O."""
        model, stream = _model_and_stream(headers.get("content-type", ""), body)
        forwarded = self._client.provider.json_headers(stream=stream)
        for name in _REQUEST_HEADERS:  # the app's own (multipart for audio, none for a GET) win
            if name in headers:
                forwarded[name] = headers[name]
            else:
                forwarded.pop(name, None)
        forwarded.update(self._client.provider.auth_headers())
        upstream = UpstreamRequest(
            path=path.removeprefix("/v1") + (f"?{query}" if query else ""),
            headers=forwarded,
            content=body,
            method=method,
            fixed_path=False,
        )
        self._relay.admit()
        settings = self._client.settings
        call = PassCall(
            request_id=request_id,
            route=route,
            model=model,
            stream=stream,
            received=received,
            deadline=loop_deadline(received, settings.timeout_s),
            first_byte_by=loop_deadline(received, settings.first_byte_timeout_s)
            if settings.first_byte_timeout_s is not None
            else None,
            created_at=datetime.now(UTC),
            upstream=upstream,
        )
        self._relay.track(call)
        return call

    async def open(self, call: PassCall) -> UpstreamResponse:
        """Send the call; the answer's body is not read yet. Failures are recorded, then raised."""
        call.task = asyncio.current_task()
        try:
            try:
                return await self._client.send(
                    call.upstream, stream=True, deadline=call.deadline, first_byte_by=call.first_byte_by
                )
            except asyncio.CancelledError:
                if not call.ended:
                    raise
                raise shutdown_error() from None
        except UpstreamError as exc:
            if type(exc) is not UpstreamStatusError or exc.upstream_status not in _RELAYED:
                self._finish(call, status="error", http_status=self._http_status(exc), error_kind=exc.kind)
                raise
            refused = UpstreamRefused(exc.message, upstream_status=exc.upstream_status,
                                      error_type="invalid_request_error",
                                      code="model_not_found" if exc.upstream_status == 404 else None)
            self._finish(call, status="error", http_status=exc.upstream_status, error_kind=exc.kind)
            raise refused from exc
        except BaseException:
            self._finish(call, status="client_cancelled", http_status=CLIENT_CLOSED, error_kind="client_cancelled")
            raise

    def answer_headers(self, response: UpstreamResponse) -> dict[str, str]:
        """The upstream's answer headers a client may see."""
        return {
            name: value
            for name, value in response.headers.items()
            if name in _ANSWER_HEADERS or name.startswith(_ANSWER_PREFIXES)
        }

    async def relay(self, call: PassCall, response: UpstreamResponse) -> AsyncIterator[bytes]:
        """The answer's bytes as they arrive; recorded when it ends, however it ends."""
        status: RecordStatus = "client_cancelled"
        error_kind: str | None = "client_cancelled"
        http_status = CLIENT_CLOSED
        ttft: float | None = None
        json_answer = "json" in response.headers.get("content-type", "")
        tail = b""
        call.task = asyncio.current_task()
        try:
            try:
                try:
                    if call.ended:
                        raise asyncio.CancelledError  # ended between opening the answer and relaying it
                    async for chunk in self._client.relay(response, deadline=call.deadline,
                                                          first_byte_by=call.first_byte_by):
                        if ttft is None:
                            ttft = time.perf_counter() - call.received
                        if json_answer:
                            tail = (tail + chunk)[-_TAIL_BYTES:]
                        yield chunk
                except asyncio.CancelledError:
                    if not call.ended:
                        raise
                    raise shutdown_error() from None
                status, error_kind = "ok", None
            except UpstreamError as exc:
                # The status line has gone out: all that is left is to end the body early.
                status, error_kind = "error", exc.kind
            http_status = response.status_code
        finally:
            if call.ended and error_kind == "client_cancelled":
                # Cancelled while handing a chunk to the server: the body just ends early.
                status, http_status, error_kind = "error", response.status_code, ShuttingDown.kind
            self._finish(call, status=status, http_status=http_status, error_kind=error_kind,
                         usage=_usage_in(tail) if json_answer else Usage(),
                         ttft=ttft if call.stream else None)
            closing = asyncio.ensure_future(response.aclose())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
            with contextlib.suppress(Exception):
                await asyncio.shield(closing)

    def _finish(
        self,
        call: PassCall,
        *,
        status: RecordStatus,
        http_status: int,
        error_kind: str | None,
        usage: Usage = Usage(),
        ttft: float | None = None,
    ) -> None:
        self._relay.release()
        self._relay.untrack(call)
        latency = time.perf_counter() - call.received
        provider = self._client.provider.name
        self._relay.record(
            request_id=call.request_id, created_at=call.created_at, deployment="", version=call.route,
            user_hash=None, provider=provider, model=call.model, stream=call.stream, api="passthrough",
            status=status, http_status=http_status, error_kind=error_kind, usage=usage, latency=latency, ttft=ttft,
            price=self._relay.price(call.model) if call.model and usage.prompt_tokens is not None else None,
        )
        series = self._metrics.series("", call.route, "passthrough")
        series.requests(status).inc()
        series.duration().observe(latency)
        if self._access_log:
            access_log.write("proxied call", {
                "request_id": call.request_id, "api": "passthrough", "route": call.route, "status": status,
                "http_status": http_status, "error_kind": error_kind, "latency_ms": round(latency * 1000, 2),
            })


def _model_and_stream(content_type: str, body: bytes) -> tuple[str, bool]:
    """The app's `model` and `stream` from a JSON body (multipart and empty bodies: neither)."""
    if "json" not in content_type or not body:
        return "", False
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return "", False
    if not isinstance(data, dict):
        return "", False
    model = data.get("model")
    model = model.replace("\x00", "")[:_MAX_MODEL_CHARS] if isinstance(model, str) else ""
    return model.encode("utf-8", "replace").decode(), data.get("stream") is True


def _usage_in(tail: bytes) -> Usage:
    """Tokens from the `usage` object at the end of a JSON answer; completion 0 when it has none (embeddings)."""
    found = _USAGE.findall(tail)
    if not found:
        return Usage()
    try:
        usage = json.loads(found[-1])
    except ValueError:
        return Usage()
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens", 0)
    if not isinstance(prompt, int) or isinstance(prompt, bool) or not isinstance(completion, int):
        return Usage()
    return Usage(prompt_tokens=prompt, completion_tokens=completion)
