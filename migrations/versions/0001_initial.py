"""Initial schema: deployments, versions, request records.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gateway.tables import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("stable_version", sa.String(64), nullable=False),
        sa.Column("canary_version", sa.String(64), nullable=True),
        sa.Column("canary_percent", sa.Float(), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("anonymous", sa.String(16), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("stage_started_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "versions",
        sa.Column("deployment", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("system_prompt", sa.Text(), nullable=False),
        sa.Column("few_shot", sa.JSON(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("prompt_mode", sa.String(16), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["deployment"], ["deployments.name"], ondelete="CASCADE"),
    )
    op.create_table(
        "request_records",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("deployment", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("user_hash", sa.String(64), nullable=True),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("upstream_model", sa.String(256), nullable=False),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=False),
        sa.Column("error_kind", sa.String(32), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("quality", sa.Float(), nullable=True),
    )
    op.create_index(
        "ix_request_records_deployment_version_created",
        "request_records",
        ["deployment", "version", "created_at"],
    )
    op.create_index("ix_request_records_created", "request_records", ["created_at"])


def downgrade() -> None:
    op.drop_table("request_records")
    op.drop_table("versions")
    op.drop_table("deployments")
