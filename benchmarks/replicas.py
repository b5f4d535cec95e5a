"""Several replicas writing to one PostgreSQL: rows per second, write latency, connections, lock waits.

    python benchmarks/replicas.py                  # 1, then 2 writer processes, 30 s each
    python benchmarks/replicas.py --pgbouncer      # each also through PgBouncer in transaction mode
    python benchmarks/replicas.py --smoke          # seconds

A replica's record writer is `Store.insert_batch` in a loop: batches of
--batch new calls of a running stage (random users among --users, 5 % on
the canary), each written with its aggregates (minute sums, histograms,
per-user sums) in one transaction, under the stage's shared advisory lock.
Each writer process has its own engine, as each gateway replica (and each
worker of `serve --workers 2`) does, and writes as fast as the database
takes it: the highest rate the machine sustains. Meanwhile the parent
samples `pg_stat_activity` every 100 ms: the gateway's connections, and how
many of them wait for a lock (and which). Runs in a database of its own on
the server of --url, dropped at the end.

`--pgbouncer` measures each writer count twice: straight to the server, and
through a pgbouncer process started here on a free port in front of it
(`pool_mode = transaction`, the writers with `database.pooler:
transaction`). Connections are then the server's (pgbouncer's to
PostgreSQL). Needs the `pgbouncer` binary (Debian's package).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import free_port, print_table
from gateway import rollout
from gateway.config import DatabaseSettings
from gateway.migrate import upgrade
from gateway.models import Deployment, RequestRecord, RolloutEvent, RolloutState, Version
from gateway.policy import RolloutPolicy
from gateway.store import Store, create_engine

DEPLOYMENT = "support-bot"
POLICY = RolloutPolicy()


async def prepare(url: str) -> None:
    """The deployment and its running canary: the stage whose per-user sums the writers keep."""
    store = Store(create_engine(url, DatabaseSettings()))
    now = datetime.now(UTC)
    try:
        versions = {name: Version(name, "openai", "gpt-4o-mini", system_prompt=name) for name in ("v1", "v2")}
        await store.insert_declared(
            deployments={DEPLOYMENT: Deployment(DEPLOYMENT, versions, RolloutState(stable="v1"), policy=POLICY)},
            policies={DEPLOYMENT: POLICY.model_dump(mode="json")},
            created_events={DEPLOYMENT: RolloutEvent(deployment=DEPLOYMENT, action="deployment_created",
                                                     actor="benchmark", before=None, after=None)},
            now=now - timedelta(hours=1))
        deployment = await store.get_deployment(DEPLOYMENT)
        assert deployment is not None
        state = rollout.start_canary(deployment, version="v2", percent=None, stages=POLICY.stages, now=now)
        await store.apply_rollout(expected_revision=deployment.rollout.revision, state=state,
                                  event=RolloutEvent(deployment=DEPLOYMENT, action="canary_started",
                                                     actor="benchmark", before=None, after=None, at=now))
    finally:
        await store.close()


class PgBouncer:
    """pgbouncer in transaction mode on a free port of 127.0.0.1, in front of the server at `host`:`port`."""

    def __init__(self, host: str, port: int) -> None:
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="replicas-pgbouncer-"))
        (self.directory / "users.txt").write_text('"postgres" ""\n')
        (self.directory / "pgbouncer.ini").write_text("\n".join([
            "[databases]", f"* = host={host} port={port}", "[pgbouncer]",
            "listen_addr = 127.0.0.1", f"listen_port = {self.port}", "unix_socket_dir =",
            "auth_type = trust", f"auth_file = {self.directory / 'users.txt'}",
            "pool_mode = transaction", "default_pool_size = 20", "max_client_conn = 1000",
            f"logfile = {self.directory / 'pgbouncer.log'}", ""]))
        command = ["pgbouncer", str(self.directory / "pgbouncer.ini")]
        if os.geteuid() == 0:  # pgbouncer will not run as root
            shutil.chown(self.directory, "postgres")
            command[1:1] = ["-u", "postgres"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit("pgbouncer did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)


def writer(url: str, pooler: str, seconds: float, batch: int, users: int, seed: int, results: Any) -> None:
    """One replica's writer: batches until `seconds` passed; puts (rows, [batch latency ms]) on `results`."""
    results.put(asyncio.run(_write(url, pooler, seconds, batch, users, seed)))


async def _write(url: str, pooler: str, seconds: float, batch: int, users: int,
                 seed: int) -> tuple[int, list[float]]:
    settings = DatabaseSettings(statement_timeout=60, pool_timeout=30, pooler=pooler)
    store = Store(create_engine(url, settings))
    rng = np.random.default_rng(seed)
    latencies: list[float] = []
    rows = 0
    try:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            chosen = rng.integers(0, users, batch).tolist()
            times = rng.lognormal(7.0, 0.5, batch).tolist()
            now = datetime.now(UTC)
            records = [RequestRecord(
                id=uuid.uuid4().hex, created_at=now, deployment=DEPLOYMENT, version="v2" if user % 20 == 0 else "v1",
                user_hash=f"{user:032x}", provider="openai", upstream_model="gpt-4o-mini", stream=False,
                status="ok", http_status=200, error_kind=None, latency_ms=latency, ttft_ms=None, prompt_tokens=500,
                completion_tokens=200, cost_usd=0.0002, uncached_cost_usd=0.00022)
                for user, latency in zip(chosen, times, strict=True)]
            started = time.perf_counter()
            await store.insert_batch(records=records, scores=[])
            latencies.append((time.perf_counter() - started) * 1000)
            rows += batch
    finally:
        await store.close()
    return rows, latencies


async def sample(url: str, stop: asyncio.Event) -> tuple[int, int, int, Counter[str]]:
    """(samples, most gateway connections seen, samples with a lock wait, lock wait events seen)."""
    connection = await asyncpg.connect(url)
    samples = most = waiting = 0
    events: Counter[str] = Counter()
    try:
        while not stop.is_set():
            rows = await connection.fetch(
                "SELECT wait_event_type, wait_event FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            samples += 1
            most = max(most, len(rows))
            locks = [row["wait_event"] for row in rows if row["wait_event_type"] == "Lock"]
            if locks:
                waiting += 1
                events.update(locks)
            await asyncio.sleep(0.1)
    finally:
        await connection.close()
    return samples, most, waiting, events


async def measure(url: str, processes: int, args: argparse.Namespace, *, through: str | None = None) -> list[str]:
    """One row of the table: `processes` writers on `url`, or on `through` (the same database via pgbouncer)."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    pooler = "none" if through is None else "transaction"
    workers = [context.Process(target=writer, args=(through or url, pooler, args.seconds, args.batch, args.users,
                                                    index, results))
               for index in range(processes)]
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample(url.replace("postgresql+asyncpg://", "postgresql://", 1), stop))
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    outcomes = [await asyncio.to_thread(results.get) for _ in workers]
    elapsed = time.perf_counter() - started
    for worker in workers:
        worker.join()
    stop.set()
    samples, most, waiting, events = await sampler
    rows = sum(count for count, _ in outcomes)
    latencies = sorted(latency for _, values in outcomes for latency in values)
    busy = max(sum(values) / 1000 for _, values in outcomes)
    path = "direct" if through is None else "pgbouncer (transaction)"
    return [str(processes), path, f"{rows / busy:,.0f}", f"{statistics.median(latencies):,.0f}",
            f"{latencies[int(0.95 * (len(latencies) - 1))]:,.0f}", f"{latencies[-1]:,.0f}", str(most),
            f"{waiting / max(samples, 1):.0%}", ", ".join(f"{name} ×{count}" for name, count in events.most_common(3))
            or "none", f"{elapsed:,.0f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="any database of the server; the benchmark makes its own")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--pgbouncer", action="store_true",
                        help="each writer count also through a pgbouncer in transaction mode started here")
    parser.add_argument("--smoke", action="store_true", help="seconds: 1 and 2 writers for 2 s each")
    args = parser.parse_args()
    if args.pgbouncer and shutil.which("pgbouncer") is None:
        raise SystemExit("--pgbouncer needs the pgbouncer binary (apt-get install pgbouncer)")
    if args.smoke:
        args.seconds, args.users = 2.0, 1000
    name = f"replicas_bench_{uuid.uuid4().hex[:8]}"
    base = args.url.rsplit("/", 1)[0]

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(args.url)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)
    bouncer = None
    try:
        upgrade(url)
        asyncio.run(prepare(url))
        if args.pgbouncer:
            server = urlsplit(args.url)
            bouncer = PgBouncer(server.hostname or "127.0.0.1", server.port or 5432)
        rows = []
        for processes in args.processes:
            rows.append(asyncio.run(measure(url, processes, args)))
            if bouncer is not None:
                through = f"postgresql+asyncpg://postgres@127.0.0.1:{bouncer.port}/{name}"
                rows.append(asyncio.run(measure(url, processes, args, through=through)))
    finally:
        if bouncer is not None:
            bouncer.stop()
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    print(f"writers: Store.insert_batch of {args.batch} calls with their aggregates, as fast as the database "
          f"takes them, {args.seconds:g} s each\n")
    print_table(("writers", "path", "rows/s", "batch p50 ms", "p95 ms", "max ms", "server connections",
                 "samples with a lock wait", "lock waits", "s"), rows, "rlrrrrrrlr")


if __name__ == "__main__":
    main()
