"""Aggregates kept as records are written: per minute and version, and per user of the judged stage.

Builds the minute sums from every stored record and score, and for each
running canary its stage row (latency thresholds left for the first check to
fix); its per-user sums are built by migration 0008. PostgreSQL gets
`canary_latency_bucket`, the SQL twin of `gateway.analysis.histogram.bucket_of`.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gateway.store.aggregates import backfill_minutes
from gateway.tables import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_BUCKET = """
CREATE OR REPLACE FUNCTION canary_latency_bucket(double precision) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT ceil(ln(greatest($1, CAST(0.01 AS double precision))) / ln(CAST(1.02 AS double precision)))::integer $$
"""


def _sums(*names: str, floats: tuple[str, ...] = ()) -> list[sa.Column[object]]:
    return [sa.Column(name, sa.Float() if name in floats else sa.BigInteger(), nullable=False) for name in names]


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.execute(_BUCKET)
    op.create_table(
        "rollout_stages",
        sa.Column("deployment", sa.String(64), primary_key=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("reference_ms", sa.Float(), nullable=True),
        sa.Column("gate_ms", sa.Float(), nullable=True),
        sa.Column("rollback_ms", sa.Float(), nullable=True),
    )

    def stage_key() -> list[sa.Column[object]]:
        return [sa.Column("deployment", sa.String(64), primary_key=True),
                sa.Column("started_at", UTCDateTime(), primary_key=True),
                sa.Column("version", sa.String(64), primary_key=True),
                sa.Column("user_hash", sa.String(64), primary_key=True)]

    op.create_table(
        "stage_user_sums", *stage_key(),
        *_sums("calls", "errors", "answered", "slow_gate", "slow_reference", "slow_rollback", "priced", "cost",
               "actual_cost", "scored", "quality", floats=("cost", "actual_cost", "quality")),
    )
    op.create_table(
        "stage_source_sums", *stage_key(),
        sa.Column("source", sa.String(80), primary_key=True),
        *_sums("scores", "score_sum", floats=("score_sum",)),
    )

    def minute_key() -> list[sa.Column[object]]:
        return [sa.Column("deployment", sa.String(64), primary_key=True),
                sa.Column("version", sa.String(64), primary_key=True),
                sa.Column("minute", UTCDateTime(), primary_key=True)]

    op.create_table(
        "minute_stats", *minute_key(),
        *_sums("requests", "errors", "scored", "quality_sum", "priced", "cost_sum", "prompt_calls", "prompt_tokens",
               "completion_calls", "completion_tokens", floats=("quality_sum", "cost_sum")),
    )
    op.create_table(
        "minute_sources", *minute_key(),
        sa.Column("source", sa.String(80), primary_key=True),
        *_sums("scores", "score_sum", floats=("score_sum",)),
    )
    op.create_table(
        "minute_latency", *minute_key(),
        sa.Column("metric", sa.String(8), primary_key=True),
        sa.Column("bucket", sa.Integer(), primary_key=True),
        *_sums("calls"),
    )
    for statement in backfill_minutes(postgresql):
        op.execute(statement)
    deployments = sa.table("deployments", sa.column("name", sa.String()), sa.column("status", sa.String()),
                           sa.column("stage_started_at", UTCDateTime()))
    running = op.get_bind().execute(
        sa.select(deployments.c.name, deployments.c.stage_started_at)
        .where(deployments.c.status == "canary", deployments.c.stage_started_at.is_not(None))).all()
    stages = sa.table("rollout_stages", sa.column("deployment", sa.String()), sa.column("started_at", UTCDateTime()))
    for name, started_at in running:
        op.execute(stages.insert().values(deployment=name, started_at=started_at))


def downgrade() -> None:
    for table in ("minute_latency", "minute_sources", "minute_stats", "stage_source_sums", "stage_user_sums",
                  "rollout_stages"):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS canary_latency_bucket(double precision)")
