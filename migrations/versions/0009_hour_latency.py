"""Latency histograms per hour too: a window of many hours reads its whole hours from them.

Built from the minute histograms.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gateway.store.aggregates import backfill_hours
from gateway.tables import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hour_latency",
        sa.Column("deployment", sa.String(64), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("hour", UTCDateTime(), primary_key=True),
        sa.Column("metric", sa.String(8), primary_key=True),
        sa.Column("bucket", sa.Integer(), primary_key=True),
        sa.Column("calls", sa.BigInteger(), nullable=False),
    )
    op.execute(backfill_hours(op.get_bind().dialect.name == "postgresql"))


def downgrade() -> None:
    op.drop_table("hour_latency")
