"""The rollout check: store → analysis.decide → store, alerts, metrics.

APScheduler runs `RolloutChecker.check` for each deployment every
`policy.check_interval`. Every replica schedules it; the store's decision
lock lets one replica decide at a time, and the decision is stored with a
compare-and-set on the rollout revision, so a racing admin change or a
second replica can never apply it twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from gateway import rollout
from gateway.alerts import Alerts, alert_text
from gateway.analysis import window_rule as analysis
from gateway.analysis.window_rule import Decision
from gateway.config import PolicySettings, policy_of
from gateway.errors import Conflict, StoreUnavailable
from gateway.metrics import Metrics
from gateway.models import Deployment, RolloutEvent, RolloutState, WindowStats
from gateway.snapshot import Snapshot
from gateway.store import Store

log = logging.getLogger("gateway.scheduler")

ACTOR = "scheduler"
# The event action written for each decision.
ACTIONS = {"rollback": "rolled_back", "advance": "advanced", "promote": "promoted", "hold": "hold",
           "inconclusive": "inconclusive"}
# Recent events scanned to record a hold/inconclusive at most once per stage.
_RECENT = 50


@dataclass(frozen=True, slots=True)
class CheckResult:
    deployment: str
    decision: str
    reasons: tuple[str, ...]
    applied: bool

    def public(self) -> dict[str, Any]:
        return {"deployment": self.deployment, "decision": self.decision, "reasons": list(self.reasons),
                "applied": self.applied}


def utc_now() -> datetime:
    return datetime.now(UTC)


class RolloutChecker:
    def __init__(
        self,
        store: Store,
        snapshot: Snapshot,
        *,
        alerts: Alerts,
        metrics: Metrics,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._snapshot = snapshot
        self._alerts = alerts
        self._metrics = metrics
        self._clock = clock

    async def check_all(self) -> list[CheckResult]:
        """Check every deployment with a running canary now (POST /admin/check)."""
        results = []
        for name, deployment in sorted((await self._store.load_deployments()).items()):
            if deployment.rollout.status == "canary":
                result = await self.check(name)
                if result is not None:
                    results.append(result)
        return results

    async def check(self, name: str) -> CheckResult | None:
        """Decide for one deployment; None when there is nothing to decide or another replica is deciding."""
        async with self._store.decision_lock(name) as mine:
            if not mine:
                log.info("another replica is checking %s", name)
                return None
            deployment = await self._store.get_deployment(name)
            if deployment is None or deployment.rollout.status != "canary" or deployment.rollout.canary is None:
                return None
            return await self._decide(deployment)

    async def run_scheduled(self, name: str) -> None:
        """The APScheduler job: a failure is logged, and the next interval tries again."""
        try:
            await self.check(name)
        except StoreUnavailable as exc:
            log.warning("rollout check of %s skipped: %s", name, exc)
        except Exception:
            log.exception("rollout check of %s failed", name)

    async def _decide(self, deployment: Deployment) -> CheckResult:
        state = deployment.rollout
        assert state.canary is not None
        policy = policy_of(deployment.policy)
        now = self._clock()
        since = now - timedelta(seconds=policy.window)
        stable = await self._store.window_stats(deployment=deployment.name, version=state.stable, since=since)
        canary = await self._store.window_stats(deployment=deployment.name, version=state.canary, since=since)
        elapsed = (now - state.stage_started_at).total_seconds() if state.stage_started_at else 0.0
        decision = analysis.decide(
            stable=stable, canary=canary, policy=policy, percent=state.canary_percent, stage_elapsed_s=elapsed
        )
        self._metrics.decisions.labels(deployment=deployment.name, outcome=decision.outcome).inc()
        snapshot = _snapshot(stable, canary, policy, state, decision)
        reasons = decision.reasons
        applied = False
        if decision.outcome in ("hold", "inconclusive"):
            await self._note_once(deployment, decision, snapshot)
        elif state.paused:
            reasons = (*reasons, "rollout is paused: decision not applied")
        else:
            applied = await self._apply(deployment, decision, snapshot, now)
            if not applied:
                reasons = (*reasons, "the rollout changed meanwhile: decision not applied")
        log.info("rollout check", extra={"deployment": deployment.name, "decision": decision.outcome,
                                         "applied": applied})
        return CheckResult(deployment.name, decision.outcome, reasons, applied)

    async def _apply(self, deployment: Deployment, decision: Decision, snapshot: dict[str, Any],
                     now: datetime) -> bool:
        state = deployment.rollout
        after = _next_state(deployment, decision, now)
        action = ACTIONS[decision.outcome]
        event = RolloutEvent(deployment=deployment.name, action=action, actor=ACTOR, before=state.public(),
                             after=after.public(), reason="; ".join(decision.reasons), snapshot=snapshot, at=now)
        try:
            await self._store.apply_rollout(expected_revision=state.revision, state=after, event=event)
        except Conflict:
            return False
        await self._snapshot.refresh_now()
        if decision.outcome == "rollback":
            self._metrics.rollbacks.labels(deployment=deployment.name).inc()
        elif decision.outcome == "promote":
            self._metrics.promotions.labels(deployment=deployment.name).inc()
        before, later = state.public(), after.public()
        self._alerts.send({
            "text": alert_text(deployment.name, action, before, later, decision.reasons),
            "deployment": deployment.name,
            "decision": decision.outcome,
            "from": before,
            "to": later,
            "reasons": list(decision.reasons),
            "snapshot": snapshot,
        })
        return True

    async def _note_once(self, deployment: Deployment, decision: Decision, snapshot: dict[str, Any]) -> None:
        """Record a hold or inconclusive once per rollout revision, so repeats do not fill the table."""
        action = ACTIONS[decision.outcome]
        recent = await self._store.list_events(deployment=deployment.name, limit=_RECENT)
        revision = deployment.rollout.revision
        if any(e.action == action and (e.snapshot or {}).get("revision") == revision for e in recent):
            return
        state = deployment.rollout.public()
        await self._store.record_event(RolloutEvent(
            deployment=deployment.name, action=action, actor=ACTOR, before=state, after=state,
            reason="; ".join(decision.reasons), snapshot=snapshot,
        ))


def _next_state(deployment: Deployment, decision: Decision, now: datetime) -> RolloutState:
    if decision.outcome == "rollback":
        return rollout.rollback(deployment, now=now)
    if decision.outcome == "promote":
        return rollout.promote(deployment, now=now)
    assert decision.next_percent is not None
    stages = policy_of(deployment.policy).stages
    return rollout.set_percent(deployment, percent=decision.next_percent, stages=stages, now=now)


def _snapshot(stable: WindowStats, canary: WindowStats, policy: PolicySettings, state: RolloutState,
              decision: Decision) -> dict[str, Any]:
    return {
        "revision": state.revision,
        "canary_percent": state.canary_percent,
        "window_s": policy.window,
        "stable": stable.public(),
        "canary": canary.public(),
        "reasons": list(decision.reasons),
    }


class CheckScheduler:
    """One APScheduler interval job per deployment, each at its policy's check_interval."""

    def __init__(self, checker: RolloutChecker) -> None:
        self._checker = checker
        self._scheduler = AsyncIOScheduler(timezone=UTC)

    def start(self, deployments: Mapping[str, Deployment]) -> None:
        for name, deployment in deployments.items():
            self.schedule(name, deployment)
        self._scheduler.start()

    def schedule(self, name: str, deployment: Deployment) -> None:
        policy = policy_of(deployment.policy)
        self._scheduler.add_job(
            self._checker.run_scheduled,
            "interval",
            seconds=policy.check_interval,
            args=[name],
            id=f"check:{name}",
            replace_existing=True,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, int(policy.check_interval)),
        )

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
