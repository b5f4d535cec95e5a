"""Anthropic's Messages API: `POST /v1/messages` and `/v1/messages/count_tokens`, in Anthropic's own shapes.

Answers, stream events and errors are Anthropic's (`gateway.messages`); the
client's key may come as `x-api-key` or a bearer token; `anthropic-version`
and `anthropic-beta` are accepted. A call is routed, injected, forwarded and
recorded like a chat call (`gateway.relay`, record `api` "messages"). A
version on an `anthropic` provider gets it natively (injected in Messages
format, the answer's bytes and events relayed unchanged); one on a
chat-completions provider through the pivot (`gateway.pivot`): translated
(`gateway.translators.messages_chat`), its answer and stream translated back
here.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from gateway.api.deps import Services, check_client, read_body, request_id_of
from gateway.api.errors import anthropic_error_response
from gateway.api.fastpath import EventStream
from gateway.errors import ClientError, Overloaded, UpstreamBadResponse, UpstreamError
from gateway.messages import parse_count_tokens_request, parse_messages_request
from gateway.translators.messages_chat import MessagesEventStream, to_message

router = APIRouter()

_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def create_message(request: Request) -> Response:
    """A Messages call, plain or streamed (`stream: true`: Anthropic's event stream)."""
    received = time.perf_counter()
    services: Services = request.app.state.services
    request_id = request_id_of(request, services.request_ids)
    headers = {"X-Request-Id": request_id, "request-id": request_id}
    try:
        check_client(request, services, api_key_header=True)
        raw = await read_body(request, services.max_body_bytes)
        inbound = parse_messages_request(raw, header_user=request.headers.get(services.user_id_header) or None)
        call = services.relay.begin(inbound, request_id=request_id, received=received)
    except (ClientError, Overloaded) as exc:
        services.metrics.refused.labels(reason=exc.code or "invalid").inc()
        return anthropic_error_response(exc, headers=headers)
    except UpstreamError as exc:
        return anthropic_error_response(exc, headers=headers)

    headers["X-Canary-Deployment"] = call.deployment.name
    headers["X-Canary-Version"] = call.version.name
    try:
        if not inbound.stream:
            answer = await services.relay.complete(call)
            content = answer.content if call.native else _message(answer.content)
            return Response(content, media_type="application/json", headers={**answer.headers, **headers})
        upstream = await services.relay.open_stream(call)
    except UpstreamError as exc:
        return anthropic_error_response(exc, headers=headers)
    relayed = call.client.provider.relayed_headers(upstream.headers)
    events = services.relay.stream(call, upstream)
    return EventStream(
        events if call.native else _events(events),
        media_type="text/event-stream",
        headers={**relayed, **headers, **_STREAM_HEADERS},
    )


def _message(completion: bytes) -> bytes:
    """A pivot's `chat.completion` bytes as an Anthropic `Message`; UpstreamBadResponse if it cannot be read."""
    try:
        data = json.loads(completion)
    except (ValueError, RecursionError):
        raise UpstreamBadResponse("upstream answered with a body that is not JSON") from None
    return json.dumps(to_message(data), separators=(",", ":")).encode()


async def _events(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The relay's chat-completion chunks as Anthropic events; closing this closes the relay's stream."""
    translator = MessagesEventStream()
    try:
        async for chunk in chunks:
            out = translator.feed(chunk)
            if out:
                yield out
        tail = translator.finish()
        if tail:
            yield tail
    finally:
        if isinstance(chunks, AsyncGenerator):
            await chunks.aclose()


async def count_tokens(request: Request) -> Response:
    """`{"input_tokens": N}` for the version that would serve this call, its prompt included (`gateway.tokens`)."""
    received = time.perf_counter()
    services: Services = request.app.state.services
    request_id = request_id_of(request, services.request_ids)
    headers = {"X-Request-Id": request_id, "request-id": request_id}
    try:
        check_client(request, services, api_key_header=True)
        raw = await read_body(request, services.max_body_bytes)
        inbound = parse_count_tokens_request(raw, header_user=request.headers.get(services.user_id_header) or None)
        services.relay.admit()  # a count is bounded by the gateway's concurrency limit like any call
        try:
            counted = await services.tokens.count(inbound, received=received)
        finally:
            services.relay.release()
    except (ClientError, Overloaded) as exc:
        services.metrics.refused.labels(reason=exc.code or "invalid").inc()
        return anthropic_error_response(exc, headers=headers)
    except UpstreamError as exc:
        return anthropic_error_response(exc, headers=headers)
    headers["X-Canary-Deployment"] = counted.deployment
    headers["X-Canary-Version"] = counted.version
    return JSONResponse({"input_tokens": counted.input_tokens}, headers=headers)


router.add_api_route(
    "/v1/messages",
    create_message,
    methods=["POST"],
    summary="Anthropic Messages, routed to a deployment's stable or canary version",
)
router.add_api_route(
    "/v1/messages/count_tokens",
    count_tokens,
    methods=["POST"],
    summary="Anthropic token count for the version that would serve the call, its prompt included",
)
