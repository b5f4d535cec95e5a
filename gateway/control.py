"""The control plane: rollout changes, versions, compare and the audit trail.

Every change reads the deployment as stored now, computes the next state with
a pure transition (`gateway.rollout`), and stores it with a compare-and-set on
the revision together with its audit event. Two concurrent changes therefore
never both apply: the second gets `Conflict` (409). After a change this
replica refreshes its routing snapshot at once; the others follow within
their refresh interval.

The declared configuration's rules live here too (`sync_declared`): which
rows the file creates, that versions are immutable, and when a declared
canary starts a rollout.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from gateway import rollout
from gateway.analysis.ab import ab_report
from gateway.config import ProviderSettings, params_refusal
from gateway.errors import ConfigError, Conflict, InvalidRequest, NotFound
from gateway.models import Clock, Deployment, RolloutEvent, RolloutState, Version, WindowStats, utc_now
from gateway.snapshot import Snapshot
from gateway.store import Store

COMPARED = ("avg_quality", "p95_latency_ms", "avg_cost", "error_rate")


class ControlPlane:
    """The admin service: reads and changes of rollouts, behind the admin API and the CLI.

    A rollout change (`start_canary`, `set_percent`, `promote`, `rollback`,
    `pause`, `resume`) is computed from the deployment as stored now and
    recorded with `actor` (the admin token's name, "config" or "scheduler") and
    the caller's `reason` in the audit trail. `revision`, when given, must be
    the stored revision (else Conflict, param `revision`). It returns the
    deployment after the change (unchanged, and nothing recorded, when the
    change is a no-op) and raises NotFound for an unknown deployment, Conflict
    when the rollout's state forbids the change or another change won the
    race, StoreUnavailable when the database is down.
    """

    def __init__(
        self, store: Store, snapshot: Snapshot, *, providers: Mapping[str, ProviderSettings], clock: Clock = utc_now
    ) -> None:
        self._store = store
        self._snapshot = snapshot
        self._providers = providers
        self._clock = clock

    async def deployments(self) -> list[Deployment]:
        """Every stored deployment, by name. Raises StoreUnavailable when the database is down."""
        return sorted((await self._store.load_deployments()).values(), key=lambda deployment: deployment.name)

    async def deployment(self, name: str) -> Deployment:
        """One deployment as stored now. Raises NotFound, or StoreUnavailable when the database is down."""
        deployment = await self._store.get_deployment(name)
        if deployment is None:
            raise NotFound(f"deployment '{name}' does not exist")
        return deployment

    async def create_version(self, *, deployment: str, version: Version, actor: str) -> Version:
        """Store a new, immutable version of `deployment`, audited as `version_created`.

        Raises InvalidRequest (param `provider`) for a provider the gateway does
        not have, InvalidRequest (param `params.<name>`) for a param the
        provider's wire format has no counterpart for (`config.params_refusal`),
        NotFound for an unknown deployment, Conflict (param `name`) when the
        name is taken.
        """
        provider = self._providers.get(version.provider)
        if provider is None:
            raise InvalidRequest(f"unknown provider '{version.provider}'", param="provider")
        refused = params_refusal(version.params, provider)
        if refused is not None:
            name, why = refused
            raise InvalidRequest(f"version '{version.name}': params.{name}: {why}", param=f"params.{name}")
        await self._store.create_version(deployment=deployment, version=version, actor=actor)
        await self._snapshot.refresh_now()
        return version

    async def start_canary(self, *, deployment: str, version: str, percent: float | None, actor: str,
                           reason: str | None, revision: int | None = None) -> Deployment:
        """Start a rollout of `version` as the policy says (`rollout.start_rollout`): under `mode: ab_test`
        an A/B test at `percent` (default `ab.split`); else a canary at `percent`, or, when None, in the
        shadow stage if the stages begin with it, else at the first stage. A rollout change (see the class).
        """

        def start(current: Deployment) -> RolloutState:
            return rollout.start_rollout(current, version=version, percent=percent, now=self._clock())

        return await self._change(deployment, "canary_started", actor, reason, start, revision)

    async def set_percent(self, *, deployment: str, percent: float, actor: str, reason: str | None,
                          revision: int | None = None) -> Deployment:
        """Move the running canary to `percent` of users (0 to 100). A rollout change (see the class)."""

        def move(current: Deployment) -> RolloutState:
            return rollout.set_percent(current, percent=percent, stages=current.policy.stages, now=self._clock())

        return await self._change(deployment, "percent_set", actor, reason, move, revision)

    async def promote(self, *, deployment: str, actor: str, reason: str | None,
                      revision: int | None = None) -> Deployment:
        """Make the canary the stable version now, ending the rollout. A rollout change (see the class)."""
        return await self._change(
            deployment, "promoted", actor, reason, lambda current: rollout.promote(current, now=self._clock()), revision
        )

    async def rollback(self, *, deployment: str, actor: str, reason: str | None,
                      revision: int | None = None) -> Deployment:
        """Send every user back to stable (canary at 0 %), ending the rollout. A rollout change (see the class)."""
        return await self._change(
            deployment,
            "rolled_back",
            actor,
            reason,
            lambda current: rollout.rollback(current, now=self._clock()),
            revision,
        )

    async def pause(self, *, deployment: str, actor: str, reason: str | None,
                    revision: int | None = None) -> Deployment:
        """Stop automatic decisions from being applied; traffic stays where it is. A rollout change (see the class)."""
        return await self._change(deployment, "paused", actor, reason, rollout.pause, revision)

    async def resume(self, *, deployment: str, actor: str, reason: str | None,
                    revision: int | None = None) -> Deployment:
        """Let automatic decisions apply again after `pause`. A rollout change (see the class)."""
        return await self._change(deployment, "resumed", actor, reason, rollout.resume, revision)

    async def ab_report(self, *, deployment: str) -> dict[str, Any]:
        """The running A/B test's report since it started (`gateway.analysis.ab`), changing nothing.

        `{"deployment", "state", "since", "report": ABReport.public(), "evidence"}`. Raises NotFound,
        or Conflict when the deployment runs no A/B test.
        """
        current = await self.deployment(deployment)
        state = current.rollout
        if state.mode != "ab_test" or state.canary is None:
            raise Conflict(f"deployment '{deployment}' runs no A/B test (status: {state.status}, "
                           f"mode: {state.mode or 'none'})")
        now = self._clock()
        since = state.stage_started_at or now
        evidence = await self._store.stage_evidence(deployment=deployment, stable=state.stable, canary=state.canary,
                                                    since=since, until=now, policy=current.policy)
        report = ab_report(evidence, split=state.canary_percent, alpha=current.policy.ab.alpha,
                           tuning=current.policy.sequential_tuning,
                           elapsed_s=max((now - since).total_seconds(), 0.0))
        return {"deployment": deployment, "state": state.public(), "since": since.isoformat(),
                "report": report.public(), "evidence": evidence.public()}

    async def conclude_ab(self, *, deployment: str, winner: str, start_canary: bool, actor: str,
                          reason: str | None, revision: int | None = None) -> Deployment:
        """End the running A/B test with `winner` (`rollout.conclude_ab`), audited as `ab_concluded` with the
        report at that moment in the event's snapshot: stable winning ends the test; the candidate becomes
        stable now, or with `start_canary` starts a canary rollout of its own (from the shadow stage when the
        stages begin with it). A rollout change (see the class); InvalidRequest (param `winner`) when
        `winner` is neither version of the test.
        """
        report: dict[str, Any] | None = None
        with contextlib.suppress(Conflict):
            report = await self.ab_report(deployment=deployment)

        def conclude(current: Deployment) -> RolloutState:
            policy = current.policy
            return rollout.conclude_ab(current, winner=winner, start_canary=start_canary, stages=policy.stages,
                                       shadow=policy.shadow_stage, now=self._clock())

        snapshot = None if report is None else {"winner": winner, "as": "canary" if start_canary else "stable",
                                                "report": report["report"]}
        return await self._change(deployment, "ab_concluded", actor, reason, conclude, revision, snapshot)

    async def compare(self, *, deployment: str, hours: float) -> dict[str, Any]:
        """Stable's and the canary's numbers over the last `hours`, side by side (SPEC's compare answer).

        `{"deployment", "hours", "stable": WindowStats.public(), "canary": ... or
        None, "diff_pct": {metric: percent or None}}` for the metrics of
        COMPARED; `avg_cost` is USD per call. The canary's numbers are those of
        the calls it served to users; its shadow copies' numbers (the shadow
        stage) are apart, under `shadow` (None without any), with the rollout's
        `mode`. Raises NotFound.
        """
        current = await self.deployment(deployment)
        since = self._clock() - timedelta(hours=hours)
        stable = await self._store.window_stats(deployment=deployment, version=current.rollout.stable, since=since)
        canary: WindowStats | None = None
        if current.rollout.canary is not None:
            canary = await self._store.window_stats(deployment=deployment, version=current.rollout.canary, since=since)
        shadow: WindowStats | None = None
        if current.rollout.canary is not None:
            shadow = await self._store.shadow_window_stats(deployment=deployment, version=current.rollout.canary,
                                                           since=since)
        return {
            "deployment": deployment,
            "hours": hours,
            "mode": current.rollout.mode,
            "stable": stable.public(),
            "canary": canary.public() if canary is not None else None,
            "shadow": shadow.public() if shadow is not None and shadow.requests else None,
            "diff_pct": {key: diff_pct(stable.public()[key], canary.public()[key] if canary else None)
                         for key in COMPARED},
        }

    async def timeseries(self, *, deployment: str, hours: float, step_s: int) -> dict[str, Any]:
        """Per-version points over the last `hours`, one per `step_s` seconds (see `Store.timeseries`).

        `{"deployment", "hours", "step", "series": {version: [point, ...]}}`. Raises NotFound.
        """
        await self.deployment(deployment)
        since = self._clock() - timedelta(hours=hours)
        series = await self._store.timeseries(deployment=deployment, since=since, step_s=step_s)
        return {"deployment": deployment, "hours": hours, "step": step_s, "series": series}

    async def events(self, *, deployment: str, limit: int, before_id: int | None) -> list[RolloutEvent]:
        """At most `limit` audit events of `deployment`, newest first, older than `before_id`. Raises NotFound."""
        await self.deployment(deployment)
        return await self._store.list_events(deployment=deployment, limit=limit, before_id=before_id)

    async def _change(
        self,
        name: str,
        action: str,
        actor: str,
        reason: str | None,
        transition: Callable[[Deployment], RolloutState],
        revision: int | None,
        snapshot: Mapping[str, Any] | None = None,
    ) -> Deployment:
        current = await self.deployment(name)
        if revision is not None and revision != current.rollout.revision:
            raise Conflict(
                f"deployment '{name}' is at revision {current.rollout.revision}, not {revision}", param="revision"
            )
        after = transition(current)
        if after == current.rollout:
            return current  # nothing to change, nothing to record
        event = RolloutEvent(
            deployment=name,
            action=action,
            actor=actor,
            before=current.rollout.public(),
            after=after.public(),
            reason=reason,
            snapshot=snapshot,
            at=self._clock(),
        )
        stored = await self._store.apply_rollout(expected_revision=current.rollout.revision, state=after, event=event)
        await self._snapshot.refresh_now()
        return Deployment(
            name=current.name,
            versions=current.versions,
            rollout=stored,
            anonymous=current.anonymous,
            policy=current.policy,
        )


def diff_pct(stable: float | None, canary: float | None) -> float | None:
    """How much larger the canary's value is, in percent of stable's; None when undefined."""
    if stable is None or canary is None or stable == 0:
        return None
    return round((canary - stable) / stable * 100, 2)





async def sync_declared(
    store: Store,
    *,
    deployments: Mapping[str, Deployment],
    policies: Mapping[str, Mapping[str, Any]],
    clock: Clock = utc_now,
) -> None:
    """Write declared deployments and versions that the database does not have yet.

    Several replicas may start with the same file at once: inserts ignore
    rows that exist. A declared version whose content differs from the
    stored one of the same name raises ConfigError naming the key, and
    nothing is written. The file's policy and `anonymous` flag replace the
    stored ones. A declared canary the database has not seen yet starts a
    new rollout as its policy says (replacing a running canary).
    `policies[name]` is the JSON form of the deployment's policy.
    """
    stored = await store.version_hashes(deployments=deployments.keys())
    for name, deployment in deployments.items():
        for version_name, content_hash in stored.get(name, {}).items():
            declared = deployment.versions.get(version_name)
            if declared is not None and declared.content_hash() != content_hash:
                raise ConfigError(
                    f"deployments.{name}.versions.{version_name}: differs from the stored version "
                    "of the same name; versions are immutable, declare a new name"
                )
    created = {
        name: RolloutEvent(
            deployment=name,
            action="deployment_created",
            actor="config",
            before=None,
            after=deployment.rollout.public(),
            reason="declared in the configuration",
        )
        for name, deployment in deployments.items()
    }
    await store.insert_declared(deployments=deployments, policies=policies, created_events=created, now=clock())
    for name, deployment in deployments.items():
        if deployment.rollout.canary is not None:
            await _start_declared_canary(store, name, deployment.rollout.canary, clock)


async def _start_declared_canary(store: Store, name: str, canary: str, clock: Clock) -> None:
    """A declared canary the database has not seen yet starts a new rollout as its policy says
    (`rollout.start_rollout`: an A/B test, the shadow stage or the first stage).

    Several replicas may try at once: the compare-and-set lets one win, and
    the others find the rollout already started when they look again.
    """
    for _ in range(3):
        stored = await store.get_deployment(name)
        assert stored is not None
        state = stored.rollout
        if canary in (state.canary, state.stable):
            return
        after = rollout.start_rollout(stored, version=canary, percent=None, now=clock(), replace_running=True)
        event = RolloutEvent(
            deployment=name,
            action="canary_started",
            actor="config",
            before=state.public(),
            after=after.public(),
            reason="declared in the configuration"
            + (f" (replaces canary '{state.canary}')" if state.status == "canary" else ""),
        )
        try:
            await store.apply_rollout(expected_revision=state.revision, state=after, event=event)
            return
        except Conflict:
            continue
