"""PostgreSQL: request_records and quality_scores partitioned by day (SQLite keeps one table each).

Both dialects: quality scores get an index on created_at (retention deletes by it).

Each table becomes a table partitioned by RANGE (created_at) whose primary key
is (id, created_at), with today's and tomorrow's partitions and a default
one (see `gateway.store.partitions`). A table that holds rows is not copied:
its primary key is rebuilt as (id, created_at), the rows of today or later
move to the new partitions, and it is attached whole as `<table>_legacy`,
covering everything before today (one scan of it, checked against that
range). An empty one is dropped. Runs in one transaction holding the tables
locked: the gateways' writes wait (or go to their spool) until it commits.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic import op
from sqlalchemy import text

from gateway.store.partitions import create_partition_sql, day_bounds

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Each table's secondary indexes, made again on the partitioned table (its partitions get theirs).
_INDEXES = {
    "request_records": {
        "ix_request_records_deployment_version_created": "(deployment, version, created_at)",
        "ix_request_records_created": "(created_at)",
    },
    "quality_scores": {"ix_quality_scores_request": "(request_id)"},
}
# Made on the partitioned table only (on SQLite, on the table).
_NEW_INDEXES = {"quality_scores": {"ix_quality_scores_created": "(created_at)"}}


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        op.create_index("ix_quality_scores_created", "quality_scores", ["created_at"])
        return
    today = datetime.now(UTC).date()
    boundary, _ = day_bounds(today)
    for table, indexes in _INDEXES.items():
        legacy = f"{table}_legacy"
        op.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        op.execute(f"ALTER TABLE {table} RENAME TO {legacy}")
        for name in indexes:
            op.execute(f"ALTER INDEX {name} RENAME TO {name}_legacy")
        key = bind.execute(text(
            "SELECT conname FROM pg_constraint WHERE conrelid = CAST(:table AS regclass) AND contype = 'p'"),
            {"table": legacy}).scalar_one()
        op.execute(f"ALTER TABLE {legacy} RENAME CONSTRAINT {key} TO {legacy}_pkey")
        op.execute(f"CREATE TABLE {table} (LIKE {legacy} INCLUDING DEFAULTS) PARTITION BY RANGE (created_at)")
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY (id, created_at)")
        for name, columns in {**indexes, **_NEW_INDEXES.get(table, {})}.items():
            op.execute(f"CREATE INDEX {name} ON {table} {columns}")
        op.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
        for day in (today, today + timedelta(days=1)):
            for statement in create_partition_sql(table, day)[1:]:  # the whole migration holds its locks
                op.execute(statement)
        if bind.execute(text(f"SELECT EXISTS (SELECT FROM {legacy})")).scalar_one():
            op.execute(f"INSERT INTO {table} SELECT * FROM {legacy} WHERE created_at >= '{boundary}'")
            op.execute(f"DELETE FROM {legacy} WHERE created_at >= '{boundary}'")
            op.execute(f"ALTER TABLE {legacy} DROP CONSTRAINT {legacy}_pkey")
            op.execute(f"ALTER TABLE {legacy} ADD CONSTRAINT {legacy}_pkey PRIMARY KEY (id, created_at)")
            op.execute(f"ALTER TABLE {table} ATTACH PARTITION {legacy} FOR VALUES FROM (MINVALUE) TO ('{boundary}')")
        else:
            op.execute(f"DROP TABLE {legacy}")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        op.drop_index("ix_quality_scores_created", "quality_scores")
        return
    for table, indexes in _INDEXES.items():
        op.execute(f"ALTER TABLE {table} RENAME TO {table}_partitioned")
        for name in indexes:
            op.execute(f"ALTER INDEX {name} RENAME TO {name}_partitioned")
        op.execute(f"ALTER TABLE {table}_partitioned RENAME CONSTRAINT {table}_pkey TO {table}_partitioned_pkey")
        op.execute(f"CREATE TABLE {table} (LIKE {table}_partitioned INCLUDING DEFAULTS)")
        op.execute(f"INSERT INTO {table} SELECT * FROM {table}_partitioned")
        op.execute(f"DROP TABLE {table}_partitioned")
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY (id)")
        for name, columns in indexes.items():
            op.execute(f"CREATE INDEX {name} ON {table} {columns}")
