"""OpenAI's Responses API (`POST /v1/responses`), routed to a deployment's stable or canary version.

A call to a version whose provider speaks the Responses API goes natively:
its answer and events reach the client as the upstream sent them. Any other
goes through the chat-completions pivot, and its chat answer or stream is
rendered here as a `Response` or the Responses event stream
(`gateway.translators.responses_chat`). Errors have OpenAI's shape; a stream
that fails after it started ends in an `error` event and `response.failed`.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.api.deps import Services, check_client, read_body, request_id_of
from gateway.api.errors import error_response
from gateway.api.fastpath import EventStream
from gateway.errors import ClientError, Overloaded, UpstreamBadResponse, UpstreamError
from gateway.responses import parse_responses_request
from gateway.translators.responses_chat import ResponsesEvents, echoed, to_response

router = APIRouter()

_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def create_response(request: Request) -> Response:
    """The hot path for Responses calls (services read from the app, as for chat completions)."""
    received = time.perf_counter()
    services: Services = request.app.state.services
    request_id = request_id_of(request, services.request_ids)
    headers = {"X-Request-Id": request_id}
    try:
        check_client(request, services)
        raw = await read_body(request, services.max_body_bytes)
        inbound = parse_responses_request(raw, header_user=request.headers.get(services.user_id_header) or None)
        call = services.relay.begin(inbound, request_id=request_id, received=received)
    except (ClientError, Overloaded) as exc:
        services.metrics.refused.labels(reason=exc.code or "invalid").inc()
        return error_response(exc, headers=headers)
    except UpstreamError as exc:
        return error_response(exc, headers=headers)

    headers["X-Canary-Deployment"] = call.deployment.name
    headers["X-Canary-Version"] = call.version.name
    try:
        if not inbound.stream:
            answer = await services.relay.complete(call)
            content = answer.content if call.native else _rendered(answer.content, echoed(inbound.body, call.body))
            return Response(content, media_type="application/json", headers={**answer.headers, **headers})
        upstream = await services.relay.open_stream(call)
    except UpstreamError as exc:
        return error_response(exc, headers=headers)
    relayed = call.client.provider.relayed_headers(upstream.headers)
    events = services.relay.stream(call, upstream)
    return EventStream(
        events if call.native else _rendered_stream(events, echoed(inbound.body, call.body)),
        media_type="text/event-stream",
        headers={**relayed, **headers, **_STREAM_HEADERS},
    )


def _rendered(content: bytes, request: Mapping[str, Any]) -> bytes:
    try:
        completion = json.loads(content)
    except (ValueError, RecursionError):
        raise UpstreamBadResponse("the upstream's answer could not be read") from None
    return json.dumps(to_response(completion, request=request), separators=(",", ":")).encode()


async def _rendered_stream(chunks: AsyncGenerator[bytes, None], request: Mapping[str, Any]) -> AsyncIterator[bytes]:
    """The pivot's chat stream as Responses events; closing this closes the relay's stream (which records the call)."""
    events = ResponsesEvents(request)
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            out = events.feed(chunk)
            if out:
                yield out
    tail = events.finish()
    if tail:
        yield tail


router.add_api_route(
    "/v1/responses",
    create_response,
    methods=["POST"],
    summary="OpenAI's Responses API, routed to a deployment's stable or canary version",
)
