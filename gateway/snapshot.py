"""The rollout state the hot path reads: an in-memory snapshot of the database.

The proxy reads `Snapshot.deployments`, an immutable mapping swapped whole,
so every request sees one consistent state and never waits on the database.
A background task polls each deployment's revision every `refresh_interval`
and reloads when one changed: a committed change reaches every replica
within one interval plus one query.

If the database is unreachable at start, the snapshot serves the declared
configuration and keeps trying; once the database answers, the declared
deployments are synced (by the injected `sync`, `gateway.control.sync_declared`
in the app) and the stored state takes over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType

from gateway.errors import StoreUnavailable
from gateway.models import Deployment
from gateway.store import Store
from gateway.tasks import cancel_and_wait

log = logging.getLogger("gateway.snapshot")


class Snapshot:
    def __init__(
        self,
        store: Store,
        *,
        declared: Mapping[str, Deployment],
        sync: Callable[[], Awaitable[None]],
        refresh_interval: float,
        on_change: Callable[[Mapping[str, Deployment]], None] | None = None,
    ) -> None:
        self._store = store
        self._sync = sync
        self._interval = refresh_interval
        self._on_change = on_change
        self._synced = False
        self._revisions: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self.deployments: Mapping[str, Deployment] = MappingProxyType(dict(declared))
        self.database_ok = False

    async def start(self) -> None:
        """Load once (a ConfigError from the sync stops the start), then refresh in the background."""
        try:
            await self._refresh()
        except StoreUnavailable as exc:
            log.warning("database unavailable at start (%s); serving the declared configuration", exc)
        self._task = asyncio.create_task(self._run(), name="snapshot-refresh")

    async def stop(self) -> None:
        """Stop the background refresh and wait for it."""
        await cancel_and_wait([self._task])
        self._task = None

    async def refresh_now(self) -> None:
        """Reload from the database at once (after a change this replica made). Raises StoreUnavailable."""
        await self._refresh(force=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._refresh()
            except StoreUnavailable:
                if self.database_ok:
                    log.warning("database unavailable; routing on the last known state")
                self.database_ok = False
            except Exception:
                log.exception("refreshing the rollout state failed")
                self.database_ok = False

    async def _refresh(self, *, force: bool = False) -> None:
        if not self._synced:
            await self._sync()
            self._synced = True
            force = True
        revisions = await self._store.revisions()
        self.database_ok = True
        if not force and revisions == self._revisions:
            return
        loaded = await self._store.load_deployments()
        self._revisions = {name: deployment.rollout.revision for name, deployment in loaded.items()}
        self.deployments = MappingProxyType(loaded)
        if self._on_change is not None:
            self._on_change(self.deployments)
