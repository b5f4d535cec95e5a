"""Writes of request records and quality scores, and the lookup of a stored call.

The recorder's batches land here: records, scores and what they add to the
aggregates (`gateway.store.aggregates`) in one transaction, ids already
stored skipped and not aggregated again, so a retried batch lands and counts
once. A call's `quality` column is derived from its scores by QUALITY_RULE.

A score and its call may be written by two writers at once (two replicas,
or `--workers`): neither transaction sees the other's uncommitted row, so
the score would count in no aggregate. On PostgreSQL every batch that
inserts records holds a shared advisory lock (namespace CALLS_LOCK) until it
commits, and a batch with scores whose calls it cannot find takes it
exclusively, waiting for every record writer in flight, then looks again:
either it finds the call now, or the call is written later and finds the
score (see `insert_batch`). The lock comes before the stage locks in every
writer, so no two wait for each other in a circle. SQLite serializes write
transactions already.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import fields
from datetime import UTC, timedelta
from typing import Any

from sqlalchemy import ARRAY, String, any_, func, literal, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.models import QualityScore, RequestRecord
from gateway.store.aggregates import FACT_COLUMNS, Fact, Tally, lock_stages
from gateway.store.engine import Database, few_shapes, power_of_two_chunks, translated_errors
from gateway.tables import QualityScoreRow, RequestRecordRow

_RECORD_FIELDS = tuple(field.name for field in fields(RequestRecord))
_CREATED_AT = _RECORD_FIELDS.index("created_at")
_SCORE_FIELDS = tuple(field.name for field in fields(QualityScore))
# Rows per multi-row INSERT (SQLite allows 32,766 parameters per statement).
_CHUNK = 500
# Rows per record INSERT on SQLite: each power of two up to it stays prepared on each connection,
# measured 1.2 MB of SQLite memory up to 256 rows, 0.3 MB up to 64.
_SQLITE_RECORD_ROWS = 64
# A score is made after its call, give or take the replicas' clock skew: scores stored before a
# call are looked for among those made at most this long before it.
SCORE_SKEW = timedelta(days=1)
# Advisory-lock namespace of record writers ("CGTC"): batches with records share it; a batch with
# scores of calls it cannot find takes it alone (see the module docstring).
CALLS_LOCK = 0x43475443
_ARRAY_TYPES = {"String": "text", "Text": "text", "UTCDateTime": "timestamptz", "Boolean": "boolean",
                "Integer": "integer", "Float": "double precision"}

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
    """Batch inserts of request records and quality scores, with the aggregates they change."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self._insert_records = _postgres_insert(self) if self.dialect.postgresql else _sqlite_insert(self)

    async def insert_batch(self, *, records: Sequence[RequestRecord], scores: Sequence[QualityScore]) -> None:
        """Insert records and quality scores in one transaction, with everything they add to the aggregates.

        Ids already stored are skipped, and only what was inserted now is
        aggregated, so a retried batch (or a replayed spool file) lands and
        counts once (see `gateway.store.aggregates`). A call's `quality` is
        derived by QUALITY_RULE from its scores: a score written with or after
        its call sets it, and so do scores stored before the call (a call
        written back from the spool). Such earlier scores are looked up among
        scores made at most SCORE_SKEW before the call. Raises
        StoreUnavailable or StoreRejected (see `gateway.store.engine`).
        """
        if not records and not scores:
            return
        async with translated_errors(), self.engine.begin() as connection:
            if not self.dialect.postgresql:
                await connection.exec_driver_sql("BEGIN IMMEDIATE")
            deployments = {record.deployment for record in records}
            scored_ids = {score.request_id for score in scores} - {record.id for record in records}
            stored = await self._deployments_of(connection, scored_ids)
            if self.dialect.postgresql:
                if len(stored) < len(scored_ids):
                    # A call not found may be in another writer's open transaction: wait for them all.
                    await connection.execute(text("SELECT pg_advisory_xact_lock(:namespace, 0)"),
                                             {"namespace": CALLS_LOCK})
                    stored = await self._deployments_of(connection, scored_ids)
                elif records:
                    await connection.execute(text("SELECT pg_advisory_xact_lock_shared(:namespace, 0)"),
                                             {"namespace": CALLS_LOCK})
            deployments.update(stored.values())
            stages = await lock_stages(connection, self.dialect, deployments)
            inserted = await self._insert_records(connection, records) if records else set()
            new_scores = await self._insert_scores(connection, scores) if scores else []
            # Stored calls that get a score now: their values before it, locked against other writers.
            rescored_ids = {score.request_id for score in new_scores} - inserted
            before: dict[str, Fact] = {}
            if rescored_ids:
                lookup = (select(RequestRecordRow.id, *FACT_COLUMNS)
                          .where(self._among(RequestRecordRow.id, rescored_ids)).order_by(RequestRecordRow.id))
                if self.dialect.postgresql:
                    lookup = lookup.with_for_update()
                before = {row[0]: Fact(*row[1:]) for row in await connection.execute(lookup)}
            new_records = [record for record in records if record.id in inserted]
            # Every score of the new calls: this batch's, and any stored before them.
            earlier: list[Any] = []
            if new_records:
                since = min(record.created_at for record in new_records) - SCORE_SKEW
                earlier = list(await connection.execute(
                    select(QualityScoreRow.request_id, QualityScoreRow.source, QualityScoreRow.score)
                    .where(self._among(QualityScoreRow.request_id, inserted), QualityScoreRow.created_at >= since)))
            quality: dict[str, float | None] = {}
            derive = set(before) | {row.request_id for row in earlier}
            if derive:
                quality = dict((await connection.execute(
                    update(RequestRecordRow).where(self._among(RequestRecordRow.id, derive)).values(quality=_QUALITY)
                    .returning(RequestRecordRow.id, RequestRecordRow.quality))).all())
            tally = Tally()
            facts: dict[str, Fact] = {}
            for record in new_records:
                fact = facts[record.id] = _fact(record, quality.get(record.id, record.quality))
                tally.add_record(fact, stages.get(record.deployment))
            for request_id, fact in before.items():
                tally.change_quality(fact, fact.quality, quality.get(request_id), stages.get(fact.deployment))
            for row in earlier:
                fact = facts[row.request_id]
                tally.add_score(fact, row.source, row.score, stages.get(fact.deployment))
            for score in new_scores:
                if score.request_id in before:
                    fact = before[score.request_id]
                    tally.add_score(fact, score.source, score.score, stages.get(fact.deployment))
            await tally.write(connection, self.dialect)

    async def _deployments_of(self, connection: AsyncConnection, request_ids: Collection[str]) -> dict[str, str]:
        """Stored call id → its deployment, for the ids of `request_ids` that are stored (committed)."""
        if not request_ids:
            return {}
        return dict((await connection.execute(
            select(RequestRecordRow.id, RequestRecordRow.deployment)
            .where(self._among(RequestRecordRow.id, request_ids)))).all())

    def _among(self, column: Any, values: Collection[str]) -> Any:
        """`column IN values`; on PostgreSQL as one array parameter (`= ANY`), cheap to compile for many values.

        On SQLite the list is padded to a power of two (`few_shapes`).
        """
        if self.dialect.postgresql:
            return column == any_(literal(list(values), ARRAY(String)))
        return column.in_(few_shapes(values))

    async def _insert_scores(self, connection: AsyncConnection, scores: Sequence[QualityScore]) -> list[QualityScore]:
        """Insert the scores whose ids are not stored yet; returns those."""
        inserted: set[str] = set()
        for part in power_of_two_chunks(len(scores), _CHUNK):
            chunk = scores[part]
            inserted.update((await connection.scalars(
                self.dialect.insert(QualityScoreRow).values([_values(score, _SCORE_FIELDS) for score in chunk])
                .on_conflict_do_nothing().returning(QualityScoreRow.id))).all())
        return [score for score in scores if score.id in inserted]

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


InsertRecords = Callable[[AsyncConnection, Sequence[RequestRecord]], Awaitable[set[str]]]


def _postgres_insert(store: RecordStore) -> InsertRecords:
    """One INSERT of every record as arrays (`unnest`): cheap to send, and RETURNING says which were new."""
    types = [_ARRAY_TYPES[type(RequestRecordRow.__table__.c[name].type).__name__] for name in _RECORD_FIELDS]
    arrays = ", ".join(f"CAST(${index} AS {name}[])" for index, name in enumerate(types, start=1))
    sql = (f"INSERT INTO request_records ({', '.join(_RECORD_FIELDS)}) SELECT * FROM unnest({arrays}) "
           "ON CONFLICT DO NOTHING RETURNING id")

    async def insert(connection: AsyncConnection, records: Sequence[RequestRecord]) -> set[str]:
        columns = tuple(list(column) for column in zip(*(_row(record) for record in records), strict=True))
        return {row[0] for row in await connection.exec_driver_sql(sql, columns)}

    return insert


def _sqlite_insert(store: RecordStore) -> InsertRecords:
    """Multi-row INSERTs of a power of two records each, at most _SQLITE_RECORD_ROWS; RETURNING says which were new.

    Power-of-two sizes keep the prepared statements few (`power_of_two_chunks`).
    """
    marks = "(" + ", ".join("?" * len(_RECORD_FIELDS)) + ")"
    statements: dict[int, str] = {}

    async def insert(connection: AsyncConnection, records: Sequence[RequestRecord]) -> set[str]:
        inserted: set[str] = set()
        for part in power_of_two_chunks(len(records), _SQLITE_RECORD_ROWS):
            chunk = records[part]
            sql = statements.get(len(chunk))
            if sql is None:
                sql = statements[len(chunk)] = (
                    f"INSERT INTO request_records ({', '.join(_RECORD_FIELDS)}) VALUES "
                    f"{', '.join([marks] * len(chunk))} ON CONFLICT DO NOTHING RETURNING id")
            values = tuple(value for record in chunk for value in _row(record, text_time=True))
            inserted.update(row[0] for row in await connection.exec_driver_sql(sql, values))
        return inserted

    return insert


def _row(record: RequestRecord, *, text_time: bool = False) -> tuple[Any, ...]:
    row = [getattr(record, name) for name in _RECORD_FIELDS]
    created = record.created_at.astimezone(UTC)
    # As UTCDateTime stores it: naive UTC text on SQLite, an aware timestamp on PostgreSQL.
    row[_CREATED_AT] = created.strftime("%Y-%m-%d %H:%M:%S.%f") if text_time else created
    return tuple(row)


def _fact(record: RequestRecord, quality: float | None) -> Fact:
    return Fact(record.deployment, record.version, record.user_hash, record.created_at, record.status,
                record.latency_ms, record.ttft_ms, record.prompt_tokens, record.completion_tokens, record.cost_usd,
                record.uncached_cost_usd, quality, record.mode)


def _values(item: Any, names: tuple[str, ...]) -> dict[str, Any]:
    # Flat dataclasses: cheaper than dataclasses.asdict, which deep-copies.
    return {name: getattr(item, name) for name in names}
