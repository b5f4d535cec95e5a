"""Sending calls to a provider: pooled connections, deadlines, bounded retries.

One `UpstreamClient` per provider holds one connection pool for the whole
process. Two HTTP stacks sit behind it, chosen by the provider's
`transport`:

- `aiohttp` (the default): aiohttp's client, used directly. A relayed call
  needs none of an HTTP client's conveniences (cookies, redirects, auth, URL
  merging, request and response models), and httpx's layer over the same
  aiohttp connection cost about a fifth of a proxied call's CPU (README,
  Performance);
- `httpx`: httpx's own transport, and any `httpx.AsyncBaseTransport` given
  (the simulator, tests).

Either way the caller gets an `UpstreamResponse`, redirects are never
followed, no cookie an upstream sets is ever sent back, and a body is decoded
from the Content-Encoding the upstream applied (`DECODABLE_ENCODINGS`) before
anyone reads it. Exceptions of both stacks are translated into
`gateway.errors` here and nowhere else.

Time limits, all on the event loop's clock (neither stack has a total
deadline of its own, and a read timeout would bound every socket read alike):

- `deadline` bounds the whole call, retries and streaming included
  (`timeout_s` from the call's arrival);
- `first_byte_by`, when set (`first_byte_timeout_s`), bounds the wait for the
  answer's first byte: the response headers, and for a stream its first chunk;
- between two chunks of a stream that has started, at most `idle_timeout_s`.

A long answer (a reasoning model thinking for a minute) is therefore bounded
by the deadline only, never by the idle timeout.

Why one module over 400 lines: the time limits above, the retries and the
stream relay share one clock and one error translation; apart, a limit could
be applied twice or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import zlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import aiohttp
import brotli
import httpx
import zstandard

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
# Content-Encodings the gateway decodes. An upstream may compress although asked for
# identity; any other encoding is a bad answer.
DECODABLE_ENCODINGS = frozenset({"identity", "gzip", "deflate", "br", "zstd"})
_BACKOFF_BASE_S = 0.1
# Request bodies above this size go upstream in pieces, so that no single write blocks the loop.
_STREAMED_BODY_BYTES = 1 << 20
_BODY_PIECE_BYTES = 1 << 16


class UpstreamResponse(ABC):
    """An upstream's answer, whichever HTTP stack carried it.

    `headers` has lower-case names (repeated headers joined with ", ").
    `content` is the decoded body once `read` has run (a plain answer comes
    back from `UpstreamClient.send` read). `chunks` yields the decoded body
    as it arrives, raising the stack's own exceptions (`UpstreamClient.relay`
    translates them). The owner must `aclose` it.
    """

    status_code: int
    headers: Mapping[str, str]
    content: bytes = b""

    @abstractmethod
    def chunks(self) -> AsyncIterator[bytes]:
        """The decoded body, piece by piece as it arrives."""

    async def read(self) -> bytes:
        """The whole decoded body (also kept in `content`)."""
        self.content = b"".join([chunk async for chunk in self.chunks()])
        return self.content

    async def read_capped(self, limit: int) -> bytes:
        """At most `limit` bytes of the decoded body (an error's, whose size nobody bounds)."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            parts.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
        return b"".join(parts)[:limit]

    @abstractmethod
    async def aclose(self) -> None:
        """Give the connection back (or close it when the body was not read to its end)."""


class UpstreamClient:
    """Calls one provider; `send` returns a response whose status is below 400."""

    def __init__(
        self,
        provider: Provider,
        settings: ProviderSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """`transport`: send through this httpx transport; None: the provider's own stack
        (`settings.transport`, or the simulator for a simulated provider)."""
        self.provider = provider
        self.settings = settings
        self._rng = rng or random.Random()
        self._base_url = settings.base_url.rstrip("/")
        self._idle_s = settings.idle_timeout_s
        self._stack: _Stack
        if transport is None and settings.simulation is not None:
            transport = SimulatedTransport(settings.simulation)
        if transport is None and settings.transport == "aiohttp":
            self._stack = _Aiohttp(settings)
        else:
            self._stack = _Httpx(transport or _httpx_transport(settings), settings)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._stack.aclose()

    async def open(
        self, body: dict[str, Any], *, stream: bool, deadline: float, first_byte_by: float | None = None,
        retries: int | None = None,
    ) -> UpstreamResponse:
        """Send the call, retrying connection failures and 5xx before any byte is relayed.

        `deadline` and `first_byte_by` are times on the event loop's clock
        (`loop.time()`); `retries` caps the retries (default: the provider's
        `retries`; 0 never sends the call twice). For a non-streaming call the
        body is read before returning. The caller owns the returned response
        and must close it. Raises UpstreamError: UpstreamTimeout when a limit
        passes, UpstreamConnectError, UpstreamStatusError, UpstreamBadResponse.
        """
        return await self.send(
            self.provider.build_request(body, stream=stream), stream=stream, deadline=deadline,
            first_byte_by=first_byte_by, retries=retries,
        )

    async def send(
        self, upstream: UpstreamRequest, *, stream: bool, deadline: float, first_byte_by: float | None = None,
        retries: int | None = None,
    ) -> UpstreamResponse:
        """Send a request already in the upstream's wire format; retries, limits and errors as `open`."""
        allowed = self.settings.retries if retries is None else retries
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
                if not retryable or attempt >= allowed or loop.time() + pause >= deadline:
                    raise
                attempt += 1
                await asyncio.sleep(pause)

    async def _attempt(
        self, upstream: UpstreamRequest, stream: bool, deadline: float, first_byte_by: float | None
    ) -> UpstreamResponse:
        response: UpstreamResponse | None = None
        headers_by = deadline if first_byte_by is None else min(deadline, first_byte_by)
        try:
            async with asyncio.timeout_at(headers_by) as limit:
                response = await self._stack.start(upstream, self._base_url + upstream.path)
                limit.reschedule(deadline)
                self._check_encoding(response)
                if response.status_code >= 400:
                    error_body = await response.read_capped(_MAX_ERROR_BODY)
                    raise self.provider.error_from(response.status_code, error_body, response.headers)
                if 300 <= response.status_code < 400:
                    raise UpstreamBadResponse(
                        f"upstream provider '{self.provider.name}' answered a redirect, which is not followed"
                    )
                if not stream:
                    await response.read()
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

    def _check_encoding(self, response: UpstreamResponse) -> None:
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
        self, response: UpstreamResponse, *, deadline: float, first_byte_by: float | None = None
    ) -> AsyncIterator[bytes]:
        """The decoded bytes of a streamed answer: any Content-Encoding the upstream
        applied (gzip, deflate, br, zstd) is undone, so translators and clients
        always get plain event bytes.

        The first chunk must come before `first_byte_by` (when set), each later
        one within `idle_timeout_s` of the one before, all before `deadline`
        (loop-clock times). Raises UpstreamTimeout when a limit passes, other
        UpstreamErrors when the stream breaks.
        """
        chunks = response.chunks()
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
        """The one place transport exceptions (aiohttp's, httpx's, the socket's) become the gateway's own."""
        name = self.provider.name
        if isinstance(exc, TimeoutError) or (
            isinstance(exc, httpx.TimeoutException) and _caused_by_timeout(exc)
        ):
            return UpstreamTimeout(f"upstream provider '{name}' did not answer in time")
        if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
            return UpstreamBadResponse(f"upstream provider '{name}' sent an invalid answer")
        if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError | httpx.NetworkError | OSError |
                      aiohttp.ClientConnectionError):
            return UpstreamConnectError(f"could not connect to upstream provider '{name}'")
        if isinstance(exc, httpx.HTTPError | aiohttp.ClientError | ValueError | zlib.error | brotli.error |
                      zstandard.ZstdError):
            return UpstreamBadResponse(f"upstream provider '{name}' sent an invalid answer")
        return UpstreamBadResponse(f"upstream provider '{name}' failed ({type(exc).__name__})")


class _Stack(Protocol):
    async def start(self, upstream: UpstreamRequest, url: str) -> UpstreamResponse:
        """Send the request; return once the answer's status line and headers have arrived."""

    async def aclose(self) -> None:
        """Close the pool."""


# -- aiohttp ------------------------------------------------------------------------------------------------------


class _Aiohttp:
    """aiohttp's client used directly: one session per provider, created at the first call (it needs the loop)."""

    def __init__(self, settings: ProviderSettings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=None, connect=settings.connect_timeout_s,
                                              sock_connect=settings.connect_timeout_s)

    def _open_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self._settings.max_connections, limit_per_host=0)
        self._session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False, trust_env=False,
            timeout=self._timeout, skip_auto_headers=("Accept-Encoding",),
        )
        return self._session

    async def start(self, upstream: UpstreamRequest, url: str) -> UpstreamResponse:
        session = self._session or self._open_session()
        content = upstream.content
        data: bytes | AsyncIterator[bytes] | None = content or None
        headers = upstream.headers
        if len(content) > _STREAMED_BODY_BYTES:
            data = _pieces(content)
            headers = {**headers, "content-length": str(len(content))}
        response = await session.request(upstream.method, url, data=data, headers=headers, allow_redirects=False)
        return _AiohttpResponse(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class _AiohttpResponse(UpstreamResponse):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code = response.status
        headers: dict[str, str] = {}
        for name, value in response.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        self.headers = headers
        self.content = b""

    async def chunks(self) -> AsyncIterator[bytes]:
        decoder = _decoder(self.headers.get("content-encoding"))
        async for chunk in self._response.content.iter_any():
            if decoder is None:
                yield chunk
            else:
                decoded = decoder.decode(chunk)
                if decoded:
                    yield decoded
        if decoder is not None:
            tail = decoder.flush()
            if tail:
                yield tail

    async def read(self) -> bytes:
        body = await self._response.read()
        decoder = _decoder(self.headers.get("content-encoding"))
        self.content = body if decoder is None else decoder.decode(body) + decoder.flush()
        return self.content

    async def aclose(self) -> None:
        self._response.release()


async def _pieces(content: bytes) -> AsyncIterator[bytes]:
    view = memoryview(content)
    for start in range(0, len(view), _BODY_PIECE_BYTES):
        yield bytes(view[start : start + _BODY_PIECE_BYTES])


# -- httpx --------------------------------------------------------------------------------------------------------


def _httpx_transport(settings: ProviderSettings) -> httpx.AsyncBaseTransport:
    limits = httpx.Limits(max_connections=settings.max_connections, max_keepalive_connections=settings.max_connections)
    return httpx.AsyncHTTPTransport(limits=limits, trust_env=False)


class _Httpx:
    """An httpx transport, sent `httpx.Request`s directly (no client layer above it)."""

    def __init__(self, transport: httpx.AsyncBaseTransport, settings: ProviderSettings) -> None:
        self._transport = transport
        # Parsed once per URL: URL parsing is a noticeable share of a relayed call.
        self._urls: dict[str, httpx.URL] = {}
        # Reads are bounded by the deadlines above, on the event loop, not per socket read.
        self._timeouts = {"connect": settings.connect_timeout_s, "read": None, "write": settings.timeout_s,
                          "pool": settings.connect_timeout_s}

    async def start(self, upstream: UpstreamRequest, url_text: str) -> UpstreamResponse:
        if upstream.fixed_path:
            url = self._urls.get(url_text)
            if url is None:
                url = self._urls[url_text] = httpx.URL(url_text)
        else:
            url = httpx.URL(url_text)
        content = upstream.content
        if len(content) > _STREAMED_BODY_BYTES:
            headers = {**upstream.headers, "host": url.netloc.decode("ascii"), "content-length": str(len(content))}
            request = httpx.Request(upstream.method, url, headers=headers, stream=_BodyPieces(content),
                                    extensions={"timeout": self._timeouts})
        else:
            request = httpx.Request(upstream.method, url, headers=upstream.headers, content=content,
                                    extensions={"timeout": self._timeouts})
        return _HttpxResponse(await self._transport.handle_async_request(request))

    async def aclose(self) -> None:
        await self._transport.aclose()


class _HttpxResponse(UpstreamResponse):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status_code = response.status_code
        self.headers = response.headers
        self.content = b""

    def chunks(self) -> AsyncIterator[bytes]:
        return self._response.aiter_bytes()  # httpx decodes every encoding of DECODABLE_ENCODINGS

    async def aclose(self) -> None:
        await self._response.aclose()


class _BodyPieces(httpx.AsyncByteStream):
    """A request body sent in 64 KiB pieces; iterable again for a retry."""

    def __init__(self, content: bytes) -> None:
        self._content = content

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for piece in _pieces(self._content):
            yield piece


def _caused_by_timeout(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TimeoutError):
            return True
        if isinstance(seen, httpx.TimeoutException) and seen.__cause__ is None and seen.__context__ is None:
            return True  # raised by httpx's own transport, which means a real timeout
        seen = seen.__cause__ or seen.__context__
    return False


async def _close_quietly(response: UpstreamResponse) -> None:
    with contextlib.suppress(Exception):  # the call already failed; closing is best effort
        await response.aclose()


# -- Content-Encoding ---------------------------------------------------------------------------------------------


class _Decoder(Protocol):
    def decode(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class _Zlib:
    """gzip, and deflate with or without its zlib header (servers send both)."""

    def __init__(self, gzip: bool) -> None:
        self._gzip = gzip
        self._object = zlib.decompressobj(zlib.MAX_WBITS | 16 if gzip else zlib.MAX_WBITS)
        self._started = False

    def decode(self, data: bytes) -> bytes:
        if not self._started and not self._gzip and data:
            self._started = True
            try:
                return self._object.decompress(data)
            except zlib.error:
                self._object = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate
        return self._object.decompress(data)

    def flush(self) -> bytes:
        return self._object.flush()


class _Brotli:
    def __init__(self) -> None:
        self._object = brotli.Decompressor()

    def decode(self, data: bytes) -> bytes:
        return bytes(self._object.process(data)) if data else b""

    def flush(self) -> bytes:
        return b""


class _Zstd:
    """zstd, several frames included."""

    def __init__(self) -> None:
        self._object = zstandard.ZstdDecompressor().decompressobj()

    def decode(self, data: bytes) -> bytes:
        output = []
        while data:
            output.append(self._object.decompress(data))
            data = self._object.unused_data
            if data:
                self._object = zstandard.ZstdDecompressor().decompressobj()
        return b"".join(output)

    def flush(self) -> bytes:
        return b""


class _Chain:
    """Encodings applied in turn (`Content-Encoding: gzip, br`), undone in the reverse order."""

    def __init__(self, decoders: list[_Decoder]) -> None:
        self._decoders = decoders

    def decode(self, data: bytes) -> bytes:
        for decoder in self._decoders:
            data = decoder.decode(data)
        return data

    def flush(self) -> bytes:
        data = b""
        for decoder in self._decoders:
            data = decoder.decode(data) + decoder.flush()
        return data


def _decoder(encoding: str | None) -> _Decoder | None:
    """What undoes `encoding` (a Content-Encoding header already checked against DECODABLE_ENCODINGS); None: nothing."""
    if encoding is None:
        return None
    decoders: list[_Decoder] = []
    for name in reversed([part.strip().lower() for part in encoding.split(",")]):
        if name in ("gzip", "deflate"):
            decoders.append(_Zlib(gzip=name == "gzip"))
        elif name == "br":
            decoders.append(_Brotli())
        elif name == "zstd":
            decoders.append(_Zstd())
    if not decoders:
        return None
    return decoders[0] if len(decoders) == 1 else _Chain(decoders)
