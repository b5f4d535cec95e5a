"""Pure rollout transitions: a state and an action → the next state, or a refusal.

Callers (the admin API, the config sync, the scheduler) read the current
state, compute the next one here, and store it with a compare-and-set on the
revision, so a transition always applies to the state it was computed from.

    stable ──start_canary──▶ canary ──promote──▶ promoted
                               │  ▲                 │
                    set_percent│  │pause/resume     start_canary
                               ▼  │                 ▼
                             canary ──rollback──▶ rolled_back ──start_canary──▶ canary
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from gateway.errors import Conflict, NotFound
from gateway.models import Deployment, RolloutState


def stage_for(percent: float, stages: Sequence[float]) -> int:
    """Index of the last stage at or below `percent` (0 below the first)."""
    index = 0
    for position, stage in enumerate(stages):
        if stage <= percent:
            index = position
    return index


def start_canary(
    deployment: Deployment,
    *,
    version: str,
    percent: float | None,
    stages: Sequence[float],
    now: datetime,
    replace_running: bool = False,
) -> RolloutState:
    """A new rollout of `version`; a running canary is only replaced when asked (the config sync)."""
    state = deployment.rollout
    if version not in deployment.versions:
        raise NotFound(f"deployment '{deployment.name}' has no version '{version}'", param="version")
    if version == state.stable:
        raise Conflict(f"'{version}' is already the stable version", param="version")
    if state.status == "canary" and state.canary != version and not replace_running:
        raise Conflict(f"canary '{state.canary}' is still running: promote it or roll it back first")
    start = stages[0] if percent is None else percent
    return replace(
        state,
        canary=version,
        canary_percent=start,
        stage=stage_for(start, stages),
        status="canary",
        paused=False,
        stage_started_at=now,
    )


def set_percent(deployment: Deployment, *, percent: float, stages: Sequence[float], now: datetime) -> RolloutState:
    state = _running(deployment)
    if percent == state.canary_percent:
        return state
    return replace(state, canary_percent=percent, stage=stage_for(percent, stages), stage_started_at=now)


def promote(deployment: Deployment, *, now: datetime) -> RolloutState:
    state = _running(deployment)
    assert state.canary is not None
    return replace(
        state,
        stable=state.canary,
        canary=None,
        canary_percent=0.0,
        stage=0,
        status="promoted",
        paused=False,
        stage_started_at=now,
    )


def rollback(deployment: Deployment, *, now: datetime) -> RolloutState:
    """Percent 0 at once; the canary version stays recorded for the audit."""
    state = _running(deployment)
    return replace(state, canary_percent=0.0, status="rolled_back", paused=False, stage_started_at=now)


def pause(deployment: Deployment) -> RolloutState:
    return replace(_running(deployment), paused=True)


def resume(deployment: Deployment) -> RolloutState:
    return replace(_running(deployment), paused=False)


def _running(deployment: Deployment) -> RolloutState:
    state = deployment.rollout
    if state.status != "canary" or state.canary is None:
        raise Conflict(f"deployment '{deployment.name}' has no running canary (status: {state.status})")
    return state
