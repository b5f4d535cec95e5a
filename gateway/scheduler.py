"""The rollout check: store → analysis.decide → store, alerts, metrics; and when the storage upkeep runs.

APScheduler runs `RolloutChecker.check` for each deployment every
`policy.check_interval`. Every replica schedules it. A check runs in one
decision session of the store (`Store.decision_session`): the decision lock,
the reads (the deployment, the stage's per-user evidence) and the write (a
compare-and-set on the rollout revision with its audit event) on one
connection and one transaction. One replica decides at a time, a racing
admin change makes the write fail instead of applying twice, and a replica
that lost its database session cannot apply anything. Webhooks, metrics and
the routing refresh follow only a committed decision.

A rollout in the shadow stage is judged on its pairs (`analysis.shadow`):
passing advances it to the first percentage stage, failing rolls it back
with the failed test as the event's reason. An A/B test (`mode: ab_test`) is
never changed by a check: the check computes its report (`analysis.ab`) and
records it as an `ab_report` event whenever what it says changes.

A store error holds: the check is skipped and tried again at the next
interval, never turned into a rollback. With `policy.mode: dry_run` the
decision is recorded as a `dry_run` event and nothing else happens.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from gateway import rollout
from gateway.alerts import Alerts, alert_text
from gateway.analysis import Decision, Evidence, decide
from gateway.analysis.ab import ABReport, ab_report
from gateway.analysis.shadow import ShadowEvidence, decide_shadow
from gateway.errors import Conflict, NotFound, StoreUnavailable
from gateway.maintenance import Maintenance
from gateway.metrics import Metrics
from gateway.models import Clock, Deployment, RolloutEvent, RolloutState, utc_now
from gateway.policy import RolloutPolicy
from gateway.snapshot import Snapshot
from gateway.store import DecisionSession, Store

log = logging.getLogger("gateway.scheduler")

ACTOR = "scheduler"
# The event action written for each decision.
ACTIONS = {"rollback": "rolled_back", "advance": "advanced", "promote": "promoted", "hold": "hold"}
# Recent events scanned to record a hold (or a dry-run decision) at most once per rollout revision.
_RECENT = 50


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check's outcome as POST /admin/check reports it."""

    deployment: str
    decision: str
    reasons: tuple[str, ...]
    applied: bool
    summary: str = ""
    dry_run: bool = False
    alerts: tuple[str, ...] = ()
    metrics: tuple[dict[str, Any], ...] = field(default=())

    def public(self) -> dict[str, Any]:
        return {"deployment": self.deployment, "decision": self.decision, "summary": self.summary,
                "reasons": list(self.reasons), "applied": self.applied, "dry_run": self.dry_run,
                "alerts": list(self.alerts), "metrics": list(self.metrics)}


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What a session decided and wrote; what to do once it committed."""

    result: CheckResult
    before: RolloutState
    after: RolloutState | None = None
    action: str | None = None
    snapshot: dict[str, Any] = field(default_factory=dict)
    # Alert kinds to send once committed (a hold's first sample ratio mismatch, timeout, ...).
    notify: tuple[str, ...] = ()


class RolloutChecker:
    def __init__(
        self,
        store: Store,
        snapshot: Snapshot,
        *,
        alerts: Alerts,
        metrics: Metrics,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._snapshot = snapshot
        self._alerts = alerts
        self._metrics = metrics
        self._clock = clock

    async def check_all(self) -> list[CheckResult]:
        """Check every deployment with a running canary now (POST /admin/check).

        A deployment whose check meets a store error is reported as a hold
        that was not applied; raises StoreUnavailable only when the list of
        deployments cannot be read.
        """
        results = []
        for name, deployment in sorted((await self._store.load_deployments()).items()):
            if deployment.rollout.status != "canary":
                continue
            try:
                result = await self.check(name)
            except StoreUnavailable as exc:
                result = CheckResult(name, "hold", (f"store error: {exc}: hold, nothing decided",), False,
                                     summary="store error → hold")
            if result is not None:
                results.append(result)
        return results

    async def check(self, name: str) -> CheckResult | None:
        """Decide for one deployment and apply it; None when nothing runs or another replica is deciding.

        Raises StoreUnavailable when the database fails during the check:
        nothing of the check is then committed.
        """
        async with self._store.decision_session(name) as session:
            if session is None:
                log.info("another replica is checking %s", name)
                return None
            deployment = await session.deployment()
            if deployment is None or deployment.rollout.status != "canary" or deployment.rollout.canary is None:
                return None
            outcome = await self._decide(session, deployment)
        # Committed: only now may the world hear of it.
        self._after_commit(deployment, outcome)
        if outcome.after is not None:
            await self._snapshot.refresh_now()
        return outcome.result

    async def preview(self, name: str) -> dict[str, Any]:
        """What a check would decide now, changing nothing (GET /admin/deployments/{name}/decision).

        Raises NotFound for an unknown deployment, Conflict when its rollout changed while it was read.
        """
        deployment = await self._store.get_deployment(name)
        if deployment is None:
            raise NotFound(f"deployment '{name}' does not exist")
        state = deployment.rollout
        answer: dict[str, Any] = {"deployment": name, "mode": deployment.policy.mode,
                                  "rollout_mode": state.mode, "changes_nothing": True, "state": state.public()}
        if state.status != "canary" or state.canary is None:
            return {**answer, "running": False, "decision": None,
                    "message": f"no canary is running (status: {state.status}): nothing to decide"}
        now = self._clock()
        since = state.stage_started_at or now
        if state.kind == "ab_test":
            evidence = await self._store.stage_evidence(deployment=name, stable=state.stable, canary=state.canary,
                                                        since=since, until=now, policy=deployment.policy)
            report = _ab_report(evidence, deployment.policy, state, now)
            return {**answer, "running": True, "decision": "report", "summary": report.summary,
                    "report": report.public(), "evidence": evidence.public()}
        if state.shadow:
            shadow = await self._store.shadow_evidence(deployment=name, stable=state.stable, canary=state.canary,
                                                       since=since, until=now, policy=deployment.policy)
            decision = decide_shadow(shadow, deployment.policy, state, now)
            return {**answer, "running": True, **decision.public(), "evidence": shadow.public()}
        evidence = await self._store.stage_evidence(
            deployment=name, stable=state.stable, canary=state.canary, since=since,
            until=now, policy=deployment.policy)
        decision = decide(evidence, deployment.policy, state, now)
        return {**answer, "running": True, **decision.public(), "evidence": evidence.public()}

    async def run_scheduled(self, name: str) -> None:
        """The APScheduler job: a failure is logged, and the next interval tries again."""
        try:
            await self.check(name)
        except StoreUnavailable as exc:
            log.warning("rollout check of %s: store error, holding (%s)", name, exc)
        except Exception:
            log.exception("rollout check of %s failed", name)

    async def _decide(self, session: DecisionSession, deployment: Deployment) -> _Outcome:
        state = deployment.rollout
        assert state.canary is not None
        policy = deployment.policy
        now = self._clock()
        since = state.stage_started_at or now
        if state.kind == "ab_test":
            return await self._report(session, deployment, now)
        evidence: Evidence | ShadowEvidence
        try:
            if state.shadow:
                evidence = await session.shadow_evidence(stable=state.stable, canary=state.canary, since=since,
                                                         until=now, policy=policy)
            else:
                evidence = await session.evidence(stable=state.stable, canary=state.canary, since=since, until=now,
                                                  policy=policy)
        except Conflict:
            reason = "the rollout changed while it was being checked: nothing decided"
            return _Outcome(CheckResult(deployment.name, "hold", (reason,), False, summary=reason), state)
        decision = (decide_shadow(evidence, policy, state, now) if isinstance(evidence, ShadowEvidence)
                    else decide(evidence, policy, state, now))
        self._metrics.decisions.labels(deployment=deployment.name, outcome=decision.outcome).inc()
        dry_run = policy.mode == "dry_run"
        snapshot = _snapshot(state, decision, evidence, dry_run)
        reasons = decision.reasons

        def result(applied: bool, extra: tuple[str, ...] = ()) -> CheckResult:
            return CheckResult(deployment.name, decision.outcome, (*reasons, *extra), applied, decision.summary,
                               dry_run, decision.alerts, tuple(test.public() for test in decision.tests))

        log.info("rollout check", extra={"deployment": deployment.name, "decision": decision.outcome,
                                         "summary": decision.summary, "dry_run": dry_run})
        if dry_run:
            await self._note_once(session, deployment, "dry_run", decision, snapshot)
            return _Outcome(result(False, ("dry run: decision recorded, not applied",)), state)
        if decision.outcome == "hold":
            noted = await self._note_once(session, deployment, "hold", decision, snapshot)
            return _Outcome(result(False), state, snapshot=snapshot, notify=decision.alerts if noted else ())
        if state.paused:
            return _Outcome(result(False, ("rollout is paused: decision not applied",)), state)
        after = _next_state(deployment, decision, now)
        action = ACTIONS[decision.outcome]
        event = RolloutEvent(deployment=deployment.name, action=action, actor=ACTOR, before=state.public(),
                             after=after.public(), reason=decision.summary, snapshot=snapshot, at=now)
        try:
            await session.apply(expected_revision=state.revision, state=after, event=event)
        except Conflict:
            return _Outcome(result(False, ("the rollout changed meanwhile: decision not applied",)), state)
        return _Outcome(result(True), state, after, action, snapshot)

    async def _report(self, session: DecisionSession, deployment: Deployment, now: datetime) -> _Outcome:
        """An A/B test's check: the report, recorded as an `ab_report` event when what it says changed
        (which metrics are significant, a sample ratio mismatch); never a change to the rollout."""
        state = deployment.rollout
        assert state.canary is not None
        try:
            evidence = await session.evidence(stable=state.stable, canary=state.canary,
                                              since=state.stage_started_at or now, until=now,
                                              policy=deployment.policy)
        except Conflict:
            reason = "the test changed while it was being checked: nothing reported"
            return _Outcome(CheckResult(deployment.name, "report", (reason,), False, summary=reason), state)
        report = _ab_report(evidence, deployment.policy, state, now)
        self._metrics.decisions.labels(deployment=deployment.name, outcome="report").inc()
        significant = sorted(metric.metric for metric in report.metrics if metric.significant)
        mismatch = report.srm is not None and report.srm.mismatch
        snapshot = {"revision": state.revision, "canary_percent": state.canary_percent, "mode": "ab_test",
                    "significant": significant, "srm_mismatch": mismatch, "report": report.public(),
                    "evidence": evidence.public()}
        log.info("A/B report", extra={"deployment": deployment.name, "summary": report.summary})
        for event in await session.recent_events(_RECENT):
            seen = event.snapshot or {}
            if event.action == "ab_report" and seen.get("revision") == state.revision:
                if [seen.get("significant"), seen.get("srm_mismatch")] != [significant, mismatch]:
                    break
                return _Outcome(self._report_result(deployment.name, report), state)
        await session.record(RolloutEvent(deployment=deployment.name, action="ab_report", actor=ACTOR,
                                          before=state.public(), after=state.public(), reason=report.summary,
                                          snapshot=snapshot, at=now))
        return _Outcome(self._report_result(deployment.name, report), state)

    @staticmethod
    def _report_result(name: str, report: ABReport) -> CheckResult:
        return CheckResult(name, "report", tuple(metric.line for metric in report.metrics), False, report.summary,
                           metrics=tuple(metric.public() for metric in report.metrics))

    def _after_commit(self, deployment: Deployment, outcome: _Outcome) -> None:
        name = deployment.name
        result = outcome.result
        if outcome.after is not None and outcome.action is not None:
            if result.decision == "rollback":
                self._metrics.rollbacks.labels(deployment=name).inc()
            elif result.decision == "promote":
                self._metrics.promotions.labels(deployment=name).inc()
            before, later = outcome.before.public(), outcome.after.public()
            self._alerts.send({
                "text": alert_text(name, outcome.action, before, later, (result.summary,)),
                "deployment": name, "decision": result.decision, "from": before, "to": later,
                "reasons": list(result.reasons), "snapshot": outcome.snapshot,
            })
        elif outcome.notify:
            state = outcome.before.public()
            self._alerts.send({
                "text": f":warning: {name}: rollout held ({', '.join(outcome.notify)})\n• {result.summary}",
                "deployment": name, "decision": "hold", "alerts": list(outcome.notify), "from": state, "to": state,
                "reasons": list(result.reasons), "snapshot": outcome.snapshot,
            })

    async def _note_once(self, session: DecisionSession, deployment: Deployment, action: str, decision: Decision,
                         snapshot: dict[str, Any]) -> bool:
        """Record a hold or dry-run decision once per revision, outcome and alerts; True when recorded now."""
        revision = deployment.rollout.revision
        key = [decision.outcome, sorted(decision.alerts)]
        for event in await session.recent_events(_RECENT):
            seen = event.snapshot or {}
            if (event.action == action and seen.get("revision") == revision
                    and [seen.get("decision"), sorted(seen.get("alerts", []))] == key):
                return False
        state = deployment.rollout.public()
        prefix = f"dry run, would {decision.outcome}: " if action == "dry_run" else ""
        await session.record(RolloutEvent(deployment=deployment.name, action=action, actor=ACTOR, before=state,
                                          after=state, reason=prefix + decision.summary, snapshot=snapshot))
        return True


def _next_state(deployment: Deployment, decision: Decision, now: datetime) -> RolloutState:
    if decision.outcome == "rollback":
        return rollout.rollback(deployment, now=now)
    if decision.outcome == "promote":
        return rollout.promote(deployment, now=now)
    assert decision.next_percent is not None
    return rollout.set_percent(deployment, percent=decision.next_percent, stages=deployment.policy.stages, now=now)


def _ab_report(evidence: Evidence, policy: RolloutPolicy, state: RolloutState, now: datetime) -> ABReport:
    elapsed = (now - state.stage_started_at).total_seconds() if state.stage_started_at else 0.0
    return ab_report(evidence, split=state.canary_percent, alpha=policy.ab.alpha, tuning=policy.sequential_tuning,
                     elapsed_s=max(elapsed, 0.0))


def _snapshot(state: RolloutState, decision: Decision, evidence: Evidence | ShadowEvidence,
              dry_run: bool) -> dict[str, Any]:
    """What an event keeps of a check: the decision explained per metric, and the evidence behind it."""
    return {
        "revision": state.revision,
        "canary_percent": state.canary_percent,
        "mode": state.mode,
        "dry_run": dry_run,
        **decision.public(),
        "evidence": evidence.public(),
    }


class CheckScheduler:
    """One APScheduler interval job per deployment, each at its policy's check_interval; and the storage upkeep."""

    def __init__(self, checker: RolloutChecker, maintenance: Maintenance | None = None) -> None:
        self._checker = checker
        self._maintenance = maintenance
        self._scheduler = AsyncIOScheduler(timezone=UTC)

    def start(self, deployments: Mapping[str, Deployment]) -> None:
        for name, deployment in deployments.items():
            self.schedule(name, deployment)
        if self._maintenance is not None:
            # At start too: today's partition must exist before the first write of the day.
            self._scheduler.add_job(self._maintenance.run_scheduled, "interval", seconds=self._maintenance.interval,
                                    id="maintenance", next_run_time=datetime.now(UTC), max_instances=1,
                                    coalesce=True, misfire_grace_time=max(1, int(self._maintenance.interval)))
        self._scheduler.start()

    def schedule(self, name: str, deployment: Deployment) -> None:
        """(Re)schedule the check of `name` every `policy.check_interval` seconds; one run at a time."""
        policy = deployment.policy
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
