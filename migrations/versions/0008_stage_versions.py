"""A stage's sums per version (what a check reads) and its users, kept as the per-user sums change.

Adds to rollout_stages the two versions judged and the count of users with
calls of either; builds, for every judged stage, its per-user sums, its
version sums and its users from the stored records and scores.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gateway.store.aggregates import MOMENTS, Stage, rebuild_stage
from gateway.tables import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_METRICS = ("errors", "quality", "slow", "slow_reference", "slow_rollback", "cost")


def _moments(prefix: str) -> list[sa.Column[object]]:
    return [sa.Column(f"{prefix}_{name}", sa.BigInteger() if name == "units" else sa.Float(), nullable=False)
            for name in MOMENTS]


def _key() -> list[sa.Column[object]]:
    return [sa.Column("deployment", sa.String(64), primary_key=True),
            sa.Column("started_at", UTCDateTime(), primary_key=True)]


def upgrade() -> None:
    with op.batch_alter_table("rollout_stages") as stages:
        stages.add_column(sa.Column("stable", sa.String(64), nullable=True))
        stages.add_column(sa.Column("canary", sa.String(64), nullable=True))
        stages.add_column(sa.Column("users", sa.BigInteger(), nullable=False, server_default="0"))
    op.create_table(
        "stage_version_sums", *_key(), sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("users", sa.BigInteger(), nullable=False), sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("actual_cost", sa.Float(), nullable=False), *(column for metric in _METRICS
                                                                 for column in _moments(metric)),
    )
    op.create_table(
        "stage_version_sources", *_key(), sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("source", sa.String(80), primary_key=True), *_moments("s"),
    )
    op.create_table("stage_presence", *_key(), sa.Column("user_hash", sa.String(64), primary_key=True))
    stages_table = sa.table("rollout_stages", sa.column("deployment", sa.String()),
                            sa.column("started_at", UTCDateTime()), sa.column("reference_ms", sa.Float()),
                            sa.column("gate_ms", sa.Float()), sa.column("rollback_ms", sa.Float()),
                            sa.column("stable", sa.String()), sa.column("canary", sa.String()))
    deployments = sa.table("deployments", sa.column("name", sa.String()), sa.column("stable_version", sa.String()),
                           sa.column("canary_version", sa.String()))
    bind = op.get_bind()
    judged = bind.execute(
        sa.select(stages_table.c.deployment, stages_table.c.started_at, stages_table.c.reference_ms,
                  stages_table.c.gate_ms, stages_table.c.rollback_ms, deployments.c.stable_version,
                  deployments.c.canary_version)
        .join(deployments, deployments.c.name == stages_table.c.deployment)).all()
    for name, started_at, reference, gate, rollback, stable, canary in judged:
        op.execute(stages_table.update().where(stages_table.c.deployment == name)
                   .values(stable=stable, canary=canary))
        # No shadow copy exists before 0010, which adds the `mode` column the default filter reads.
        for statement in rebuild_stage(name, Stage(started_at, reference, gate, rollback, stable, canary),
                                       live_only=False):
            op.execute(statement)


def downgrade() -> None:
    for table in ("stage_presence", "stage_version_sources", "stage_version_sums"):
        op.drop_table(table)
    with op.batch_alter_table("rollout_stages") as stages:
        stages.drop_column("users")
        stages.drop_column("canary")
        stages.drop_column("stable")
