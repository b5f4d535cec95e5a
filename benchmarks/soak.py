"""A long run of mixed traffic through PostgreSQL outages and a misbehaving upstream: is anything lost?

Processes, so that none measures itself:

- a throwaway PostgreSQL cluster (initdb on a free port, as the `postgres`
  user when run as root), stopped and started on a schedule (`--outages`
  outages of `--outage-seconds` each, spread over the run);
- a fake OpenAI upstream (aiohttp, its own process) whose behaviour for a
  call is chosen by the prefix of the call's `user`, which the load
  generator sets: `ok` (answers in 10-40 ms), `slow` (1.5 s), `flaky` (a 500,
  then an answer on the gateway's retry), `e500` (500 every time: the
  gateway's retries, then 502), `e429` (429 with Retry-After, relayed),
  `cut` (a stream cut after two events, or a truncated JSON body: an SSE
  error event or 502) and `hang` (never answers: 504 at the deadline);
- the gateway, `canary-gateway serve --config <temp config>` on the cluster,
  with `recorder.max_buffer` from `--max-buffer` and its spool in a temp dir;
- this process: an open-loop load at `--rate` calls/s (a quarter streamed),
  feedback on a tenth of the answered calls, an admin percentage change every
  15 s, a sample of the gateway's RSS, readiness, records held and spool
  every 10 s.

At the end the load stops, the gateway is given time to write what it holds
and stopped with SIGTERM (which writes the rest), and the database is read.
Printed: calls sent, answered by status, records expected and found (lost,
unexpected), feedback accepted and stored, gateway-caused 5xx (a 5xx where
the upstream's behaviour called for another answer), client errors, admin
answers, RSS over time, and whether the aggregates the writer kept through the
outages and spool replays equal their recomputation from the raw records
(`gateway.store.recount`: the number of rows compared, or the rows that
differ). Nothing is asserted; the targets are 0 lost, 0 gateway-caused 5xx,
aggregates equal, memory flat (the exit code is 1 when one of the first three
is missed).

    python benchmarks/soak.py                                  # 10 min, 3 outages of 30 s, max_buffer 2000
    python benchmarks/soak.py --minutes 2 --outages 1 --rate 100
    python benchmarks/soak.py --smoke                          # about a minute: a short outage, small numbers

Needs the PostgreSQL 15 server binaries (/usr/lib/postgresql/15/bin) and the
project's virtualenv.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from sqlalchemy.ext.asyncio import create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import free_port
from gateway.store.recount import Audit, audit_aggregates

PG_BIN = Path("/usr/lib/postgresql/15/bin")
ADMIN_TOKEN = "soak-admin-token-0123456789"
# Behaviour by `user` prefix: (share of calls, the status a correct gateway answers plain, streamed).
KINDS: dict[str, tuple[float, int, int]] = {
    "ok": (0.80, 200, 200),
    "slow": (0.04, 200, 200),
    "flaky": (0.06, 200, 200),
    "e500": (0.03, 502, 502),
    "e429": (0.03, 429, 429),
    "cut": (0.03, 502, 200),
    "hang": (0.01, 504, 504),
}
MESSAGES = [{"role": "user", "content": "Say something short."}]


# -- the fake upstream (its own process) ----------------------------------------------------------------


def upstream_main(port: int) -> int:
    attempts: dict[str, int] = collections.defaultdict(int)

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not isinstance(body.get("messages"), list) or not body.get("model"):
            return web.json_response({"error": {"message": "messages and model are required",
                                                "type": "invalid_request_error"}}, status=400)
        user = str(body.get("user", "ok-0"))
        kind = user.split("-", 1)[0]
        attempts[user] += 1
        if kind == "hang":
            await asyncio.sleep(3600)
        if kind == "slow":
            await asyncio.sleep(1.5)
        else:
            await asyncio.sleep(random.uniform(0.01, 0.04))
        if kind == "e500" or (kind == "flaky" and attempts[user] == 1):
            return web.json_response({"error": {"message": "fake failure", "type": "server_error"}}, status=500)
        if kind == "e429":
            return web.json_response({"error": {"message": "slow down", "type": "rate_limit_error"}},
                                     status=429, headers={"Retry-After": "1"})
        attempts.pop(user, None)
        usage = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
        if not body.get("stream"):
            if kind == "cut":
                return web.Response(text='{"id": "chatcmpl-soak", "choices": [{"mes', content_type="application/json")
            return web.json_response({
                "id": "chatcmpl-soak", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "A short answer."},
                             "finish_reason": "stop"}],
                "usage": usage,
            })
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for index, piece in enumerate(["A ", "short ", "answer."]):
            if kind == "cut" and index == 2:
                return response  # the connection ends without [DONE]
            delta = {"role": "assistant", "content": piece} if index == 0 else {"content": piece}
            chunk = {"id": "chatcmpl-soak", "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": body["model"], "choices": [{"index": 0, "delta": delta,
                                                          "finish_reason": "stop" if index == 2 else None}]}
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            await asyncio.sleep(0.01)
        if (body.get("stream_options") or {}).get("include_usage"):
            tail = {"id": "chatcmpl-soak", "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": body["model"], "choices": [], "usage": usage}
            await response.write(b"data: " + json.dumps(tail).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, handler_cancellation=True)
    return 0


# -- the throwaway PostgreSQL cluster -------------------------------------------------------------------


class Cluster:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.data = directory / "data"
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-l", str(self.directory / "log"),
                  "-o", f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1", "start")

    def stop(self) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-m", "fast", "stop")


# -- the run ---------------------------------------------------------------------------------------------


@dataclass
class Tally:
    sent: collections.Counter[str] = field(default_factory=collections.Counter)
    answered: collections.Counter[int] = field(default_factory=collections.Counter)
    by_kind: dict[str, collections.Counter[int]] = field(default_factory=dict)
    expected_ids: set[str] = field(default_factory=set)
    gateway_5xx: list[tuple[str, bool, int]] = field(default_factory=list)
    client_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    stream_errors: int = 0
    feedback: collections.Counter[int] = field(default_factory=collections.Counter)
    feedback_ids: set[str] = field(default_factory=set)
    admin: collections.Counter[int] = field(default_factory=collections.Counter)
    skipped: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)
    outages: list[tuple[float, float]] = field(default_factory=list)


def pick_kind(rng: random.Random) -> str:
    roll, total = rng.random(), 0.0
    for kind, (share, _, _) in KINDS.items():
        total += share
        if roll < total:
            return kind
    return "ok"


async def one_call(session: aiohttp.ClientSession, url: str, tally: Tally, number: int, rng: random.Random) -> None:
    kind = pick_kind(rng)
    stream = rng.random() < 0.25
    tally.sent["streamed" if stream else "plain"] += 1
    body = {"model": "bot", "messages": MESSAGES, "user": f"{kind}-{number}", "stream": stream}
    try:
        async with session.post(f"{url}/v1/chat/completions", json=body) as answer:
            content = await answer.read()
            status = answer.status
            recorded = "x-canary-version" in answer.headers
            request_id = answer.headers.get("x-request-id", "")
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.client_errors[type(exc).__name__] += 1
        return
    tally.answered[status] += 1
    tally.by_kind.setdefault(kind, collections.Counter())[status] += 1
    if recorded:
        tally.expected_ids.add(request_id)
    _, plain_status, stream_status = KINDS[kind]
    wanted = stream_status if stream else plain_status
    if status >= 500 and status != wanted:
        tally.gateway_5xx.append((kind, stream, status))
    if stream and status == 200 and b'data: {"error"' in content:
        tally.stream_errors += 1
    if status == 200 and rng.random() < 0.1:
        await send_feedback(session, url, tally, request_id, rng)


async def send_feedback(session: aiohttp.ClientSession, url: str, tally: Tally, request_id: str,
                        rng: random.Random) -> None:
    try:
        async with session.post(f"{url}/v1/feedback",
                                json={"request_id": request_id, "score": round(rng.random(), 3)}) as answer:
            await answer.read()
            tally.feedback[answer.status] += 1
            if answer.status in (200, 202):
                tally.feedback_ids.add(request_id)
            elif answer.status >= 500:
                tally.gateway_5xx.append(("feedback", False, answer.status))
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.client_errors[f"feedback {type(exc).__name__}"] += 1


async def admin_changes(session: aiohttp.ClientSession, url: str, tally: Tally, stop: asyncio.Event) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    percent = 25.0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 15)
            return
        try:
            async with session.put(f"{url}/admin/deployments/bot/canary-percent", headers=headers,
                                   json={"percent": percent, "reason": "soak"}) as answer:
                await answer.read()
                tally.admin[answer.status] += 1
                if answer.status >= 500 and answer.status != 503:
                    tally.gateway_5xx.append(("admin", False, answer.status))
        except (aiohttp.ClientError, TimeoutError) as exc:
            tally.client_errors[f"admin {type(exc).__name__}"] += 1
        percent = 5.0 if percent == 25.0 else 25.0


async def load(url: str, rate: float, seconds: float, tally: Tally, max_in_flight: int) -> None:
    rng = random.Random(20261129)
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=max_in_flight)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        stop = asyncio.Event()
        admin = asyncio.create_task(admin_changes(session, url, tally, stop))
        running: set[asyncio.Task[None]] = set()
        started = time.monotonic()
        number = 0
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(elapsed * rate)
            while number < due:
                number += 1
                if len(running) >= max_in_flight:
                    tally.skipped += 1
                    continue
                task = asyncio.create_task(one_call(session, url, tally, number, rng))
                running.add(task)
                task.add_done_callback(running.discard)
            await asyncio.sleep(0.005)
        stop.set()
        await asyncio.gather(admin, *running)


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def spool_state(spool: Path) -> tuple[int, int]:
    files = [path for path in spool.glob("records-*") if path.is_file()] if spool.exists() else []
    return len(files), sum(path.stat().st_size for path in files)


async def readiness(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    try:
        async with session.get(f"{url}/readyz", timeout=aiohttp.ClientTimeout(total=3)) as answer:
            data: dict[str, Any] = await answer.json()
            return data
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return {"status": "no answer"}


async def monitor(url: str, pid: int, spool: Path, tally: Tally, started: float, stop: asyncio.Event,
                  every: float) -> None:
    async with aiohttp.ClientSession() as session:
        while True:
            ready = await readiness(session, url)
            files, size = spool_state(spool)
            sample = {"t": time.monotonic() - started, "rss_mb": rss_mb(pid), "ready": ready.get("status"),
                      "held": ready.get("records_held"), "spool_files": files, "spool_kb": size / 1024,
                      "sent": sum(tally.sent.values())}
            tally.samples.append(sample)
            print(f"  t={sample['t']:6.0f}s  sent {sample['sent']:>7}  rss {sample['rss_mb']:6.1f} MB  "
                  f"{sample['ready']!s:<10} held {sample['held']!s:>6}  spool {files} files "
                  f"{sample['spool_kb']:8.0f} KB", flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
                return


async def outages(cluster: Cluster, schedule: list[float], seconds: float, started: float, tally: Tally) -> None:
    for at in schedule:
        await asyncio.sleep(max(0.0, started + at - time.monotonic()))
        down = time.monotonic() - started
        await asyncio.to_thread(cluster.stop)
        print(f"  -- PostgreSQL stopped at t={down:.0f}s", flush=True)
        await asyncio.sleep(seconds)
        await asyncio.to_thread(cluster.start)
        up = time.monotonic() - started
        tally.outages.append((down, up))
        print(f"  -- PostgreSQL started at t={up:.0f}s", flush=True)


async def settle(url: str, spool: Path, timeout: float) -> float:
    """Wait until the gateway holds nothing and the spool is empty; seconds it took."""
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        while time.monotonic() - started < timeout:
            ready = await readiness(session, url)
            if ready.get("status") == "ready" and ready.get("records_held") == 0 and spool_state(spool)[0] == 0:
                break
            await asyncio.sleep(0.5)
    return time.monotonic() - started


def write_config(path: Path, *, cluster: Cluster, upstream_port: int, spool: Path, max_buffer: int) -> None:
    config = {
        "database_url": cluster.url,
        "user_id_salt": "soak-salt",
        "admin_tokens": {"soak": ADMIN_TOKEN},
        "server": {"drain_delay": "0s", "shutdown_grace": "10s", "max_concurrency": 4096},
        "database": {"pool_timeout": "2s", "statement_timeout": "2s", "refresh_interval": "1s",
                     "probe_timeout": "1s"},
        "recorder": {"spool_dir": str(spool), "max_buffer": max_buffer, "max_backoff": "5s"},
        "logging": {"level": "warning", "access_log": False},
        "providers": {"fake": {"kind": "openai", "base_url": f"http://127.0.0.1:{upstream_port}/v1",
                               "api_key": "sk-soak-0000000000", "timeout_s": 3, "idle_timeout_s": 2,
                               "retries": 2}},
        "pricing": {"model-a": {"input": 1.0, "output": 2.0}},
        "deployments": {"bot": {
            "stable": "v1", "canary": "v2",
            "versions": {"v1": {"provider": "fake", "model": "model-a", "system_prompt": "You are v1."},
                         "v2": {"provider": "fake", "model": "model-a", "system_prompt": "You are v2."}},
            "policy": {"stages": [5, 25, 50, 100], "check_interval": "1d"},
        }},
    }
    path.write_text(json.dumps(config))  # JSON is YAML


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float) -> float:
    import urllib.request

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"the gateway exited with {process.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer:
            if answer.status == 200 and json.loads(answer.read())["status"] == "ready":
                return time.monotonic() - started
        time.sleep(0.2)
    raise RuntimeError("the gateway did not become ready")


async def stored(cluster: Cluster) -> tuple[list[str], list[str]]:
    connection = await asyncpg.connect(cluster.dsn)
    try:
        records = [row["id"] for row in await connection.fetch("SELECT id FROM request_records")]
        scored = [row["request_id"] for row in await connection.fetch(
            "SELECT request_id FROM quality_scores WHERE source = 'feedback'")]
        return records, scored
    finally:
        await connection.close()


async def audit(cluster: Cluster) -> Audit:
    engine = create_async_engine(cluster.url)
    try:
        return await audit_aggregates(engine)
    finally:
        await engine.dispose()


def run(args: argparse.Namespace) -> int:
    if not (PG_BIN / "initdb").exists():
        print(f"soak: needs the PostgreSQL 15 server binaries in {PG_BIN}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="canary-soak-"))
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="canary-soak-pg-")))  # its own: postgres must enter it
    spool = work / "spool"
    processes: list[subprocess.Popen[bytes]] = []
    seconds = args.minutes * 60
    try:
        cluster.init()
        cluster.start()
        upstream_port, gateway_port = free_port(), free_port()
        processes.append(subprocess.Popen([sys.executable, __file__, "upstream", "--port", str(upstream_port)]))
        config = work / "config.yaml"
        write_config(config, cluster=cluster, upstream_port=upstream_port, spool=spool, max_buffer=args.max_buffer)
        log = (work / "gateway.log").open("wb")
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(gateway_port)],
            stdout=log, stderr=subprocess.STDOUT,
        )
        processes.append(gateway)
        url = f"http://127.0.0.1:{gateway_port}"
        ready_s = wait_ready(url, gateway, 120)
        schedule = [seconds * (index + 1) / (args.outages + 1) - args.outage_seconds / 2
                    for index in range(args.outages)]
        print(f"soak: {seconds:.0f} s at {args.rate:g} calls/s, {args.outages} outage(s) of "
              f"{args.outage_seconds:g} s, max_buffer {args.max_buffer}; gateway ready in {ready_s:.1f} s",
              flush=True)
        tally = Tally()

        async def main() -> float:
            started = time.monotonic()
            stop = asyncio.Event()
            watcher = asyncio.create_task(monitor(url, gateway.pid, spool, tally, started, stop, args.sample_every))
            breaker = asyncio.create_task(outages(cluster, schedule, args.outage_seconds, started, tally))
            await load(url, args.rate, seconds, tally, args.max_in_flight)
            await breaker
            settled = await settle(url, spool, 180)
            stop.set()
            await watcher
            return settled

        settle_s = asyncio.run(main())
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(60)
        log.close()
        records, scored = asyncio.run(stored(cluster))
        report(tally, records, scored, settle_s, gateway.returncode, work / "gateway.log")
        aggregates = asyncio.run(audit(cluster))
        report_aggregates(aggregates)
        lost = len(tally.expected_ids - set(records)) + len(tally.feedback_ids - set(scored))
        return 1 if lost or tally.gateway_5xx or aggregates.differences else 0
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        with contextlib.suppress(subprocess.CalledProcessError):
            cluster.stop()
        shutil.rmtree(cluster.directory, ignore_errors=True)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def report(tally: Tally, records: list[str], scored: list[str], settle_s: float, exit_code: int | None,
           log: Path) -> None:
    stored_ids = set(records)
    lost = tally.expected_ids - stored_ids
    unexpected = stored_ids - tally.expected_ids
    scores_lost = tally.feedback_ids - set(scored)
    sent = sum(tally.sent.values())
    rss = [sample["rss_mb"] for sample in tally.samples]
    errors_in_log = sum(1 for line in log.read_text(errors="replace").splitlines() if '"level": "error"' in line)
    print()
    print("soak report")
    print(f"  calls sent            {sent:,} (plain {tally.sent['plain']:,}, streamed {tally.sent['streamed']:,}); "
          f"not sent (in-flight cap) {tally.skipped:,}")
    print("  answered by status    " + ", ".join(f"{status}: {count:,}" for status, count in
                                                sorted(tally.answered.items())))
    for kind, counts in sorted(tally.by_kind.items()):
        print(f"    {kind:<6}              " + ", ".join(f"{status}: {count:,}" for status, count in
                                                       sorted(counts.items())))
    print(f"  streams ended by an SSE error event  {tally.stream_errors:,}")
    print(f"  records expected      {len(tally.expected_ids):,}; in the database {len(records):,} "
          f"({len(records) - len(stored_ids)} duplicates)")
    print(f"  records lost          {len(lost):,}" + (f"  e.g. {sorted(lost)[:3]}" if lost else ""))
    print(f"  records unexpected    {len(unexpected):,} (calls recorded whose answer the client did not get)")
    print("  feedback answers      " + ", ".join(f"{status}: {count:,}" for status, count in
                                                sorted(tally.feedback.items())))
    print(f"  feedback scores lost  {len(scores_lost):,} of {len(tally.feedback_ids):,} accepted")
    print(f"  gateway-caused 5xx    {len(tally.gateway_5xx):,}"
          + (f"  e.g. {tally.gateway_5xx[:5]}" if tally.gateway_5xx else ""))
    print("  client errors         " + (", ".join(f"{name}: {count}" for name, count in
                                                  tally.client_errors.items()) or "0"))
    print("  admin changes         " + ", ".join(f"{status}: {count}" for status, count in
                                                sorted(tally.admin.items())) + "  (503: database down)")
    print("  outages               " + ", ".join(f"t={down:.0f}-{up:.0f}s" for down, up in tally.outages))
    print(f"  settled after load    {settle_s:.1f} s (nothing held, spool empty); gateway exit code {exit_code}; "
          f"error lines in its log {errors_in_log}")
    if rss:
        print(f"  RSS (MB)              start {rss[0]:.1f}, peak {max(rss):.1f}, end {rss[-1]:.1f}")
        step = max(1, len(rss) // 12)
        print("  RSS over time         " + "  ".join(f"t={sample['t']:.0f}s {sample['rss_mb']:.0f}"
                                                    for sample in tally.samples[::step]))
    spool_peak = max((sample["spool_kb"] for sample in tally.samples), default=0.0)
    held_peak = max((sample["held"] or 0 for sample in tally.samples), default=0)
    print(f"  peak held in memory   {held_peak:,} records; peak spool {spool_peak:,.0f} KB")


def report_aggregates(audit: Audit) -> None:
    if not audit.differences:
        print(f"  aggregates vs raw records: equal ({audit.compared:,} rows compared)")
        return
    print(f"  aggregates vs raw records: {len(audit.differences):,} of {audit.compared:,} rows differ")
    for difference in audit.differences[:20]:
        print(f"    {difference.table} {difference.key}: stored {difference.stored}, "
              f"recomputed {difference.recounted}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["upstream"]:
        parser = argparse.ArgumentParser(prog="soak.py upstream")
        parser.add_argument("--port", type=int, required=True)
        return upstream_main(parser.parse_args(argv[1:]).port)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=150.0, help="calls per second offered (open loop)")
    parser.add_argument("--outages", type=int, default=3)
    parser.add_argument("--outage-seconds", type=float, default=30.0)
    parser.add_argument("--max-buffer", type=int, default=2000, help="recorder.max_buffer")
    parser.add_argument("--max-in-flight", type=int, default=512)
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds between RSS/readiness samples")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory (logs, config)")
    parser.add_argument("--smoke", action="store_true", help="about a minute: 30 s, one 5 s outage, small numbers")
    args = parser.parse_args(argv)
    if args.smoke:
        args.minutes, args.rate, args.outages, args.outage_seconds = 0.5, 30.0, 1, 5.0
        args.max_buffer, args.sample_every = 50, 5.0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
