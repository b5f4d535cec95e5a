"""What the gateway costs on top of a call: throughput, added latency, CPU, memory.

Three kinds of process, so that none measures itself:

- a fake OpenAI upstream (a raw asyncio HTTP/1.1 server on 127.0.0.1) that
  answers chat completions at once, as JSON with a `usage` object or as SSE
  `chat.completion.chunk` events, a usage chunk when
  `stream_options.include_usage` is true, then `data: [DONE]`;
- the gateway, started as `canary-gateway serve --config <temp config>`
  (SQLite in a temp directory, one `openai` provider pointing at the fake,
  one deployment with a stable and a 25 % canary, logging at info with the
  access log on, written to a file);
- load generators (aiohttp clients with keep-alive, a closed loop of N
  concurrent callers), one process per scenario.

Every scenario (non-streaming and streaming, at each concurrency) runs for a
warm-up and then a fixed measurement window, first DIRECT against the fake
upstream, then THROUGH the gateway. Reported per scenario: requests/s, p50/p99
latency direct and through the gateway and their difference (the added
latency), time to first body byte for streams, the gateway's CPU time per
request (utime+stime of /proc/<pid>/stat over the window, divided by the
requests completed in it), its RSS (VmRSS) after the run, and how busy the
host was. Also: the gateway's ready time (process start to /readyz 200),
its peak RSS, and what went wrong (non-200 answers, client errors, records
not written, upstream connections opened, error lines in its log).

Run from the project root with the project's virtualenv:

    python benchmarks/proxy_overhead.py                      # aiohttp transport
    python benchmarks/proxy_overhead.py --transport httpx
    python benchmarks/proxy_overhead.py --transport both --duration 8 --concurrency 1,16,64
    python benchmarks/proxy_overhead.py --json results.json  # also save the raw figures

    python benchmarks/proxy_overhead.py --profile /tmp/prof    # + py-spy during a json c=16 run

On a small machine the load generator and the fake upstream share the CPUs
with the gateway; `--pin` puts the gateway on its own CPU (the last one) and
the rest on the others. The "other %" column is CPU used by processes outside
the benchmark during each window: when it is high, throughput and latency are
understated (CPU per request is the least sensitive figure). `--gateway-only`
skips the direct runs and `--gateway-command` runs another server that takes
`serve --config FILE` (a bare relay, a patched build) under the same load.
Standard library and aiohttp only (uvloop is used for the harness processes
when it is importable; `--no-uvloop` to avoid it).
Nothing is asserted: the targets are printed next to the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common import free_port, gateway_command, gateway_environment, http_get, nearest_rank

DEPLOYMENT = "support-bot"
UPSTREAM_MODEL = "gpt-4o-mini"
CANARY_MODEL = "gpt-4o"
CANARY_PERCENT = 25
MB = 1024 * 1024

# The project's targets (reported against, never asserted).
TARGET_CPU_MS = 1.0
TARGET_ADDED_P50_MS = 1.0
TARGET_ADDED_P99_MS = 3.0
TARGET_RPS_C16 = 1500.0
TARGET_TTFB_ADDED_MS = 1.5
TARGET_RSS_MB = 100.0
TARGET_READY_S = 2.0


def _use_uvloop(enabled: bool) -> None:
    if not enabled:
        return
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# --------------------------------------------------------------------------
# The fake upstream: a raw asyncio protocol, so that it is never the bottleneck.
# --------------------------------------------------------------------------

_ANSWER_TEXT = (
    "To reset your password, open Settings, choose Security, then select Reset password. "
    "You will receive an email with a link that is valid for one hour; follow it and pick "
    "a new password of at least twelve characters. If the email does not arrive, check your "
    "spam folder or contact support."
)


class _UpstreamStats:
    def __init__(self) -> None:
        self.connections_open = 0
        self.connections_total = 0
        self.requests = 0
        self.streams = 0


class _UpstreamProtocol(asyncio.Protocol):
    """Minimal HTTP/1.1 with keep-alive: Content-Length bodies, no pipelining needed."""

    def __init__(self, stats: _UpstreamStats, stream_events: int, stream_gap: float) -> None:
        self._stats = stats
        self._events = stream_events
        self._gap = stream_gap
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = transport  # type: ignore[assignment]
        self._stats.connections_open += 1
        self._stats.connections_total += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._stats.connections_open -= 1
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._process()

    def _process(self) -> None:
        while not self._busy and self._transport is not None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buffer[:end]).decode("latin-1")
            request_line, _, header_text = head.partition("\r\n")
            headers = {}
            for line in header_text.split("\r\n"):
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            if len(self._buffer) < end + 4 + length:
                return
            body = bytes(self._buffer[end + 4 : end + 4 + length])
            del self._buffer[: end + 4 + length]
            keep_alive = headers.get("connection", "").lower() != "close"
            method, path, *_ = request_line.split(" ")
            self._handle(method, path, body, keep_alive)

    def _handle(self, method: str, path: str, body: bytes, keep_alive: bool) -> None:
        transport = self._transport
        assert transport is not None
        if method == "GET" and path == "/stats":
            self._send(200, "application/json", json.dumps(vars(self._stats)).encode(), keep_alive)
            return
        if method != "POST" or not path.endswith("/chat/completions"):
            self._send(404, "application/json", b'{"error":{"message":"not found"}}', keep_alive)
            return
        try:
            request = json.loads(body)
            model = request["model"]
        except (ValueError, KeyError, TypeError):
            self._send(400, "application/json", b'{"error":{"message":"bad request"}}', keep_alive)
            return
        self._stats.requests += 1
        prompt_tokens = len(body) // 4
        if not request.get("stream"):
            answer = {
                "id": f"chatcmpl-bench{self._stats.requests:08d}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "system_fingerprint": "fp_bench",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": _ANSWER_TEXT, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 64, "total_tokens": prompt_tokens + 64},
            }
            self._send(200, "application/json", json.dumps(answer, separators=(",", ":")).encode(), keep_alive)
            return
        self._stats.streams += 1
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        events = _stream_events(model, self._stats.requests, self._events, include_usage, prompt_tokens)
        transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n"
            + (b"connection: keep-alive\r\n\r\n" if keep_alive else b"connection: close\r\n\r\n")
        )
        if self._gap <= 0:
            for event in events:
                transport.write(b"%x\r\n%s\r\n" % (len(event), event))
            transport.write(b"0\r\n\r\n")
            if not keep_alive:
                transport.close()
            return
        self._busy = True
        asyncio.get_running_loop().create_task(self._trickle(events, keep_alive))

    async def _trickle(self, events: list[bytes], keep_alive: bool) -> None:
        for event in events:
            if self._transport is None:
                return
            self._transport.write(b"%x\r\n%s\r\n" % (len(event), event))
            await asyncio.sleep(self._gap)
        if self._transport is None:
            return
        self._transport.write(b"0\r\n\r\n")
        if not keep_alive:
            self._transport.close()
        self._busy = False
        self._process()

    def _send(self, status: int, content_type: str, payload: bytes, keep_alive: bool) -> None:
        assert self._transport is not None
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
        self._transport.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\n"
            f"content-length: {len(payload)}\r\nconnection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n".encode()
            + payload
        )
        if not keep_alive:
            self._transport.close()


def _stream_events(model: str, number: int, count: int, include_usage: bool, prompt_tokens: int) -> list[bytes]:
    base = {
        "id": f"chatcmpl-bench{number:08d}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_bench",
    }
    words = _ANSWER_TEXT.split(" ")
    per_event = max(1, len(words) // max(1, count))
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": "", "refusal": None}]
    for index in range(count):
        piece = words[index * per_event : (index + 1) * per_event] if index < count - 1 else words[index * per_event :]
        deltas.append({"content": " ".join(piece) + " "})
    events = []
    for delta in deltas:
        chunk = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]}
        if include_usage:
            chunk["usage"] = None
        events.append(chunk)
    final = {**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]}
    if include_usage:
        final["usage"] = None
    events.append(final)
    if include_usage:
        events.append(
            {
                **base,
                "choices": [],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 64, "total_tokens": prompt_tokens + 64},
            }
        )
    encoded = [b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n" for event in events]
    encoded.append(b"data: [DONE]\n\n")
    return encoded


def upstream_main(args: argparse.Namespace) -> int:
    _use_uvloop(args.uvloop)
    stats = _UpstreamStats()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _UpstreamProtocol(stats, args.stream_events, args.stream_gap_ms / 1000),
            "127.0.0.1",
            args.port,
            backlog=1024,
            reuse_address=True,
        )
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        print("ready", flush=True)
        async with server:
            await stop.wait()

    asyncio.run(serve())
    return 0


# --------------------------------------------------------------------------
# The load generator: closed loop, aiohttp with keep-alive, one process.
# --------------------------------------------------------------------------


def _request_body(model: str, stream: bool) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are the support assistant of ACME Corp. Answer briefly."},
            {
                "role": "user",
                "content": "Hello! I forgot my password and cannot log in to my account any more. "
                "How do I reset my password, and how long is the reset link valid?",
            },
        ],
        "max_tokens": 256,
        "temperature": 0.7,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


def load_main(args: argparse.Namespace) -> int:
    _use_uvloop(args.uvloop)
    return asyncio.run(_load(args))


async def _load(args: argparse.Namespace) -> int:
    import aiohttp

    body = _request_body(args.model, args.stream)
    url = args.url
    stream = args.stream
    latencies: list[float] = []
    ttfbs: list[float] = []
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    bad = 0
    completed_total = 0
    sequence = 0

    connector = aiohttp.TCPConnector(limit=args.concurrency, limit_per_host=0, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:
        print("ready", flush=True)
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        start_at = float(line)
        window_start = start_at + args.warmup
        window_end = window_start + args.duration
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        usage_before = os.times()

        async def caller(number: int) -> None:
            nonlocal bad, completed_total, sequence
            while time.monotonic() < window_end:
                sequence += 1
                headers = {"content-type": "application/json", "x-user-id": f"user-{number}-{sequence}"}
                started = time.monotonic()
                first: float | None = None
                status = 0
                ok = False
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        status = response.status
                        if stream:
                            tail = b""
                            async for chunk in response.content.iter_any():
                                if first is None:
                                    first = time.monotonic()
                                tail = (tail + chunk)[-64:]
                            ok = status == 200 and tail.endswith(b"data: [DONE]\n\n")
                        else:
                            content = await response.read()
                            ok = status == 200 and b'"usage"' in content
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    ended = time.monotonic()
                    if window_start <= ended < window_end:
                        errors[type(exc).__name__] += 1
                    await asyncio.sleep(0.01)
                    continue
                ended = time.monotonic()
                completed_total += 1
                if window_start <= ended < window_end:
                    statuses[status] += 1
                    if ok:
                        latencies.append(round((ended - started) * 1000, 4))
                        if first is not None:
                            ttfbs.append(round((first - started) * 1000, 4))
                    else:
                        bad += 1

        await asyncio.gather(*(caller(number) for number in range(args.concurrency)))
        usage_after = os.times()
    own_cpu = (usage_after.user + usage_after.system) - (usage_before.user + usage_before.system)
    json.dump(
        {
            "latencies": latencies,
            "ttfb": ttfbs,
            "statuses": {str(code): count for code, count in statuses.items()},
            "errors": dict(errors),
            "bad": bad,
            "completed_total": completed_total,
            "client_cpu_s": own_cpu,
        },
        sys.stdout,
    )
    sys.stdout.flush()
    return 0


# --------------------------------------------------------------------------
# The orchestrator.
# --------------------------------------------------------------------------


@dataclass
class Side:
    """One run of one scenario against one target."""

    rps: float = 0.0
    requests: int = 0
    p50: float = float("nan")
    p99: float = float("nan")
    ttfb_p50: float = float("nan")
    ttfb_p99: float = float("nan")
    failed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    completed_total: int = 0
    host_busy_pct: float = float("nan")
    foreign_busy_pct: float = float("nan")
    client_cpu_ms_per_request: float = float("nan")
    upstream_cpu_ms_per_request: float = float("nan")
    gateway_cpu_ms_per_request: float = float("nan")
    gateway_rss_mb: float = float("nan")
    gateway_fds: int = 0


@dataclass
class Scenario:
    stream: bool
    concurrency: int
    direct: Side = field(default_factory=Side)
    gateway: Side = field(default_factory=Side)

    @property
    def name(self) -> str:
        return "stream" if self.stream else "json"


@dataclass
class GatewayRun:
    transport: str
    ready_s: float = float("nan")
    ready_status: str = ""
    rss_ready_mb: float = float("nan")
    rss_peak_mb: float = float("nan")
    scenarios: list[Scenario] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: state is fields[0], utime fields[11], stime fields[12].
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _host_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total


def _source_state() -> str:
    """The commit the gateway runs from, and how many of its files differ from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "gateway"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"commit {commit}" + (f", {len(changed)} file(s) under gateway/ modified" if changed else ", clean")


class Harness:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.script = str(Path(__file__).resolve())
        cpus = sorted(os.sched_getaffinity(0))
        self.gateway_cpus: set[int] | None = None
        self.harness_cpus: set[int] | None = None
        if args.pin and len(cpus) >= 2:
            self.gateway_cpus = {cpus[-1]}
            self.harness_cpus = set(cpus[:-1])
        self.upstream: subprocess.Popen[bytes] | None = None
        self.upstream_port = 0

    def _harness_preexec(self) -> Any:
        cpus = self.harness_cpus
        if cpus is None:
            return None
        return lambda: os.sched_setaffinity(0, cpus)

    def _flags(self) -> list[str]:
        return [] if self.args.uvloop else ["--no-uvloop"]

    # -- the fake upstream --------------------------------------------------

    def start_upstream(self) -> None:
        self.upstream_port = free_port()
        self.upstream = subprocess.Popen(
            [
                sys.executable,
                self.script,
                "_upstream",
                "--port",
                str(self.upstream_port),
                "--stream-events",
                str(self.args.stream_events),
                "--stream-gap-ms",
                str(self.args.stream_gap_ms),
                *self._flags(),
            ],
            stdout=subprocess.PIPE,
            preexec_fn=self._harness_preexec(),
        )
        assert self.upstream.stdout is not None
        if self.upstream.stdout.readline().strip() != b"ready":
            raise SystemExit("the fake upstream did not start")

    def upstream_stats(self) -> dict[str, int]:
        status, content = http_get(self.upstream_port, "/stats")
        stats: dict[str, int] = json.loads(content) if status == 200 else {}
        return stats

    def stop_upstream(self) -> None:
        if self.upstream is not None:
            self.upstream.send_signal(signal.SIGTERM)
            try:
                self.upstream.wait(5)
            except subprocess.TimeoutExpired:
                self.upstream.kill()
                self.upstream.wait()
            self.upstream = None

    # -- one scenario -------------------------------------------------------

    def run_load(self, *, url: str, model: str, stream: bool, concurrency: int, gateway_pid: int | None) -> Side:
        """Start the load processes, sample /proc over the window, merge their results."""
        processes = max(1, min(self.args.load_processes, concurrency))
        shares = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
        loaders = [
            subprocess.Popen(
                [
                    sys.executable,
                    self.script,
                    "_load",
                    "--url",
                    url,
                    "--model",
                    model,
                    "--concurrency",
                    str(share),
                    "--duration",
                    str(self.args.duration),
                    "--warmup",
                    str(self.args.warmup),
                    *(["--stream"] if stream else []),
                    *self._flags(),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                preexec_fn=self._harness_preexec(),
            )
            for share in shares
        ]
        for loader in loaders:
            assert loader.stdout is not None
            if loader.stdout.readline().strip() != b"ready":
                raise SystemExit("a load generator did not start")
        start_at = time.monotonic() + 0.05
        for loader in loaders:
            assert loader.stdin is not None
            loader.stdin.write(f"{start_at}\n".encode())
            loader.stdin.flush()
        window_start = start_at + self.args.warmup
        window_end = window_start + self.args.duration
        assert self.upstream is not None

        ours = [self.upstream.pid, os.getpid(), *(loader.pid for loader in loaders)]

        time.sleep(max(0.0, window_start - time.monotonic()))
        gateway_cpu_before = _proc_cpu_s(gateway_pid) if gateway_pid else 0.0
        upstream_cpu_before = _proc_cpu_s(self.upstream.pid)
        ours_before = sum(_proc_cpu_s(pid) for pid in ours)
        host_before = _host_cpu()
        time.sleep(max(0.0, window_end - time.monotonic()))
        gateway_cpu_after = _proc_cpu_s(gateway_pid) if gateway_pid else 0.0
        upstream_cpu_after = _proc_cpu_s(self.upstream.pid)
        ours_after = sum(_proc_cpu_s(pid) for pid in ours)
        host_after = _host_cpu()

        results = []
        for loader in loaders:
            out, _ = loader.communicate(timeout=120)
            if loader.returncode != 0:
                raise SystemExit(f"a load generator failed (exit {loader.returncode})")
            results.append(json.loads(out))

        latencies = sorted(value for result in results for value in result["latencies"])
        ttfbs = sorted(value for result in results for value in result["ttfb"])
        statuses: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        for result in results:
            statuses.update(result["statuses"])
            errors.update(result["errors"])
        ok = len(latencies)
        busy = host_after[0] - host_before[0]
        total = host_after[1] - host_before[1]
        # CPU used by processes outside the benchmark (other work on the machine), in % of all CPUs.
        ticks = os.sysconf("SC_CLK_TCK")
        benchmark_s = (ours_after - ours_before) + (gateway_cpu_after - gateway_cpu_before)
        foreign_pct = 100.0 * max(0.0, busy / ticks - benchmark_s) / (total / ticks) if total else float("nan")
        side = Side(
            rps=ok / self.args.duration,
            requests=ok,
            p50=nearest_rank(latencies, 0.50),
            p99=nearest_rank(latencies, 0.99),
            ttfb_p50=nearest_rank(ttfbs, 0.50),
            ttfb_p99=nearest_rank(ttfbs, 0.99),
            failed=sum(result["bad"] for result in results) + sum(errors.values()),
            statuses=dict(statuses),
            errors=dict(errors),
            completed_total=sum(result["completed_total"] for result in results),
            host_busy_pct=100.0 * busy / total if total else float("nan"),
            foreign_busy_pct=foreign_pct,
            client_cpu_ms_per_request=1000 * sum(r["client_cpu_s"] for r in results) / max(1, ok),
            upstream_cpu_ms_per_request=1000 * (upstream_cpu_after - upstream_cpu_before) / max(1, ok),
        )
        if ok == 0:
            raise SystemExit(f"no request succeeded against {url}: statuses {dict(statuses)}, errors {dict(errors)}")
        if gateway_pid:
            side.gateway_cpu_ms_per_request = 1000 * (gateway_cpu_after - gateway_cpu_before) / max(1, ok)
            side.gateway_rss_mb = _proc_status_kb(gateway_pid, "VmRSS") / 1024
            side.gateway_fds = len(os.listdir(f"/proc/{gateway_pid}/fd"))
        return side

    # -- the gateway --------------------------------------------------------

    def write_config(self, transport: str, port: int, directory: Path) -> Path:
        config = directory / "gateway.yaml"
        config.write_text(
            f"""\
# Generated by benchmarks/proxy_overhead.py
database_url: sqlite+aiosqlite:///{directory / "gateway.db"}
user_id_salt: benchmark-salt
server:
  host: 127.0.0.1
  port: {port}
  workers: 1
  shutdown_grace: 10s
recorder:
  spool_dir: {directory / "spool"}
logging:
  level: info
  access_log: true
providers:
  fake:
    kind: openai
    base_url: http://127.0.0.1:{self.upstream_port}/v1
    api_key: sk-benchmark-not-a-real-key
    transport: {transport}
    timeout_s: 30
pricing:
  {UPSTREAM_MODEL}: {{input: 0.15, output: 0.60}}
  {CANARY_MODEL}: {{input: 2.50, output: 10.00}}
deployments:
  {DEPLOYMENT}:
    stable: v1
    canary: v2
    versions:
      v1:
        provider: fake
        model: {UPSTREAM_MODEL}
        system_prompt: "You are a helpful assistant."
        prompt_mode: replace
      v2:
        provider: fake
        model: {CANARY_MODEL}
        system_prompt: "You are a concise, helpful assistant."
        few_shot:
          - {{role: user, content: "How do I reset my password?"}}
          - {{role: assistant, content: "Settings, Security, Reset password."}}
        params: {{temperature: 0.3}}
        prompt_mode: prepend
    policy:
      stages: [{CANARY_PERCENT}, 50, 100]
""",
            encoding="utf-8",
        )
        return config

    def gateway_command(self) -> list[str]:
        return gateway_command(self.args.gateway_command)

    def run_gateway(self, transport: str, directs: dict[tuple[bool, int], Side]) -> GatewayRun:
        run = GatewayRun(transport=transport)
        directory = self.workdir / f"gateway-{transport}"
        directory.mkdir()
        port = free_port()
        config = self.write_config(transport, port, directory)
        log_path = directory / "gateway.log"
        env = gateway_environment()
        gateway_cpus = self.gateway_cpus
        before_stats = self.upstream_stats()
        with log_path.open("wb") as log_file:
            started = time.monotonic()
            gateway = subprocess.Popen(
                [*self.gateway_command(), "serve", "--config", str(config)],
                cwd=directory,
                env=env,
                stdout=log_file,
                stderr=log_file,
                preexec_fn=(lambda: os.sched_setaffinity(0, gateway_cpus)) if gateway_cpus else None,
            )
            try:
                run.ready_s, run.ready_status = self._wait_ready(gateway, port, started)
                run.rss_ready_mb = _proc_status_kb(gateway.pid, "VmRSS") / 1024
                sent_through = 0
                for stream in self.args.modes:
                    for concurrency in self.args.concurrency:
                        print(
                            f"  gateway[{transport}] {'stream' if stream else 'json'} c={concurrency} ...", flush=True
                        )
                        side = self.run_load(
                            url=f"http://127.0.0.1:{port}/v1/chat/completions",
                            model=DEPLOYMENT,
                            stream=stream,
                            concurrency=concurrency,
                            gateway_pid=gateway.pid,
                        )
                        sent_through += side.completed_total
                        run.scenarios.append(
                            Scenario(
                                stream=stream,
                                concurrency=concurrency,
                                direct=directs[(stream, concurrency)],
                                gateway=side,
                            )
                        )
                run.rss_peak_mb = _proc_status_kb(gateway.pid, "VmHWM") / 1024
                if self.args.profile:
                    self._profile(gateway.pid, port, transport)
                time.sleep(1.5)  # let the recorder flush (flush_interval 500 ms)
                metrics = self._scrape(port)
                after_stats = self.upstream_stats()
            finally:
                stop_started = time.monotonic()
                gateway.send_signal(signal.SIGTERM)
                try:
                    code = gateway.wait(30)
                except subprocess.TimeoutExpired:
                    gateway.kill()
                    code = gateway.wait()
                    run.problems.append("the gateway did not stop within 30 s of SIGTERM (killed)")
                stopped_in = time.monotonic() - stop_started
        self._check(run, code, stopped_in, sent_through, metrics, before_stats, after_stats, directory, log_path)
        return run

    def _wait_ready(self, gateway: subprocess.Popen[bytes], port: int, started: float) -> tuple[float, str]:
        deadline = started + 60
        while time.monotonic() < deadline:
            if gateway.poll() is not None:
                raise SystemExit(f"the gateway exited at start (status {gateway.returncode}); see its log")
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, content = http_get(port, "/readyz", timeout=1.0)
                if status == 200:
                    return time.monotonic() - started, json.loads(content).get("status", "?")
            time.sleep(0.01)
        raise SystemExit("the gateway was not ready within 60 s")

    def _scrape(self, port: int) -> dict[str, float]:
        status, content = http_get(port, "/metrics", timeout=5)
        values: dict[str, float] = {}
        if status != 200:
            return values
        for line in content.decode().splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                values[name] = float(value)
        return values

    def _profile(self, pid: int, port: int, transport: str) -> None:
        """One more json c=16 run, with py-spy sampling the gateway (after the measured runs)."""
        py_spy = Path(sys.executable).with_name("py-spy")
        executable = str(py_spy) if py_spy.exists() else shutil.which("py-spy")
        if executable is None:
            print("  (py-spy is not installed; no profile)", flush=True)
            return
        output = Path(self.args.profile).with_suffix(f".{transport}.txt")
        seconds = int(self.args.warmup + self.args.duration)
        print(f"  profiling gateway[{transport}] json c=16 with py-spy -> {output} ...", flush=True)
        recorder = subprocess.Popen(
            [executable, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "500",
             "--nonblocking", "--format", "raw", "--output", str(output)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.run_load(
            url=f"http://127.0.0.1:{port}/v1/chat/completions",
            model=DEPLOYMENT,
            stream=False,
            concurrency=16,
            gateway_pid=pid,
        )
        recorder.wait(60)

    def _check(
        self,
        run: GatewayRun,
        exit_code: int,
        stopped_in: float,
        sent_through: int,
        metrics: dict[str, float],
        before: dict[str, int],
        after: dict[str, int],
        directory: Path,
        log_path: Path,
    ) -> None:
        """What went wrong under load: errors, lost records, connection churn, log errors."""
        for scenario in run.scenarios:
            side = scenario.gateway
            non_200 = {code: count for code, count in side.statuses.items() if code != "200"}
            if non_200 or side.errors or side.failed:
                run.problems.append(
                    f"{scenario.name} c={scenario.concurrency}: non-200 {non_200 or '-'}, "
                    f"client errors {side.errors or '-'}, failed/invalid answers {side.failed}"
                )
        stopped_logged = b'"gateway stopped"' in log_path.read_bytes()
        run.notes.append(f"stopped {stopped_in:.2f} s after SIGTERM (exit status {exit_code})")
        if not stopped_logged:
            run.problems.append(
                "the shutdown log lines ('Application shutdown complete', 'gateway stopped') never reached the log"
            )

        requests_ok = sum(
            v for k, v in metrics.items() if k.startswith("canary_requests_total{") and 'status="ok"' in k
        )
        requests_all = sum(v for k, v in metrics.items() if k.startswith("canary_requests_total{"))
        written = metrics.get("canary_records_written_total", float("nan"))
        dropped = sum(v for k, v in metrics.items() if k.startswith("canary_records_dropped_total"))
        upstream_errors = sum(v for k, v in metrics.items() if k.startswith("canary_upstream_errors_total"))
        refused = sum(v for k, v in metrics.items() if k.startswith("canary_refused_requests_total"))
        canary = sum(v for k, v in metrics.items() if k.startswith("canary_requests_total{") and 'version="v2"' in k)
        share = canary / max(1, requests_all)
        run.notes.append(
            f"metrics: {requests_all:.0f} calls recorded ({requests_ok:.0f} ok), {share:.1%} on "
            f"the canary (configured {CANARY_PERCENT}%), {written:.0f} records written, {dropped:.0f} dropped, "
            f"{upstream_errors:.0f} upstream errors, {refused:.0f} refused; "
            f"the load generators completed {sent_through}"
        )
        if dropped:
            run.problems.append(f"{dropped:.0f} request records dropped")
        if upstream_errors:
            run.problems.append(f"{upstream_errors:.0f} upstream errors counted by the gateway")
        if requests_all < sent_through:
            run.problems.append(f"the gateway counted {requests_all:.0f} calls, the clients completed {sent_through}")

        with contextlib.suppress(sqlite3.Error):
            with contextlib.closing(sqlite3.connect(directory / "gateway.db")) as database:
                rows = database.execute("SELECT count(*) FROM request_records").fetchone()[0]
                statuses = dict(
                    database.execute("SELECT status, count(*) FROM request_records GROUP BY status").fetchall()
                )
            run.notes.append(f"database after shutdown: {rows} request records {statuses}")
            if rows < requests_all:
                run.problems.append(f"only {rows} of {requests_all:.0f} request records reached the database")

        new_connections = after.get("connections_total", 0) - before.get("connections_total", 0)
        new_requests = after.get("requests", 0) - before.get("requests", 0)
        run.notes.append(
            f"upstream: {new_requests} calls over {new_connections} new connections "
            f"({new_requests / max(1, new_connections):.0f} calls per connection), "
            f"{after.get('connections_open', 0)} still open before shutdown"
        )
        if new_requests > 1000 and new_connections > new_requests / 50:
            run.problems.append(f"the gateway opened {new_connections} upstream connections for {new_requests} calls")

        levels: Counter[str] = Counter()
        access = 0
        samples: list[str] = []
        with log_path.open("rb") as lines:
            for raw in lines:
                try:
                    entry = json.loads(raw)
                except ValueError:
                    levels["(not json)"] += 1
                    if len(samples) < 3:
                        samples.append(raw.decode(errors="replace").strip()[:200])
                    continue
                levels[entry.get("level", "?")] += 1
                if entry.get("logger") == "gateway.access":
                    access += 1
                elif entry.get("level") in ("error", "critical", "warning") and len(samples) < 5:
                    samples.append(f"{entry.get('level')}: {entry.get('logger')}: {str(entry.get('msg'))[:160]}")
        run.notes.append(
            f"log: {log_path.stat().st_size / MB:.1f} MB, {access} access lines, levels {dict(levels)}"
        )
        if levels.get("error") or levels.get("critical") or levels.get("(not json)"):
            run.problems.append("error lines in the gateway log: " + " | ".join(samples))
        elif samples:
            run.notes.append("log warnings: " + " | ".join(samples))
        fds = [scenario.gateway.gateway_fds for scenario in run.scenarios]
        rss = [scenario.gateway.gateway_rss_mb for scenario in run.scenarios]
        run.notes.append(f"gateway open fds after each run: {fds}; RSS MB after each run: {[round(r, 1) for r in rss]}")


# --------------------------------------------------------------------------
# The report.
# --------------------------------------------------------------------------


def _ms(value: float) -> str:
    return "-" if value != value else f"{value:.2f}"


def _pair(a: float, b: float) -> str:
    return f"{_ms(a)} / {_ms(b)}"


def print_report(run: GatewayRun, args: argparse.Namespace) -> None:
    width = 150
    print()
    print("=" * width)
    print(
        f"transport: {run.transport}   ready in {run.ready_s:.2f} s ({run.ready_status})   "
        f"RSS {run.rss_ready_mb:.1f} MB at ready, peak {run.rss_peak_mb:.1f} MB   "
        f"window {args.duration:g} s after {args.warmup:g} s warm-up   cpus {os.cpu_count()}"
        + ("   pinned" if args.pin else "")
    )
    print(f"gateway source: {args.source}" + (f"   {args.label}" if args.label else ""))
    print("=" * width)
    header = (
        f"{'scenario':<9}{'conc':>5}  {'direct req/s':>12}  {'gateway req/s':>13}  "
        f"{'direct p50/p99 ms':>18}  {'gateway p50/p99 ms':>19}  {'added p50/p99 ms':>17}  "
        f"{'gw CPU ms/req':>13}  {'gw RSS MB':>9}  {'busy %':>6}  {'other % d/g':>11}  {'failed':>6}"
    )
    print(header)
    print("-" * len(header))
    for scenario in run.scenarios:
        direct, gateway = scenario.direct, scenario.gateway
        print(
            f"{scenario.name:<9}{scenario.concurrency:>5}  {direct.rps:>12.0f}  {gateway.rps:>13.0f}  "
            f"{_pair(direct.p50, direct.p99):>18}  {_pair(gateway.p50, gateway.p99):>19}  "
            f"{_pair(gateway.p50 - direct.p50, gateway.p99 - direct.p99):>17}  "
            f"{gateway.gateway_cpu_ms_per_request:>13.3f}  {gateway.gateway_rss_mb:>9.1f}  "
            f"{gateway.host_busy_pct:>6.0f}  {f'{direct.foreign_busy_pct:.0f} / {gateway.foreign_busy_pct:.0f}':>11}  "
            f"{gateway.failed + direct.failed:>6}"
        )
    print("(busy %: the machine during the gateway run; other %: CPU used by processes outside the benchmark,")
    print(" during the direct / gateway run, in % of all CPUs; failed: non-200, invalid answers, client errors)")
    streams = [scenario for scenario in run.scenarios if scenario.stream]
    if streams:
        print()
        header = (
            f"{'streaming':<9}{'conc':>5}  {'direct TTFB p50/p99 ms':>23}  {'gateway TTFB p50/p99 ms':>24}  "
            f"{'added TTFB p50/p99 ms':>22}"
        )
        print(header)
        print("-" * len(header))
        for scenario in streams:
            direct, gateway = scenario.direct, scenario.gateway
            print(
                f"{'stream':<9}{scenario.concurrency:>5}  {_pair(direct.ttfb_p50, direct.ttfb_p99):>23}  "
                f"{_pair(gateway.ttfb_p50, gateway.ttfb_p99):>24}  "
                f"{_pair(gateway.ttfb_p50 - direct.ttfb_p50, gateway.ttfb_p99 - direct.ttfb_p99):>22}"
            )
    print()
    print(f"{'target':<52}{'measured':>30}  verdict")
    print("-" * 92)
    for target, measured, met in _targets(run):
        print(f"{target:<52}{measured:>30}  {'met' if met else 'MISSED'}")
    print()
    for note in run.notes:
        print(f"note: {note}")
    for problem in run.problems:
        print(f"PROBLEM: {problem}")
    if not run.problems:
        print("no errors, non-200 answers, lost records or log errors under load")


def _targets(run: GatewayRun) -> list[tuple[str, str, bool]]:
    rows: list[tuple[str, str, bool]] = []
    by_key = {(scenario.stream, scenario.concurrency): scenario for scenario in run.scenarios}
    for concurrency in (1, 16):
        scenario = by_key.get((False, concurrency))
        if scenario:
            cpu = scenario.gateway.gateway_cpu_ms_per_request
            rows.append(
                (
                    f"gateway CPU <= {TARGET_CPU_MS} ms/request (json, c={concurrency})",
                    f"{cpu:.3f} ms",
                    cpu <= TARGET_CPU_MS,
                )
            )
    scenario = by_key.get((False, 1))
    if scenario:
        added50 = scenario.gateway.p50 - scenario.direct.p50
        added99 = scenario.gateway.p99 - scenario.direct.p99
        rows.append(
            (
                f"added latency p50 <= {TARGET_ADDED_P50_MS} ms (json, c=1)",
                f"{added50:.2f} ms",
                added50 <= TARGET_ADDED_P50_MS,
            )
        )
        rows.append(
            (
                f"added latency p99 <= {TARGET_ADDED_P99_MS} ms (json, c=1)",
                f"{added99:.2f} ms",
                added99 <= TARGET_ADDED_P99_MS,
            )
        )
    scenario = by_key.get((False, 16))
    if scenario:
        rps = scenario.gateway.rps
        rows.append(
            (f">= {TARGET_RPS_C16:.0f} requests/s (json, c=16, one worker)", f"{rps:.0f} req/s", rps >= TARGET_RPS_C16)
        )
    for concurrency in sorted(c for stream, c in by_key if stream):
        scenario = by_key[(True, concurrency)]
        added = scenario.gateway.ttfb_p50 - scenario.direct.ttfb_p50
        rows.append(
            (
                f"streaming adds <= {TARGET_TTFB_ADDED_MS} ms to TTFB p50 (c={concurrency})",
                f"{added:.2f} ms",
                added <= TARGET_TTFB_ADDED_MS,
            )
        )
    rows.append(
        (
            f"RSS <= {TARGET_RSS_MB:.0f} MB per worker (peak)",
            f"{run.rss_peak_mb:.1f} MB",
            run.rss_peak_mb <= TARGET_RSS_MB,
        )
    )
    rows.append(
        (
            f"ready in <= {TARGET_READY_S:.0f} s (start to /readyz 200)",
            f"{run.ready_s:.2f} s",
            run.ready_s <= TARGET_READY_S,
        )
    )
    return rows


def print_comparison(runs: list[GatewayRun]) -> None:
    if len(runs) != 2:
        return
    first, second = runs
    print()
    print(f"{first.transport} vs {second.transport} (gateway req/s and CPU ms/request)")
    print("-" * 92)
    for a, b in zip(first.scenarios, second.scenarios, strict=True):
        ratio = a.gateway.rps / b.gateway.rps if b.gateway.rps else float("nan")
        print(
            f"{a.name:<9}{a.concurrency:>5}  "
            f"{first.transport} {a.gateway.rps:>7.0f} req/s {a.gateway.gateway_cpu_ms_per_request:.3f} ms   "
            f"{second.transport} {b.gateway.rps:>7.0f} req/s {b.gateway.gateway_cpu_ms_per_request:.3f} ms   "
            f"throughput x{ratio:.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=["aiohttp", "httpx", "both"], default="aiohttp",
                        help="the provider's `transport:` in the generated config (default aiohttp)")
    parser.add_argument("--duration", type=float, default=8.0, help="measurement window per run, seconds (default 8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up before each window, seconds (default 2)")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated concurrencies (default 1,16,64)")
    parser.add_argument("--modes", default="json,stream", help="json, stream or json,stream (default json,stream)")
    parser.add_argument("--load-processes", type=int, default=1, help="load generator processes per run (default 1)")
    parser.add_argument("--stream-events", type=int, default=8, help="content events per streamed answer (default 8)")
    parser.add_argument("--stream-gap-ms", type=float, default=0.0,
                        help="pause between streamed events at the fake upstream (default 0: as fast as possible)")
    parser.add_argument("--pin", action="store_true", help="pin the gateway to the last CPU, the harness to the others")
    parser.add_argument("--no-uvloop", dest="uvloop", action="store_false", help="plain asyncio in the harness")
    parser.add_argument("--profile", metavar="PATH",
                        help="after the runs, sample the gateway with py-spy during one more json c=16 run "
                        "(raw collapsed stacks to PATH.<transport>.txt)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    parser.add_argument("--gateway-only", action="store_true",
                        help="skip the direct runs (no added latency then; for quick A/B runs of the gateway)")
    parser.add_argument("--gateway-command", metavar="CMD",
                        help="run CMD instead of canary-gateway ('serve --config FILE' is appended)")
    parser.add_argument("--label", default="", help="free text printed with the results (e.g. what else runs)")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory (configs, logs, databases)")
    parser.add_argument("--smoke", action="store_true",
                        help="a check that the script works, in seconds: json at c=1, 1 s after 0.5 s warm-up")
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.warmup, args.concurrency, args.modes = 1.0, 0.5, "1", "json"
    args.concurrency = [int(value) for value in args.concurrency.split(",") if value.strip()]
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    if not set(modes) <= {"json", "stream"} or not modes:
        parser.error("--modes takes json, stream or json,stream")
    args.modes = [mode == "stream" for mode in modes]
    transports = ["aiohttp", "httpx"] if args.transport == "both" else [args.transport]

    args.source = _source_state()
    workdir = Path(tempfile.mkdtemp(prefix="proxy-overhead-"))
    harness = Harness(args, workdir)
    runs: list[GatewayRun] = []
    try:
        harness.start_upstream()
        directs: dict[tuple[bool, int], Side] = {}
        for stream in args.modes:
            for concurrency in args.concurrency:
                if args.gateway_only:
                    directs[(stream, concurrency)] = Side()
                    continue
                print(f"  direct {'stream' if stream else 'json'} c={concurrency} ...", flush=True)
                directs[(stream, concurrency)] = harness.run_load(
                    url=f"http://127.0.0.1:{harness.upstream_port}/v1/chat/completions",
                    model=UPSTREAM_MODEL,
                    stream=stream,
                    concurrency=concurrency,
                    gateway_pid=None,
                )
        for transport in transports:
            runs.append(harness.run_gateway(transport, directs))
    finally:
        harness.stop_upstream()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    for run in runs:
        print_report(run, args)
    print_comparison(runs)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(run) for run in runs], indent=2, default=str), encoding="utf-8")
    return 0


def _subcommand(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["_upstream", "_load"])
    parser.add_argument("--no-uvloop", dest="uvloop", action="store_false")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stream-events", type=int, default=8)
    parser.add_argument("--stream-gap-ms", type=float, default=0.0)
    parser.add_argument("--url")
    parser.add_argument("--model")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args(argv)
    return upstream_main(args) if args.role == "_upstream" else load_main(args)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("_upstream", "_load"):
        sys.exit(_subcommand(sys.argv[1:]))
    sys.exit(main())
