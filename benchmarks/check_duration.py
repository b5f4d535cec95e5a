"""How long a rollout check's evidence takes on PostgreSQL for a big stage.

    python benchmarks/check_duration.py --url postgresql://postgres@127.0.0.1:5432/test

In a throwaway database on that server (dropped at the end): applies the
migrations, bulk-loads --calls request records of one deployment's current
stage (default 1,000,000 calls from --users 100,000 users, stable at 95 %,
canary at 5 % by user, 1 % errors, lognormal latency and cost, a quality
score on ~25 % of answered calls from feedback, an evaluator or the judge)
with COPY, plus an hour of stable calls before the stage (the latency
baseline); builds the aggregates the record writer would have kept (the
minute sums, then the stage as a rollout change opens it: thresholds from the
baseline, per-user sums), then VACUUM ANALYZE. It then times
`Store.stage_evidence` — what a check reads: the per-user sums of both
versions and of each quality source — through the project's own engine, on a
new connection and then --runs times warm, and prints the figures and the
evidence's headline numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.config import DatabaseSettings
from gateway.migrate import upgrade
from gateway.policy import RolloutPolicy
from gateway.store import Store, create_engine
from gateway.store.aggregates import backfill_minutes, open_stage

COLUMNS = ("id", "created_at", "deployment", "version", "user_hash", "provider", "upstream_model", "stream",
           "status", "http_status", "error_kind", "latency_ms", "ttft_ms", "prompt_tokens", "completion_tokens",
           "cost_usd", "quality", "uncached_cost_usd")


def rows(count: int, users: int, start: datetime, seconds: float, rng: random.Random, *,
         stable_only: bool = False) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Request records and their quality scores, in time order."""
    scores = []
    records = []
    for index in range(count):
        user = rng.randrange(users)
        canary = not stable_only and user % 20 == 0
        version = "v2" if canary else "v1"
        at = start + timedelta(seconds=seconds * index / count)
        error = rng.random() < 0.01
        quality = None
        record_id = uuid.uuid4().hex
        if not error and rng.random() < 0.25:
            quality = float(rng.random() < 0.8)
            scores.append((record_id + "-s", record_id, rng.choice(("feedback", "evaluator:json", "judge")),
                           quality, None, None, at))
        cost = None if error else rng.lognormvariate(-6.5, 0.5)
        records.append((record_id, at, "support-bot", version, f"{user:032x}", "openai", "gpt-4o-mini", False,
                        "error" if error else "ok", 502 if error else 200, "upstream_error" if error else None,
                        rng.lognormvariate(7.0, 0.5), None, 100, 50, cost, quality,
                        None if cost is None else cost * 1.2))
    return records, scores


async def load(url: str, calls: int, users: int, stage_start: datetime) -> None:
    connection = await asyncpg.connect(url)
    try:
        rng = random.Random(7)
        before, _ = rows(max(calls // 24, 1000), users, stage_start - timedelta(hours=1), 3600, rng,
                         stable_only=True)
        await connection.copy_records_to_table("request_records", records=before, columns=COLUMNS)
        batch = 200_000
        for first in range(0, calls, batch):
            size = min(batch, calls - first)
            records, scores = rows(size, users, stage_start + timedelta(seconds=first * 0.5), size * 0.5, rng)
            await connection.copy_records_to_table("request_records", records=records, columns=COLUMNS)
            await connection.copy_records_to_table(
                "quality_scores", records=scores,
                columns=("id", "request_id", "source", "score", "comment", "cost_usd", "created_at"))
    finally:
        await connection.close()


async def aggregate(url: str, stage_start: datetime) -> None:
    """The aggregates as the writer and a rollout change would have made them, in SQL over the loaded rows."""
    store = Store(create_engine(url, DatabaseSettings(statement_timeout=3600, pool_timeout=30)))
    try:
        async with store.engine.begin() as connection:
            for statement in backfill_minutes(postgresql=True):
                await connection.execute(statement)
            await open_stage(connection, store.dialect, deployment="support-bot", started_at=stage_start,
                             stable="v1", canary="v2", policy=RolloutPolicy())
        async with store.engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.exec_driver_sql("VACUUM ANALYZE")
    finally:
        await store.close()


async def measure(url: str, runs: int, stage_start: datetime, until: datetime) -> None:
    policy = RolloutPolicy()
    store = Store(create_engine(url, DatabaseSettings(statement_timeout=120, pool_timeout=30)))
    try:
        timings = []
        evidence = None
        for _ in range(runs + 1):
            started = time.perf_counter()
            evidence = await store.stage_evidence(deployment="support-bot", stable="v1", canary="v2",
                                                  since=stage_start, until=until, policy=policy)
            timings.append(time.perf_counter() - started)
            if len(timings) == 1:
                await store.engine.dispose()  # the first timing is on a new connection; the rest share one
    finally:
        await store.close()
    assert evidence is not None
    print(f"first (new connection): {timings[0] * 1000:,.0f} ms")
    warm = timings[1:]
    print(f"warm ×{len(warm)}: min {min(warm) * 1000:,.0f} ms, median {statistics.median(warm) * 1000:,.0f} ms, "
          f"max {max(warm) * 1000:,.0f} ms")
    for name, arm in (("stable", evidence.stable), ("canary", evidence.canary)):
        print(f"{name}: {arm.users:,} users, {arm.calls:,} calls, error rate {arm.errors.ratio:.4f}, "
              f"quality {arm.quality.ratio:.3f} over {int(arm.quality.x):,} scored, sources {sorted(arm.sources)}")
    print(f"latency thresholds: {evidence.latency}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--smoke", action="store_true",
                        help="a check that the script works, in seconds: 20,000 calls from 2,000 users, one run")
    args = parser.parse_args()
    if args.smoke:
        args.calls, args.users, args.runs = 20_000, 2_000, 1
    name = f"check_bench_{uuid.uuid4().hex[:8]}"
    base = args.url.rsplit("/", 1)[0]

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(args.url)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = f"{base}/{name}"
    try:
        upgrade(url.replace("postgresql://", "postgresql+asyncpg://", 1))
        stage_start = datetime.now(UTC) - timedelta(days=7)
        started = time.perf_counter()
        asyncio.run(load(url, args.calls, args.users, stage_start))
        asyncio.run(aggregate(url.replace("postgresql://", "postgresql+asyncpg://", 1), stage_start))
        print(f"loaded {args.calls:,} calls from {args.users:,} users in {time.perf_counter() - started:.0f} s")
        asyncio.run(measure(url.replace("postgresql://", "postgresql+asyncpg://", 1), args.runs, stage_start,
                            datetime.now(UTC)))
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
