"""Sending calls to a provider: pooled connections, deadlines, bounded retries.

One `UpstreamClient` per provider holds one httpx transport (one connection
pool) for the whole process and sends `httpx.Request`s straight to it: the
client layer above a transport (cookies, redirects, auth, URL merging) is
work a relay does not need on every call. Redirects are therefore never
followed, and no cookie an upstream sets is ever sent back. Transport
exceptions are translated into `gateway.errors` here and nowhere else.

Time limits, all on the event loop's clock (httpx has no total deadline of
its own, and its read timeout would bound every socket read alike):

- `deadline` bounds the whole call, retries and streaming included
  (`timeout_s` from the call's arrival);
- `first_byte_by`, when set (`first_byte_timeout_s`), bounds the wait for the
  answer's first byte: the response headers, and for a stream its first chunk;
- between two chunks of a stream that has started, at most `idle_timeout_s`.

A long answer (a reasoning model thinking for a minute) is therefore bounded
by the deadline only, never by the idle timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any, Literal

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from gateway.config import ProviderSettings
from gateway.errors import (
    UpstreamBadResponse,
    UpstreamConnectError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from gateway.providers import Provider, UpstreamRequest
from gateway.retry import backoff_s
from gateway.simulator import SimulatedTransport

_MAX_ERROR_BODY = 65_536
# Content-Encodings httpx decodes with the extras this package installs (httpx[brotli,zstd]).
# An upstream may compress although asked for identity; any other encoding is a bad answer.
DECODABLE_ENCODINGS = frozenset({"identity", "gzip", "deflate", "br", "zstd"})
_BACKOFF_BASE_S = 0.1
# Request bodies above this size (aiohttp's own threshold) go upstream in pieces.
_STREAMED_BODY_BYTES = 1 << 20
_BODY_PIECE_BYTES = 1 << 16


def default_transport(kind: Literal["aiohttp", "httpx"], settings: ProviderSettings) -> httpx.AsyncBaseTransport:
    """The transport of a provider: a connection pool, or the simulator for a simulated provider."""
    if settings.simulation is not None:
        return SimulatedTransport(settings.simulation)
    limits = httpx.Limits(max_connections=settings.max_connections, max_keepalive_connections=settings.max_connections)
    if kind == "aiohttp":
        return AiohttpTransport(limits=limits, trust_env=False)
    return httpx.AsyncHTTPTransport(limits=limits, trust_env=False)


class UpstreamClient:
    """Calls one provider; `open` returns a response whose status is below 400."""

    def __init__(
        self,
        provider: Provider,
        settings: ProviderSettings,
        *,
        transport: httpx.AsyncBaseTransport,
        rng: random.Random | None = None,
    ) -> None:
        self.provider = provider
        self.settings = settings
        self._rng = rng or random.Random()
        self._transport = transport
        self._base_url = settings.base_url.rstrip("/")
        # Parsed once per path: URL parsing is a noticeable share of a relayed call.
        self._urls: dict[str, httpx.URL] = {}
        # Reads are bounded by the deadlines above, on the event loop, not per socket read.
        self._timeouts = {
            "connect": settings.connect_timeout_s,
            "read": None,
            "write": settings.timeout_s,
            "pool": settings.connect_timeout_s,
        }
        self._idle_s = settings.idle_timeout_s

    async def aclose(self) -> None:
        """Close the transport and its pooled connections."""
        await self._transport.aclose()

    async def open(
        self, body: dict[str, Any], *, stream: bool, deadline: float, first_byte_by: float | None = None
    ) -> httpx.Response:
        """Send the call, retrying connection failures and 5xx before any byte is relayed.

        `deadline` and `first_byte_by` are times on the event loop's clock
        (`loop.time()`). For a non-streaming call the body is read before
        returning. The caller owns the returned response and must close it.
        Raises UpstreamError: UpstreamTimeout when a limit passes,
        UpstreamConnectError, UpstreamStatusError, UpstreamBadResponse.
        """
        return await self.send(
            self.provider.build_request(body, stream=stream), stream=stream, deadline=deadline,
            first_byte_by=first_byte_by,
        )

    async def send(
        self, upstream: UpstreamRequest, *, stream: bool, deadline: float, first_byte_by: float | None = None
    ) -> httpx.Response:
        """Send a request already in the upstream's wire format; retries, limits and errors as `open`."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            try:
                return await self._attempt(upstream, stream, deadline, first_byte_by)
            except (UpstreamConnectError, UpstreamStatusError) as exc:
                retryable = isinstance(exc, UpstreamConnectError) or (
                    isinstance(exc, UpstreamStatusError) and exc.retryable
                )
                pause = backoff_s(_BACKOFF_BASE_S, attempt, self._rng)
                if not retryable or attempt >= self.settings.retries or loop.time() + pause >= deadline:
                    raise
                attempt += 1
                await asyncio.sleep(pause)

    async def _attempt(
        self, upstream: UpstreamRequest, stream: bool, deadline: float, first_byte_by: float | None
    ) -> httpx.Response:
        if upstream.fixed_path:
            url = self._urls.get(upstream.path)
            if url is None:
                url = self._urls[upstream.path] = httpx.URL(self._base_url + upstream.path)
        else:
            url = httpx.URL(self._base_url + upstream.path)
        content = upstream.content
        if len(content) > _STREAMED_BODY_BYTES:
            # Sent in pieces: aiohttp writes a large bytes body in one go, blocking the loop (and warns).
            headers = {**upstream.headers, "host": url.netloc.decode("ascii"), "content-length": str(len(content))}
            request = httpx.Request(upstream.method, url, headers=headers, stream=_BodyPieces(content),
                                    extensions={"timeout": self._timeouts})
        else:
            request = httpx.Request(upstream.method, url, headers=upstream.headers, content=content,
                                    extensions={"timeout": self._timeouts})
        response: httpx.Response | None = None
        headers_by = deadline if first_byte_by is None else min(deadline, first_byte_by)
        try:
            async with asyncio.timeout_at(headers_by) as limit:
                response = await self._transport.handle_async_request(request)
                limit.reschedule(deadline)
                self._check_encoding(response)
                if response.status_code >= 400:
                    error_body = await _read_capped(response, _MAX_ERROR_BODY)
                    raise self.provider.error_from(response.status_code, error_body, response.headers)
                if 300 <= response.status_code < 400:
                    raise UpstreamBadResponse(
                        f"upstream provider '{self.provider.name}' answered a redirect, which is not followed"
                    )
                if not stream:
                    await response.aread()
            return response
        except BaseException as exc:
            if response is not None:
                await _close_quietly(response)
            if isinstance(exc, UpstreamError):
                raise
            if isinstance(exc, TimeoutError) and response is None and headers_by < deadline:
                raise self._first_byte_timeout() from exc
            if isinstance(exc, Exception):
                raise self.translate(exc) from exc
            raise

    def _check_encoding(self, response: httpx.Response) -> None:
        encoding = response.headers.get("content-encoding")
        if encoding is None:
            return
        unknown = [part for part in (p.strip().lower() for p in encoding.split(",")) if part and part not in
                   DECODABLE_ENCODINGS]
        if unknown:
            raise UpstreamBadResponse(
                f"upstream provider '{self.provider.name}' answered with Content-Encoding "
                f"'{unknown[0][:40]}', which the gateway cannot decode"
            )

    async def relay(
        self, response: httpx.Response, *, deadline: float, first_byte_by: float | None = None
    ) -> AsyncIterator[bytes]:
        """The decoded bytes of a streamed answer: any Content-Encoding the upstream
        applied (gzip, deflate, br, zstd) is undone, so translators and clients
        always get plain event bytes.

        The first chunk must come before `first_byte_by` (when set), each later
        one within `idle_timeout_s` of the one before, all before `deadline`
        (loop-clock times). Raises UpstreamTimeout when a limit passes, other
        UpstreamErrors when the stream breaks.
        """
        chunks = response.aiter_bytes()
        loop = asyncio.get_running_loop()
        limit = deadline if first_byte_by is None else min(deadline, first_byte_by)
        idle = False  # whether `limit` is the idle timeout rather than the deadline
        while True:
            try:
                async with asyncio.timeout_at(limit):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except UpstreamError:
                raise
            except TimeoutError as exc:
                if limit >= deadline:
                    raise self.translate(exc) from exc
                if idle:
                    raise UpstreamTimeout(
                        f"upstream provider '{self.provider.name}' sent nothing for {self._idle_s:g} s "
                        "in the middle of a stream (idle_timeout_s)"
                    ) from exc
                raise self._first_byte_timeout() from exc
            except Exception as exc:
                raise self.translate(exc) from exc
            next_limit = loop.time() + self._idle_s
            idle = next_limit < deadline
            limit = min(next_limit, deadline)
            yield chunk

    def _first_byte_timeout(self) -> UpstreamTimeout:
        return UpstreamTimeout(
            f"upstream provider '{self.provider.name}' sent no first byte within "
            f"{self.settings.first_byte_timeout_s:g} s (first_byte_timeout_s)"
        )

    def translate(self, exc: Exception) -> UpstreamError:
        """The one place transport exceptions become the gateway's own."""
        name = self.provider.name
        if isinstance(exc, TimeoutError) or (
            isinstance(exc, httpx.TimeoutException) and _caused_by_timeout(exc)
        ):
            return UpstreamTimeout(f"upstream provider '{name}' did not answer in time")
        if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError | httpx.NetworkError | OSError):
            # httpx-aiohttp reports refused and reset connections as ConnectTimeout.
            return UpstreamConnectError(f"could not connect to upstream provider '{name}'")
        if isinstance(exc, httpx.HTTPError | aiohttp.ClientError | ValueError):
            return UpstreamBadResponse(f"upstream provider '{name}' sent an invalid answer")
        return UpstreamBadResponse(f"upstream provider '{name}' failed ({type(exc).__name__})")


def _caused_by_timeout(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TimeoutError):
            return True
        if isinstance(seen, httpx.TimeoutException) and seen.__cause__ is None and seen.__context__ is None:
            return True  # raised by httpx's own transport, which means a real timeout
        seen = seen.__cause__ or seen.__context__
    return False


class _BodyPieces(httpx.AsyncByteStream):
    """A request body sent in 64 KiB pieces; iterable again for a retry."""

    def __init__(self, content: bytes) -> None:
        self._content = content

    async def __aiter__(self) -> AsyncIterator[bytes]:
        view = memoryview(self._content)
        for start in range(0, len(view), _BODY_PIECE_BYTES):
            yield bytes(view[start : start + _BODY_PIECE_BYTES])


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        parts.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(parts)[:limit]


async def _close_quietly(response: httpx.Response) -> None:
    with contextlib.suppress(Exception):  # the call already failed; closing is best effort
        await response.aclose()
