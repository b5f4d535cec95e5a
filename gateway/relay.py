"""The proxy service: route a call to a version, forward it (natively or through the chat pivot), record it.

Handlers call `begin` (pure, in memory: resolve, route, inject), then either
`complete` or `open_stream` + `stream`. `begin` decides, once the version is
chosen, whether the call goes native (its inbound API is the version's
provider's wire: the client's own format is injected, sent, and its answer
and stream relayed unchanged) or through the chat-completions pivot
(`gateway.pivot`); the rest of a call's life is the same either way. Each call that reached a version ends
in exactly one `RequestRecord` handed to the recorder, whatever happened:
answered, failed upstream, abandoned by the client, or ended by a shutdown.

`end_calls` is the end of a shutdown's grace period (`gateway.drain`): every
call still running is cancelled where it waits and raises `ShuttingDown`
instead, so the API layer answers it like an upstream failure (a 503 before
the first byte, an SSE error event after it) and its record says `shutdown`.

Why one module over 400 lines: the life of a call (begin, complete or
stream, record, end at shutdown) is one state machine; its parts share the
`Call` and the guarantee of exactly one record.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.errors import (
    ClientError,
    GatewayError,
    NotFound,
    Overloaded,
    ShuttingDown,
    UpstreamBadResponse,
    UpstreamError,
)
from gateway.evaluators import Sample, wants_json
from gateway.inbound import InboundRequest
from gateway.logs import AccessLog
from gateway.metrics import Metrics
from gateway.models import Api, Deployment, Price, RecordStatus, RequestRecord, Usage, Version
from gateway.pivot import chat_view, upstream_body
from gateway.pricing import PriceTable
from gateway.providers import Answer, StreamTranslator, UpstreamRequest
from gateway.providers.assembly import reply_text
from gateway.quality import QualityMonitor, Wanted
from gateway.recorder import Recorder
from gateway.routing import choose_version
from gateway.shadowing import ShadowDispatcher
from gateway.snapshot import Snapshot
from gateway.upstream import UpstreamClient, UpstreamResponse

access_log = AccessLog(logging.getLogger("gateway.access"))
log = logging.getLogger("gateway.relay")

# Status recorded for a call whose client went away before the answer ended.
CLIENT_CLOSED = 499


class Endable(Protocol):
    """A call `end_calls` can end: the task waiting for it, and whether a shutdown ended it."""

    task: asyncio.Task[Any] | None
    ended: bool


@dataclass(slots=True, eq=False)
class Call:
    request_id: str
    deployment: Deployment
    version: Version
    client: UpstreamClient
    chat: InboundRequest
    # The upstream body (chat completions on the pivot, the inbound API's format when native) and its request.
    body: dict[str, Any]
    upstream: UpstreamRequest
    # Whether the call goes native: the client's format upstream, the answer relayed unchanged.
    native: bool
    user_hash: str | None
    received: float
    deadline: float
    # When the answer's first byte must have come (loop clock); None: the deadline only.
    first_byte_by: float | None
    created_at: datetime
    # Whether quality checks look at this call's answer.
    wanted: Wanted | None = None
    # Whether a copy goes to the canary in the shadow stage, and the answer (first choice's message) it compares.
    shadowed: bool = False
    reply: dict[str, Any] | None = None
    # The task waiting on the upstream for this call, and whether a shutdown ended it.
    task: asyncio.Task[Any] | None = None
    ended: bool = False


class Relay:
    """Routes, forwards and records chat calls.

    `http_status` gives the status the API layer answers for an error
    (`gateway.api.errors.http_status`); it is what a failed call's record
    stores, so the record and the answer agree.
    """

    def __init__(
        self,
        *,
        snapshot: Snapshot,
        clients: Mapping[str, UpstreamClient],
        prices: PriceTable,
        recorder: Recorder,
        metrics: Metrics,
        user_id_salt: bytes,
        max_concurrency: int,
        http_status: Callable[[GatewayError], int],
        quality: QualityMonitor | None = None,
        shadow: ShadowDispatcher | None = None,
        access_log: bool = True,
    ) -> None:
        self._snapshot = snapshot
        self._http_status = http_status
        self._clients = clients
        self._prices = prices
        self._recorder = recorder
        self._metrics = metrics
        self._user_key = _user_key(user_id_salt)
        self._max_concurrency = max_concurrency
        self._access_log = access_log
        self._quality = quality
        self._shadow = shadow
        self._unpriced_warned: set[str] = set()
        self._closing: set[asyncio.Future[None]] = set()
        self._calls: set[Endable] = set()
        self.in_flight = 0

    def admit(self) -> None:
        """Count one more call in flight (chat, Responses, Messages or pass-through).

        Raises Overloaded at `max_concurrency`; every admitted call ends in
        exactly one `release`.
        """
        if self.in_flight >= self._max_concurrency:
            raise Overloaded("The gateway is at its concurrency limit; retry shortly")
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1

    def begin(self, chat: InboundRequest, *, request_id: str, received: float) -> Call:
        """Resolve the deployment, pick the version, build the upstream request (native or pivot). No I/O.

        Raises NotFound for an unknown deployment, InvalidRequest for a body
        the chosen version's provider cannot be sent (naming the field; the
        call is recorded as that version's error, kind `untranslatable`),
        Overloaded at the concurrency limit.
        """
        deployment = self._snapshot.deployments.get(chat.model)
        if deployment is None:
            raise NotFound(
                f"The model (deployment) '{chat.model[:200]}' does not exist", param="model", code="model_not_found"
            )
        if chat.user is None:
            self._metrics.anonymous.labels(deployment=deployment.name).inc()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("user id from %s", chat.user_source or "nowhere (anonymous)",
                      extra={"request_id": request_id, "api": chat.api, "user_id_source": chat.user_source})
        version = deployment.versions.get(choose_version(deployment, chat.user))
        client = self._clients.get(version.provider) if version is not None else None
        if version is None or client is None:
            raise UpstreamBadResponse(f"deployment '{deployment.name}' has no usable version right now")
        provider = client.provider
        try:
            if chat.api == "chat" and provider.wire != "chat_completions":
                provider.check_chat_messages(chat.body["messages"])
            prepared = upstream_body(chat.api, version, chat.body, stream=chat.stream, wire=provider.wire)
            if prepared.native:
                upstream = provider.build_native_request(prepared.body, stream=chat.stream)
            else:
                upstream = provider.build_request(prepared.body, stream=chat.stream)
        except ClientError as exc:
            self._untranslatable(deployment, version, client, chat, request_id=request_id, received=received,
                                 error=exc)
            raise
        self.admit()
        call = Call(
            request_id=request_id,
            deployment=deployment,
            version=version,
            client=client,
            chat=chat,
            body=prepared.body,
            upstream=upstream,
            native=prepared.native,
            user_hash=self._hash_user(chat.user),
            received=received,
            deadline=loop_deadline(received, client.settings.timeout_s),
            first_byte_by=loop_deadline(received, client.settings.first_byte_timeout_s)
            if client.settings.first_byte_timeout_s is not None
            else None,
            created_at=datetime.now(UTC),
            wanted=self._quality.draw(deployment.name) if self._quality is not None else None,
            shadowed=self._shadow is not None and self._shadow.draw(deployment, version.name),
        )
        self.track(call)
        return call

    def _untranslatable(self, deployment: Deployment, version: Version, client: UpstreamClient,
                        chat: InboundRequest, *, request_id: str, received: float, error: ClientError) -> None:
        """Record a call the chosen version's provider cannot be sent (a field with no counterpart there).

        It is what that version's users get, so it is the version's error
        (kind `untranslatable`), though not the provider's.
        """
        self.admit()
        call = Call(request_id=request_id, deployment=deployment, version=version, client=client, chat=chat,
                    body=chat.body, upstream=_NOT_SENT, native=False, user_hash=self._hash_user(chat.user),
                    received=received, deadline=0.0, first_byte_by=None, created_at=datetime.now(UTC))
        self._finish(call, status="error", http_status=self._http_status(error), error_kind=UNTRANSLATABLE)

    def track(self, call: Endable) -> None:
        """Count `call` among those `end_calls` ends; `untrack` it when it is recorded."""
        self._calls.add(call)

    def untrack(self, call: Endable) -> None:
        self._calls.discard(call)

    def end_calls(self) -> int:
        """End every call still running (the shutdown grace is over); returns how many.

        Each is cancelled where it waits (its `task`); `complete`, `open_stream`
        and `stream` here, and the pass-through's own steps, turn that
        cancellation into `ShuttingDown` (see `shutdown_error`).
        """
        ended = 0
        for call in list(self._calls):
            call.ended = True
            if call.task is not None and not call.task.done():
                call.task.cancel("the gateway is shutting down")
                ended += 1
        return ended

    async def complete(self, call: Call) -> Answer:
        """A non-streaming answer; raises UpstreamError after recording the failure."""
        call.task = asyncio.current_task()
        provider = call.client.provider
        async with self._failures_recorded(call):
            response = await call.client.send(
                call.upstream, stream=False, deadline=call.deadline, first_byte_by=call.first_byte_by
            )
            try:
                if call.native:
                    answer = provider.parse_native_answer(response.content)
                else:
                    answer = provider.parse_answer(response.content)
            finally:
                await response.aclose()
            relayed = provider.relayed_headers(response.headers)
            if relayed:
                answer = replace(answer, headers=relayed)
        if call.wanted is not None or call.shadowed:
            self._sample(call, answer.chat_choices())
        self._finish(call, status="ok", http_status=200, usage=answer.usage)
        return answer

    async def open_stream(self, call: Call) -> UpstreamResponse:
        """Open the upstream stream; failures before the first byte raise with their status."""
        call.task = asyncio.current_task()
        async with self._failures_recorded(call):
            return await call.client.send(
                call.upstream, stream=True, deadline=call.deadline, first_byte_by=call.first_byte_by
            )

    def _failures_recorded(self, call: Call) -> _FailuresRecorded:
        """A call that fails before any byte reached the client is recorded, then re-raised."""
        return _FailuresRecorded(self, call)

    async def stream(self, call: Call, response: UpstreamResponse) -> AsyncGenerator[bytes, None]:
        """Relay the upstream stream event by event; a failure mid-stream ends in an error event
        in the client's format (`StreamTranslator.error_event`)."""
        provider = call.client.provider
        translator: StreamTranslator
        if call.native:
            translator = provider.native_stream_relay(wants_usage=call.chat.wants_usage,
                                                      collect=call.wanted is not None or call.shadowed)
        else:
            translator = provider.stream_translator(wants_usage=call.chat.wants_usage,
                                                    collect=call.wanted is not None or call.shadowed)
        status: RecordStatus = "client_cancelled"
        error_kind: str | None = "client_cancelled"
        http_status = CLIENT_CLOSED
        ttft: float | None = None
        call.task = asyncio.current_task()
        # Whether the client has been handed the stream's end-of-stream event (its [DONE],
        # message_stop or response.completed): a client that leaves after it got the whole answer.
        delivered = False
        try:
            tail = b""
            try:
                try:
                    if call.ended:
                        raise asyncio.CancelledError  # ended between opening the stream and relaying it
                    async for chunk in call.client.relay(
                        response, deadline=call.deadline, first_byte_by=call.first_byte_by
                    ):
                        out = translator.feed(chunk)
                        if out:
                            if ttft is None and translator.started:
                                ttft = time.perf_counter() - call.received
                            yield out
                            delivered = translator.done
                except asyncio.CancelledError:
                    if not call.ended:
                        raise
                    raise shutdown_error() from None
                tail = translator.finish()
                error_kind = translator.error_kind
            except UpstreamError as exc:
                tail = translator.error_event(exc.message, exc.kind)
                error_kind = exc.kind
            status, http_status = ("error" if error_kind else "ok"), 200
            if tail:
                yield tail
        finally:
            if delivered and error_kind == "client_cancelled":
                # The client read the end of the answer and closed before the upstream's connection did.
                error_kind = translator.error_kind
                status, http_status = ("error" if error_kind else "ok"), 200
            elif call.ended and error_kind == "client_cancelled":
                # Cancelled while handing a chunk to the server: the stream could not say why.
                status, http_status, error_kind = "error", 200, ShuttingDown.kind
            if status == "ok" and (call.wanted is not None or call.shadowed):
                self._sample(call, translator.choices or [])
            self._finish(
                call,
                status=status,
                http_status=http_status,
                error_kind=error_kind,
                usage=translator.usage,
                ttft=ttft,
            )
            # The server cancels this generator when the client goes away, and
            # keeps cancelling every await: close the upstream in a task of its own.
            closing = asyncio.ensure_future(response.aclose())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
            await asyncio.shield(closing)

    def _finish(
        self,
        call: Call,
        *,
        status: RecordStatus,
        http_status: int,
        error_kind: str | None = None,
        usage: Usage = Usage(),
        ttft: float | None = None,
    ) -> None:
        self.release()
        self.untrack(call)
        latency = time.perf_counter() - call.received
        version = call.version
        cost = self.record(
            request_id=call.request_id, created_at=call.created_at, deployment=call.deployment.name,
            version=version.name, user_hash=call.user_hash, provider=version.provider, model=version.model,
            stream=call.chat.stream, api=call.chat.api, status=status, http_status=http_status,
            error_kind=error_kind, usage=usage, latency=latency, ttft=ttft, price=self.price(version.model),
        )
        if call.shadowed and self._shadow is not None:
            self._shadow.submit(call.deployment, call.chat, request_id=call.request_id, version=version.name,
                                user_hash=call.user_hash, status=status, error_kind=error_kind, reply=call.reply)
        series = self._metrics.series(call.deployment.name, version.name, call.chat.api)
        series.requests(status).inc()
        series.duration().observe(latency)
        if ttft is not None:
            series.ttft().observe(ttft)
        if usage.prompt_tokens is not None:
            series.tokens("prompt").inc(usage.prompt_tokens)
        if usage.completion_tokens is not None:
            series.tokens("completion").inc(usage.completion_tokens)
        if cost:
            series.cost().inc(cost)
        if not self._access_log:
            return
        access_log.write("proxied call", {
            "request_id": call.request_id,
            "api": call.chat.api,
            "deployment": call.deployment.name,
            "version": version.name,
            "stream": call.chat.stream,
            "status": status,
            "http_status": http_status,
            "error_kind": error_kind,
            "latency_ms": round(latency * 1000, 2),
        })

    def record(
        self,
        *,
        request_id: str,
        created_at: datetime,
        deployment: str,
        version: str,
        user_hash: str | None,
        provider: str,
        model: str,
        stream: bool,
        api: Api,
        status: RecordStatus,
        http_status: int,
        error_kind: str | None,
        usage: Usage,
        latency: float,
        ttft: float | None,
        price: Price | None,
    ) -> float | None:
        """Hand the one `RequestRecord` of a finished call to the recorder; every surface's calls end here.

        `latency` and `ttft` are seconds (stored as milliseconds); `price` is `model`'s (see `price`),
        None when unpriced; the cost (USD) is returned for the call's metrics. An error that is the
        provider's counts in `canary_upstream_errors_total`.
        """
        cost = price.cost(usage) if price is not None else None
        self._recorder.submit(
            RequestRecord(
                id=request_id,
                created_at=created_at,
                deployment=deployment,
                version=version,
                user_hash=user_hash,
                provider=provider,
                upstream_model=model,
                stream=stream,
                status=status,
                http_status=http_status,
                error_kind=error_kind,
                latency_ms=round(latency * 1000, 3),
                ttft_ms=round(ttft * 1000, 3) if ttft is not None else None,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cost_usd=cost,
                api=api,
                uncached_cost_usd=price.uncached_cost(usage) if price is not None else None,
            )
        )
        if error_kind is not None and error_kind not in _NOT_THE_PROVIDERS:
            self._metrics.upstream_errors.labels(provider, error_kind).inc()
        return cost

    def _sample(self, call: Call, choices: list[dict[str, Any]]) -> None:
        """Hand an answered call to the quality checks (off the hot path), and keep its answer for its shadow copy.

        `choices` are the answer's choices as the client got them (reassembled
        from a stream); the first one is judged.
        """
        first = next((choice for choice in choices if choice.get("index", 0) == 0), None)
        message = first.get("message") if first is not None else None
        message = call.reply = message if isinstance(message, dict) else None
        if self._quality is None or call.wanted is None:
            return
        asked = chat_view(call.chat.api, call.body, native=call.native)
        json_asked, schema = wants_json(asked)
        self._quality.submit(
            Sample(
                request_id=call.request_id,
                deployment=call.deployment.name,
                version=call.version.name,
                messages=asked.get("messages") or [],
                answer=reply_text(message),
                message=message,
                wants_json=json_asked,
                schema=call.version.response_schema or schema,
            ),
            call.wanted,
        )

    def price(self, model: str) -> Price | None:
        """The price of `model` from the pricing table; None (warned once per model) when unpriced."""
        price = self._prices.get(model)
        if price is None and model not in self._unpriced_warned:
            self._unpriced_warned.add(model)
            log.warning("no price for model %r in the pricing table; its cost is not recorded", model)
        return price

    def use_salt(self, salt: bytes) -> None:
        """Hash user ids with `salt` from now on (the salt all replicas share, from the database)."""
        self._user_key = _user_key(salt)

    def _hash_user(self, user: str | None) -> str | None:
        if user is None:
            return None
        # HMAC-SHA256 (RFC 2104) from copies of the keyed inner and outer states: `hmac.digest` derives
        # the pads again and releases the GIL around so short a hash, handing it to the log or database
        # thread on every call.
        inner_key, outer_key = self._user_key
        inner = inner_key.copy()
        inner.update(user.encode("utf-8", "surrogatepass"))
        outer = outer_key.copy()
        outer.update(inner.digest())
        return outer.hexdigest()[:32]


_SHA256_BLOCK = 64
# The request of a call refused before anything was sent.
_NOT_SENT = UpstreamRequest(path="", headers={}, content=b"")
# The error kind of a call the version's provider cannot take (a field its API has no counterpart for).
UNTRANSLATABLE = "untranslatable"
# Error kinds that say nothing about the provider: not counted as its errors.
_NOT_THE_PROVIDERS = frozenset({"client_cancelled", ShuttingDown.kind, UNTRANSLATABLE})


def _user_key(salt: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """The SHA-256 states HMAC-SHA256 keyed with `salt` starts from (RFC 2104: the key padded to the
    64-byte block, XORed with 0x36 for the inner hash and 0x5c for the outer), copied for each user id."""
    key = hashlib.sha256(salt).digest() if len(salt) > _SHA256_BLOCK else salt
    key = key.ljust(_SHA256_BLOCK, b"\0")
    return (hashlib.sha256(bytes(byte ^ 0x36 for byte in key)), hashlib.sha256(bytes(byte ^ 0x5C for byte in key)))


class _FailuresRecorded:
    """`Relay._failures_recorded`: a plain class, cheaper per call than a generator-based context manager.

    A shutdown's cancellation (`end_calls`) becomes `ShuttingDown`; an
    UpstreamError is recorded as the call's error; anything else (the client
    went away, a cancellation) as `client_cancelled`. The exception goes on.
    """

    __slots__ = ("_call", "_relay")

    def __init__(self, relay: Relay, call: Call) -> None:
        self._relay = relay
        self._call = call

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, _tb: object) -> None:
        if exc is None:
            return
        call = self._call
        shutdown = None
        if isinstance(exc, asyncio.CancelledError) and call.ended:
            exc = shutdown = shutdown_error()
        if isinstance(exc, UpstreamError):
            self._relay._finish(call, status="error", http_status=self._relay._http_status(exc), error_kind=exc.kind)
        else:
            self._relay._finish(call, status="client_cancelled", http_status=CLIENT_CLOSED,
                                error_kind="client_cancelled")
        if shutdown is not None:
            raise shutdown from None


def shutdown_error() -> ShuttingDown:
    """The error that replaces the cancellation `end_calls` made; call it where that cancellation
    is caught, in the cancelled task: the cancellation is withdrawn from the task."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        task.uncancel()
    return ShuttingDown("The gateway is shutting down and ended this call before it finished; retry it")


def loop_deadline(received: float, timeout_s: float) -> float:
    """The call's deadline on the event loop's clock, counted from when it was received."""
    elapsed = time.perf_counter() - received
    return asyncio.get_running_loop().time() + timeout_s - elapsed
