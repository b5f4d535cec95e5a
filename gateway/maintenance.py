"""Storage upkeep on a timer: the next days' partitions, then retention.

Every replica runs it every `retention.interval` (and once at start); each
step takes a maintenance try-lock in the database, so whichever replica gets
it does that step and the others skip it (see `gateway.store.partitions`).
Nothing here is on the hot path, and the record writer waits at most one
short transaction behind a step (see `gateway.store.retention`).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from gateway.config import RetentionSettings
from gateway.errors import StoreUnavailable
from gateway.metrics import Metrics
from gateway.models import Clock, utc_now
from gateway.store import Expired, Store

log = logging.getLogger("gateway.maintenance")

# Daily partitions are made for today and this many days after it.
DAYS_AHEAD = 2


class Maintenance:
    def __init__(self, store: Store, settings: RetentionSettings, metrics: Metrics, *, clock: Clock = utc_now) -> None:
        self._store = store
        self._settings = settings
        self._metrics = metrics
        self._clock = clock

    @property
    def interval(self) -> float:
        """Seconds between two runs."""
        return self._settings.interval

    async def run(self) -> Expired:
        """One upkeep: partitions ahead, then every retention period that is set; returns what went.

        Raises StoreUnavailable or StoreRejected when the database fails a step
        (the steps before it are done).
        """
        now = self._clock()
        for name in await self._store.ensure_partitions(today=now.date(), days_ahead=DAYS_AHEAD):
            self._metrics.partitions_created.labels(table=name.rsplit("_p", 1)[0]).inc()
            log.info("made partition %s", name)
        expired = Expired()
        settings = self._settings
        for table, period in (("request_records", settings.records), ("quality_scores", settings.scores),
                              ("rollout_events", settings.events)):
            if period is not None:
                await self._store.expire(table=table, before=now - timedelta(seconds=period),
                                         batch=settings.batch_size, expired=expired)
        await self._store.drop_finished_stages(batch=settings.batch_size, expired=expired)
        for table, rows in expired.rows.items():
            self._metrics.retention_rows.labels(table=table).inc(rows)
        for table, partitions in expired.partitions.items():
            self._metrics.retention_partitions.labels(table=table).inc(partitions)
        if expired.rows or expired.partitions:
            log.info("retention", extra={"rows_deleted": expired.rows, "partitions_dropped": expired.partitions})
        return expired

    async def run_scheduled(self) -> None:
        """The APScheduler job: a failure is logged and counted, and the next interval tries again."""
        try:
            await self.run()
        except StoreUnavailable as exc:
            self._metrics.maintenance_runs.labels(outcome="error").inc()
            log.warning("storage upkeep: the database is unavailable; next run in %.0f s (%s)", self.interval, exc)
            return
        except Exception:
            self._metrics.maintenance_runs.labels(outcome="error").inc()
            log.exception("storage upkeep failed")
            return
        self._metrics.maintenance_runs.labels(outcome="ok").inc()
