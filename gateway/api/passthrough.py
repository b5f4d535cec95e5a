"""The pass-through routes: the configured rest of an OpenAI base URL (see `gateway.passthrough`)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.exceptions import HTTPException

from gateway.api.deps import Services, check_client, read_body, request_id_of
from gateway.api.errors import error_response
from gateway.errors import ClientError, Overloaded, UpstreamError
from gateway.passthrough import PassThrough

router = APIRouter()


async def pass_through(request: Request) -> Response:
    """Relay a configured route; any other path under /v1 is the unknown-route 404."""
    services: Services = request.app.state.services
    passthrough = services.passthrough
    path = request.url.path
    route = passthrough.match(path) if passthrough is not None else None
    if passthrough is None or route is None:
        raise HTTPException(404)
    return await relay(request, services, passthrough, route)


async def relay(request: Request, services: Services, passthrough: PassThrough, route: str) -> Response:
    """Relay one call on `route`: the answer's status, allowed headers and bytes as the upstream sends them."""
    received = time.perf_counter()
    request_id = request_id_of(request, services.request_ids)
    headers = {"X-Request-Id": request_id}
    try:
        check_client(request, services)
        body = await read_body(request, services.max_body_bytes)
        call = passthrough.begin(route=route, method=request.method, path=request.url.path, query=request.url.query,
                                 headers=request.headers, body=body, request_id=request_id, received=received)
    except (ClientError, Overloaded) as exc:
        services.metrics.refused.labels(reason=exc.code or "invalid").inc()
        return error_response(exc, headers=headers)
    try:
        upstream = await passthrough.open(call)
    except UpstreamError as exc:
        return error_response(exc, headers=headers)
    return StreamingResponse(
        passthrough.relay(call, upstream),
        status_code=upstream.status_code,
        headers={**passthrough.answer_headers(upstream), **headers},
    )


router.add_api_route("/v1/{path:path}", pass_through, methods=["GET", "POST", "DELETE"], include_in_schema=False)
