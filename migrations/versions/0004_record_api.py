"""Request records say which API a call came through (chat, responses, messages, passthrough).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every call recorded before this revision came through chat completions.
    with op.batch_alter_table("request_records") as records:
        records.add_column(sa.Column("api", sa.String(16), nullable=False, server_default="chat"))


def downgrade() -> None:
    with op.batch_alter_table("request_records") as records:
        records.drop_column("api")
