"""Shadow copies and A/B tests: a record's mode and the call it copies; a rollout's kind and shadow stage.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every call recorded before this revision was served to its user.
    with op.batch_alter_table("request_records") as records:
        records.add_column(sa.Column("mode", sa.String(16), nullable=False, server_default="live"))
        records.add_column(sa.Column("shadow_of", sa.String(128), nullable=True))
    # Every rollout before this revision was a canary rollout without a shadow stage.
    with op.batch_alter_table("deployments") as deployments:
        deployments.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="canary"))
        deployments.add_column(sa.Column("shadow", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as deployments:
        deployments.drop_column("shadow")
        deployments.drop_column("kind")
    with op.batch_alter_table("request_records") as records:
        records.drop_column("shadow_of")
        records.drop_column("mode")
