"""Writes of request records and quality scores, and the lookup of a stored call.

The recorder's batches land here: records and scores in one transaction,
ids already stored skipped, so a retried batch lands once. A call's
`quality` column is derived from its scores by QUALITY_RULE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.models import QualityScore, RequestRecord
from gateway.store.engine import Database, translated_errors
from gateway.tables import QualityScoreRow, RequestRecordRow

_RECORD_FIELDS = tuple(field.name for field in fields(RequestRecord))
_CREATED_AT = _RECORD_FIELDS.index("created_at")
_SCORE_FIELDS = tuple(field.name for field in fields(QualityScore))

# QUALITY_RULE: a call's quality is its user feedback when it has any (the
# average of its feedback scores), else the average of its automatic scores
# (evaluators and the judge).
_QUALITY = func.coalesce(
    select(func.avg(QualityScoreRow.score))
    .where(QualityScoreRow.request_id == RequestRecordRow.id, QualityScoreRow.source == "feedback")
    .scalar_subquery(),
    select(func.avg(QualityScoreRow.score)).where(QualityScoreRow.request_id == RequestRecordRow.id).scalar_subquery(),
)


class RecordStore(Database):
    """Batch inserts of request records and quality scores."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self._record_insert = _record_insert_sql(self.dialect.paramstyle)

    async def insert_batch(
        self, *, records: Sequence[RequestRecord], scores: Sequence[QualityScore], scored_before: bool = False
    ) -> None:
        """Insert records and quality scores in one transaction, then derive the calls' quality.

        Ids already stored are skipped, so a retried batch lands once. A score
        in the same batch as its record, or written after it, sets the record's
        `quality` by QUALITY_RULE; `scored_before` says the records may come
        after scores already stored (written back from the spool), so their
        quality is derived from those too. Raises StoreUnavailable or
        StoreRejected (see `gateway.store.engine`).
        """
        if not records and not scores:
            return
        async with translated_errors(), self.engine.begin() as connection:
            if records:
                # The hottest write: a prepared plain-SQL executemany, a fraction of the ORM
                # insert's per-row cost, which is paid on the event loop.
                await connection.exec_driver_sql(self._record_insert, [self._record_row(r) for r in records])
                if scored_before:
                    ids = [record.id for record in records]
                    await connection.execute(
                        update(RequestRecordRow)
                        .where(RequestRecordRow.id.in_(
                            select(QualityScoreRow.request_id).where(QualityScoreRow.request_id.in_(ids))
                        ))
                        .values(quality=_QUALITY)
                    )
            if scores:
                await connection.execute(
                    self.dialect.insert(QualityScoreRow).on_conflict_do_nothing(index_elements=["id"]),
                    [_values(score, _SCORE_FIELDS) for score in scores],
                )
                # A score is written after (or with) its call's record: the recorder keeps
                # them in order, so only the scored calls need their quality derived again.
                await connection.execute(
                    update(RequestRecordRow)
                    .where(RequestRecordRow.id.in_({score.request_id for score in scores}))
                    .values(quality=_QUALITY)
                )

    async def record_labels(self, request_id: str) -> tuple[str, str] | None:
        """The deployment and version of a stored call, or None if no such call is stored."""
        async with translated_errors(), self.engine.connect() as connection:
            row = (
                await connection.execute(
                    select(RequestRecordRow.deployment, RequestRecordRow.version).where(
                        RequestRecordRow.id == request_id
                    )
                )
            ).first()
            return (row.deployment, row.version) if row is not None else None

    def _record_row(self, record: RequestRecord) -> tuple[Any, ...]:
        row = [getattr(record, name) for name in _RECORD_FIELDS]
        created = record.created_at.astimezone(UTC)
        # As UTCDateTime stores it: naive UTC text on SQLite, an aware timestamp on PostgreSQL.
        row[_CREATED_AT] = created if self.dialect.postgresql else created.strftime("%Y-%m-%d %H:%M:%S.%f")
        return tuple(row)


def _record_insert_sql(paramstyle: str) -> str:
    marks = {
        "qmark": ["?"] * len(_RECORD_FIELDS),
        "numeric_dollar": [f"${index}" for index in range(1, len(_RECORD_FIELDS) + 1)],
        "format": ["%s"] * len(_RECORD_FIELDS),
    }[paramstyle]
    return (
        f"INSERT INTO request_records ({', '.join(_RECORD_FIELDS)}) VALUES ({', '.join(marks)}) "
        "ON CONFLICT (id) DO NOTHING"
    )


def _values(item: Any, names: tuple[str, ...]) -> dict[str, Any]:
    # Flat dataclasses: cheaper than dataclasses.asdict, which deep-copies.
    return {name: getattr(item, name) for name in names}
