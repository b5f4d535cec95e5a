"""`create_app`: the one place that wires the gateway together.

Collaborators are parameters so tests can swap them: the upstream transport
and the Prometheus registry. Everything with a lifetime (engine, HTTP
clients, recorder, snapshot refresher) is built in the lifespan and closed
when it ends; nothing happens at import time.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, get_args

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException

from gateway import __version__
from gateway.alerts import Alerts
from gateway.api import admin, dashboard, health, messages, passthrough, proxy, responses
from gateway.api.admin import AdminGuard
from gateway.api.bodies import BodyBudget, BodyBudgetMiddleware
from gateway.api.deps import Services
from gateway.api.errors import ErrorResponse, error_response, http_status
from gateway.api.fastpath import FastPath
from gateway.config import Settings, declared_deployments, load_settings
from gateway.control import ControlPlane, sync_declared
from gateway.drain import Drain
from gateway.errors import GatewayError, StoreUnavailable
from gateway.limits import KeyedLimiter
from gateway.maintenance import Maintenance
from gateway.metrics import Metrics, forget_process
from gateway.migrate import ensure_schema
from gateway.models import Deployment, Price, RolloutMode
from gateway.passthrough import PassThrough
from gateway.pricing import PriceTable
from gateway.probe import DatabaseProbe
from gateway.providers import create_provider
from gateway.quality import QualityMonitor
from gateway.recorder import Recorder
from gateway.relay import Relay
from gateway.scheduler import CheckScheduler, RolloutChecker
from gateway.shadowing import ShadowDispatcher
from gateway.snapshot import Snapshot
from gateway.store import Store, create_engine
from gateway.tokens import TokenCounter
from gateway.upstream import UpstreamClient

log = logging.getLogger("gateway")


def create_app(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """Build the ASGI app; raises ConfigError for a configuration it cannot serve."""
    providers = {name: create_provider(name, provider) for name, provider in settings.providers.items()}
    declared = declared_deployments(settings)
    policies = _policies(settings)
    prices = PriceTable({
        model: Price(input=price.input, output=price.output, cache_read=price.cache_read,
                     cache_write=price.cache_write)
        for model, price in settings.pricing.items()
    })
    configured_salt = settings.user_id_salt.get_secret_value().encode()
    for name, deployment in settings.deployments.items():
        for key in deployment.policy.deprecated_keys():
            log.warning("deployments.%s.policy.%s is deprecated and ignored (see config.example.yaml)", name, key)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics = Metrics(registry)
        # PostgreSQL: the checks' long statements get a pool of their own. SQLite is one file
        # and one writer: a second pool would only contend for its lock.
        postgresql = settings.database_url.startswith("postgresql")
        store = Store(create_engine(settings.database_url, settings.database),
                      check_engine=create_engine(settings.database_url, settings.database, checks=True)
                      if postgresql else None)
        clients = {
            name: UpstreamClient(
                provider,
                settings.providers[name],
                transport=transport,
            )
            for name, provider in providers.items()
        }

        def on_change(deployments: Mapping[str, Deployment]) -> None:
            metrics.forget_series()
            for name, deployment in deployments.items():
                metrics.canary_percent.labels(deployment=name).set(
                    deployment.rollout.canary_percent if deployment.rollout.canary else 0.0
                )
                for mode in get_args(RolloutMode):
                    metrics.rollout_mode.labels(deployment=name, mode=mode).set(deployment.rollout.mode == mode)

        async def first_contact() -> None:
            """Once the database answers: its schema, the declared deployments, the shared user-id salt."""
            await _prepare(settings, store, declared, policies)
            if not configured_salt:
                relay.use_salt((await store.user_id_salt(secrets.token_hex(32))).encode())

        snapshot = Snapshot(
            store,
            declared=declared,
            sync=first_contact,
            refresh_interval=settings.database.refresh_interval,
            on_change=on_change,
        )
        recorder = Recorder(store, settings.recorder, metrics)
        quality = QualityMonitor(
            {name: deployment.quality for name, deployment in settings.deployments.items()},
            judges=clients,
            prices=prices,
            recorder=recorder,
            metrics=metrics,
            settings=settings.evaluation,
        )
        shadow = ShadowDispatcher(
            {name: deployment.quality for name, deployment in settings.deployments.items()},
            clients=clients,
            prices=prices,
            recorder=recorder,
            metrics=metrics,
            settings=settings.shadowing,
            http_status=http_status,
            share=1.0 / settings.server.workers,
        )
        relay = Relay(
            snapshot=snapshot,
            clients=clients,
            prices=prices,
            recorder=recorder,
            metrics=metrics,
            # Until the database answers: a salt of this process only (the shared one replaces it).
            user_id_salt=configured_salt or secrets.token_bytes(32),
            max_concurrency=settings.server.max_concurrency,
            quality=quality,
            shadow=shadow,
            access_log=settings.logging.access_log,
            http_status=http_status,
        )
        control = ControlPlane(store, snapshot, providers=settings.providers)
        alerts = Alerts(settings.alerts.webhooks, metrics)
        checker = RolloutChecker(store, snapshot, alerts=alerts, metrics=metrics)
        scheduler = CheckScheduler(checker, Maintenance(store, settings.retention, metrics))
        probe = DatabaseProbe(
            store.ping,
            timeout=settings.database.probe_timeout,
            max_age=settings.database.refresh_interval,
            give_up=settings.database.pool_timeout + settings.database.statement_timeout,
        )
        drain = Drain(
            delay=settings.server.drain_delay, grace=settings.server.shutdown_grace, end_calls=relay.end_calls
        )
        services = Services(
            relay=relay,
            control=control,
            checker=checker,
            snapshot=snapshot,
            recorder=recorder,
            store=store,
            metrics=metrics,
            drain=drain,
            probe=probe,
            tokens=TokenCounter(snapshot=snapshot, clients=clients, metrics=metrics),
            client_tokens=settings.client_tokens,
            max_body_bytes=settings.server.max_body_bytes,
            user_id_header=settings.server.user_id_header,
            passthrough=PassThrough(
                settings.passthrough,
                client=clients[settings.passthrough.provider],
                relay=relay,
                recorder=recorder,
                metrics=metrics,
                http_status=http_status,
                access_log=settings.logging.access_log,
            )
            if settings.passthrough.provider is not None
            else None,
            rate_limit=KeyedLimiter(settings.server.rate_limit_per_minute)
            if settings.server.rate_limit_per_minute
            else None,
        )
        app.state.services = services
        on_change(snapshot.deployments)
        try:
            await snapshot.start()
            recorder.start()
            quality.start()
            shadow.start()
            alerts.start()
            scheduler.start(snapshot.deployments)
            drain.install()
            log.info("gateway ready", extra={"deployments": sorted(snapshot.deployments), "pid": os.getpid()})
            yield
        finally:
            drain.uninstall()
            drain.draining = True
            scheduler.stop()
            await quality.stop()
            await shadow.stop()
            await alerts.stop()
            await snapshot.stop()
            await probe.close()
            await recorder.stop()
            for client in clients.values():
                await client.aclose()
            await store.close()
            forget_process()
            log.info("gateway stopped")

    app = FastAPI(
        title="canary-gateway",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    # First, so innermost: inside CORS and the body budget, past the router (see gateway.api.fastpath).
    app.add_middleware(FastPath, routes={
        "/v1/chat/completions": proxy.chat_completions,
        "/v1/responses": responses.create_response,
        "/v1/messages": messages.create_message,
        "/v1/messages/count_tokens": messages.count_tokens,
    })
    if settings.server.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.server.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=sorted({"authorization", "content-type", "x-request-id", "x-api-key", "anthropic-version",
                                  "anthropic-beta", settings.server.user_id_header}),
            expose_headers=["x-request-id", "x-canary-deployment", "x-canary-version"],
        )
    if not settings.admin_tokens:
        log.warning("no admin token is configured: the admin API answers 403")
    app.add_middleware(AdminGuard, tokens=settings.admin_tokens)
    app.add_middleware(BodyBudgetMiddleware, budget=BodyBudget(settings.server.max_body_bytes_in_flight))
    app.include_router(proxy.router)
    app.include_router(messages.router)
    app.include_router(responses.router)
    app.include_router(admin.router)
    app.include_router(health.router)
    app.include_router(dashboard.router)
    if settings.passthrough.provider is not None:
        app.include_router(passthrough.router)  # last: its /v1/{path} must not shadow the routes above
    _install_error_handlers(app, settings.passthrough.routes if settings.passthrough.provider is not None else ())
    return app


def _install_error_handlers(app: FastAPI, passthrough_routes: tuple[str, ...]) -> None:
    @app.exception_handler(GatewayError)
    async def gateway_error(_request: Request, exc: GatewayError) -> JSONResponse:
        return error_response(exc)

    served: list[str] = []

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            if not served:
                served.extend(_served_routes(app, passthrough_routes))
            path = request.url.path[:200].encode("utf-8", "backslashreplace").decode()
            message = (f"Unknown route '{request.method} {path}'. This gateway serves: {', '.join(served)}"
                       " (and the admin API under /admin)")
            code = "not_found"
        else:
            message, code = str(exc.detail), "invalid_request"
        return ErrorResponse(
            {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        location = list(first["loc"])
        if location and location[0] in ("body", "query", "path", "header"):
            location = location[1:]
        param = ".".join(str(part) for part in location) or None
        return ErrorResponse(
            {"error": {"message": f"{param}: {first['msg']}" if param else first["msg"],
                       "type": "invalid_request_error", "param": param, "code": "invalid_request"}},
            status_code=400,
        )

    @app.exception_handler(Exception)
    async def unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error (%s)", type(exc).__name__, exc_info=exc)
        return ErrorResponse(
            {"error": {"message": "The gateway failed unexpectedly", "type": "server_error",
                       "param": None, "code": "internal_error"}},
            status_code=500,
        )


def _served_routes(app: FastAPI, passthrough_routes: tuple[str, ...]) -> list[str]:
    """`METHOD /path` for every public route but the admin API's and the dashboard's files, as a 404 lists them."""
    served: list[str] = []

    def walk(routes: Any) -> None:
        for route in routes:
            included = getattr(route, "original_router", None)  # FastAPI wraps included routers
            if included is not None:
                walk(included.routes)
                continue
            path, methods = getattr(route, "path", ""), getattr(route, "methods", None) or set()
            if path and not path.startswith(("/admin", "/dashboard/")) and "{path:path}" not in path:
                served.extend(f"{method} {path}" for method in sorted(methods - {"HEAD", "OPTIONS"}))

    walk(app.routes)
    served.extend(f"{route} (pass-through)" for route in passthrough_routes)
    return served


async def _prepare(
    settings: Settings, store: Store, declared: Mapping[str, Deployment], policies: Mapping[str, Any]
) -> None:
    """What the snapshot does once the database answers: its schema first, then the declared deployments."""
    await ensure_schema(settings.database_url, store.engine, apply=settings.database.migrate,
                        pooler=settings.database.pooler)
    await sync_declared(store, deployments=declared, policies=policies)


async def sync_declared_at_start(settings: Settings) -> bool:
    """Write the declared deployments into the database before serving.

    Run by `serve` ahead of the server so that a version redefined in the file
    stops the start with one line; False when the database is unreachable
    (the gateway then serves the declared configuration and syncs later).
    """
    store = Store(create_engine(settings.database_url, settings.database))
    try:
        await sync_declared(store, deployments=declared_deployments(settings), policies=_policies(settings))
    except StoreUnavailable:
        return False
    finally:
        await store.close()
    return True


def _policies(settings: Settings) -> dict[str, Any]:
    return {name: deployment.policy.model_dump(mode="json") for name, deployment in settings.deployments.items()}


def app_from_environment() -> FastAPI:
    """Factory for `uvicorn --factory` and multi-worker serving: reads GATEWAY_CONFIG."""
    return create_app(load_settings(os.environ.get("GATEWAY_CONFIG") or None))
