"""The admin API (`/admin`): rollout state, versions, compare and the audit trail.

`AdminGuard` authenticates every path under /admin before routing, so an
unknown route, a HEAD request or a trailing slash gets 401 like any other
without a valid token. Tokens are named; the name is the audit actor.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.deps import ServicesDep, matching_token
from gateway.api.errors import error_response
from gateway.config import VersionSettings, check_name, check_storable
from gateway.errors import Forbidden, GatewayError, InvalidRequest, RateLimited, Unauthorized
from gateway.models import Deployment, RolloutEvent, Version

_ERROR: dict[str, Any] = {
    "description": 'an error in OpenAI\'s shape: `{"error": {"message", "type", "param", "code"}}`'
}
# Answers every admin route can give, documented in the OpenAPI schema.
router = APIRouter(prefix="/admin", responses={
    401: {**_ERROR, "description": "no admin token, or a wrong one"},
    403: {**_ERROR, "description": "no admin token is configured: the admin API is disabled"},
    429: {**_ERROR, "description": "too many failed attempts from this address; see Retry-After"},
    503: {**_ERROR, "description": "the database is unavailable; retry later"},
})
_UNKNOWN: dict[int | str, dict[str, Any]] = {404: {**_ERROR, "description": "unknown deployment (or version)"}}
_CHANGE: dict[int | str, dict[str, Any]] = {
    **_UNKNOWN,
    409: {**_ERROR, "description": "the state changed (stale revision) or forbids the change"},
}


class AdminGuard:
    """Bearer-token check for /admin, constant-time, with a lockout for repeated failures per client IP."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: Mapping[str, SecretStr],
        max_failures: int = 20,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._app = app
        self._tokens = [(name, token.get_secret_value().encode()) for name, token in tokens.items()]
        self._max_failures = max_failures
        self._window = window_s
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/admin" or path.startswith("/admin/")):
            await self._app(scope, receive, send)
            return
        try:
            scope.setdefault("state", {})["admin_actor"] = self._authenticate(scope)
        except GatewayError as exc:
            headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else {}
            await error_response(exc, headers=headers)(scope, receive, send)
            return
        await self._app(scope, receive, send)

    def _authenticate(self, scope: Scope) -> str:
        if not self._tokens:
            raise Forbidden("The admin API is disabled: no admin token is configured")
        client = (scope.get("client") or ("unknown", 0))[0]
        now = self._clock()
        recent = self._failures.get(client)
        if recent is not None:
            while recent and recent[0] < now - self._window:
                recent.popleft()
            if len(recent) >= self._max_failures:
                retry = max(1, int(recent[0] + self._window - now) + 1)
                raise RateLimited("Too many failed admin authentications; retry later", retry_after=retry)
        presented = b""
        for key, value in scope.get("headers", ()):
            if key == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    presented = credentials.strip()
        actor = matching_token(presented, self._tokens)
        if actor is None:
            self._note_failure(client, now)
            raise Unauthorized("Missing or invalid admin token")
        return actor

    def _note_failure(self, client: str, now: float) -> None:
        if len(self._failures) > 10_000:
            self._failures.clear()  # bounded memory under a spray of addresses
        self._failures.setdefault(client, deque()).append(now)


async def admin_actor(request: Request) -> str:
    actor = request.scope.get("state", {}).get("admin_actor")
    if not isinstance(actor, str):
        raise Unauthorized("Missing or invalid admin token")
    return actor


Actor = Annotated[str, Depends(admin_actor)]


class VersionIn(VersionSettings):
    name: str

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return check_name(name, "version name")


def _two_decimals(percent: float | None) -> float | None:
    return None if percent is None else round(percent, 2)


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, max_length=2000)

    @field_validator("reason")
    @classmethod
    def _storable(cls, reason: str | None) -> str | None:
        check_storable(reason, "reason")
        return reason
    # Optimistic concurrency: refuse with 409 unless the deployment is still at this revision.
    revision: int | None = Field(None, ge=0)


class CanaryIn(Reason):
    version: str = Field(min_length=1, max_length=64)
    percent: float | None = Field(None, gt=0, le=100)

    _round = field_validator("percent")(_two_decimals)


class PercentIn(Reason):
    percent: float = Field(ge=0, le=100)

    _round = field_validator("percent")(_two_decimals)


class ConcludeIn(Reason):
    winner: str = Field(min_length=1, max_length=64, description="the version that won the A/B test")
    # Python's `as` is a keyword: the field is `as` on the wire.
    as_: Literal["stable", "canary"] = Field(
        "stable", alias="as",
        description="stable: the winner becomes (or stays) stable now; canary: a winning candidate starts a "
                    "canary rollout of its own")


# Deployment names as the configuration allows them (config.check_name): anything else cannot exist.
Name = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


@router.get("/deployments")
async def list_deployments(services: ServicesDep, _actor: Actor) -> JSONResponse:
    """Every deployment with its rollout state: `{"deployments": [DEPLOYMENT]}`."""
    return JSONResponse({"deployments": [deployment_view(d) for d in await services.control.deployments()]})


@router.get("/deployments/{name}", responses=_UNKNOWN)
async def get_deployment(name: Name, services: ServicesDep, _actor: Actor) -> JSONResponse:
    """One deployment with its versions and policy; 404 when unknown."""
    return JSONResponse(deployment_view(await services.control.deployment(name)))


@router.post("/deployments/{name}/versions", status_code=201, responses=_CHANGE)
async def create_version(name: Name, body: VersionIn, services: ServicesDep, actor: Actor) -> JSONResponse:
    """Create an immutable version of the deployment; 409 when the name exists."""
    version = await services.control.create_version(deployment=name, version=body.to_version(body.name), actor=actor)
    return JSONResponse(version_view(version), status_code=201)


@router.post("/deployments/{name}/canary", responses=_CHANGE)
async def start_canary(name: Name, body: CanaryIn, services: ServicesDep, actor: Actor) -> JSONResponse:
    """Start a rollout of `version` at the policy's first stage, or at `percent`; 409 while another runs."""
    deployment = await services.control.start_canary(
        deployment=name, version=body.version, percent=body.percent, actor=actor, reason=body.reason,
        revision=body.revision,
    )
    return JSONResponse(deployment_view(deployment))


@router.put("/deployments/{name}/canary-percent", responses=_CHANGE)
async def set_percent(name: Name, body: PercentIn, services: ServicesDep, actor: Actor) -> JSONResponse:
    """Set the canary percentage by hand (0–100, two decimals); the change is audited."""
    deployment = await services.control.set_percent(
        deployment=name, percent=body.percent, actor=actor, reason=body.reason, revision=body.revision
    )
    return JSONResponse(deployment_view(deployment))


@router.post("/deployments/{name}/{action}", responses=_CHANGE)
async def change(
    name: Name,
    action: Literal["promote", "rollback", "pause", "resume"],
    services: ServicesDep,
    actor: Actor,
    body: Reason | None = None,
) -> JSONResponse:
    """`promote` (the canary becomes stable now), `rollback` (percent 0, rollout ended), `pause` or `resume`
    automatic decisions."""
    control = services.control
    method = {"promote": control.promote, "rollback": control.rollback, "pause": control.pause,
              "resume": control.resume}[action]
    deployment = await method(
        deployment=name, actor=actor, reason=body.reason if body else None, revision=body.revision if body else None
    )
    return JSONResponse(deployment_view(deployment))


@router.get("/deployments/{name}/ab", responses=_CHANGE)
async def ab_report(name: Name, services: ServicesDep, _actor: Actor) -> JSONResponse:
    """The running A/B test's report, changing nothing; 409 when no A/B test runs.

    `{"deployment", "state", "since", "report": {"stable", "candidate", "split", "alpha", "elapsed_s",
    "users", "calls", "srm": {"p_value", "expected_candidate_share", "observed_candidate_share",
    "mismatch"}, "summary", "metrics": [{"metric", "label", "stable", "candidate", "stable_n",
    "candidate_n", "difference", "relative_pct", "lower", "upper", "significant", "needs_calls",
    "needs_seconds", "line"}]}, "evidence"}`: per metric, each version's value, the difference
    candidate − stable with its two-sided anytime-valid interval at `ab.alpha`, whether it is significant,
    and the calls (and time at the traffic so far) an undecided difference still needs.
    """
    return JSONResponse(await services.control.ab_report(deployment=name))


@router.post("/deployments/{name}/ab/conclude", responses=_CHANGE)
async def conclude_ab(name: Name, body: ConcludeIn, services: ServicesDep, actor: Actor) -> JSONResponse:
    """End the running A/B test with `winner`, audited as `ab_concluded` (with the report at that moment).

    `as: stable` (the default): the winner becomes stable now (stable winning simply ends the test);
    `as: canary`: a winning candidate starts a canary rollout of its own, from the shadow stage when the
    policy's stages begin with it. 400 when `winner` is neither version; 409 when no A/B test runs.
    """
    deployment = await services.control.conclude_ab(
        deployment=name, winner=body.winner, start_canary=body.as_ == "canary", actor=actor, reason=body.reason,
        revision=body.revision,
    )
    return JSONResponse(deployment_view(deployment))


@router.get("/deployments/{name}/compare", responses=_UNKNOWN)
async def compare(
    name: Name,
    services: ServicesDep,
    _actor: Actor,
    hours: Annotated[float, Query(gt=0, le=24 * 90)] = 24.0,
) -> JSONResponse:
    """Per-version metrics over the last `hours` and the canary's % difference from stable."""
    return JSONResponse(await services.control.compare(deployment=name, hours=hours))


@router.get("/deployments/{name}/timeseries", responses=_UNKNOWN)
async def timeseries(
    name: Name,
    services: ServicesDep,
    _actor: Actor,
    hours: Annotated[float, Query(gt=0, le=24 * 90)] = 6.0,
    step: Annotated[int, Query(ge=60, le=86400, multiple_of=60,
                               description="bucket width in seconds, whole minutes")] = 300,
) -> JSONResponse:
    """Per-version points over time, for charts; at most 2,000 buckets."""
    if hours * 3600 / step > 2000:
        raise InvalidRequest("too many points: widen `step` or shorten `hours` (at most 2000 buckets)",
                             param="step")
    return JSONResponse(await services.control.timeseries(deployment=name, hours=hours, step_s=step))


@router.get("/deployments/{name}/events", responses=_UNKNOWN)
async def events(
    name: Name,
    services: ServicesDep,
    _actor: Actor,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="only events with a smaller id (paging)")]
    = None,
) -> JSONResponse:
    """The audit trail, newest first: `{"events": [EVENT]}`."""
    found = await services.control.events(deployment=name, limit=limit, before_id=before)
    return JSONResponse({"events": [event_view(event) for event in found]})


@router.get("/deployments/{name}/decision", responses=_UNKNOWN)
async def decision(name: Name, services: ServicesDep, _actor: Actor) -> JSONResponse:
    """What the rollout check would decide now, changing nothing.

    `{"deployment", "running", "changes_nothing": true, "mode", "state", "decision", "summary", "reasons",
    "alerts", "srm_p_value", "metrics": [{"metric", "role", "estimate", "lower", "upper", "threshold",
    "alpha", "verdict", "line", "needs_calls", "needs_seconds"}], "evidence"}`; when no canary runs,
    `running` is false, `decision` null and `message` says so.
    """
    return JSONResponse(await services.checker.preview(name))


@router.post("/check")
async def check(services: ServicesDep, _actor: Actor) -> JSONResponse:
    """Run the scheduled rollout check now; `applied` tells whether this call changed anything."""
    results = await services.checker.check_all()
    return JSONResponse({"decisions": [result.public() for result in results]})


def deployment_view(deployment: Deployment) -> dict[str, Any]:
    state = deployment.rollout
    return {
        "name": deployment.name,
        **state.public(),
        "revision": state.revision,
        "stage_started_at": state.stage_started_at.isoformat() if state.stage_started_at else None,
        "anonymous": deployment.anonymous,
        "versions": [version_view(version) for version in deployment.versions.values()],
        "policy": deployment.policy.model_dump(mode="json"),
    }


def version_view(version: Version) -> dict[str, Any]:
    return {"name": version.name, **version.content()}


def event_view(event: RolloutEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": event.at.isoformat() if event.at else None,
        "deployment": event.deployment,
        "action": event.action,
        "actor": event.actor,
        "from": event.before,
        "to": event.after,
        "reason": event.reason,
        "snapshot": event.snapshot,
    }
