"""Liveness, readiness and the Prometheus scrape endpoint."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.api.deps import ServicesDep
from gateway.metrics import exposition

router = APIRouter()


@router.get("/healthz")
async def healthz() -> JSONResponse:
    """The process is up and its event loop answers."""
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    """Ready to proxy. A database outage degrades (records are held) but does not stop serving."""
    if services.drain.draining:
        # Stopping: the load balancer should send new calls elsewhere (this one is still served).
        return JSONResponse({"status": "shutting_down", "records_held": services.recorder.depth}, status_code=503)
    database_ok = services.snapshot.database_ok and services.recorder.database_up
    return JSONResponse(
        {
            "status": "ready" if database_ok else "degraded",
            "database": "ok" if database_ok else "unavailable",
            "deployments": len(services.snapshot.deployments),
            "records_held": services.recorder.depth,
        }
    )


@router.get("/metrics")
async def metrics(services: ServicesDep) -> Response:
    services.metrics.record_queue.set(services.recorder.depth)
    return Response(exposition(services.metrics), media_type=CONTENT_TYPE_LATEST)
