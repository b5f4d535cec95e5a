"""How long a rollout change made on one replica takes to reach another.

Each replica routes from an in-memory snapshot of the rollout state and polls
`SELECT name, revision FROM deployments` every `database.refresh_interval`
(default 1 s); the replica that made a change refreshes at once. So a change
made through replica A should reach replica B within one interval plus one
reload.

Set-up, all on 127.0.0.1 and all torn down at the end:

- a fake OpenAI upstream (aiohttp.web, in this process) answering
  POST /v1/chat/completions with a chat.completion JSON including usage;
- a throwaway PostgreSQL database per run (created next to --url, dropped);
- two gateway processes, `canary-gateway serve --config <temp yaml> --port <p>`,
  sharing that database, with an admin token, one deployment `support-bot`
  with stable v1 and canary v2 (started after the first is ready, so that
  only one applies the migrations), and a policy check_interval of 24h so
  that no automatic rollout check changes the percentage during the run.

A probe user is chosen whose bucket `int(md5(f"{deployment}:{user}"), 16) % 10000`
lies in [low*100, high*100): at --low percent it is routed to v1, at --high
to v2. Then, --trials times: wait a random 0..interval (so that the change
lands at a random phase of B's refresh timer), flip the canary percentage
between --low and --high with `PUT /admin/deployments/support-bot/canary-percent`
on A, and poll B every --poll-ms with chat calls carrying `user` until its
`X-Canary-Version` header shows the new version. Polling starts when the PUT
is sent, so a switch before the PUT is acknowledged is seen too.

Reported per trial and summarised (min / median / p95 / max, p95 by nearest
rank): the delay from the PUT's acknowledgement to the first probe answer
from B with the new version (the change is committed before A answers), the
same from the moment the PUT was sent, and how long the PUT took. A is probed
once right after its answer, to confirm it routes the new value at once.
Probe resolution is the poll period plus one probe round trip.

One run with the default refresh interval (the key is left out of the
config) and one with 250ms, to show the trade-off: a shorter interval means
faster propagation for one more tiny query per replica per interval.

Run from the project root with the project's virtualenv:

    python benchmarks/propagation.py
    python benchmarks/propagation.py --trials 50 --intervals default,250ms,100ms
    python benchmarks/propagation.py --url postgresql+asyncpg://postgres@127.0.0.1:5432/test --keep

--keep keeps the temp directory (configs, gateway logs); databases are always dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import random
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy.engine import make_url

from common import autocommit, free_port, gateway_command, gateway_environment, nearest_rank, print_table
from gateway.durations import parse_duration

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DEPLOYMENT = "support-bot"
ADMIN_TOKEN = "bench-admin-" + uuid.uuid4().hex
BUCKETS = 10_000


# --------------------------------------------------------------------------
# Routing arithmetic (the documented formula, computed independently)
# --------------------------------------------------------------------------


def bucket(deployment: str, user: str) -> int:
    return int(hashlib.md5(f"{deployment}:{user}".encode(), usedforsecurity=False).hexdigest(), 16) % BUCKETS


def threshold(percent: float) -> int:
    return max(0, min(BUCKETS, round(percent * 100)))


def probe_user(low: float, high: float) -> tuple[str, int]:
    """A user id in the canary at `high` percent but not at `low`."""
    for number in range(1_000_000):
        user = f"probe-user-{number}"
        value = bucket(DEPLOYMENT, user)
        if threshold(low) <= value < threshold(high):
            return user, value
    raise RuntimeError("no probe user found")


# --------------------------------------------------------------------------
# The fake upstream
# --------------------------------------------------------------------------


class FakeUpstream:
    def __init__(self) -> None:
        self.calls = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls += 1
        prompt_tokens = sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4 + 1
        return web.json_response(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "unknown"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "pong"},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 1, "total_tokens": prompt_tokens + 1},
            }
        )

    async def start(self) -> FakeUpstream:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


# --------------------------------------------------------------------------
# Databases and gateway processes
# --------------------------------------------------------------------------


def gateway_config(database_url: str, upstream_url: str, spool: Path, refresh_interval: str | None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "database_url": database_url,
        "user_id_salt": "propagation-bench",
        "admin_tokens": {"ops": ADMIN_TOKEN},
        "server": {"host": "127.0.0.1", "shutdown_grace": "2s"},
        "recorder": {"spool_dir": str(spool)},
        "logging": {"level": "warning", "access_log": False},
        "providers": {
            "fake": {"kind": "openai", "base_url": upstream_url, "api_key": "sk-bench-not-a-key", "timeout_s": 5,
                     "retries": 0},
        },
        "pricing": {"fake-small": {"input": 0.15, "output": 0.60}},
        "deployments": {
            DEPLOYMENT: {
                "stable": "v1",
                "canary": "v2",
                "versions": {
                    "v1": {"provider": "fake", "model": "fake-small", "system_prompt": "You are v1."},
                    "v2": {"provider": "fake", "model": "fake-small", "system_prompt": "You are v2."},
                },
                # No automatic rollout check during the run: only the benchmark changes the percentage.
                "policy": {"stages": [5, 25, 50, 100], "check_interval": "24h"},
            }
        },
    }
    if refresh_interval is not None:
        config["database"] = {"refresh_interval": refresh_interval}
    return config


class GatewayProcess:
    def __init__(self, name: str, config_path: Path, log_path: Path) -> None:
        self.name = name
        self.port = free_port()
        self.config_path = config_path
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = gateway_environment()
        log = self.log_path.open("wb")
        try:
            self.process = subprocess.Popen(
                [*gateway_command(), "serve", "--config", str(self.config_path), "--port", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        finally:
            log.close()

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float = 60.0) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway {self.name} exited ({self.process.returncode}):\n{self.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with session.get(f"{self.url}/readyz") as response:
                    if response.status == 200 and (await response.json()).get("status") == "ready":
                        return time.monotonic() - started
            await asyncio.sleep(0.05)
        raise RuntimeError(f"gateway {self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)  # this pid only
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# --------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------


@dataclass
class Trial:
    number: int
    before: float
    after: float
    expected: str
    put_ms: float
    from_sent_ms: float
    from_ack_ms: float
    probes: int
    a_version: str
    resolution_ms: float


class Prober:
    def __init__(self, session: aiohttp.ClientSession, user: str) -> None:
        self.session = session
        self.body = {"model": DEPLOYMENT, "messages": [{"role": "user", "content": "ping"}], "user": user}
        self.failures = 0

    async def version(self, base_url: str) -> str:
        async with self.session.post(f"{base_url}/v1/chat/completions", json=self.body) as response:
            await response.read()
            if response.status != 200:
                self.failures += 1
                return f"HTTP {response.status}"
            return response.headers.get("X-Canary-Version", "?")


async def set_percent(session: aiohttp.ClientSession, base_url: str, percent: float) -> dict[str, Any]:
    async with session.put(
        f"{base_url}/admin/deployments/{DEPLOYMENT}/canary-percent",
        json={"percent": percent, "reason": "propagation benchmark"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as response:
        body = await response.json()
        if response.status != 200:
            raise RuntimeError(f"PUT canary-percent {percent} on {base_url}: {response.status} {body}")
        return dict(body)


async def wait_for(
    prober: Prober, base_url: str, expected: str, poll: float, timeout: float
) -> tuple[float, int, float]:
    """Probe until `expected` is served: (monotonic time of that answer, probes, longest gap between answers)."""
    deadline = time.perf_counter() + timeout
    probes = 0
    previous = time.perf_counter()
    longest = 0.0
    while True:
        version = await prober.version(base_url)
        now = time.perf_counter()
        probes += 1
        longest = max(longest, now - previous)
        previous = now
        if version == expected:
            return now, probes, longest
        if now > deadline:
            raise RuntimeError(f"{base_url} still serves {version!r} after {timeout:.0f} s, expected {expected!r}")
        await asyncio.sleep(poll)


async def run_interval(
    args: argparse.Namespace, label: str, interval_value: str | None, upstream: FakeUpstream, workdir: Path
) -> tuple[list[Trial], dict[str, Any]]:
    interval_s = parse_duration(interval_value) if interval_value else 1.0
    name = f"propagation_bench_{uuid.uuid4().hex[:10]}"
    database_url = make_url(args.url).set(database=name).render_as_string(hide_password=False)
    await autocommit(args.url, f'CREATE DATABASE "{name}"')
    gateways: list[GatewayProcess] = []
    info: dict[str, Any] = {"database": name}
    try:
        for replica in ("A", "B"):
            directory = workdir / f"{label}-{replica}"
            directory.mkdir(parents=True)
            config = gateway_config(database_url, upstream.url, directory / "spool", interval_value)
            config_path = directory / "config.yaml"
            config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")  # JSON is valid YAML
            gateways.append(GatewayProcess(replica, config_path, directory / "gateway.log"))
        a, b = gateways
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for gateway in gateways:  # one after the other: only the first applies the migrations
                gateway.start()
                info[f"ready_{gateway.name}_s"] = await gateway.wait_ready(session)
            user, value = probe_user(args.low, args.high)
            info["probe"] = (user, value)
            prober = Prober(session, user)
            poll = args.poll_ms / 1000
            # Start from the low percentage on both replicas.
            await set_percent(session, a.url, args.low)
            await wait_for(prober, b.url, "v1", poll, 10 * interval_s + 10)
            current = args.low
            trials: list[Trial] = []
            for number in range(1, args.trials + 1):
                target = args.high if current == args.low else args.low
                expected = "v2" if target == args.high else "v1"
                await asyncio.sleep(random.uniform(0, interval_s))
                sent = time.perf_counter()
                watch = asyncio.create_task(wait_for(prober, b.url, expected, poll, 10 * interval_s + 10))
                answer = await set_percent(session, a.url, target)
                acked = time.perf_counter()
                a_version = await prober.version(a.url)
                seen, probes, longest = await watch
                if answer.get("canary_percent") != target:
                    raise RuntimeError(f"A answered canary_percent={answer.get('canary_percent')}, expected {target}")
                trials.append(
                    Trial(
                        number=number,
                        before=current,
                        after=target,
                        expected=expected,
                        put_ms=(acked - sent) * 1000,
                        from_sent_ms=(seen - sent) * 1000,
                        from_ack_ms=(seen - acked) * 1000,
                        probes=probes,
                        a_version=a_version,
                        resolution_ms=longest * 1000,
                    )
                )
                current = target
            info["probe_failures"] = prober.failures
        info["upstream_calls"] = upstream.calls
        return trials, info
    finally:
        for gateway in reversed(gateways):
            gateway.stop()
        for gateway in gateways:
            code = gateway.process.returncode if gateway.process else None
            info[f"exit_{gateway.name}"] = code
        await autocommit(args.url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def print_trials(label: str, trials: list[Trial], info: dict[str, Any]) -> None:
    user, value = info["probe"]
    print()
    print(f"=== refresh_interval {label}: {len(trials)} changes on A, observed on B ===")
    print(f"probe user {user!r} (bucket {value}); replicas ready in "
          f"A {info['ready_A_s']:.2f} s, B {info['ready_B_s']:.2f} s; database {info['database']}")
    rows = [
        [str(t.number), f"{t.before:g} -> {t.after:g}", t.expected, f"{t.put_ms:.1f}", f"{t.from_sent_ms:.1f}",
         f"{t.from_ack_ms:.1f}", str(t.probes), f"{t.resolution_ms:.1f}", t.a_version]
        for t in trials
    ]
    print_table(
        ["#", "percent", "want", "PUT ms", "B from sent ms", "B from ack ms", "probes", "poll gap ms", "A after ack"],
        rows, "rllrrrrrl",
    )
    wrong_a = sum(1 for t in trials if t.a_version != t.expected)
    print(f"A routed the new value right after its answer in {len(trials) - wrong_a}/{len(trials)} changes; "
          f"failed probes: {info['probe_failures']}; gateway exit codes: A {info['exit_A']}, B {info['exit_B']}"
          + (" (-15: uvicorn re-raises SIGTERM after its graceful shutdown)"
             if -signal.SIGTERM in (info["exit_A"], info["exit_B"]) else ""))


def summary_row(label: str, values: list[float]) -> list[str]:
    return [
        label,
        f"{min(values):.0f}",
        f"{statistics.median(values):.0f}",
        f"{nearest_rank(values, 0.95):.0f}",
        f"{max(values):.0f}",
        f"{statistics.mean(values):.0f}",
    ]


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    await autocommit(args.url, "SELECT 1")  # fail early if PostgreSQL is down
    workdir = Path(tempfile.mkdtemp(prefix="propagation-bench-"))
    upstream = await FakeUpstream().start()
    results: list[tuple[str, list[Trial], float]] = []
    try:
        for value in args.intervals:
            interval_value = None if value == "default" else value
            label = "1s (default, key not set)" if interval_value is None else interval_value
            print(f"running refresh_interval {label} ...", flush=True)
            trials, info = await run_interval(args, value, interval_value, upstream, workdir)
            print_trials(label, trials, info)
            results.append((label, trials, parse_duration(interval_value) if interval_value else 1.0))
    finally:
        await upstream.stop()
        if args.keep:
            print(f"\nkept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f"=== propagation delay A -> B, ms ({args.trials} changes each, probe every {args.poll_ms:g} ms; "
          "p95 by nearest rank) ===")
    rows = []
    for label, trials, _interval_s in results:
        rows.append(summary_row(f"{label}: from PUT acknowledged", [t.from_ack_ms for t in trials]))
        rows.append(summary_row(f"{label}: from PUT sent", [t.from_sent_ms for t in trials]))
        rows.append(summary_row(f"{label}: PUT on A itself", [t.put_ms for t in trials]))
    print_table(["refresh_interval / measured", "min", "median", "p95", "max", "mean"], rows, "lrrrrr")
    print()
    print("expected from the design: delay ~ uniform(0, interval) + one reload, i.e. median ~ interval/2, "
          "max ~ interval")
    print("cost of a shorter interval, per replica: "
          + ", ".join(f"{label}: {1 / interval_s:.0f} revision queries/s" for label, _, interval_s in results))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL,
                        help=f"an existing PostgreSQL database; throwaway ones are created next to it "
                        f"(default {DEFAULT_URL})")
    parser.add_argument("--trials", type=int, default=20, help="changes per refresh interval (default 20)")
    parser.add_argument("--intervals", default="default,250ms",
                        help="refresh intervals to run, comma-separated; 'default' leaves the key out "
                        "(default: default,250ms)")
    parser.add_argument("--low", type=float, default=20.0, help="the lower canary percentage (default 20)")
    parser.add_argument("--high", type=float, default=60.0, help="the higher canary percentage (default 60)")
    parser.add_argument("--poll-ms", type=float, default=10.0, help="pause between probes of B (default 10)")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory (configs and gateway logs)")
    parser.add_argument("--smoke", action="store_true",
                        help="a check that the script works, in seconds: 2 changes at a 250ms interval")
    args = parser.parse_args(argv)
    if args.smoke:
        args.trials, args.intervals = 2, "250ms"
    args.intervals = [value.strip() for value in args.intervals.split(",") if value.strip()]
    if not 0 <= args.low < args.high <= 100:
        parser.error("need 0 <= --low < --high <= 100")
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
