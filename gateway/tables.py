"""SQLAlchemy 2 typed tables; Alembic reads `Base.metadata`.

Besides the raw rows (request records, quality scores), the record writer
keeps aggregates in the transaction of every batch (see
`gateway.store.aggregates`): per minute and version for `compare`, the time
series and the dashboard, and per user of the running stage for the rollout
checks. Their columns are sums, so a batch adds to them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no time zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class DeploymentRow(Base):
    """A deployment and its rollout state; `revision` grows with every change."""

    __tablename__ = "deployments"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    stable_version: Mapped[str] = mapped_column(String(64))
    canary_version: Mapped[str | None] = mapped_column(String(64))
    canary_percent: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="stable")
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    anonymous: Mapped[str] = mapped_column(String(16), default="stable")
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    stage_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # canary (a rollout the checks move) or ab_test (a fixed split, only reported on).
    kind: Mapped[str] = mapped_column(String(16), default="canary", server_default="canary")
    # In the shadow stage: the canary serves no user and answers copies of stable's calls.
    shadow: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class VersionRow(Base):
    """An immutable version; `content_hash` detects a redefinition under the same name."""

    __tablename__ = "versions"
    __table_args__ = (ForeignKeyConstraint(["deployment"], ["deployments.name"], ondelete="CASCADE"),)

    deployment: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(256))
    system_prompt: Mapped[str] = mapped_column(Text, default="")
    few_shot: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    prompt_mode: Mapped[str] = mapped_column(String(16), default="replace")
    response_schema: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    content_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RequestRecordRow(Base):
    """One proxied call. No raw user id, no content, no key: only what rollouts are judged on.

    On PostgreSQL the table is partitioned by day on created_at and its key is
    (id, created_at) (see `gateway.store.partitions`); quality_scores too.
    """

    __tablename__ = "request_records"
    __table_args__ = (
        Index("ix_request_records_deployment_version_created", "deployment", "version", "created_at"),
        Index("ix_request_records_created", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deployment: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    user_hash: Mapped[str | None] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(64))
    upstream_model: Mapped[str] = mapped_column(String(256))
    stream: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(16))
    http_status: Mapped[int] = mapped_column(Integer)
    error_kind: Mapped[str | None] = mapped_column(String(32))
    latency_ms: Mapped[float] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    quality: Mapped[float | None] = mapped_column(Float)
    # chat, responses, messages or passthrough: the API the call came through.
    api: Mapped[str] = mapped_column(String(16), default="chat", server_default="chat")
    # The cost with every input token priced as uncached: what rollouts compare (a new
    # prompt starts with a cold provider cache).
    uncached_cost_usd: Mapped[float | None] = mapped_column(Float)
    # live (served to a user) or shadow (a copy of a user's call sent to the canary, answered to no one).
    mode: Mapped[str] = mapped_column(String(16), default="live", server_default="live")
    # A shadow copy: the id of the user's call it copies (stable's record).
    shadow_of: Mapped[str | None] = mapped_column(String(128))


class RolloutEventRow(Base):
    """The audit trail: append-only, written in the transaction of the change it describes."""

    __tablename__ = "rollout_events"
    __table_args__ = (Index("ix_rollout_events_deployment_id", "deployment", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    deployment: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(64))
    before: Mapped[dict[str, Any] | None] = mapped_column("from_state", JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column("to_state", JSON)
    reason: Mapped[str | None] = mapped_column(Text)
    snapshot: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class QualityScoreRow(Base):
    """Scores for recorded calls; a call's `quality` is derived from them (see store.QUALITY_RULE)."""

    __tablename__ = "quality_scores"
    __table_args__ = (
        Index("ix_quality_scores_request", "request_id"),
        Index("ix_quality_scores_created", "created_at"),
    )

    # Made by the gateway, so a retried write of the same score lands once.
    id: Mapped[str] = mapped_column(String(160), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(80))
    score: Mapped[float] = mapped_column(Float)
    comment: Mapped[str | None] = mapped_column(Text)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class GatewaySettingRow(Base):
    """Settings the gateway generates once and every replica shares (the user-id salt)."""

    __tablename__ = "gateway_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class RolloutStageRow(Base):
    """The stage a deployment's rollout checks judge: per-user sums are kept for its records.

    One row per deployment while a canary runs. The latency thresholds come
    from stable's p95 before the stage (or in it, when the baseline had too
    few calls); null until they are known.
    """

    __tablename__ = "rollout_stages"

    deployment: Mapped[str] = mapped_column(String(64), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reference_ms: Mapped[float | None] = mapped_column(Float)
    gate_ms: Mapped[float | None] = mapped_column(Float)
    rollback_ms: Mapped[float | None] = mapped_column(Float)
    # The two versions judged, and how many users have calls of either in the stage.
    stable: Mapped[str | None] = mapped_column(String(64))
    canary: Mapped[str | None] = mapped_column(String(64))
    users: Mapped[int] = mapped_column(BigInteger, default=0)


class StageUserSumsRow(Base):
    """One user's calls of one version since the stage started (user id present, not client-cancelled)."""

    __tablename__ = "stage_user_sums"

    deployment: Mapped[str] = mapped_column(String(64), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    calls: Mapped[int] = mapped_column(BigInteger)
    errors: Mapped[int] = mapped_column(BigInteger)
    answered: Mapped[int] = mapped_column(BigInteger)
    # Answered calls slower than the stage's gate, reference and rollback thresholds.
    slow_gate: Mapped[int] = mapped_column(BigInteger)
    slow_reference: Mapped[int] = mapped_column(BigInteger)
    slow_rollback: Mapped[int] = mapped_column(BigInteger)
    # Calls with a cost, their cache-neutral cost and the cost billed.
    priced: Mapped[int] = mapped_column(BigInteger)
    cost: Mapped[float] = mapped_column(Float)
    actual_cost: Mapped[float] = mapped_column(Float)
    scored: Mapped[int] = mapped_column(BigInteger)
    quality: Mapped[float] = mapped_column(Float)


class StageSourceSumsRow(Base):
    """One user's quality scores of one source, over the calls `stage_user_sums` counts."""

    __tablename__ = "stage_source_sums"

    deployment: Mapped[str] = mapped_column(String(64), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(String(80), primary_key=True)
    scores: Mapped[int] = mapped_column(BigInteger)
    score_sum: Mapped[float] = mapped_column(Float)


class StageVersionSumsRow(Base):
    """One version's sums over the users of the stage: what a check reads (`gateway.analysis.Sums`).

    Per ratio metric Σy/Σx (errors, quality, slow, slow_reference,
    slow_rollback, cost, as in stage_user_sums): the users with x > 0 and Σx,
    Σy, Σx², Σy², Σxy over users, kept as the users' sums change.
    """

    __tablename__ = "stage_version_sums"

    deployment: Mapped[str] = mapped_column(String(64), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    users: Mapped[int] = mapped_column(BigInteger)
    calls: Mapped[int] = mapped_column(BigInteger)
    actual_cost: Mapped[float] = mapped_column(Float)
    errors_units: Mapped[int] = mapped_column(BigInteger)
    errors_x: Mapped[float] = mapped_column(Float)
    errors_y: Mapped[float] = mapped_column(Float)
    errors_xx: Mapped[float] = mapped_column(Float)
    errors_yy: Mapped[float] = mapped_column(Float)
    errors_xy: Mapped[float] = mapped_column(Float)
    quality_units: Mapped[int] = mapped_column(BigInteger)
    quality_x: Mapped[float] = mapped_column(Float)
    quality_y: Mapped[float] = mapped_column(Float)
    quality_xx: Mapped[float] = mapped_column(Float)
    quality_yy: Mapped[float] = mapped_column(Float)
    quality_xy: Mapped[float] = mapped_column(Float)
    slow_units: Mapped[int] = mapped_column(BigInteger)
    slow_x: Mapped[float] = mapped_column(Float)
    slow_y: Mapped[float] = mapped_column(Float)
    slow_xx: Mapped[float] = mapped_column(Float)
    slow_yy: Mapped[float] = mapped_column(Float)
    slow_xy: Mapped[float] = mapped_column(Float)
    slow_reference_units: Mapped[int] = mapped_column(BigInteger)
    slow_reference_x: Mapped[float] = mapped_column(Float)
    slow_reference_y: Mapped[float] = mapped_column(Float)
    slow_reference_xx: Mapped[float] = mapped_column(Float)
    slow_reference_yy: Mapped[float] = mapped_column(Float)
    slow_reference_xy: Mapped[float] = mapped_column(Float)
    slow_rollback_units: Mapped[int] = mapped_column(BigInteger)
    slow_rollback_x: Mapped[float] = mapped_column(Float)
    slow_rollback_y: Mapped[float] = mapped_column(Float)
    slow_rollback_xx: Mapped[float] = mapped_column(Float)
    slow_rollback_yy: Mapped[float] = mapped_column(Float)
    slow_rollback_xy: Mapped[float] = mapped_column(Float)
    cost_units: Mapped[int] = mapped_column(BigInteger)
    cost_x: Mapped[float] = mapped_column(Float)
    cost_y: Mapped[float] = mapped_column(Float)
    cost_xx: Mapped[float] = mapped_column(Float)
    cost_yy: Mapped[float] = mapped_column(Float)
    cost_xy: Mapped[float] = mapped_column(Float)


class StageVersionSourcesRow(Base):
    """One version's sums over users of one quality source's scores (x: scores, y: their sum)."""

    __tablename__ = "stage_version_sources"

    deployment: Mapped[str] = mapped_column(String(64), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(String(80), primary_key=True)
    s_units: Mapped[int] = mapped_column(BigInteger)
    s_x: Mapped[float] = mapped_column(Float)
    s_y: Mapped[float] = mapped_column(Float)
    s_xx: Mapped[float] = mapped_column(Float)
    s_yy: Mapped[float] = mapped_column(Float)
    s_xy: Mapped[float] = mapped_column(Float)


class StagePresenceRow(Base):
    """A user with calls of either judged version in the stage: counted once in rollout_stages.users."""

    __tablename__ = "stage_presence"

    deployment: Mapped[str] = mapped_column(String(64), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    user_hash: Mapped[str] = mapped_column(String(64), primary_key=True)


class MinuteStatsRow(Base):
    """One version's calls in one minute (UTC, by the call's start), what `compare` and the time series sum."""

    __tablename__ = "minute_stats"

    deployment: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    minute: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    # Calls not cancelled by the client; errors; calls with a quality and its sum.
    requests: Mapped[int] = mapped_column(BigInteger)
    errors: Mapped[int] = mapped_column(BigInteger)
    scored: Mapped[int] = mapped_column(BigInteger)
    quality_sum: Mapped[float] = mapped_column(Float)
    priced: Mapped[int] = mapped_column(BigInteger)
    cost_sum: Mapped[float] = mapped_column(Float)
    prompt_calls: Mapped[int] = mapped_column(BigInteger)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_calls: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)


class MinuteSourceRow(Base):
    """Quality scores of one source on one version's calls of one minute (calls not cancelled)."""

    __tablename__ = "minute_sources"

    deployment: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    minute: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    source: Mapped[str] = mapped_column(String(80), primary_key=True)
    scores: Mapped[int] = mapped_column(BigInteger)
    score_sum: Mapped[float] = mapped_column(Float)


class MinuteLatencyRow(Base):
    """A latency histogram of one version's answered calls in one minute (`gateway.analysis.histogram`).

    `metric` is `latency` (latency_ms) or `ttft` (ttft_ms, streams); one row per non-empty bucket.
    """

    __tablename__ = "minute_latency"

    deployment: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    minute: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    metric: Mapped[str] = mapped_column(String(8), primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True)
    calls: Mapped[int] = mapped_column(BigInteger)


class HourLatencyRow(Base):
    """minute_latency summed per hour (UTC): what a window of many hours reads for its whole hours."""

    __tablename__ = "hour_latency"

    deployment: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    metric: Mapped[str] = mapped_column(String(8), primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True)
    calls: Mapped[int] = mapped_column(BigInteger)
