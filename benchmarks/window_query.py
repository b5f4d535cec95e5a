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
3. VACUUM ANALYZE, then loads the last --unvacuumed-hours hours of records
   with the indexes in place and only ANALYZEs them: recent rows are not yet
   all-visible in production either (with the default
   autovacuum_vacuum_insert_scale_factor of 0.2, autovacuum waits for ~2
   million new rows on a 10-million-row table, i.e. days at this rate), and
   that decides whether an index-only scan can skip the heap;
4. times `Store.window_stats` (the project's own engine and query, through
   asyncpg) for a 1-hour and a 24-hour window, for the largest version
   (support-bot's stable v2, ~45 % of all traffic) and the canary v3:
   one cold-ish call (a new engine and connection, first execution of the
   statement: no prepared statement, cold backend caches, and whatever the
   load left in the caches) and --runs warm calls (min / median / max);
5. prints `EXPLAIN (ANALYZE, BUFFERS)` of the very statement `window_stats`
   sent (captured from the engine, re-run with its parameters);
6. repeats 4-5 with the index states a migration could choose from:
     a. existing index (deployment, version, created_at), recent rows not vacuumed
     b. covering index (deployment, version, created_at) INCLUDE (status,
        latency_ms, ttft_ms, quality, cost_usd, prompt_tokens,
        completion_tokens) instead of it, recent rows not vacuumed
     c. covering index, after VACUUM (every page all-visible: best case)
     d. existing index, after VACUUM
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
CHECKPOINT after the load so that it does not run during the timings).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.config import DatabaseSettings
from gateway.migrate import upgrade
from gateway.store import Store, create_engine

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
TABLE = "request_records"
EXISTING_INDEX = "ix_request_records_deployment_version_created"
COVERING_INDEX = "ix_request_records_deployment_version_created_covering"
COVERING_DDL = (
    f"CREATE INDEX {COVERING_INDEX} ON {TABLE} (deployment, version, created_at) "
    "INCLUDE (status, latency_ms, ttft_ms, quality, cost_usd, prompt_tokens, completion_tokens)"
)
EXISTING_DDL = f"CREATE INDEX {EXISTING_INDEX} ON {TABLE} (deployment, version, created_at)"
TARGET_MS = 200.0

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


async def autocommit(url: str, *statements: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


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
        print(f"  {label}: rows {position:>10,}..{last:>10,}  {took:6.1f} s  ({(last - position + 1) / took:,.0f} rows/s)",
              flush=True)
        position = last + 1


async def load(url: str, plan: Plan) -> dict[str, float]:
    timings: dict[str, float] = {}
    engine = bulk_engine(url)
    try:
        async with engine.connect() as connection:
            constraints = (
                await connection.execute(
                    text(
                        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                        "WHERE conrelid = CAST(:table AS regclass) AND contype IN ('p', 'u')"
                    ),
                    {"table": TABLE},
                )
            ).all()
            constraint_names = {name for name, _ in constraints}
            indexes = [
                (name, definition)
                for name, definition in (
                    await connection.execute(
                        text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = :table ORDER BY indexname"),
                        {"table": TABLE},
                    )
                ).all()
                if name not in constraint_names
            ]
            print("migrated indexes on request_records (dropped for the load, rebuilt as defined):")
            for name, definition in constraints:
                print(f"  constraint {name}: {definition}")
            for name, definition in indexes:
                print(f"  {definition}")
            for name, _ in indexes:
                await connection.execute(text(f'DROP INDEX "{name}"'))
            for name, _ in constraints:
                await connection.execute(text(f'ALTER TABLE {TABLE} DROP CONSTRAINT "{name}"'))

            started = time.perf_counter()
            await insert_range(connection, plan, 1, plan.head_rows, "load")
            timings["insert (no indexes)"] = time.perf_counter() - started

            started = time.perf_counter()
            for name, definition in constraints:
                await connection.execute(text(f'ALTER TABLE {TABLE} ADD CONSTRAINT "{name}" {definition}'))
            for _, definition in indexes:
                await connection.execute(text(definition))
            timings["build indexes"] = time.perf_counter() - started

            started = time.perf_counter()
            await connection.execute(text(f"VACUUM (ANALYZE) {TABLE}"))
            timings["VACUUM ANALYZE"] = time.perf_counter() - started

            if plan.head_rows < plan.rows:
                started = time.perf_counter()
                await insert_range(connection, plan, plan.head_rows + 1, plan.rows, "recent (indexed, not vacuumed)")
                timings[f"insert last {plan.unvacuumed_hours:g} h (indexed)"] = time.perf_counter() - started
            started = time.perf_counter()
            await connection.execute(text(f"ANALYZE {TABLE}"))
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


@dataclass
class Result:
    state: str
    case: Case
    rows: int
    cold_ms: float
    warm_ms: list[float]
    plan: list[str]
    access: str


async def timed(store: Store, case: Case) -> tuple[float, int]:
    started = time.perf_counter()
    stats = await store.window_stats(deployment=case.deployment, version=case.version, since=case.since)
    return (time.perf_counter() - started) * 1000, stats.requests


async def measure(url: str, state: str, cases: list[Case], runs: int) -> list[Result]:
    settings = DatabaseSettings()  # the gateway's defaults: pool, 5 s statement timeout
    engine = create_engine(url, settings)
    store = Store(engine)
    captured: dict[str, Any] = {}

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if "percentile_cont" in statement:
            captured["statement"], captured["parameters"] = statement, parameters

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    results = []
    try:
        await store.ping()
        for case in cases:
            # Cold-ish: a new engine, connected first, so only the statement is timed.
            cold_store = Store(create_engine(url, settings))
            try:
                await cold_store.ping()
                cold_ms, rows = await timed(cold_store, case)
            finally:
                await cold_store.close()
            warm = []
            for _ in range(runs):
                took, _ = await timed(store, case)
                warm.append(took)
            plan = await explain(engine, captured["statement"], captured["parameters"])
            results.append(Result(state, case, rows, cold_ms, warm, plan, access_path(plan)))
    finally:
        await store.close()
    return results


async def explain(engine: AsyncEngine, statement: str, parameters: Any) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of exactly what window_stats sent, with its parameters."""
    async with engine.connect() as connection:
        rows = await connection.exec_driver_sql(
            "EXPLAIN (ANALYZE, BUFFERS) " + statement, tuple(parameters) if parameters else ()
        )
        return [row[0] for row in rows]


def access_path(plan: list[str]) -> str:
    for line in plan:
        stripped = line.strip().lstrip("->").strip()
        for node in ("Index Only Scan", "Bitmap Heap Scan", "Index Scan", "Parallel Seq Scan", "Seq Scan"):
            if stripped.startswith(node):
                name = stripped.split("  (")[0]
                fetches = next((l.strip() for l in plan if "Heap Fetches" in l), "")
                return name.replace(" on request_records", "") + (f" [{fetches}]" if fetches else "")
    return "?"


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
                        "SELECT c.relname, pg_relation_size(c.oid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
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
# Output
# --------------------------------------------------------------------------


def mb(value: int) -> str:
    return f"{value / 1024 / 1024:,.0f} MB"


def print_table(headers: list[str], rows: list[list[str]], align: str | None = None) -> None:
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    align = align or "l" * len(headers)

    def fmt(row: list[str]) -> str:
        return "  ".join(
            str(cell).ljust(width) if a == "l" else str(cell).rjust(width)
            for cell, width, a in zip(row, widths, align, strict=True)
        ).rstrip()

    print(fmt(headers))
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print(fmt(row))


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


STATES = [
    ("a", "existing index, recent rows not vacuumed", None),
    ("b", "covering index, recent rows not vacuumed", [COVERING_DDL, f"DROP INDEX {EXISTING_INDEX}", f"ANALYZE {TABLE}"]),
    ("c", "covering index, after VACUUM", [f"VACUUM (ANALYZE) {TABLE}"]),
    ("d", "existing index, after VACUUM", [EXISTING_DDL, f"DROP INDEX {COVERING_INDEX}", f"ANALYZE {TABLE}"]),
]


async def run(args: argparse.Namespace) -> int:
    name = f"window_bench_{uuid.uuid4().hex[:10]}"
    url = database_url(args.url, name)
    plan = Plan(rows=args.rows, days=args.days, unvacuumed_hours=args.unvacuumed_hours, chunk=args.chunk)
    await autocommit(args.url, "SELECT 1")
    await autocommit(args.url, f'CREATE DATABASE "{name}"')
    print(f"database {name} on {make_url(args.url).host}:{make_url(args.url).port}")
    results: list[Result] = []
    infos: dict[str, dict[str, Any]] = {}
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

        now = plan.end
        print()
        print(f'rows per deployment and version ("now" = end of data = {now.isoformat()}):')
        print_table(
            ["deployment", "version", "last 1 h", "last 24 h", "all"],
            [[d, v, f"{h1:,}", f"{h24:,}", f"{n:,}"] for d, v, h1, h24, n in await profile(url, now)],
            "llrrr",
        )

        cases = [
            Case("1 h", "v2", now - timedelta(hours=1)),
            Case("1 h", "v3", now - timedelta(hours=1)),
            Case("24 h", "v2", now - timedelta(hours=24)),
            Case("24 h", "v3", now - timedelta(hours=24)),
        ]
        for key, label, statements in STATES:
            if key not in args.states:
                continue
            print()
            print(f"=== state {key}: {label} ===")
            if statements:
                started = time.perf_counter()
                await autocommit_bulk(url, statements)
                print(f"  prepared in {time.perf_counter() - started:.1f} s: " + "; ".join(statements))
            infos[key] = await describe(url)
            print_state(infos[key])
            state_results = await measure(url, f"{key}. {label}", cases, args.runs)
            results.extend(state_results)
            for result in state_results:
                case = result.case
                print()
                print(f"--- EXPLAIN (ANALYZE, BUFFERS), state {key}, {case.deployment} {case.version}, "
                      f"{case.window} window ---")
                for line in result.plan:
                    print(line)
        if results:
            print()
            print("=== the statement window_stats sends (PostgreSQL) ===")
            engine = create_engine(url, DatabaseSettings())
            store = Store(engine)
            shown: dict[str, Any] = {}

            def capture(_c: Any, _cur: Any, statement: str, parameters: Any, _ctx: Any, _many: bool) -> None:
                if "percentile_cont" in statement:
                    shown["statement"], shown["parameters"] = statement, parameters

            event.listen(engine.sync_engine, "before_cursor_execute", capture)
            try:
                await store.window_stats(deployment="support-bot", version="v2", since=now - timedelta(hours=1))
            finally:
                await store.close()
            print(shown["statement"])
            print(f"parameters: {shown['parameters']!r}")

        print()
        print(f"=== Store.window_stats timings, {plan.rows:,} rows, deployment support-bot "
              f"(v2 = stable, v3 = 25 % canary), {args.runs} warm runs ===")
        rows = []
        for result in results:
            warm = result.warm_ms
            rows.append([
                result.state, result.case.window, result.case.version, f"{result.rows:,}",
                f"{result.cold_ms:.1f}", f"{min(warm):.1f}", f"{statistics.median(warm):.1f}", f"{max(warm):.1f}",
                result.access,
            ])
        print_table(
            ["index state", "window", "ver", "requests", "cold ms", "warm min", "warm med", "warm max", "access path"],
            rows, "lllrrrrrl",
        )
        print()
        print(f"target: 1-hour window under {TARGET_MS:.0f} ms (worst of cold and warm median, both versions)")
        verdict = []
        for key, label, _ in STATES:
            hour = [r for r in results if r.state.startswith(key + ".") and r.case.window == "1 h"]
            if not hour:
                continue
            worst = max(max(r.cold_ms, statistics.median(r.warm_ms)) for r in hour)
            verdict.append([f"{key}. {label}", f"{worst:.1f} ms", "MET" if worst < TARGET_MS else "NOT MET"])
        print_table(["index state", "1 h worst", "target"], verdict, "lrl")
    finally:
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
    parser.add_argument("--keep", action="store_true", help="do not drop the database (it ends in state d)")
    args = parser.parse_args(argv)
    if not args.url.startswith("postgresql"):
        parser.error("--url must be a PostgreSQL URL (postgresql+asyncpg://...)")
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
