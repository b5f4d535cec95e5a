"""Cache-neutral cost per call, and installation settings (the user-id salt).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("request_records") as records:
        records.add_column(sa.Column("uncached_cost_usd", sa.Float(), nullable=True))
    op.create_table(
        "gateway_settings",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("gateway_settings")
    with op.batch_alter_table("request_records") as records:
        records.drop_column("uncached_cost_usd")
