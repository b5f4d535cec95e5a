"""The OpenAI-compatible proxy API: chat completions, models, feedback."""

from __future__ import annotations

import json
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from gateway.api.deps import ServicesDep, check_client_token, error_response, read_body, request_id_of
from gateway.chat import parse_chat_request
from gateway.errors import ClientError, InvalidRequest, NotFound, StoreUnavailable, UpstreamError

router = APIRouter()

_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, services: ServicesDep) -> Response:
    received = time.perf_counter()
    request_id = request_id_of(request)
    headers = {"X-Request-Id": request_id}
    try:
        check_client_token(request, services.client_tokens)
        raw = await read_body(request, services.max_body_bytes)
        chat = parse_chat_request(raw, header_user=request.headers.get("x-user-id") or None)
        call = services.relay.begin(chat, request_id=request_id, received=received)
    except ClientError as exc:
        services.metrics.refused.labels(reason=exc.code or "invalid").inc()
        return error_response(exc, headers=headers)
    except UpstreamError as exc:
        return error_response(exc, headers=headers)

    headers["X-Canary-Deployment"] = call.deployment.name
    headers["X-Canary-Version"] = call.version.name
    try:
        if not chat.stream:
            answer = await services.relay.complete(call)
            return Response(answer.content, media_type="application/json", headers=headers)
        upstream = await services.relay.open_stream(call)
    except UpstreamError as exc:
        return error_response(exc, headers=headers)
    return StreamingResponse(
        services.relay.stream(call, upstream),
        media_type="text/event-stream",
        headers={**headers, **_STREAM_HEADERS},
    )


@router.get("/v1/models")
async def list_models(request: Request, services: ServicesDep) -> Response:
    try:
        check_client_token(request, services.client_tokens)
    except ClientError as exc:
        return error_response(exc)
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "canary-gateway"}
        for name in sorted(services.snapshot.deployments)
    ]
    return JSONResponse({"object": "list", "data": data})


@router.post("/v1/feedback")
async def feedback(request: Request, services: ServicesDep) -> Response:
    """Attach a quality score in [0, 1] to a recorded call, by its X-Request-Id."""
    try:
        check_client_token(request, services.client_tokens)
        request_id, score = _parse_feedback(await read_body(request, services.max_body_bytes))
        if not services.recorder.note_quality(request_id, score):
            if not await services.store.set_quality(request_id=request_id, score=score):
                raise NotFound(f"No recorded request has the id '{request_id}'", param="request_id")
    except (ClientError, StoreUnavailable) as exc:
        return error_response(exc)
    return JSONResponse({"request_id": request_id, "score": score, "status": "recorded"})


def _parse_feedback(raw: bytes) -> tuple[str, float]:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not 0 < len(request_id) <= 128:
        raise InvalidRequest("'request_id' must be a non-empty string of at most 128 characters", param="request_id")
    score = body.get("score")
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0.0 <= score <= 1.0:
        raise InvalidRequest("'score' must be a number between 0 and 1", param="score")
    return request_id, float(score)
