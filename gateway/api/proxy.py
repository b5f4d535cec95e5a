"""The OpenAI-compatible proxy API: chat completions, models, feedback."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from gateway.api import passthrough
from gateway.api.deps import Services, ServicesDep, check_client, is_request_id, read_body, request_id_of
from gateway.api.errors import error_response
from gateway.api.fastpath import EventStream
from gateway.chat import parse_chat_request
from gateway.errors import ClientError, InvalidRequest, NotFound, Overloaded, StoreUnavailable, UpstreamError
from gateway.models import QualityScore

router = APIRouter()

_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
MAX_COMMENT_CHARS = 2000


async def chat_completions(request: Request) -> Response:
    """The hot path. It reads the services from the app itself rather than through a
    dependency: FastAPI's dependency solving is measurable per call here."""
    received = time.perf_counter()
    services: Services = request.app.state.services
    request_id = request_id_of(request, services.request_ids)
    headers = {"X-Request-Id": request_id}
    try:
        check_client(request, services)
        raw = await read_body(request, services.max_body_bytes)
        chat = parse_chat_request(raw, header_user=request.headers.get(services.user_id_header) or None)
        call = services.relay.begin(chat, request_id=request_id, received=received)
    except (ClientError, Overloaded) as exc:
        # The one place a refused call is counted, under its error code.
        services.metrics.refused.labels(reason=exc.code or "invalid").inc()
        return error_response(exc, headers=headers)
    except UpstreamError as exc:
        return error_response(exc, headers=headers)

    headers["X-Canary-Deployment"] = call.deployment.name
    headers["X-Canary-Version"] = call.version.name
    try:
        if not chat.stream:
            answer = await services.relay.complete(call)
            return Response(answer.content, media_type="application/json", headers={**answer.headers, **headers})
        upstream = await services.relay.open_stream(call)
    except UpstreamError as exc:
        return error_response(exc, headers=headers)
    relayed = call.client.provider.relayed_headers(upstream.headers)
    return EventStream(
        services.relay.stream(call, upstream),
        media_type="text/event-stream",
        headers={**relayed, **headers, **_STREAM_HEADERS},
    )


router.add_api_route(
    "/v1/chat/completions",
    chat_completions,
    methods=["POST"],
    summary="OpenAI-compatible chat completions, routed to a deployment's stable or canary version",
)


@router.get("/v1/models")
async def list_models(request: Request, services: ServicesDep) -> Response:
    try:
        check_client(request, services)
    except ClientError as exc:
        return error_response(exc)
    return JSONResponse({"object": "list", "data": [_model(name) for name in sorted(services.snapshot.deployments)]})


@router.get("/v1/models/{model:path}")
async def retrieve_model(model: str, request: Request, services: ServicesDep) -> Response:
    """A deployment, answered by the gateway; any other id passes through when `/v1/models/*` does, else 404."""
    if model not in services.snapshot.deployments:
        route = services.passthrough.match(request.url.path) if services.passthrough is not None else None
        if services.passthrough is not None and route is not None:
            return await passthrough.relay(request, services, services.passthrough, route)
    try:
        check_client(request, services)
        if model not in services.snapshot.deployments:
            raise NotFound(f"The model (deployment) '{model[:200]}' does not exist", param="model",
                           code="model_not_found")
    except ClientError as exc:
        return error_response(exc)
    return JSONResponse(_model(model))


def _model(name: str) -> dict[str, object]:
    """A deployment as OpenAI's `Model` object (openai-python `types/model.py`)."""
    return {"id": name, "object": "model", "created": 0, "owned_by": "canary-gateway"}


@router.post("/v1/feedback")
async def feedback(request: Request, services: ServicesDep) -> Response:
    """Attach a user's score (or thumbs up/down) to a recorded call, by its X-Request-Id.

    The score is written by the background writer, so it survives a database
    outage; while the database cannot say whether the call exists (it is
    down, or records still wait in the spool), the score is accepted (202)
    rather than lost.
    """
    try:
        check_client(request, services)
        given = _parse_feedback(await read_body(request, services.max_body_bytes))
        record = services.recorder.held(given.request_id)
        status_code = 200
        if record is not None:
            labels: tuple[str, str] | None = (record.deployment, record.version)
        else:
            try:
                labels = await services.store.record_labels(given.request_id)
            except StoreUnavailable:
                labels, status_code = None, 202
            else:
                if labels is None and services.recorder.spooled:
                    status_code = 202  # the call may be in the spool, not written back yet
                elif labels is None:
                    raise NotFound(f"No recorded request has the id '{given.request_id}'", param="request_id")
    except ClientError as exc:
        return error_response(exc)
    services.recorder.submit_score(
        QualityScore(id=uuid.uuid4().hex, request_id=given.request_id, source="feedback", score=given.score,
                     created_at=datetime.now(UTC), comment=given.comment)
    )
    if labels is not None:
        services.metrics.quality.labels(*labels, "feedback").observe(given.score)
    return JSONResponse(
        {"request_id": given.request_id, "score": given.score,
         "status": "recorded" if status_code == 200 else "accepted"},
        status_code=status_code,
    )


@dataclass(frozen=True, slots=True)
class Feedback:
    request_id: str
    score: float
    comment: str | None


def _parse_feedback(raw: bytes) -> Feedback:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not is_request_id(request_id):
        raise InvalidRequest("'request_id' must be a call's X-Request-Id: 1-128 letters, digits, '.', '_', ':' "
                             "or '-'", param="request_id")
    score, thumbs = body.get("score"), body.get("thumbs")
    if (score is None) == (thumbs is None):
        raise InvalidRequest("give exactly one of 'score' (0 to 1) or 'thumbs' ('up' or 'down')", param="score")
    if thumbs is not None:
        if thumbs not in ("up", "down"):
            raise InvalidRequest("'thumbs' must be 'up' or 'down'", param="thumbs")
        score = 1.0 if thumbs == "up" else 0.0
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0.0 <= score <= 1.0:
        raise InvalidRequest("'score' must be a number between 0 and 1", param="score")
    comment = body.get("comment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS):
        raise InvalidRequest(f"'comment' must be a string of at most {MAX_COMMENT_CHARS} characters",
                             param="comment")
    if comment is not None:
        # Stored as given but for what a database refuses: NUL (PostgreSQL) and unpaired surrogates (not UTF-8).
        comment = comment.replace("\x00", "").encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return Feedback(request_id=request_id, score=float(score), comment=comment)
