"""Daily partitions of request_records and quality_scores on PostgreSQL; SQLite keeps one table each.

Each table is partitioned by RANGE (created_at) into one partition per UTC
day, `<table>_pYYYYMMDD`, and `<table>_default`, which takes every row no
daily partition covers (a day not created yet, a clock far off), so no write
ever fails for a missing partition. A table converted by migration 0007 keeps
the rows it had in `<table>_legacy`, from the start of time to the day of the
conversion. The primary key includes the partition key: (id, created_at).

A day's partition is made as a table of its own, the default partition's
rows of that day moved into it, then attached: ATTACH takes a SHARE UPDATE
EXCLUSIVE lock on the parent, which the writers' inserts do not wait for
(`CREATE TABLE ... PARTITION OF` would take an ACCESS EXCLUSIVE one). Every
step runs in a transaction of its own under a transaction-level advisory
try-lock (namespace MAINTENANCE_LOCK): when another replica holds it, this one
skips the step; steps are idempotent, so replicas taking turns is harmless,
and PgBouncer's transaction mode keeps such a lock.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.store.engine import Database, translated_errors

PARTITIONED = ("request_records", "quality_scores")
# Advisory-lock namespace of the maintenance steps ("CGTM").
MAINTENANCE_LOCK = 0x4347544D
# Longest wait for a lock a partition change needs: writers queued behind it wait at most this long.
LOCK_TIMEOUT = "1s"


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition: its name and the end of its range (exclusive; None for the default partition)."""

    name: str
    until: datetime | None


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def day_bounds(day: date) -> tuple[str, str]:
    """The UTC range of a day as PostgreSQL timestamptz literals."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start.isoformat(), (start + timedelta(days=1)).isoformat()


def create_partition_sql(table: str, day: date) -> list[str]:
    """The statements that make `day`'s partition of `table` (see the module docstring); run in one transaction."""
    name = partition_name(table, day)
    start, end = day_bounds(day)
    return [
        f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'",
        f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS)",
        # The constraint lets ATTACH skip scanning the new partition.
        f"ALTER TABLE {name} ADD CONSTRAINT {name}_range "
        f"CHECK (created_at >= '{start}' AND created_at < '{end}')",
        f"WITH moved AS (DELETE FROM {table}_default WHERE created_at >= '{start}' AND created_at < '{end}' "
        f"RETURNING *) INSERT INTO {name} SELECT * FROM moved",
        f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ('{start}') TO ('{end}')",
    ]


def maintenance_key(step: str) -> int:
    """The key, in namespace MAINTENANCE_LOCK, of one kind of maintenance step."""
    return zlib.crc32(step.encode()) - 2**31


async def try_maintenance_lock(connection: AsyncConnection, step: str) -> bool:
    """Take the transaction-level lock of `step`; False when another replica holds it."""
    return bool(await connection.scalar(text("SELECT pg_try_advisory_xact_lock(:namespace, :key)"),
                                        {"namespace": MAINTENANCE_LOCK, "key": maintenance_key(step)}))


async def list_partitions(connection: AsyncConnection, table: str) -> list[Partition]:
    """The partitions of `table`, with the end of each range."""
    rows = await connection.execute(text(
        "SELECT c.relname, (regexp_match(pg_get_expr(c.relpartbound, c.oid), "
        "'TO \\(''([^'']+)''\\)'))[1]::timestamptz FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = CAST(:table AS regclass) ORDER BY 2 NULLS LAST"), {"table": table})
    return [Partition(name, until) for name, until in rows]


class PartitionStore(Database):
    """Creating the partitions ahead of the days that need them (PostgreSQL; nothing to do on SQLite)."""

    async def ensure_partitions(self, *, today: date, days_ahead: int) -> list[str]:
        """Make the daily partitions of today and the `days_ahead` days after it that do not exist yet.

        Returns the partitions made here. A step another replica is doing is
        skipped. Raises StoreUnavailable or StoreRejected (see `gateway.store.engine`).
        """
        if not self.dialect.postgresql:
            return []
        made = []
        for table in PARTITIONED:
            async with translated_errors(), self.engine.connect() as connection:
                existing = {partition.name for partition in await list_partitions(connection, table)}
            for offset in range(days_ahead + 1):
                day = today + timedelta(days=offset)
                name = partition_name(table, day)
                if name in existing:
                    continue
                async with translated_errors(), self.engine.begin() as connection:
                    if not await try_maintenance_lock(connection, f"partitions:{table}"):
                        continue
                    if name in {partition.name for partition in await list_partitions(connection, table)}:
                        continue
                    for statement in create_partition_sql(table, day):
                        await connection.exec_driver_sql(statement)
                made.append(name)
        return made


def drop_partition_sql(table: str, partition: str) -> list[str]:
    """Detach and drop one partition: the parent locked (ACCESS EXCLUSIVE) for a moment, after at most LOCK_TIMEOUT."""
    return [f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'", f"ALTER TABLE {table} DETACH PARTITION {partition}",
            f"DROP TABLE {partition}"]
