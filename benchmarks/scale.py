"""A day of traffic at internet scale on PostgreSQL: what a check, compare, the time series and retention cost.

    python benchmarks/scale.py                        # 24 h at 1,000 calls/s: 86.4 M records, 1 M users
    python benchmarks/scale.py --rate 100             # a tenth of the records, the same users and minutes
    python benchmarks/scale.py --smoke                # seconds: a check that the script works

In a database of its own on the server of --url (created, dropped at the end
unless --keep), migrated to the newest schema (partitioned tables), it:

1. declares deployment support-bot (stable v1) and loads an hour of stable
   calls before the stage (the latency baseline) at --rate;
2. starts canary v2 at 5 % through the store, as the admin API does: the
   stage opens and its latency thresholds come from the baseline;
3. generates the stage: --hours of calls at --rate from --users users (a
   user's calls all go to one version: 5 % of users on the canary), 1 %
   errors, 0.5 % cancelled by the client, 40 % streamed (time to first
   token), lognormal latency and tokens, a cost from the tokens, one quality
   score on 10 % of answered calls (feedback, an evaluator or the judge), and
   loads it with COPY: the records, the scores, and the aggregates as the
   record writer would have kept them (minute sums and latency histograms,
   the stage's per-user sums), computed with numpy, and the stage's version
   sums built from its per-user sums and the hourly histograms from the
   minute ones in SQL; then VACUUM ANALYZE;
4. times, warm (--runs times, one pooled connection: min / median) and cold
   (a new connection after every relation of the database was pushed out of
   shared_buffers with pg_prewarm of a filler table and out of the OS page
   cache with posix_fadvise; needs superuser and the data directory readable,
   i.e. running on the database host as root or postgres; skipped otherwise):
   a check's evidence (`Store.stage_evidence`), `compare` over 1 h and 24 h
   (`Store.window_stats` for each version, what `ControlPlane.compare`
   calls), `/timeseries` over 24 h at the dashboard's 12-minute step;
5. measures the record writer (`Store.insert_batch`, batches of 500, with the
   aggregates) for --writer-seconds: rows per second and batch latency;
6. runs the storage upkeep with `retention.records: 1d` on a clock set to
   tomorrow 00:00 UTC: yesterday's partition goes whole, its minute sums in
   batches; timed, with what it removed;
7. prints every figure with the table sizes (before retention).

Record ids are time-ordered (as UUIDv7 would be), so the key index grows at
its end. Disk: about 400 bytes per record with its indexes and aggregates
(36 GB at full size, measured; check `df -h`). The full size took 25 minutes
on a 2-core machine (the load 23 of them). Run from the project root with the
project's virtualenv.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
from prometheus_client import CollectorRegistry
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import print_table
from gateway import rollout
from gateway.analysis.histogram import GAMMA
from gateway.config import DatabaseSettings, RetentionSettings
from gateway.maintenance import Maintenance
from gateway.metrics import Metrics
from gateway.migrate import upgrade
from gateway.models import Deployment, RequestRecord, RolloutEvent, RolloutState, Version
from gateway.policy import RolloutPolicy
from gateway.store import Store, create_engine
from gateway.store.aggregates import Stage, backfill_hours, version_sums

DEPLOYMENT = "support-bot"
RECORD_COLUMNS = ("id", "created_at", "deployment", "version", "user_hash", "provider", "upstream_model", "stream",
                  "status", "http_status", "error_kind", "latency_ms", "ttft_ms", "prompt_tokens",
                  "completion_tokens", "cost_usd", "quality", "api", "uncached_cost_usd")
SCORE_COLUMNS = ("id", "request_id", "source", "score", "comment", "cost_usd", "created_at")
SOURCES = ("feedback", "evaluator:json", "judge")
MINUTE_FIELDS = ("requests", "errors", "scored", "quality_sum", "priced", "cost_sum", "prompt_calls",
                 "prompt_tokens", "completion_calls", "completion_tokens")
USER_FIELDS = ("calls", "errors", "answered", "slow_gate", "slow_reference", "slow_rollback", "priced", "cost",
               "actual_cost", "scored", "quality")
CHUNK = 200_000
LOG_GAMMA = math.log(GAMMA)
# Histogram buckets from 0.01 ms (bucket -233) up to far beyond any latency.
_LOWEST, _SPAN = -240, 2000
POLICY = RolloutPolicy()


class Generator:
    """Calls in time order, and the aggregates the writer would keep for them, accumulated in numpy arrays."""

    def __init__(self, *, start: datetime, seconds: float, rate: float, users: int, seed: int) -> None:
        self.start = start.replace(second=0, microsecond=0)
        self.minutes = int(seconds // 60) + 2
        self.rate = rate
        self.users = users
        self.rng = np.random.default_rng(seed)
        self.sequence = 0
        self.minute_sums = np.zeros((2, self.minutes, len(MINUTE_FIELDS)))
        self.histograms: dict[tuple[str, int, int, int], int] = {}
        self.minute_sources = np.zeros((2, self.minutes, len(SOURCES), 2))
        self.user_sums: np.ndarray | None = None
        self.user_sources: np.ndarray | None = None
        self.stage: tuple[datetime, float, float, float | None] | None = None
        self.records = 0

    def judge(self, started_at: datetime, reference: float, gate: float, rollback: float | None) -> None:
        """From now on, calls count in the stage started at `started_at`, with these latency thresholds."""
        self.stage = (started_at, reference, gate, rollback)
        self.user_sums = np.zeros((self.users, len(USER_FIELDS)))
        self.user_sources = np.zeros((self.users, len(SOURCES), 2))

    def chunk(self, first: datetime, count: int, *, stable_only: bool) -> tuple[list[tuple[Any, ...]],
                                                                          list[tuple[Any, ...]]]:
        """`count` calls from `first` on at the rate: record rows and score rows for COPY."""
        rng = self.rng
        offsets = (np.arange(count) + rng.random(count)) / self.rate
        users = rng.integers(0, self.users, count)
        canary = np.zeros(count, dtype=bool) if stable_only else users % 20 == 0
        status = rng.choice(3, count, p=(0.985, 0.01, 0.005))  # ok, error, client_cancelled
        ok, error, counted = status == 0, status == 1, status != 2
        latency = rng.lognormal(7.0, 0.5, count) * np.where(canary, 0.97, 1.0)
        streamed = rng.random(count) < 0.4
        ttft = np.where(streamed & ok, rng.lognormal(5.5, 0.4, count), np.nan)
        prompt = rng.integers(50, 2000, count)
        completion = np.where(ok, rng.integers(20, 600, count), 0)
        cost = np.where(ok, (prompt * 0.15 + completion * 0.6) / 1e6, np.nan)
        uncached = cost * 1.1
        scored = ok & (rng.random(count) < 0.10)
        source = rng.integers(0, 3, count)
        quality = np.where(scored, np.round(rng.beta(8, 2, count), 3), np.nan)
        minute = ((first - self.start).total_seconds() + offsets) // 60
        minute = minute.astype(np.int64)
        version = canary.astype(np.int64)

        sums = np.stack([counted, error, scored & counted, np.nan_to_num(quality) * counted,
                         ok & counted, np.nan_to_num(cost) * counted, counted, prompt * counted,
                         counted, completion * counted], axis=1).astype(float)
        np.add.at(self.minute_sums, (version, minute), sums)  # type: ignore[arg-type]
        for metric, values, where in (("latency", latency, ok), ("ttft", ttft, ok & streamed)):
            buckets = np.ceil(np.log(np.maximum(values[where], 0.01)) / LOG_GAMMA).astype(np.int64)
            # One integer per (version, minute, bucket): a 1-D unique is far quicker than a row-wise one.
            keys, counts = np.unique((version[where] * self.minutes + minute[where]) * _SPAN + buckets - _LOWEST,
                                     return_counts=True)
            for key, n in zip(keys.tolist(), counts.tolist(), strict=True):
                slot, bucket = divmod(key, _SPAN)
                v, m = divmod(slot, self.minutes)
                entry = (metric, v, m, bucket + _LOWEST)
                self.histograms[entry] = self.histograms.get(entry, 0) + n
        np.add.at(self.minute_sources, (version[scored], minute[scored], source[scored], 0), 1)
        np.add.at(self.minute_sources, (version[scored], minute[scored], source[scored], 1), quality[scored])
        if self.stage is not None:
            assert self.user_sums is not None and self.user_sources is not None
            _, reference, gate, rollback = self.stage
            in_stage = counted
            neutral = np.nan_to_num(uncached)
            user_rows = np.stack([
                np.ones(count), error, ok, ok & (latency > gate), ok & (latency > reference),
                ok & (latency > rollback) if rollback is not None else np.zeros(count), ok, neutral,
                np.nan_to_num(cost), scored, np.nan_to_num(quality)], axis=1).astype(float)
            np.add.at(self.user_sums, users[in_stage], user_rows[in_stage])
            np.add.at(self.user_sources, (users[scored], source[scored], 0), 1)
            np.add.at(self.user_sources, (users[scored], source[scored], 1), quality[scored])

        base = first.timestamp()
        ids = [f"{self.sequence + index:024x}" for index in range(count)]
        self.sequence += count
        self.records += count
        times = [datetime.fromtimestamp(base + offset, UTC) for offset in offsets.tolist()]
        names = np.where(canary, "v2", "v1").tolist()
        statuses = np.array(["ok", "error", "client_cancelled"])[status].tolist()
        hashes = [f"{user:032x}" for user in users.tolist()]
        records = list(zip(
            ids, times, [DEPLOYMENT] * count, names, hashes, ["openai"] * count, ["gpt-4o-mini"] * count,
            streamed.tolist(), statuses, np.where(ok, 200, np.where(error, 502, 499)).tolist(),
            [None if s != "error" else "upstream_error" for s in statuses], latency.tolist(),
            [None if math.isnan(value) else value for value in ttft.tolist()], prompt.tolist(),
            completion.tolist(), [None if math.isnan(value) else value for value in cost.tolist()],
            [None if math.isnan(value) else value for value in quality.tolist()], ["chat"] * count,
            [None if math.isnan(value) else value for value in uncached.tolist()], strict=True))
        scores = [(ids[index] + "-s", ids[index], SOURCES[source[index]], float(quality[index]), None, None,
                   times[index] + timedelta(seconds=30)) for index in np.flatnonzero(scored).tolist()]
        return records, scores

    def minute_rows(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """minute_stats, minute_latency and minute_sources rows of everything generated so far."""
        stats, latency, sources = [], [], []
        for v, name in ((0, "v1"), (1, "v2")):
            for m in np.flatnonzero(self.minute_sums[v].any(axis=1)).tolist():
                row = self.minute_sums[v, m]
                at = self.start + timedelta(minutes=m)
                stats.append((DEPLOYMENT, name, at, *(int(value) if field not in ("quality_sum", "cost_sum")
                                                      else float(value)
                                                      for field, value in zip(MINUTE_FIELDS, row, strict=True))))
                for s, source in enumerate(SOURCES):
                    if self.minute_sources[v, m, s, 0]:
                        sources.append((DEPLOYMENT, name, at, source, int(self.minute_sources[v, m, s, 0]),
                                        float(self.minute_sources[v, m, s, 1])))
        for (metric, v, m, b), n in self.histograms.items():
            latency.append((DEPLOYMENT, ("v1", "v2")[v], self.start + timedelta(minutes=m), metric, b, n))
        return stats, latency, sources

    def user_rows(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """stage_user_sums and stage_source_sums rows."""
        assert self.stage is not None and self.user_sums is not None and self.user_sources is not None
        started = self.stage[0]
        users, sources = [], []
        for user in np.flatnonzero(self.user_sums[:, 0]).tolist():
            row = self.user_sums[user]
            version = "v2" if user % 20 == 0 else "v1"
            values = [float(value) if field in ("cost", "actual_cost", "quality") else int(value)
                      for field, value in zip(USER_FIELDS, row.tolist(), strict=True)]
            users.append((DEPLOYMENT, started, version, f"{user:032x}", *values))
            for s, source in enumerate(SOURCES):
                if self.user_sources[user, s, 0]:
                    sources.append((DEPLOYMENT, started, version, f"{user:032x}", source,
                                    int(self.user_sources[user, s, 0]), float(self.user_sources[user, s, 1])))
        return users, sources


async def copy(connection: asyncpg.Connection, table: str, rows: list[tuple[Any, ...]],
               columns: tuple[str, ...]) -> None:
    if rows:
        await connection.copy_records_to_table(table, records=rows, columns=columns)


async def load(url: str, store: Store, args: argparse.Namespace, now: datetime) -> Generator:
    stage_start = (now - timedelta(hours=args.hours)).replace(second=0, microsecond=0)
    baseline_start = stage_start - timedelta(hours=1)
    generator = Generator(start=baseline_start, seconds=(now - baseline_start).total_seconds(), rate=args.rate,
                          users=args.users, seed=7)
    versions = {name: Version(name, "openai", "gpt-4o-mini", system_prompt=f"You are {name}.")
                for name in ("v1", "v2")}
    declared = Deployment(DEPLOYMENT, versions, RolloutState(stable="v1"), policy=POLICY)
    await store.insert_declared(
        deployments={DEPLOYMENT: declared}, policies={DEPLOYMENT: POLICY.model_dump(mode="json")},
        created_events={DEPLOYMENT: RolloutEvent(deployment=DEPLOYMENT, action="deployment_created",
                                                 actor="benchmark", before=None, after=None)},
        now=baseline_start)
    await store.ensure_partitions(today=baseline_start.date(), days_ahead=(now.date() - baseline_start.date()).days)
    connection = await asyncpg.connect(url)
    try:
        # The baseline, and its minute sums: the stage's thresholds are read from them.
        await load_span(connection, generator, baseline_start, stage_start, args.rate, stable_only=True)
        stats, latency, sources = generator.minute_rows()
        await copy(connection, "minute_stats", stats, ("deployment", "version", "minute", *MINUTE_FIELDS))
        await copy(connection, "minute_latency", latency,
                   ("deployment", "version", "minute", "metric", "bucket", "calls"))
        await copy(connection, "minute_sources", sources,
                   ("deployment", "version", "minute", "source", "scores", "score_sum"))
        deployment = await store.get_deployment(DEPLOYMENT)
        assert deployment is not None
        state = rollout.start_canary(deployment, version="v2", percent=None, stages=POLICY.stages, now=stage_start)
        await store.apply_rollout(expected_revision=deployment.rollout.revision, state=state,
                                  event=RolloutEvent(deployment=DEPLOYMENT, action="canary_started",
                                                     actor="benchmark", before=None, after=None, at=stage_start))
        row = await connection.fetchrow("SELECT started_at, reference_ms, gate_ms, rollback_ms FROM rollout_stages")
        assert row is not None and row["gate_ms"] is not None, "the baseline did not set the thresholds"
        generator.judge(row["started_at"], row["reference_ms"], row["gate_ms"], row["rollback_ms"])
        await load_span(connection, generator, stage_start, now, args.rate, stable_only=False)
        # The aggregates: the baseline's minute rows again with the stage's (replaced whole).
        await connection.execute("TRUNCATE minute_stats, minute_latency, minute_sources")
        stats, latency, sources = generator.minute_rows()
        await copy(connection, "minute_stats", stats, ("deployment", "version", "minute", *MINUTE_FIELDS))
        await copy(connection, "minute_latency", latency,
                   ("deployment", "version", "minute", "metric", "bucket", "calls"))
        await copy(connection, "minute_sources", sources,
                   ("deployment", "version", "minute", "source", "scores", "score_sum"))
        users, user_sources = generator.user_rows()
        await copy(connection, "stage_user_sums", users, ("deployment", "started_at", "version", "user_hash",
                                                          *USER_FIELDS))
        await copy(connection, "stage_source_sums", user_sources,
                   ("deployment", "started_at", "version", "user_hash", "source", "scores", "score_sum"))
        # The version sums and the stage's users, from the per-user sums (what the writer's changes add up to);
        # the hourly histograms from the minute ones.
        async with store.engine.begin() as transaction:
            for statement in version_sums(DEPLOYMENT, Stage(row["started_at"], stable="v1", canary="v2")):
                await transaction.execute(statement)
            await transaction.execute(text("TRUNCATE hour_latency"))
            await transaction.execute(backfill_hours(postgresql=True))
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()
    return generator


async def load_span(connection: asyncpg.Connection, generator: Generator, start: datetime, end: datetime,
                    rate: float, *, stable_only: bool) -> None:
    total = int((end - start).total_seconds() * rate)
    done = 0
    started = time.perf_counter()
    while done < total:
        count = min(CHUNK, total - done)
        first = start + timedelta(seconds=done / rate)
        records, scores = generator.chunk(first, count, stable_only=stable_only)
        await copy(connection, "request_records", records, RECORD_COLUMNS)
        await copy(connection, "quality_scores", scores, SCORE_COLUMNS)
        done += count
        elapsed = time.perf_counter() - started
        print(f"  {done:,} / {total:,} records ({done / elapsed:,.0f}/s)", flush=True)


class Evictor:
    """Pushes every relation of the database out of shared_buffers and out of the OS page cache."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.data_directory = ""
        self.unavailable: str | None = None

    async def setup(self) -> None:
        connection = await asyncpg.connect(self.url)
        try:
            self.data_directory = await connection.fetchval("SELECT current_setting('data_directory')")
            if not os.access(Path(self.data_directory) / "base", os.R_OK | os.X_OK):
                self.unavailable = f"cannot read {self.data_directory} (run on the database host as root/postgres)"
                return
            await connection.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
            buffers = int(await connection.fetchval("SELECT setting::bigint FROM pg_settings "
                                                    "WHERE name = 'shared_buffers'"))
            pages = min(6 * buffers, 2 * 1024**3 // 8192)
            await connection.execute(
                "CREATE TABLE bench_filler WITH (fillfactor = 100) AS SELECT g AS id, repeat(md5(g::text), 3) AS pad "
                f"FROM generate_series(1, {pages * 60}) AS g")
        except (asyncpg.PostgresError, OSError) as exc:
            self.unavailable = f"{type(exc).__name__}: {exc}"
        finally:
            await connection.close()

    async def evict(self) -> None:
        connection = await asyncpg.connect(self.url)
        try:
            await connection.execute("SELECT pg_prewarm('bench_filler', 'buffer')")
            await connection.execute("CHECKPOINT")
            paths = await connection.fetch(
                "SELECT pg_relation_filepath(oid) AS path FROM pg_class WHERE relkind IN ('r', 'i', 't') "
                "AND relname <> 'bench_filler' AND relfilenode <> 0 AND relnamespace IN "
                "(SELECT oid FROM pg_namespace WHERE nspname IN ('public', 'pg_toast'))")
        finally:
            await connection.close()
        for row in paths:
            base = Path(self.data_directory) / row["path"]
            for path in [base, *base.parent.glob(base.name + ".*"), *base.parent.glob(base.name + "_*")]:
                try:
                    descriptor = os.open(path, os.O_RDONLY)
                except OSError:
                    continue
                try:
                    os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(descriptor)


async def timed(url: str, runs: int, evictor: Evictor, call: Callable[[Store], Awaitable[object]]) -> dict[str, Any]:
    """Cold (a new connection after eviction) and warm (one connection, `runs` times) timings in ms."""
    settings = DatabaseSettings(statement_timeout=600, pool_timeout=60, pool_size=1, max_overflow=0)
    cold = None
    if evictor.unavailable is None:
        await evictor.evict()
        store = Store(create_engine(url, settings))
        try:
            started = time.perf_counter()
            await call(store)
            cold = (time.perf_counter() - started) * 1000
        finally:
            await store.close()
    store = Store(create_engine(url, settings))
    try:
        await call(store)  # the connection and its caches
        warm = []
        for _ in range(runs):
            started = time.perf_counter()
            await call(store)
            warm.append((time.perf_counter() - started) * 1000)
    finally:
        await store.close()
    return {"cold": cold, "warm_min": min(warm), "warm_median": statistics.median(warm)}


async def measure_writer(url: str, seconds: float, now: datetime, users: int) -> dict[str, float]:
    """Batches of 500 new calls of the stage written with their aggregates, one after another."""
    store = Store(create_engine(url, DatabaseSettings(statement_timeout=60, pool_timeout=30)))
    rng = np.random.default_rng(11)
    latencies, rows = [], 0
    try:
        deadline = time.perf_counter() + seconds
        sequence = 0
        while time.perf_counter() < deadline:
            batch = []
            for _ in range(500):
                user = int(rng.integers(0, users))
                sequence += 1
                batch.append(RequestRecord(
                    id=f"w{sequence:023x}", created_at=now + timedelta(milliseconds=sequence), deployment=DEPLOYMENT,
                    version="v2" if user % 20 == 0 else "v1", user_hash=f"{user:032x}", provider="openai",
                    upstream_model="gpt-4o-mini", stream=False, status="ok", http_status=200, error_kind=None,
                    latency_ms=float(rng.lognormal(7.0, 0.5)), ttft_ms=None, prompt_tokens=500,
                    completion_tokens=200, cost_usd=0.0002, uncached_cost_usd=0.00022))
            started = time.perf_counter()
            await store.insert_batch(records=batch, scores=[])
            latencies.append((time.perf_counter() - started) * 1000)
            rows += len(batch)
    finally:
        await store.close()
    total = sum(latencies) / 1000
    return {"rows_per_s": rows / total, "batch_p50_ms": statistics.median(latencies),
            "batch_p95_ms": sorted(latencies)[int(0.95 * (len(latencies) - 1))], "rows": rows}


async def sizes(url: str) -> list[tuple[str, int, int]]:
    """(table, rows (estimate), bytes with indexes) of every table, partitioned ones summed over partitions."""
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "WITH leaves AS (SELECT c.relname AS name, c.oid AS leaf FROM pg_class c WHERE c.relkind = 'r' "
            "  AND NOT c.relispartition AND c.relnamespace = 'public'::regnamespace "
            "UNION ALL SELECT c.relname, t.relid FROM pg_class c, pg_partition_tree(c.oid) t "
            "  WHERE c.relkind = 'p' AND c.relnamespace = 'public'::regnamespace AND t.isleaf) "
            "SELECT name AS relname, sum(GREATEST(p.reltuples, 0))::bigint AS rows, "
            "sum(pg_total_relation_size(leaf))::bigint AS bytes FROM leaves JOIN pg_class p ON p.oid = leaf "
            "WHERE name <> 'bench_filler' GROUP BY name ORDER BY bytes DESC")
    finally:
        await connection.close()
    return [(row["relname"], row["rows"] or 0, row["bytes"] or 0) for row in rows]


async def run(args: argparse.Namespace, url: str) -> None:
    engine_url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
    now = datetime.now(UTC).replace(microsecond=0)
    store = Store(create_engine(engine_url, DatabaseSettings(statement_timeout=3600, pool_timeout=60)))
    try:
        started = time.perf_counter()
        generator = await load(url, store, args, now)
        loading = time.perf_counter() - started
    finally:
        await store.close()
    print(f"loaded {generator.records:,} records ({args.rate:g}/s over {args.hours:g} h and the hour before) "
          f"from up to {args.users:,} users in {loading:,.0f} s")
    table_sizes = await sizes(url)
    evictor = Evictor(url)
    if not args.no_evict:
        await evictor.setup()
    else:
        evictor.unavailable = "--no-evict"
    stage_start = (now - timedelta(hours=args.hours)).replace(second=0, microsecond=0)

    async def check(store: Store) -> object:
        return await store.stage_evidence(deployment=DEPLOYMENT, stable="v1", canary="v2", since=stage_start,
                                          until=now, policy=POLICY)

    def compare(hours: float) -> Callable[[Store], Awaitable[object]]:
        async def call(store: Store) -> object:
            since = now - timedelta(hours=hours)
            return [await store.window_stats(deployment=DEPLOYMENT, version=version, since=since)
                    for version in ("v1", "v2")]
        return call

    async def series(store: Store) -> object:
        return await store.timeseries(deployment=DEPLOYMENT, since=now - timedelta(hours=24), step_s=720)

    results = {}
    for name, call in (("check (stage evidence)", check), ("compare 1 h", compare(1)), ("compare 24 h", compare(24)),
                       ("timeseries 24 h, 12 min step", series)):
        results[name] = await timed(engine_url, args.runs, evictor, call)
    probe = Store(create_engine(engine_url, DatabaseSettings(statement_timeout=600)))
    try:
        evidence = await probe.stage_evidence(deployment=DEPLOYMENT, stable="v1", canary="v2", since=stage_start,
                                              until=now, policy=POLICY)
        stats = await probe.window_stats(deployment=DEPLOYMENT, version="v1", since=now - timedelta(hours=24))
    finally:
        await probe.close()
    writer = await measure_writer(engine_url, args.writer_seconds, now, args.users)

    metrics = Metrics(CollectorRegistry())
    tomorrow = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    upkeep = Store(create_engine(engine_url, DatabaseSettings(statement_timeout=600, pool_timeout=60)))
    try:
        started = time.perf_counter()
        expired = await Maintenance(upkeep, RetentionSettings(records=86400.0, scores=86400.0), metrics,
                                    clock=lambda: tomorrow).run()
        retention = (time.perf_counter() - started) * 1000
    finally:
        await upkeep.close()

    print(f"\nstage: {evidence.stable.users:,} stable users ({evidence.stable.calls:,} calls), "
          f"{evidence.canary.users:,} canary users ({evidence.canary.calls:,} calls); thresholds {evidence.latency}")
    print(f"compare 24 h, stable: {stats.requests:,} calls, p95 {stats.p95_latency_ms:,.0f} ms, "
          f"error rate {stats.error_rate:.4f}")
    print(f"cold: {'a new connection after eviction' if evictor.unavailable is None else evictor.unavailable}\n")
    print_table(("operation", "cold ms", "warm min ms", "warm median ms"),
                [(name, f"{r['cold']:,.0f}" if r["cold"] is not None else "—", f"{r['warm_min']:,.1f}",
                  f"{r['warm_median']:,.1f}") for name, r in results.items()], "lrrr")
    print(f"\nwriter (insert_batch of 500 with the aggregates, {args.writer_seconds:g} s): "
          f"{writer['rows_per_s']:,.0f} rows/s, batch p50 {writer['batch_p50_ms']:,.1f} ms, "
          f"p95 {writer['batch_p95_ms']:,.1f} ms")
    print(f"retention run (records 1 d, clock at {tomorrow:%Y-%m-%d %H:%M} UTC): {retention:,.0f} ms; partitions "
          f"dropped {expired.partitions}, rows deleted {expired.rows}\n")
    print_table(("table", "rows", "size MB"),
                [(name, f"{rows:,}", f"{size / 1e6:,.1f}") for name, rows, size in table_sizes], "lrr")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="any database of the server; the benchmark makes its own")
    parser.add_argument("--rate", type=float, default=1000.0, help="calls per second")
    parser.add_argument("--hours", type=float, default=24.0, help="length of the stage")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--writer-seconds", type=float, default=30.0)
    parser.add_argument("--no-evict", action="store_true", help="skip the cold timings")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--smoke", action="store_true", help="seconds: 2 calls/s for 2 h from 500 users")
    args = parser.parse_args()
    if args.smoke:
        args = replace_args(args, rate=2.0, hours=2.0, users=500, runs=1, writer_seconds=1.0, no_evict=True)
    name = f"scale_bench_{uuid.uuid4().hex[:8]}"
    base = args.url.rsplit("/", 1)[0]

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(args.url)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    print(f"database {name} (dropped at the end unless --keep)", flush=True)
    url = f"{base}/{name}"
    # Stopped by a signal, the database (tens of GB at full size) is still dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    try:
        upgrade(url.replace("postgresql://", "postgresql+asyncpg://", 1))
        asyncio.run(run(args, url))
    finally:
        if args.keep:
            print(f"kept database {name}")
        else:
            asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def replace_args(args: argparse.Namespace, **changes: Any) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **changes})


if __name__ == "__main__":
    main()
