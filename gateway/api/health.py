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
    """Ready to proxy: 200 `ready`, or 200 `degraded` while the database does not answer (calls are
    still served from the last known routing state; records are held, then spooled); 503 while
    shutting down. The database probe waits at most `database.probe_timeout`."""
    recorder = services.recorder
    held = {"records_held": recorder.depth, "records_spooled": recorder.spooled}
    if services.drain.draining:
        # Stopping: the load balancer should send new calls elsewhere (this one is still served).
        return JSONResponse({"status": "shutting_down", **held}, status_code=503)
    database_ok = await services.probe.check() and services.snapshot.database_ok
    return JSONResponse(
        {
            "status": "ready" if database_ok else "degraded",
            "database": "ok" if database_ok else "unavailable",
            "deployments": len(services.snapshot.deployments),
            **held,
        }
    )


@router.get("/metrics")
async def metrics(services: ServicesDep) -> Response:
    services.metrics.record_queue.set(services.recorder.depth)
    return Response(exposition(services.metrics), media_type=CONTENT_TYPE_LATEST)
