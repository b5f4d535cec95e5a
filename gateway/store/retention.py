"""Retention: rows older than their table's retention period go, without holding the record writer up.

On PostgreSQL the daily partitions of request_records and quality_scores
whose whole day is older than the cutoff are detached and dropped (one lock
of the parent for a moment, waited for at most
`gateway.store.partitions.LOCK_TIMEOUT`; if it is not granted the partition
waits for the next run), and the rows of the default and legacy partitions
older than it are deleted in batches. On SQLite rows are deleted in batches.
Every batch is a transaction of its own, so the writer waits at most one
batch. The minute aggregates follow the records' retention; per-user sums of
stages no longer judged go at every run. Each step takes a maintenance
try-lock (see `gateway.store.partitions`): one replica does it at a time.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, text

from gateway.errors import StoreUnavailable
from gateway.store.engine import translated_errors
from gateway.store.partitions import PartitionStore, drop_partition_sql, list_partitions, try_maintenance_lock
from gateway.tables import DeploymentRow, RolloutStageRow, UTCDateTime


@dataclass(slots=True)
class Expired:
    """What a retention run removed: rows deleted and partitions dropped, per table."""

    rows: dict[str, int] = field(default_factory=dict)
    partitions: dict[str, int] = field(default_factory=dict)

    def count(self, table: str, rows: int = 0, partitions: int = 0) -> None:
        if rows:
            self.rows[table] = self.rows.get(table, 0) + rows
        if partitions:
            self.partitions[table] = self.partitions.get(table, 0) + partitions


class RetentionStore(PartitionStore):
    """Removing what is older than the retention periods."""

    async def expire(self, *, table: str, before: datetime, batch: int, expired: Expired) -> None:
        """Remove the rows of `table` (request_records, quality_scores or rollout_events) older than `before`.

        Request records take their minute aggregates with them. Raises
        StoreUnavailable or StoreRejected (see `gateway.store.engine`).
        """
        column = "at" if table == "rollout_events" else "created_at"
        if self.dialect.postgresql and table in ("request_records", "quality_scores"):
            await self._drop_partitions(table, before, expired)
            async with translated_errors(), self.engine.connect() as connection:
                rest = [partition.name for partition in await list_partitions(connection, table)
                        if partition.until is None or partition.name.endswith("_legacy")]
            for name in rest:
                expired.count(table, rows=await self._delete(name, f"{column} < :before", {"before": before},
                                                             batch, step=f"retention:{table}"))
        else:
            expired.count(table, rows=await self._delete(table, f"{column} < :before", {"before": before}, batch,
                                                         step=f"retention:{table}"))
        if table == "request_records":
            async with translated_errors(), self.engine.connect() as connection:
                pairs = (await connection.execute(text("SELECT DISTINCT deployment, version FROM minute_stats"))).all()
            for minutes, column in (("minute_latency", "minute"), ("hour_latency", "hour"),
                                    ("minute_sources", "minute"), ("minute_stats", "minute")):
                for deployment, version in pairs:
                    expired.count(minutes, rows=await self._delete(
                        minutes, f"deployment = :deployment AND version = :version AND {column} < :before",
                        {"deployment": deployment, "version": version,
                         # An hour goes once all of it is older than the cutoff.
                         "before": before if column == "minute" else before - timedelta(hours=1)}, batch,
                        step="retention:minutes"))

    async def drop_finished_stages(self, *, batch: int, expired: Expired) -> None:
        """Delete the per-user sums of stages no longer judged (an earlier stage, an ended rollout)."""
        async with translated_errors(), self.engine.connect() as connection:
            judged = dict((await connection.execute(
                select(RolloutStageRow.deployment, RolloutStageRow.started_at))).all())
            names = (await connection.scalars(select(DeploymentRow.name))).all()
        for table in ("stage_source_sums", "stage_user_sums", "stage_version_sources", "stage_version_sums",
                      "stage_presence"):
            for name in names:
                started = judged.get(name)
                where, values = ("deployment = :deployment AND started_at < :started",
                                 {"deployment": name, "started": started}) if started is not None else (
                    "deployment = :deployment", {"deployment": name})
                expired.count(table, rows=await self._delete(table, where, values, batch, step="retention:stages"))

    async def _drop_partitions(self, table: str, before: datetime, expired: Expired) -> None:
        async with translated_errors(), self.engine.connect() as connection:
            old = [partition.name for partition in await list_partitions(connection, table)
                   if partition.until is not None and partition.until <= before]
        for name in old:
            try:
                async with translated_errors(), self.engine.begin() as connection:
                    if not await try_maintenance_lock(connection, f"retention:{table}"):
                        return
                    for statement in drop_partition_sql(table, name):
                        await connection.exec_driver_sql(statement)
            except StoreUnavailable:
                # Most likely the lock was not granted within LOCK_TIMEOUT: the next run tries again.
                return
            expired.count(table, partitions=1)

    async def _delete(self, table: str, where: str, values: dict[str, Any], batch: int, *, step: str) -> int:
        """Delete the rows of `table` matching `where`, `batch` at a time, each batch in a transaction of its own."""
        row = "ctid" if self.dialect.postgresql else "rowid"
        statement = text(
            f"DELETE FROM {table} WHERE {row} IN (SELECT {row} FROM {table} WHERE {where} LIMIT :limit)"
        ).bindparams(*(bindparam(name, type_=UTCDateTime()) for name, value in values.items()
                       if isinstance(value, datetime)))
        deleted = 0
        while True:
            async with translated_errors(), self.engine.begin() as connection:
                if self.dialect.postgresql and not await try_maintenance_lock(connection, step):
                    return deleted
                count = (await connection.execute(statement, {**values, "limit": batch})).rowcount or 0
            deleted += count
            if count < batch:
                return deleted
            await asyncio.sleep(0)  # let the writer in between batches
