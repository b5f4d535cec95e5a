"""What routers share: the services on the app, request ids, auth and body limits."""

from __future__ import annotations

import hmac
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from pydantic import SecretStr

from gateway.control import ControlPlane
from gateway.drain import Drain
from gateway.errors import InvalidRequest, PayloadTooLarge, RateLimited, Unauthorized
from gateway.limits import KeyedLimiter
from gateway.metrics import Metrics
from gateway.passthrough import PassThrough
from gateway.probe import DatabaseProbe
from gateway.recorder import Recorder
from gateway.relay import Relay
from gateway.scheduler import RolloutChecker
from gateway.snapshot import Snapshot
from gateway.store import Store
from gateway.tokens import TokenCounter

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIds:
    """Unguessable request ids (128 random bits), drawn from the OS in blocks rather than per call."""

    _BLOCK = 4096

    def __init__(self) -> None:
        self._random = b""
        self._used = 0

    def new(self) -> str:
        if self._used >= len(self._random):
            self._random, self._used = os.urandom(self._BLOCK), 0
        self._used += 16
        return self._random[self._used - 16 : self._used].hex()


@dataclass
class Services:
    """Everything the lifespan built; routers reach it through `ServicesDep`."""

    relay: Relay
    control: ControlPlane
    checker: RolloutChecker
    snapshot: Snapshot
    recorder: Recorder
    store: Store
    metrics: Metrics
    drain: Drain
    probe: DatabaseProbe
    tokens: TokenCounter
    client_tokens: Mapping[str, SecretStr]
    max_body_bytes: int
    user_id_header: str = "x-user-id"
    passthrough: PassThrough | None = None
    rate_limit: KeyedLimiter | None = None
    request_ids: RequestIds = field(default_factory=RequestIds)


async def get_services(request: Request) -> Services:
    # async: FastAPI would run a plain function in a worker thread on every request.
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def is_request_id(text: str) -> bool:
    """Whether `text` has the shape of an id the gateway gives a call (its own, or a client's it kept)."""
    return _REQUEST_ID.match(text) is not None


def request_id_of(request: Request, ids: RequestIds) -> str:
    """The client's X-Request-Id when it is a sane token, else a new one."""
    given = request.headers.get("x-request-id")
    if given and _REQUEST_ID.match(given):
        return given
    return ids.new()


def matching_token(presented: bytes, tokens: Iterable[tuple[str, bytes]]) -> str | None:
    """The name of the token equal to `presented`, or None.

    `presented` is compared with every token, each in constant time, so the
    time taken tells neither which token is close nor how close.
    """
    found = None
    for name, token in tokens:
        if hmac.compare_digest(presented, token) and found is None:
            found = name
    return found


def check_client(request: Request, services: Services, *, api_key_header: bool = False) -> None:
    """Authenticate the client when client tokens are set, then apply its rate limit.

    The token comes as `Authorization: Bearer <token>`; with `api_key_header`
    (Anthropic's routes) also as `x-api-key: <token>`, as the anthropic SDKs
    send it (the 2.x Python SDK sends the bearer form).
    """
    client = request.client.host if request.client else "unknown"
    tokens = services.client_tokens
    if tokens:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if api_key_header and not presented:
            scheme, presented = "bearer", request.headers.get("x-api-key", "")
        name = matching_token(
            presented.strip().encode(), ((name, token.get_secret_value().encode()) for name, token in tokens.items())
        )
        if scheme.lower() != "bearer" or name is None:
            raise Unauthorized("Missing or invalid API key" if api_key_header else "Missing or invalid bearer token")
        client = f"token:{name}"
    if services.rate_limit is not None:
        wait = services.rate_limit.wait_for_token(client)
        if wait:
            raise RateLimited("Too many requests from this client; retry later", retry_after=math.ceil(wait))


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it exceeds `limit`, chunked or not."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidRequest("Content-Length is not a number")
        if int(declared) > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes")
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)
