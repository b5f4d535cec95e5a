"""How long `Store.window_stats` takes on PostgreSQL over 10 million request records.

`window_stats(deployment, version, since)` is what a rollout check and
`GET /admin/deployments/<name>/compare` run, once per version: counts,
averages and four `percentile_cont` over one version's records since `since`.
The target is a 1-hour window over 10 million rows in under 200 ms.

What the script does, in a throwaway database on the server given by --url:

1. creates the database and applies the project's migrations
   (`gateway.migrate.upgrade`), so the table and its indexes are exactly the
   migrated ones;
2. bulk-loads --rows request records with `INSERT ... SELECT ... FROM
   generate_series` (indexes dropped during the load and rebuilt from their
   migrated definitions afterwards, which is much faster), spread evenly over
   --days days ending at "now", in time order like the recorder writes them:
   3 deployments with 2-3 versions each and a version history (support-bot:
   stable v2 with v3 as a 25 % canary in the last 6 days; search-summarizer:
   v2; code-review: stable v2 with v3 as a 10 % canary in the last 3 days),
   ~2 % errors, 0.5 % client-cancelled calls, 40 % streamed (ttft on answered
   streams), a quality score on ~10 % of answered calls, tokens and cost;
   when the schema has a quality_scores table (migration 0003), one score
   per scored call too (40 % feedback, 60 % judge), equal to its `quality`;
3. VACUUM ANALYZE, then loads the last --unvacuumed-hours hours of records
   with the indexes in place and only ANALYZEs them: recent rows are not yet
   all-visible in production either (with the default
   autovacuum_vacuum_insert_scale_factor of 0.2, autovacuum waits for ~2
   million new rows on a 10-million-row table, i.e. days at this rate), and
   that decides whether an index-only scan can skip the heap;
4. times `Store.window_stats` (the project's own engine and query, through
   asyncpg) for a 1-hour and a 24-hour window, for the largest version
   (support-bot's stable v2, ~45 % of all traffic) and the canary v3:
   - evicted: the first call on a new connection after the tables
     (request_records, quality_scores) and their indexes were pushed out of
     shared_buffers (pg_prewarm of a filler table ~6x shared_buffers, checked
     with pg_buffercache) and out of the OS page cache (CHECKPOINT, then
     posix_fadvise(DONTNEED) on their files): a cold start. Needs superuser,
     the contrib extensions and read access to the data directory (the
     script on the database host as root or postgres); otherwise skipped
     with a note (--no-evict skips it). It churns the whole server's
     shared_buffers: use a test server;
   - new conn: the first call on a new connection (no prepared statement,
     cold backend caches) with the data cached;
   - warm: --runs more calls on one pooled connection (min / median / max;
     more than 5, so a switch to a generic plan would show);
5. prints `EXPLAIN (ANALYZE, BUFFERS)` of every statement `window_stats`
   sent (captured from the engine, re-run with its parameters): by default
   the 1-hour window of v2, warm, and, where the existing indexes are in
   place, statement 1 with only (deployment, version, created_at) (the
   planner otherwise prefers ix_request_records_created; that index is
   dropped inside a rolled-back transaction for the EXPLAIN); with
   --plans all, every case and window, and the 1-hour plans right after an
   eviction (track_io_timing on);
   then times each statement alone on one connection, and, when there is a
   second statement (quality by source, joined with quality_scores), two
   rewrites of it that return the same rows (checked), for the decision
   between an index and a query change;
6. repeats 4-5 with the index states a migration could choose from:
     a. existing indexes, recent rows not vacuumed
     b. covering index (deployment, version, created_at) INCLUDE (status,
        latency_ms, ttft_ms, quality, cost_usd, prompt_tokens,
        completion_tokens) instead of (deployment, version, created_at),
        recent rows not vacuumed
     c. covering index, after VACUUM (every page all-visible: best case)
     d. existing indexes, after VACUUM
7. drops the database (unless --keep).

"now" is the end of the generated data (the load takes minutes; a wall-clock
now would leave the newest window partly empty), so `since` = end - 1 h.

Run from the project root with the project's virtualenv:

    python benchmarks/window_query.py                          # 10 million rows
    python benchmarks/window_query.py --rows 1000000 --runs 5  # quicker
    python benchmarks/window_query.py --keep                   # keep the database (index state d)
    python benchmarks/window_query.py --url postgresql+asyncpg://postgres@127.0.0.1:5432/test

Needs ~5 GB of disk on the database server for 10 million rows. Nothing is
changed outside the throwaway database (session settings only, plus one
CHECKPOINT after the load and before each eviction, so that none runs during a
timing).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from common import autocommit, print_table
from gateway.config import DatabaseSettings
from gateway.migrate import upgrade
from gateway.store import Store, create_engine

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
TABLE = "request_records"
SCORES = "quality_scores"  # only in schemas with migration 0003 (quality scores)
EXISTING_INDEX = "ix_request_records_deployment_version_created"
COVERING_INDEX = "ix_request_records_deployment_version_created_covering"
COVERING_DDL = (
    f"CREATE INDEX {COVERING_INDEX} ON {TABLE} (deployment, version, created_at) "
    "INCLUDE (status, latency_ms, ttft_ms, quality, cost_usd, prompt_tokens, completion_tokens)"
)
OTHER_INDEX = "ix_request_records_created"
EXISTING_DDL = f"CREATE INDEX {EXISTING_INDEX} ON {TABLE} (deployment, version, created_at)"
TARGET_MS = 200.0
_STATEMENT: dict[str, str] = {}  # the SQL window_stats sent, captured once for the report

# One row per g in generate_series(:lo, :hi); :n is the total number of rows,
# so the version history (by position in time, frac) does not depend on chunks.
# The innermost subquery draws the random numbers once per row (a subquery
# with volatile functions in its target list is not flattened).
LOAD_SQL = f"""
INSERT INTO {TABLE} (id, created_at, deployment, version, user_hash, provider, upstream_model, stream,
                     status, http_status, error_kind, latency_ms, ttft_ms, prompt_tokens, completion_tokens,
                     cost_usd, quality)
SELECT id, created_at, deployment, version, user_hash, 'openai', model, stream,
       status,
       CASE status WHEN 'ok' THEN 200 WHEN 'client_cancelled' THEN 499
                   ELSE (ARRAY[502, 429, 504, 502])[kind] END,
       CASE status WHEN 'ok' THEN NULL WHEN 'client_cancelled' THEN 'client_cancelled'
                   ELSE (ARRAY['status', 'status', 'timeout', 'connect'])[kind] END,
       CASE WHEN status = 'ok' THEN (250 + -ln(1 - r_lat) * 900) * CASE WHEN model = 'gpt-4o' THEN 1.1 ELSE 1 END
            WHEN status = 'client_cancelled' THEN r_lat * 5000
            WHEN kind = 3 THEN 60000
            ELSE 50 + r_lat * 2000 END,
       CASE WHEN stream AND status = 'ok' THEN 120 + -ln(1 - r_ttft) * 250 END,
       prompt_tokens,
       completion_tokens,
       CASE WHEN prompt_tokens IS NOT NULL THEN
            CASE WHEN model = 'gpt-4o' THEN (prompt_tokens * 2.50 + coalesce(completion_tokens, 0) * 10.00) / 1e6
                 ELSE (prompt_tokens * 0.15 + coalesce(completion_tokens, 0) * 0.60) / 1e6 END END,
       CASE WHEN status = 'ok' AND r_q < 0.1 THEN round((0.5 + r_q * 5)::numeric, 3)::float8 END
FROM (
    SELECT id, created_at, deployment, version, user_hash, stream, status, kind, r_lat, r_ttft, r_q,
           CASE WHEN version = 'v3' THEN 'gpt-4o' ELSE 'gpt-4o-mini' END AS model,
           CASE WHEN status <> 'error' THEN 50 + floor(r_pt * 1500)::int END AS prompt_tokens,
           CASE WHEN status = 'ok' THEN 10 + floor(r_ct * 600)::int END AS completion_tokens
    FROM (
        SELECT md5(:seed || g::text) AS id,
               to_timestamp(:start + (g - 1 + r_t) * :step) AS created_at,
               deployment,
               CASE deployment
                   WHEN 'support-bot' THEN
                       CASE WHEN frac < 0.4 THEN 'v1'
                            WHEN frac < 0.6 THEN CASE WHEN r_ver < 0.25 THEN 'v2' ELSE 'v1' END
                            WHEN frac < 0.8 THEN 'v2'
                            ELSE CASE WHEN r_ver < 0.25 THEN 'v3' ELSE 'v2' END END
                   WHEN 'search-summarizer' THEN
                       CASE WHEN frac < 0.5 THEN 'v1'
                            WHEN frac < 0.7 THEN CASE WHEN r_ver < 0.5 THEN 'v2' ELSE 'v1' END
                            ELSE 'v2' END
                   ELSE
                       CASE WHEN frac < 0.3 THEN 'v1'
                            WHEN frac < 0.9 THEN 'v2'
                            ELSE CASE WHEN r_ver < 0.1 THEN 'v3' ELSE 'v2' END END
               END AS version,
               CASE WHEN r_user < 0.1 THEN NULL
                    ELSE md5('u' || floor(r_user * 200000)) || md5('s' || floor(r_user * 200000)) END AS user_hash,
               r_stream < 0.4 AS stream,
               CASE WHEN r_status < 0.02 THEN 'error' WHEN r_status < 0.025 THEN 'client_cancelled'
                    ELSE 'ok' END AS status,
               1 + floor(r_kind * 4)::int AS kind,
               r_lat, r_ttft, r_q, r_pt, r_ct
        FROM (
            SELECT g, g::float8 / :n AS frac,
                   CASE WHEN r_dep < 0.6 THEN 'support-bot' WHEN r_dep < 0.9 THEN 'search-summarizer'
                        ELSE 'code-review' END AS deployment,
                   r_t, r_ver, r_user, r_stream, r_status, r_kind, r_lat, r_ttft, r_q, r_pt, r_ct
            FROM (
                SELECT g, random() AS r_t, random() AS r_dep, random() AS r_ver, random() AS r_user,
                       random() AS r_stream, random() AS r_status, random() AS r_kind, random() AS r_lat,
                       random() AS r_ttft, random() AS r_q, random() AS r_pt, random() AS r_ct
                FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS g
            ) AS draws
        ) AS placed
    ) AS shaped
) AS derived
"""


# --------------------------------------------------------------------------
# Database lifecycle
# --------------------------------------------------------------------------


def database_url(server_url: str, name: str) -> str:
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def bulk_engine(url: str) -> AsyncEngine:
    """One connection without a statement timeout, tuned for the load (session settings only)."""
    return create_async_engine(
        url,
        isolation_level="AUTOCOMMIT",
        pool_size=1,
        max_overflow=0,
        connect_args={
            "command_timeout": None,
            "server_settings": {
                "statement_timeout": "0",
                "synchronous_commit": "off",
                "maintenance_work_mem": "1GB",
                "max_parallel_maintenance_workers": "2",
                "application_name": "window-query-bench",
            },
        },
    )


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


@dataclass
class Plan:
    rows: int
    days: float
    unvacuumed_hours: float
    chunk: int
    end: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))
    seed: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def start_epoch(self) -> float:
        return (self.end - timedelta(days=self.days)).timestamp()

    @property
    def step(self) -> float:
        return self.days * 86400 / self.rows

    @property
    def head_rows(self) -> int:
        tail = round(self.rows * self.unvacuumed_hours / (self.days * 24))
        return max(0, self.rows - tail)


async def insert_range(connection: Any, plan: Plan, lo: int, hi: int, label: str) -> None:
    position = lo
    while position <= hi:
        last = min(hi, position + plan.chunk - 1)
        started = time.perf_counter()
        await connection.execute(
            text(LOAD_SQL),
            {
                "seed": plan.seed,
                "start": plan.start_epoch,
                "step": plan.step,
                "n": float(plan.rows),
                "lo": position,
                "hi": last,
            },
        )
        took = time.perf_counter() - started
        rate = (last - position + 1) / took
        print(
            f"  {label}: rows {position:>10,}..{last:>10,}  {took:6.1f} s  ({rate:,.0f} rows/s)",
            flush=True,
        )
        position = last + 1


async def indexes_of(connection: Any, table: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(primary key / unique constraints, other indexes) of `table`, as name and definition."""
    constraints = [
        (name, definition)
        for name, definition in await connection.execute(
            text(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = CAST(:table AS regclass) AND contype IN ('p', 'u') ORDER BY conname"
            ),
            {"table": table},
        )
    ]
    names = {name for name, _ in constraints}
    indexes = [
        (name, definition)
        for name, definition in await connection.execute(
            text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = :table ORDER BY indexname"),
            {"table": table},
        )
        if name not in names
    ]
    return constraints, indexes


async def insert_scores(connection: Any, plan: Plan, lo: int, hi: int) -> None:
    """One quality score per scored call (40 % user feedback, 60 % judge), equal to the call's quality.

    So the stored `quality` follows the project's QUALITY_RULE (feedback first, else the automatic scores).
    """
    low = datetime.fromtimestamp(plan.start_epoch + (lo - 1) * plan.step, UTC)
    high = datetime.fromtimestamp(plan.start_epoch + hi * plan.step, UTC) + timedelta(hours=1)
    await connection.execute(
        text(
            f"INSERT INTO {SCORES} (id, request_id, source, score, comment, cost_usd, created_at) "
            "SELECT md5(id || source), id, source, quality, NULL, "
            "       CASE WHEN source = 'judge' THEN 0.0004 END, created_at + interval '20 seconds' "
            "FROM (SELECT id, quality, created_at, "
            "             CASE WHEN random() < 0.4 THEN 'feedback' ELSE 'judge' END AS source "
            f"      FROM {TABLE} WHERE quality IS NOT NULL AND created_at >= :low AND created_at < :high) AS scored "
            "ON CONFLICT DO NOTHING"
        ),
        {"low": low, "high": high},
    )


async def load(url: str, plan: Plan) -> dict[str, float]:
    timings: dict[str, float] = {}
    engine = bulk_engine(url)
    try:
        async with engine.connect() as connection:
            with_scores = await connection.scalar(text(f"SELECT to_regclass('{SCORES}') IS NOT NULL"))
            tables = [TABLE, SCORES] if with_scores else [TABLE]
            dropped: list[tuple[str, list[tuple[str, str]], list[tuple[str, str]]]] = []
            print("migrated indexes (dropped for the load, rebuilt as defined):")
            for table in tables:
                constraints, indexes = await indexes_of(connection, table)
                dropped.append((table, constraints, indexes))
                for name, definition in constraints:
                    print(f"  {table}: constraint {name} {definition}")
                for name, definition in indexes:
                    print(f"  {definition}")
                    await connection.execute(text(f'DROP INDEX "{name}"'))
                for name, _ in constraints:
                    await connection.execute(text(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"'))
            if not with_scores:
                print(f"  (no {SCORES} table in this schema: quality lives in request_records only)")

            started = time.perf_counter()
            await insert_range(connection, plan, 1, plan.head_rows, "load")
            if with_scores:
                await insert_scores(connection, plan, 1, plan.head_rows)
            timings["insert (no indexes)"] = time.perf_counter() - started

            started = time.perf_counter()
            for table, constraints, indexes in dropped:
                for name, definition in constraints:
                    await connection.execute(text(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}'))
                for _, definition in indexes:
                    await connection.execute(text(definition))
            timings["build indexes"] = time.perf_counter() - started

            started = time.perf_counter()
            for table in tables:
                await connection.execute(text(f"VACUUM (ANALYZE) {table}"))
            timings["VACUUM ANALYZE"] = time.perf_counter() - started

            if plan.head_rows < plan.rows:
                started = time.perf_counter()
                await insert_range(connection, plan, plan.head_rows + 1, plan.rows, "recent (indexed, not vacuumed)")
                if with_scores:
                    await insert_scores(connection, plan, plan.head_rows + 1, plan.rows)
                timings[f"insert last {plan.unvacuumed_hours:g} h (indexed)"] = time.perf_counter() - started
            started = time.perf_counter()
            for table in tables:
                await connection.execute(text(f"ANALYZE {table}"))
            await connection.execute(text("CHECKPOINT"))
            timings["ANALYZE + CHECKPOINT"] = time.perf_counter() - started
    finally:
        await engine.dispose()
    return timings


# --------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------


@dataclass
class Case:
    window: str
    version: str
    since: datetime
    deployment: str = "support-bot"

    @property
    def label(self) -> str:
        return f"{self.deployment} {self.version}, {self.window} window"


@dataclass
class Result:
    state: str
    case: Case
    rows: int
    evicted_ms: float | None
    cold_ms: float
    warm_ms: list[float]
    access: str
    plans: dict[str, list[str]] = field(default_factory=dict)
    statements: list[tuple[str, Any]] = field(default_factory=list)


# The tables named in :tables (those that exist), their indexes and TOAST tables.
_RELATIONS = (
    "WITH t AS (SELECT to_regclass(name) AS oid FROM unnest(CAST(:tables AS text[])) AS name) "
    "SELECT oid FROM t WHERE oid IS NOT NULL "
    "UNION SELECT indexrelid FROM pg_index WHERE indrelid IN (SELECT oid FROM t) "
    "UNION SELECT reltoastrelid FROM pg_class WHERE oid IN (SELECT oid FROM t) AND reltoastrelid <> 0"
)


class Evictor:
    """Pushes request_records (and quality_scores) out of shared_buffers and out of the OS page cache.

    shared_buffers: pg_prewarm reads a filler table of ~6x shared_buffers into
    them (normal buffer replacement, no ring), so the clock sweep passes often
    enough to evict even pages at the maximum usage count; pg_buffercache
    counts what is left. OS cache: CHECKPOINT, then posix_fadvise(DONTNEED) on
    every file of the table and its indexes (only this database's files).
    Needs a superuser, the contrib extensions, and read access to the data
    directory: i.e. the script running on the database host as root or postgres.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = bulk_engine(url)
        self.data_directory = ""
        self.unavailable: str | None = None

    async def setup(self) -> None:
        try:
            async with self.engine.connect() as connection:
                self.data_directory = await connection.scalar(text("SELECT current_setting('data_directory')"))
                if not os.access(Path(self.data_directory) / "base", os.R_OK | os.X_OK):
                    self.unavailable = f"cannot read {self.data_directory} (run on the database host as root/postgres)"
                    return
                await connection.execute(text("CREATE EXTENSION IF NOT EXISTS pg_prewarm"))
                await connection.execute(text("CREATE EXTENSION IF NOT EXISTS pg_buffercache"))
                buffers = await connection.scalar(
                    text("SELECT setting::bigint FROM pg_settings WHERE name = 'shared_buffers'")
                )
                pages = min(6 * int(buffers), 2 * 1024**3 // 8192)  # at most 2 GB of filler
                await connection.execute(text(
                    "CREATE TABLE bench_filler WITH (fillfactor = 100) AS "
                    "SELECT g AS id, repeat(md5(g::text), 3) AS pad FROM generate_series(1, CAST(:rows AS bigint)) AS g"
                ), {"rows": pages * 60})  # ~60 rows of ~130 bytes per 8 kB page
        except Exception as exc:  # noqa: BLE001 - eviction is optional
            self.unavailable = f"{type(exc).__name__}: {exc}"

    async def evict(self) -> int:
        """Evict; return how many of their pages are still in shared_buffers."""
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT pg_prewarm('bench_filler', 'buffer')"))
            await connection.execute(text("CHECKPOINT"))
            paths = (await connection.execute(text(
                f"SELECT pg_relation_filepath(oid) FROM pg_class WHERE oid IN ({_RELATIONS})"
            ), {"tables": [TABLE, SCORES]})).scalars().all()
            for relative in paths:
                base = Path(self.data_directory) / relative
                for path in [base, *base.parent.glob(base.name + ".*"), *base.parent.glob(base.name + "_*")]:
                    descriptor = os.open(path, os.O_RDONLY)
                    try:
                        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
                    finally:
                        os.close(descriptor)
            left = await connection.scalar(text(
                "SELECT count(*) FROM pg_buffercache b JOIN pg_class c ON b.relfilenode = pg_relation_filenode(c.oid) "
                "WHERE b.reldatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                f"AND c.oid IN ({_RELATIONS})"
            ), {"tables": [TABLE, SCORES]})
        return int(left or 0)

    async def close(self) -> None:
        await self.engine.dispose()


async def timed(store: Store, case: Case) -> tuple[float, int]:
    started = time.perf_counter()
    stats = await store.window_stats(deployment=case.deployment, version=case.version, since=case.since)
    return (time.perf_counter() - started) * 1000, stats.requests


async def connect_first(store: Store) -> None:
    """Open a pooled connection, so that the timed statement does not pay for connecting."""
    async with store.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def fresh_call(url: str, case: Case) -> tuple[float, int]:
    """A new engine, connected first, so only the statement is timed: no prepared statement, cold backend caches."""
    store = Store(create_engine(url, DatabaseSettings()))
    try:
        await connect_first(store)
        return await timed(store, case)
    finally:
        await store.close()


async def measure(url: str, state: str, cases: list[Case], runs: int, evictor: Evictor | None,
                  composite_only: bool, all_plans: bool) -> tuple[list[Result], list[int]]:
    engine = create_engine(url, DatabaseSettings())  # the gateway's defaults: pool, 5 s statement timeout
    store = Store(engine)
    recording: list[tuple[str, Any]] | None = None

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if recording is not None and TABLE in statement:
            recording.append((statement, tuple(parameters) if parameters else ()))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    results = []
    left_in_buffers: list[int] = []
    try:
        await connect_first(store)
        for case in cases:
            evicted_ms = None
            if evictor is not None:
                left_in_buffers.append(await evictor.evict())
                evicted_ms, _ = await fresh_call(url, case)
            cold_ms, rows = await fresh_call(url, case)
            warm = []
            for _ in range(runs):
                took, _ = await timed(store, case)
                warm.append(took)
            # One more call, recorded: every statement window_stats sends, with its parameters.
            recording = []
            await timed(store, case)
            statements, recording = recording, None
            if "text" not in _STATEMENT:
                _STATEMENT["text"] = "\n\n".join(
                    f"-- statement {number} of {len(statements)}\n{sql}\n-- parameters ({case.label}): {params!r}"
                    for number, (sql, params) in enumerate(statements, 1)
                )
            plans: dict[str, list[str]] = {}
            for number, (sql, params) in enumerate(statements, 1):
                tag = f"statement {number} of {len(statements)}"
                plans[f"{tag}, warm"] = await explain(url, sql, params)
                if evictor is not None and case.window == "1 h" and all_plans:
                    left_in_buffers.append(await evictor.evict())
                    plans[f"{tag}, right after an eviction (track_io_timing on)"] = await explain(
                        url, sql, params, io_timing=True
                    )
                if composite_only and (all_plans or (case.window == "1 h" and number == 1)):
                    plans[
                        f"{tag}, warm, {EXISTING_INDEX} only ({OTHER_INDEX} dropped in a rolled-back transaction)"
                    ] = await explain(url, sql, params, without=OTHER_INDEX)
            first = next(iter(plans.values()))
            access = access_path(first) + (f" (+{len(statements) - 1} more statement)" if len(statements) > 1 else "")
            results.append(Result(state, case, rows, evicted_ms, cold_ms, warm, access, plans, statements))
    finally:
        await store.close()
    return results, left_in_buffers


async def explain(url: str, statement: str, parameters: Any, *, io_timing: bool = False,
                  without: str | None = None) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of exactly what window_stats sent, with its parameters, on its own connection."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            if io_timing:
                await connection.exec_driver_sql("SET track_io_timing = on")
            if without:
                await connection.exec_driver_sql(f"DROP INDEX {without}")
            rows = await connection.exec_driver_sql(
                "EXPLAIN (ANALYZE, BUFFERS) " + statement, tuple(parameters) if parameters else ()
            )
            plan = [row[0] for row in rows]
            await connection.rollback()
            return plan
    finally:
        await engine.dispose()


_NODE = re.compile(r"(Parallel )?(Index Only Scan|Index Scan|Bitmap Heap Scan|Bitmap Index Scan|Seq Scan)"
                   r"( using \S+)?")


def access_path(plan: list[str]) -> str:
    nodes = [match.group(0) for line in plan if (match := _NODE.search(line))]
    fetches = [line.strip() for line in plan if "Heap Fetches" in line]
    gather = any("Gather" in line for line in plan)
    text_ = " + ".join(nodes) or "?"
    return (text_ + (" (parallel)" if gather and "Parallel" not in text_ else "")
            + (f" [{fetches[0]}]" if fetches else ""))


async def describe(url: str) -> dict[str, Any]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            table = (
                await connection.execute(
                    text(
                        "SELECT reltuples::bigint, relpages, relallvisible, pg_relation_size(oid), "
                        "pg_total_relation_size(oid) FROM pg_class WHERE relname = :table"
                    ),
                    {"table": TABLE},
                )
            ).one()
            indexes = (
                await connection.execute(
                    text(
                        "SELECT c.relname, pg_relation_size(c.oid) FROM pg_index i "
                        "JOIN pg_class c ON c.oid = i.indexrelid "
                        "WHERE i.indrelid = CAST(:table AS regclass) ORDER BY c.relname"
                    ),
                    {"table": TABLE},
                )
            ).all()
    finally:
        await engine.dispose()
    return {
        "rows": table[0],
        "pages": table[1],
        "all_visible": table[2],
        "heap_bytes": table[3],
        "total_bytes": table[4],
        "indexes": list(indexes),
    }


async def count_scores(url: str) -> int | None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            if not await connection.scalar(text(f"SELECT to_regclass('{SCORES}') IS NOT NULL")):
                return None
            return int(await connection.scalar(text(f"SELECT count(*) FROM {SCORES}")) or 0)
    finally:
        await engine.dispose()


async def profile(url: str, now: datetime) -> list[tuple[str, str, int, int, int]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text(
                    f"SELECT deployment, version, count(*) FILTER (WHERE created_at >= :h1), "
                    f"count(*) FILTER (WHERE created_at >= :h24), count(*) FROM {TABLE} "
                    "GROUP BY 1, 2 ORDER BY 1, 2"
                ),
                {"h1": now - timedelta(hours=1), "h24": now - timedelta(hours=24)},
            )
            return [tuple(row) for row in rows]
    finally:
        await engine.dispose()


# --------------------------------------------------------------------------
# Statement by statement, and rewrites of the quality-by-source statement
# --------------------------------------------------------------------------

# The quality-by-source statement of window_stats (schemas with quality_scores)
# joins every score to the window's records; the planner tends to hash-join a
# full scan of quality_scores. Two rewrites with the same result, for comparison
# (parameters: deployment, version, since): only scored calls have scores (a
# call's `quality` is derived from its scores), and ANY(ARRAY(...)) makes the
# window's ids an InitPlan so that quality_scores is probed through its index.
REWRITES = {
    "rewrite A: + AND request_records.quality IS NOT NULL": (
        f"SELECT {SCORES}.source, avg({SCORES}.score) AS avg_1, count(*) AS count_1 "
        f"FROM {SCORES} JOIN {TABLE} ON {TABLE}.id = {SCORES}.request_id "
        f"WHERE {TABLE}.deployment = $1 AND {TABLE}.version = $2 AND {TABLE}.created_at >= $3 "
        f"AND {TABLE}.status != 'client_cancelled' AND {TABLE}.quality IS NOT NULL "
        f"GROUP BY {SCORES}.source"
    ),
    "rewrite B: request_id = ANY(ARRAY(SELECT id ... AND quality IS NOT NULL))": (
        f"SELECT source, avg(score) AS avg_1, count(*) AS count_1 FROM {SCORES} "
        f"WHERE request_id = ANY(ARRAY(SELECT id FROM {TABLE} WHERE deployment = $1 AND version = $2 "
        "AND created_at >= $3 AND status != 'client_cancelled' AND quality IS NOT NULL)) "
        "GROUP BY source"
    ),
}


def by_source(rows: Any) -> list[tuple[str, float, int]]:
    return sorted((str(row[0]), round(float(row[1]), 9), int(row[2])) for row in rows)


async def statement_timings(url: str, results: list[Result], runs: int, plan_windows: set[str]) -> list[list[str]]:
    """Each statement window_stats sent (v2), and the rewrites, timed alone on one connection."""
    rows: list[list[str]] = []
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            for result in results:
                if result.case.version != "v2":
                    continue
                candidates: list[tuple[str, str, Any]] = [
                    (f"statement {number} as sent", sql, params)
                    for number, (sql, params) in enumerate(result.statements, 1)
                ]
                if len(result.statements) > 1:
                    window = (result.case.deployment, result.case.version, result.case.since)
                    candidates += [(label, sql, window) for label, sql in REWRITES.items()]
                reference: Any = None
                for label, sql, params in candidates:
                    timings, answer = [], None
                    for _ in range(runs):
                        started = time.perf_counter()
                        answer = (await connection.exec_driver_sql(sql, params)).all()
                        timings.append((time.perf_counter() - started) * 1000)
                    normalised = None if label == "statement 1 as sent" else by_source(answer or [])
                    if label == "statement 2 as sent":
                        reference = normalised
                    same = (
                        "" if normalised is None or reference is None else ("yes" if normalised == reference else "NO")
                    )
                    plan = [row[0] for row in await connection.exec_driver_sql(
                        "EXPLAIN (ANALYZE, BUFFERS) " + sql, params)]
                    executed = next((line for line in plan if line.startswith("Execution Time")), "")
                    rows.append([result.state, result.case.window, label, f"{min(timings):.1f}",
                                 f"{statistics.median(timings):.1f}", executed.replace("Execution Time: ", ""),
                                 access_path(plan), same])
                    if label.startswith("rewrite") and result.case.window in plan_windows:
                        print()
                        print(
                            f"--- EXPLAIN (ANALYZE, BUFFERS), state {result.state[0]}, {result.case.label}, {label} ---"
                        )
                        for line in plan:
                            print(line)
            await connection.rollback()
    finally:
        await engine.dispose()
    return rows


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def mb(value: int) -> str:
    return f"{value / 1024 / 1024:,.0f} MB"


def print_state(info: dict[str, Any]) -> None:
    print(
        f"  table: {info['rows']:,} rows (estimate), heap {mb(info['heap_bytes'])}, total {mb(info['total_bytes'])}; "
        f"all-visible pages {info['all_visible']:,} of {info['pages']:,} "
        f"({100 * info['all_visible'] / max(1, info['pages']):.1f} %)"
    )
    for name, size in info["indexes"]:
        print(f"  index {name}: {mb(size)}")


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


# (key, label, covering index instead of the existing one, vacuumed); measured in this order.
STATES = [
    ("a", "existing indexes, recent rows not vacuumed", False, False),
    ("b", "covering index, recent rows not vacuumed", True, False),
    ("c", "covering index, after VACUUM", True, True),
    ("d", "existing indexes, after VACUUM", False, True),
]


def transition(covering_now: bool, vacuumed_now: bool, covering: bool, vacuumed: bool) -> list[str]:
    """The statements that take the table from one index state to another (a VACUUM cannot be undone)."""
    statements = []
    if covering and not covering_now:
        statements += [COVERING_DDL, f"DROP INDEX {EXISTING_INDEX}"]
    if covering_now and not covering:
        statements += [EXISTING_DDL, f"DROP INDEX {COVERING_INDEX}"]
    if vacuumed and not vacuumed_now:
        statements.append(f"VACUUM (ANALYZE) {TABLE}")
    elif statements:
        statements.append(f"ANALYZE {TABLE}")
    return statements


async def run(args: argparse.Namespace) -> int:
    name = f"window_bench_{uuid.uuid4().hex[:10]}"
    url = database_url(args.url, name)
    plan = Plan(rows=args.rows, days=args.days, unvacuumed_hours=args.unvacuumed_hours, chunk=args.chunk)
    await autocommit(args.url, "SELECT 1")
    await autocommit(args.url, f'CREATE DATABASE "{name}"')
    print(f"database {name} on {make_url(args.url).host}:{make_url(args.url).port}")
    results: list[Result] = []
    by_statement: list[list[str]] = []
    evictor: Evictor | None = None
    try:
        await asyncio.to_thread(upgrade, url)
        print(f"loading {plan.rows:,} rows over {plan.days:g} days ending {plan.end.isoformat()} "
              f"(last {plan.unvacuumed_hours:g} h = {plan.rows - plan.head_rows:,} rows loaded after VACUUM)")
        started = time.perf_counter()
        timings = await load(url, plan)
        total_load = time.perf_counter() - started
        print()
        print_table(["load step", "seconds"], [[k, f"{v:.1f}"] for k, v in timings.items()] +
                    [["total", f"{total_load:.1f}"]], "lr")

        if args.evict:
            evictor = Evictor(url)
            await evictor.setup()
            if evictor.unavailable:
                print(f"\nno eviction ({evictor.unavailable}): the 'evicted' column stays empty")
                await evictor.close()
                evictor = None
            else:
                print("\neviction available: pg_prewarm filler + posix_fadvise(DONTNEED) on the files of "
                      f"{TABLE}, {SCORES} (if present) and their indexes")

        now = plan.end
        print()
        print(f'rows per deployment and version ("now" = end of data = {now.isoformat()}):')
        print_table(
            ["deployment", "version", "last 1 h", "last 24 h", "all"],
            [[d, v, f"{h1:,}", f"{h24:,}", f"{n:,}"] for d, v, h1, h24, n in await profile(url, now)],
            "llrrr",
        )
        scores = await count_scores(url)
        if scores is not None:
            print(f"{SCORES}: {scores:,} rows (one per scored call)")

        cases = [
            Case("1 h", "v2", now - timedelta(hours=1)),
            Case("1 h", "v3", now - timedelta(hours=1)),
            Case("24 h", "v2", now - timedelta(hours=24)),
            Case("24 h", "v3", now - timedelta(hours=24)),
        ]
        covering_now = vacuumed_now = False
        for key, label, covering, vacuumed in STATES:
            if key not in args.states:
                continue
            print()
            print(f"=== state {key}: {label} ===")
            statements = transition(covering_now, vacuumed_now, covering, vacuumed)
            covering_now, vacuumed_now = covering, vacuumed_now or vacuumed
            if statements:
                started = time.perf_counter()
                await autocommit_bulk(url, statements)
                print(f"  prepared in {time.perf_counter() - started:.1f} s: " + "; ".join(statements))
            print_state(await describe(url))
            all_plans = args.plans == "all"
            state_results, left = await measure(
                url, f"{key}. {label}", cases, args.runs, evictor, composite_only=key in args.composite_only,
                all_plans=all_plans,
            )
            if left:
                print(f"  {TABLE}/{SCORES} pages left in shared_buffers after each eviction: {sorted(set(left))}")
            results.extend(state_results)
            for result in state_results:
                if not all_plans and (result.case.version, result.case.window) != ("v2", "1 h"):
                    continue
                for kind, lines in result.plans.items():
                    print()
                    print(f"--- EXPLAIN (ANALYZE, BUFFERS), state {key}, {result.case.label}, {kind} ---")
                    for line in lines:
                        print(line)
            if any(len(r.statements) > 1 for r in state_results):
                last_state = key == [k for k, *_ in STATES if k in args.states][-1]
                windows = {"1 h", "24 h"} if all_plans else ({"1 h"} if last_state else set())
                by_statement += await statement_timings(url, state_results, args.runs, windows)
        if results:
            print()
            print("=== what window_stats sends (PostgreSQL), as captured from the engine ===")
            print(_STATEMENT.get("text", "(not captured)"))

        print()
        print(f"=== Store.window_stats timings (ms), {plan.rows:,} rows, deployment support-bot "
              f"(v2 = stable, v3 = 25 % canary), {args.runs} warm runs ===")
        print("evicted = first call on a new connection after evicting the tables and their indexes from "
              "shared_buffers and the OS page cache;")
        print("new conn = first call on a new connection (no prepared statement), data cached; "
              "warm = the same pooled connection again")
        rows = []
        for result in results:
            warm = result.warm_ms
            rows.append([
                result.state, result.case.window, result.case.version, f"{result.rows:,}",
                "-" if result.evicted_ms is None else f"{result.evicted_ms:.1f}",
                f"{result.cold_ms:.1f}", f"{min(warm):.1f}", f"{statistics.median(warm):.1f}", f"{max(warm):.1f}",
                result.access,
            ])
        print_table(
            ["index state", "window", "ver", "requests", "evicted", "new conn", "warm min", "warm med", "warm max",
             "access path"],
            rows, "lllrrrrrrl",
        )
        print()
        print(f"target: 1-hour window under {TARGET_MS:.0f} ms (worst over both versions)")
        verdict = []
        for key, label, _, _ in STATES:
            hour = [r for r in results if r.state.startswith(key + ".") and r.case.window == "1 h"]
            if not hour:
                continue
            evicted = [r.evicted_ms for r in hour if r.evicted_ms is not None]
            new_conn = max(r.cold_ms for r in hour)
            warm_median = max(statistics.median(r.warm_ms) for r in hour)
            worst = max([new_conn, warm_median, *evicted])
            verdict.append([
                f"{key}. {label}", f"{max(evicted):.1f}" if evicted else "-", f"{new_conn:.1f}", f"{warm_median:.1f}",
                "MET" if worst < TARGET_MS else "NOT MET",
            ])
        print_table(["index state", "evicted", "new conn", "warm med", "< 200 ms"], verdict, "lrrrl")

        if by_statement:
            print()
            print(f"=== statement by statement, support-bot v2: each statement window_stats sent, and two rewrites of "
                  f"statement 2, alone on one connection ({args.runs} runs; EXPLAIN ANALYZE execution time) ===")
            print_table(["index state", "window", "statement", "min ms", "median ms", "EXPLAIN exec", "access path",
                         "same result"], by_statement, "lllrrrll")
    finally:
        if evictor is not None:
            await evictor.close()
        if args.keep:
            print(f"\nkept database: {url}")
        else:
            await autocommit(args.url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            print(f"\ndropped database {name}")
    return 0



async def autocommit_bulk(url: str, statements: list[str]) -> None:
    engine = bulk_engine(url)
    try:
        async with engine.connect() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL,
                        help=f"an existing database on the server; the throwaway one is created next to it "
                        f"(default {DEFAULT_URL})")
    parser.add_argument("--rows", type=int, default=10_000_000, help="request records to load (default 10,000,000)")
    parser.add_argument("--days", type=float, default=30.0, help="span of the records, days (default 30)")
    parser.add_argument("--unvacuumed-hours", type=float, default=24.0,
                        help="newest hours loaded after the VACUUM, i.e. not all-visible (default 24)")
    parser.add_argument("--runs", type=int, default=10, help="warm runs per case (default 10)")
    parser.add_argument("--chunk", type=int, default=1_000_000, help="rows per INSERT statement (default 1,000,000)")
    parser.add_argument("--states", default="abcd", help="index states to measure, subset of abcd (default abcd)")
    parser.add_argument("--no-evict", dest="evict", action="store_false",
                        help="skip the evicted cold calls (they need superuser, pg_prewarm, pg_buffercache and "
                        "read access to the data directory; skipped with a note when unavailable)")
    parser.add_argument("--composite-only", default="ad",
                        help="states in which to also EXPLAIN with only the (deployment, version, created_at) index "
                        "(ix_request_records_created dropped in a rolled-back transaction) (default ad)")
    parser.add_argument("--plans", choices=["key", "all"], default="key",
                        help="key (default): the 1-hour plans of v2 per state, with only the composite index for "
                        "statement 1, and the rewrites' 1-hour plans in the last state; all: every case, window, "
                        "version, plus plans right after an eviction")
    parser.add_argument("--keep", action="store_true", help="do not drop the database (it ends in state d)")
    parser.add_argument("--smoke", action="store_true",
                        help="a check that the script works, in seconds: 20,000 rows over 2 days, 2 runs, no "
                        "eviction")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.days, args.unvacuumed_hours, args.runs = 20_000, 2.0, 6.0, 2
        args.chunk, args.evict = 10_000, False
    if not args.url.startswith("postgresql"):
        parser.error("--url must be a PostgreSQL URL (postgresql+asyncpg://...)")
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
