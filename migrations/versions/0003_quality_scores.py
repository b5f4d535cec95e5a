"""Quality scores: several per call (feedback, evaluators, judge); a version's response schema.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gateway.tables import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quality_scores",
        sa.Column("id", sa.String(160), primary_key=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("source", sa.String(80), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_quality_scores_request", "quality_scores", ["request_id"])
    with op.batch_alter_table("versions") as versions:
        versions.add_column(sa.Column("response_schema", sa.JSON(), nullable=True))
    # Feedback given before this table existed becomes a feedback score.
    op.execute(
        sa.text(
            "INSERT INTO quality_scores (id, request_id, source, score, created_at) "
            "SELECT id || '-feedback', id, 'feedback', quality, created_at FROM request_records "
            "WHERE quality IS NOT NULL"
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("versions") as versions:
        versions.drop_column("response_schema")
    op.drop_table("quality_scores")
