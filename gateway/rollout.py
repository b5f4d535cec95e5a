"""Pure rollout transitions: a state and an action → the next state, or a refusal.

Callers (the admin API, the config sync, the scheduler) read the current
state, compute the next one here, and store it with a compare-and-set on the
revision, so a transition always applies to the state it was computed from.

    stable ──start_canary──▶ canary ──promote──▶ promoted
                               │  ▲                 │
                    set_percent│  │pause/resume     start_canary
                               ▼  │                 ▼
                             canary ──rollback──▶ rolled_back ──start_canary──▶ canary

A canary rollout may start in the shadow stage (`shadow`: percent 0, no user
served by the canary); the first percentage set leaves it. An A/B test
(`kind="ab_test"`) is a running canary at a fixed split that only an
operator ends, with `conclude_ab`: the winner becomes (or stays) stable, or
starts a canary rollout of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from gateway.errors import Conflict, InvalidRequest, NotFound
from gateway.models import Deployment, RolloutKind, RolloutState


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
    shadow: bool = False,
    kind: RolloutKind = "canary",
) -> RolloutState:
    """A new rollout of `version`; a running canary is only replaced when asked (the config sync).

    Without `percent`, a canary starts in the shadow stage when `shadow` is
    set, else at the first of `stages`. An A/B test (`kind="ab_test"`) needs
    `percent`, its split. Raises NotFound for an unknown version, Conflict
    when it is stable or another canary runs, InvalidRequest for an A/B
    test without a split.
    """
    state = deployment.rollout
    if version not in deployment.versions:
        raise NotFound(f"deployment '{deployment.name}' has no version '{version}'", param="version")
    if version == state.stable:
        raise Conflict(f"'{version}' is already the stable version", param="version")
    if state.status == "canary" and state.canary != version and not replace_running:
        raise Conflict(f"canary '{state.canary}' is still running: promote it or roll it back first")
    if kind == "ab_test" and percent is None:
        raise InvalidRequest("an A/B test needs its split (percent)", param="percent")
    in_shadow = kind == "canary" and percent is None and shadow
    start = 0.0 if in_shadow else stages[0] if percent is None else percent
    return replace(
        state,
        canary=version,
        canary_percent=start,
        stage=stage_for(start, stages),
        status="canary",
        paused=False,
        stage_started_at=now,
        kind=kind,
        shadow=in_shadow,
    )


def start_rollout(
    deployment: Deployment,
    *,
    version: str,
    percent: float | None,
    now: datetime,
    replace_running: bool = False,
) -> RolloutState:
    """`start_canary` as the deployment's policy says: an A/B test at `ab.split` (or `percent`) under
    `mode: ab_test`, else a canary rollout from the shadow stage when the stages begin with it."""
    policy = deployment.policy
    if policy.mode == "ab_test":
        return start_canary(deployment, version=version, percent=policy.ab.split if percent is None else percent,
                            stages=policy.stages, now=now, replace_running=replace_running, kind="ab_test")
    return start_canary(deployment, version=version, percent=percent, stages=policy.stages, now=now,
                        replace_running=replace_running, shadow=policy.shadow_stage)


def set_percent(deployment: Deployment, *, percent: float, stages: Sequence[float], now: datetime) -> RolloutState:
    """A new canary percentage, starting a new stage; a percentage above 0 ends the shadow stage."""
    state = _running(deployment)
    if percent == state.canary_percent:
        return state
    return replace(state, canary_percent=percent, stage=stage_for(percent, stages), stage_started_at=now,
                   shadow=False)


def conclude_ab(
    deployment: Deployment,
    *,
    winner: str,
    start_canary: bool,
    stages: Sequence[float],
    shadow: bool,
    now: datetime,
) -> RolloutState:
    """End a running A/B test with `winner`.

    The stable version winning ends the test with every user on it (status
    `stable`, no canary). The candidate winning becomes stable at once
    (`promoted`), or, with `start_canary`, starts a canary rollout of its own
    from the shadow stage or the first of `stages`. Raises Conflict when no
    A/B test runs, InvalidRequest when `winner` is neither of its versions.
    """
    state = _running(deployment)
    if state.kind != "ab_test":
        raise Conflict(f"deployment '{deployment.name}' runs a canary rollout, not an A/B test: "
                       "promote it or roll it back")
    if winner not in (state.stable, state.canary):
        raise InvalidRequest(f"the winner must be '{state.stable}' or '{state.canary}', not '{winner}'",
                             param="winner")
    if winner == state.stable:
        return replace(state, canary=None, canary_percent=0.0, stage=0, status="stable", paused=False,
                       stage_started_at=now, shadow=False)
    if not start_canary:
        return promote(deployment, now=now)
    return replace(state, kind="canary", status="canary", paused=False, stage_started_at=now, shadow=shadow,
                   canary_percent=0.0 if shadow else stages[0], stage=stage_for(0.0 if shadow else stages[0], stages))


def promote(deployment: Deployment, *, now: datetime) -> RolloutState:
    """The canary becomes stable now; the rollout ends as `promoted`. Raises Conflict without a running canary."""
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
        shadow=False,
    )


def rollback(deployment: Deployment, *, now: datetime) -> RolloutState:
    """Percent 0 at once; the canary version stays recorded for the audit."""
    state = _running(deployment)
    return replace(state, canary_percent=0.0, status="rolled_back", paused=False, stage_started_at=now,
                   shadow=False)


def pause(deployment: Deployment) -> RolloutState:
    """Automatic decisions stop being applied; traffic stays. Raises Conflict without a running canary."""
    return replace(_running(deployment), paused=True)


def resume(deployment: Deployment) -> RolloutState:
    """Automatic decisions apply again. Raises Conflict without a running canary."""
    return replace(_running(deployment), paused=False)


def _running(deployment: Deployment) -> RolloutState:
    state = deployment.rollout
    if state.status != "canary" or state.canary is None:
        raise Conflict(f"deployment '{deployment.name}' has no running canary (status: {state.status})")
    return state
