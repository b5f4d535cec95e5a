"""Sending calls to a provider: pooled connections, deadlines, bounded retries.

One `UpstreamClient` per provider holds one httpx transport (one connection
pool) for the whole process and sends `httpx.Request`s straight to it: the
client layer above a transport (cookies, redirects, auth, URL merging) is
work a relay does not need on every call. Redirects are therefore never
followed, and no cookie an upstream sets is ever sent back. httpx has no
total deadline of its own, so every call runs under
`asyncio.timeout_at(deadline)`. Transport exceptions are translated into
`gateway.errors` here and nowhere else.
"""

from __future__ import annotations

import asyncio
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
from gateway.providers import Provider

_MAX_ERROR_BODY = 65_536
_BACKOFF_BASE_S = 0.1


def default_transport(kind: Literal["aiohttp", "httpx"], settings: ProviderSettings) -> httpx.AsyncBaseTransport:
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
        self._timeouts = {
            "connect": settings.connect_timeout_s,
            "read": settings.idle_timeout_s,
            "write": settings.timeout_s,
            "pool": settings.connect_timeout_s,
        }

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def open(self, body: dict[str, Any], *, stream: bool, deadline: float) -> httpx.Response:
        """Send the call, retrying connection failures and 5xx before any byte is relayed.

        For a non-streaming call the body is read before returning. The caller
        owns the returned response and must close it.
        """
        upstream = self.provider.build_request(body, stream=stream)
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            try:
                return await self._attempt(upstream.path, upstream.headers, upstream.content, stream, deadline)
            except (UpstreamConnectError, UpstreamStatusError) as exc:
                retryable = isinstance(exc, UpstreamConnectError) or (
                    isinstance(exc, UpstreamStatusError) and exc.retryable
                )
                pause = _BACKOFF_BASE_S * (2**attempt) * (0.5 + self._rng.random())
                if not retryable or attempt >= self.settings.retries or loop.time() + pause >= deadline:
                    raise
                attempt += 1
                await asyncio.sleep(pause)

    async def _attempt(
        self, path: str, headers: Any, content: bytes, stream: bool, deadline: float
    ) -> httpx.Response:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self._base_url + path)
        request = httpx.Request("POST", url, headers=headers, content=content, extensions={"timeout": self._timeouts})
        response: httpx.Response | None = None
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._transport.handle_async_request(request)
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
            if isinstance(exc, Exception):
                raise self.translate(exc) from None
            raise

    async def relay(self, response: httpx.Response, *, deadline: float) -> AsyncIterator[bytes]:
        """The raw bytes of a streamed answer, each read under the call's deadline."""
        chunks = response.aiter_raw()
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except UpstreamError:
                raise
            except Exception as exc:
                raise self.translate(exc) from None
            yield chunk

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


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        parts.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(parts)[:limit]


async def _close_quietly(response: httpx.Response) -> None:
    try:
        await response.aclose()
    except Exception:  # noqa: BLE001 - the call already failed; closing is best effort
        pass
