"""`canary-gateway demo`: the whole loop on one machine, with nothing to set up.

The demo writes a configuration into a temporary directory (SQLite, one
`kind: simulated` provider that also acts as the quality judge), runs the
real gateway on it (`canary-gateway serve`, a child process on 127.0.0.1),
starts two rollouts through the admin API, and drives synthetic users
through the proxy while the scheduler decides:

- `support-bot` gets a good canary (a concise prompt: the same quality,
  shorter and cheaper answers), which advances 5 → 25 → 50 % and is promoted;
- `summarizer` gets a bad one (a prompt that makes answers worse and fail
  more), which is rolled back.

It shows what happens as it happens: on a terminal, a live view (rich) of
each rollout's stage, its last decision and the compare table; elsewhere
(a pipe, CI), plain lines with no control codes. It prints the dashboard's
URL and the session's admin token while it runs, and exits 0 once both
rollouts ended as scripted (1 otherwise). `--keep` leaves the gateway and a
trickle of traffic running until Ctrl-C; `--fast` shortens every interval
(for tests).

Why one module over 400 lines: it is a self-contained program (scenario,
traffic, live view) that only the CLI starts; its parts change together.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
import yaml
from httpx_aiohttp import AiohttpTransport

from gateway.cli import compare_table

ADMIN = "demo"
# Stages of both demo rollouts; passing the last one promotes.
STAGES = (5.0, 25.0, 50.0)


@dataclass(frozen=True, slots=True)
class Pace:
    """How fast the demo runs: traffic, scheduler and deadline."""

    rate: float  # proxy calls per second, per deployment
    users: int  # synthetic users per deployment
    check_interval: str
    min_stage_duration: str
    # Users at which the rollout's confidence bounds are narrowest (the demo has a few thousand).
    sequential_tuning: int
    min_requests: int
    latency_scale: float  # multiplies the simulated models' latencies
    deadline_s: float  # the demo fails if the rollouts have not ended by then


NORMAL = Pace(rate=40, users=2000, check_interval="2s", min_stage_duration="3s", sequential_tuning=300, min_requests=20,
              latency_scale=1.0, deadline_s=150)
FAST = Pace(rate=40, users=2000, check_interval="1s", min_stage_duration="1s", sequential_tuning=300, min_requests=20,
            latency_scale=0.25, deadline_s=180)


@dataclass(frozen=True, slots=True)
class Scenario:
    deployment: str
    story: str
    expected: str  # the rollout's scripted end: promoted or rolled_back
    stable: str
    canary: str
    versions: dict[str, dict[str, Any]]
    questions: tuple[str, ...]


SCENARIOS = (
    Scenario(
        deployment="support-bot",
        story="a good canary: a concise prompt, the same quality, shorter and cheaper answers",
        expected="promoted",
        stable="v1",
        canary="v2",
        versions={
            "v1": {"provider": "simulated", "model": "sim-support-v1",
                   "system_prompt": "You are a helpful support assistant."},
            "v2": {"provider": "simulated", "model": "sim-support-v2",
                   "system_prompt": "You are a concise, helpful support assistant. Answer in three steps at most.",
                   "params": {"temperature": 0.3}},
        },
        questions=("How do I reset my password?", "Where can I download my invoices?",
                   "How do I add a colleague to my team?", "Can I change the email address of my account?",
                   "Why was my card declined?", "How do I export my data?",
                   "How do I turn on two-factor authentication?", "How do I cancel my subscription?"),
    ),
    Scenario(
        deployment="summarizer",
        story="a bad canary: a prompt that makes answers worse and fail more often",
        expected="rolled_back",
        stable="v1",
        canary="v2",
        versions={
            "v1": {"provider": "simulated", "model": "sim-summarizer-v1",
                   "system_prompt": "Summarize the user's text in two sentences."},
            "v2": {"provider": "simulated", "model": "sim-summarizer-v2",
                   "system_prompt": "Summarize. Be creative, use at most five words."},
        },
        questions=("Summarize: the quarterly report shows revenue up 12 % and costs flat.",
                   "Summarize: the meeting moved the launch to May and added two testers.",
                   "Summarize: customers asked for dark mode, exports and a faster search.",
                   "Summarize: the incident lasted 20 minutes and affected logins in Europe.",
                   "Summarize: the new office opens in June with room for forty people."),
    ),
)

# Per simulated model: milliseconds to the first token, answer length, errors, quality.
MODELS: dict[str, dict[str, Any]] = {
    # No errors on either support version: a handful of rare errors could not be shown to be no worse in a minute.
    "sim-support-v1": {"latency_ms": 250, "completion_tokens": 140, "error_rate": 0.0, "quality": 0.84},
    "sim-support-v2": {"latency_ms": 200, "completion_tokens": 90, "error_rate": 0.0, "quality": 0.93},
    "sim-summarizer-v1": {"latency_ms": 300, "completion_tokens": 60, "error_rate": 0.005, "quality": 0.83},
    "sim-summarizer-v2": {"latency_ms": 300, "completion_tokens": 40, "error_rate": 0.06, "quality": 0.5},
    "sim-judge": {"latency_ms": 40, "completion_tokens": 20, "judge": True},
}


def demo_config(directory: Path, *, token: str, port: int, pace: Pace) -> dict[str, Any]:
    """The gateway's configuration for the demo: a plain YAML mapping, as a user would write it."""
    models = {name: {**profile, "latency_ms": profile["latency_ms"] * pace.latency_scale,
                     "tokens_per_second": 400 / pace.latency_scale}
              for name, profile in MODELS.items()}
    policy = {"stages": list(STAGES), "check_interval": pace.check_interval,
              "sequential_tuning": pace.sequential_tuning, "min_stage_duration": pace.min_stage_duration,
              "min_requests": pace.min_requests,
              # A minute of traffic is a few hundred canary calls: the demo's gates accept a wider margin
              # and a higher chance of a wrong promotion than production defaults (see the README's
              # demo section), so the loop can be seen; rollbacks keep the default confidence.
              "false_promote_rate": 0.2,
              "promote_when": {"quality_ratio_min": 0.9, "p95_latency_ratio_max": 2.5, "cost_ratio_max": 1.5,
                               "error_rate_ratio_max": 3.0}}
    quality = {"judge": {"provider": "simulated", "model": "sim-judge", "sample_rate": 1.0,
                         "max_per_minute": 100_000, "max_concurrency": 32, "timeout_s": 10}}
    return {
        "database_url": f"sqlite+aiosqlite:///{directory / 'gateway.db'}",
        "admin_tokens": {ADMIN: token},
        "user_id_salt": secrets.token_hex(16),
        "server": {"host": "127.0.0.1", "port": port, "shutdown_grace": "2s"},
        "recorder": {"spool_dir": str(directory / "spool"), "flush_interval": "200ms"},
        "database": {"refresh_interval": "500ms"},
        "logging": {"level": "warning", "access_log": False},
        "evaluation": {"queue_size": 5000, "workers": 8},
        "providers": {"simulated": {"kind": "simulated", "retries": 0, "timeout_s": 30,
                                    "simulation": {"api": "chat_completions", "seed": 2024, "models": models}}},
        # Priced like a large model, so that a call's cost shows in the compare table's three decimals.
        "pricing": {name: {"input": 2.50, "output": 10.00} for name in MODELS if name != "sim-judge"},
        "deployments": {
            scenario.deployment: {"stable": scenario.stable, "versions": scenario.versions, "policy": policy,
                                  "quality": quality}
            for scenario in SCENARIOS
        },
    }


# -- output ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Rollout:
    """What the demo knows of one rollout, from the admin API."""

    scenario: Scenario
    status: str = "stable"
    percent: float = 0.0
    path: list[str] = field(default_factory=list)  # "5", "25", "50", "promoted" / "rolled back"
    decision: str = "waiting for the first check"
    compare: dict[str, Any] | None = None
    ended_at: float | None = None

    @property
    def ended(self) -> bool:
        return self.status in ("promoted", "rolled_back")


class View(Protocol):
    def start(self, lines: list[str]) -> None: ...
    def line(self, text: str) -> None: ...
    def update(self, rollouts: list[Rollout], traffic: Traffic, elapsed: float) -> None: ...
    def stop(self) -> None: ...


class PlainView:
    """Plain lines for pipes and CI: no colours, no cursor movement, nothing but text."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write
        self._last_progress = 0.0

    def start(self, lines: list[str]) -> None:
        for text in lines:
            self._write(text)

    def line(self, text: str) -> None:
        self._write(text)

    def update(self, rollouts: list[Rollout], traffic: Traffic, elapsed: float) -> None:
        if elapsed - self._last_progress >= 10:
            self._last_progress = elapsed
            states = ", ".join(f"{r.scenario.deployment} {_state(r)}" for r in rollouts)
            self._write(f"[{elapsed:5.1f}s] traffic: {traffic.rate():.0f} calls/s, {traffic.sent} sent, "
                        f"{traffic.failed} failed; {states}")

    def stop(self) -> None:
        return None


class LiveView:
    """A live terminal view (rich): rollouts, their compare tables and the decisions as they come."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self._console = Console()
        self._header: list[str] = []
        self._log: list[str] = []
        self._live = Live(console=self._console, refresh_per_second=4, transient=False)

    def start(self, lines: list[str]) -> None:
        self._header = lines
        self._live.start()

    def line(self, text: str) -> None:
        self._log.append(text)
        self._log = self._log[-12:]

    def update(self, rollouts: list[Rollout], traffic: Traffic, elapsed: float) -> None:
        from rich.console import Group
        from rich.panel import Panel
        from rich.table import Table
        from rich.text import Text

        parts: list[Any] = [Text("\n".join(self._header))]
        for rollout in rollouts:
            table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
            for column, justify in (("Metric", "left"), ("Stable", "right"), ("Canary", "right"),
                                    ("Diff", "right")):
                table.add_column(column, justify=justify)  # type: ignore[arg-type]
            for row in _compare_rows(rollout.compare):
                table.add_row(*row)
            colour = {"promoted": "green", "rolled_back": "red"}.get(rollout.status, "yellow")
            title = (f"[bold]{rollout.scenario.deployment}[/] — {rollout.scenario.story}\n"
                     f"[{colour}]{_state(rollout)}[/]   stages: {' → '.join(rollout.path) or '-'}\n"
                     f"last decision: {rollout.decision}")
            parts.append(Panel(Group(Text.from_markup(title), table), expand=True))
        parts.append(Text(f"{elapsed:5.1f}s   traffic {traffic.rate():.0f} calls/s   {traffic.sent} sent   "
                          f"{traffic.failed} failed"))
        parts.append(Panel(Text("\n".join(self._log) or "decisions appear here"), title="decisions"))
        self._live.update(Group(*parts))

    def stop(self) -> None:
        self._live.stop()


def _state(rollout: Rollout) -> str:
    if rollout.status == "canary":
        return f"canary {rollout.scenario.canary} at {rollout.percent:g} %"
    if rollout.status == "promoted":
        return f"promoted: {rollout.scenario.canary} is the stable version"
    if rollout.status == "rolled_back":
        return f"rolled back: every user is on {rollout.scenario.stable}"
    return "stable"


def _compare_rows(compare: dict[str, Any] | None) -> list[tuple[str, str, str, str]]:
    if compare is None:
        return []
    stable, canary, diff = compare["stable"], compare["canary"] or {}, compare["diff_pct"]

    def cell(value: Any, spec: str = "{:.3f}") -> str:
        return "-" if value is None else spec.format(value)

    rows = [("requests", str(stable["requests"]), cell(canary.get("requests"), "{:d}"), "")]
    for key, label in (("avg_quality", "avg_quality"), ("p95_latency_ms", "p95_latency"),
                       ("avg_cost", "avg_cost"), ("error_rate", "error_rate")):
        change = diff.get(key)
        rows.append((label, cell(stable[key], "{:.0f}" if key == "p95_latency_ms" else "{:.5f}"
                                 if key == "avg_cost" else "{:.3f}"),
                     cell(canary.get(key), "{:.0f}" if key == "p95_latency_ms" else "{:.5f}"
                          if key == "avg_cost" else "{:.3f}"),
                     "-" if change is None else f"{change:+.1f}%"))
    return rows


def headline(event: dict[str, Any]) -> str:
    """One line a person reads for a decision event: its summary when it has one, else its deciding reasons.

    A rollback or a hold is explained by the reasons that decided it (those
    with an arrow); an advance or a promotion by the gates it passed.
    """
    snapshot = event.get("snapshot") or {}
    summary = snapshot.get("summary") or event.get("summary")
    if isinstance(summary, str) and summary:
        return summary
    reasons = [r for r in (snapshot.get("reasons") or (event.get("reason") or "").split("; ")) if r]
    if event.get("action") in ("advanced", "promoted"):
        passed = [r for r in reasons if r.startswith(("quality ratio", "p95_latency", "avg_cost"))]
        return "; ".join(passed[:3]) or (reasons[-1] if reasons else "")
    decisive = [r for r in reasons if "→" in r]
    return "; ".join(decisive[:2]) if decisive else (reasons[-1] if reasons else "")


# -- traffic --------------------------------------------------------------------------------------


class Traffic:
    """Synthetic users calling the proxy: at most `rate` calls a second, at most `concurrency` in flight.

    Closed loop: a worker waits for its answer before its next call, so a busy
    machine slows the traffic down instead of piling up calls that time out.
    """

    def __init__(self, client: httpx.AsyncClient, *, rate: float, users: int, rng: random.Random,
                 concurrency: int = 96) -> None:
        self._client = client
        self._rate = rate
        self._users = users
        self._rng = rng
        self._concurrency = concurrency
        self._workers: list[asyncio.Task[None]] = []
        self._next_at = 0.0
        self._done: list[float] = []
        self.sent = 0
        self.failed = 0

    def start(self) -> None:
        self._next_at = time.monotonic()
        self._workers = [asyncio.create_task(self._work(), name=f"demo-user-{index}")
                         for index in range(self._concurrency)]

    def slow_down(self, rate: float) -> None:
        self._rate = rate

    def rate(self) -> float:
        """Answers per second over the last five seconds."""
        now = time.monotonic()
        self._done = [at for at in self._done if now - at < 5]
        return len(self._done) / 5

    async def stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            # One shared schedule of call times, `1 / rate` apart over all deployments.
            now = time.monotonic()
            self._next_at = max(self._next_at + 1 / (self._rate * len(SCENARIOS)), now - 1)
            if self._next_at > now:
                await asyncio.sleep(self._next_at - now)
            await self._call(self._rng.choice(SCENARIOS))

    async def _call(self, scenario: Scenario) -> None:
        user = f"user-{self._rng.randrange(self._users):05d}"
        body: dict[str, Any] = {"model": scenario.deployment, "user": user,
                                "messages": [{"role": "user", "content": self._rng.choice(scenario.questions)}]}
        stream = self._rng.random() < 0.2
        if stream:
            body["stream"] = True
        self.sent += 1
        try:
            if stream:
                async with self._client.stream("POST", "/v1/chat/completions", json=body) as answer:
                    async for _ in answer.aiter_raw():
                        pass
                    ok = answer.status_code == 200
            else:
                answer = await self._client.post("/v1/chat/completions", json=body)
                ok = answer.status_code == 200
        except httpx.HTTPError:
            ok = False
        if not ok:
            self.failed += 1
        self._done.append(time.monotonic())


# -- the run --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    fast: bool = False
    keep: bool = False
    port: int = 0
    plain: bool | None = None  # None: plain unless stdout is a terminal


def run(options: Options) -> int:
    """Run the demo; 0 when the good canary was promoted and the bad one rolled back."""
    plain = options.plain if options.plain is not None else not sys.stdout.isatty()
    view: View = PlainView(lambda text: print(text, flush=True)) if plain else LiveView()
    try:
        return asyncio.run(_run(options, view))
    except KeyboardInterrupt:
        return 130


async def _run(options: Options, view: View) -> int:
    pace = FAST if options.fast else NORMAL
    started = time.monotonic()
    token = secrets.token_urlsafe(18)
    port = options.port or _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="canary-gateway-demo-") as temporary:
        directory = Path(temporary)
        config = directory / "config.yaml"
        config.write_text(yaml.safe_dump(demo_config(directory, token=token, port=port, pace=pace), sort_keys=False))
        log = directory / "gateway.log"
        with _gateway(config, log) as process:
            header = [
                "canary-gateway demo: the real gateway on SQLite, a simulated provider and judge, synthetic users.",
                f"  gateway    {url}   (config and logs in {directory})",
                f"  dashboard  {url}/dashboard   admin token: {token}",
                f"  try        canary-gateway status --url {url} --token {token}",
            ]
            await _wait_ready(url, process, log)
            limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
            admin = {"Authorization": f"Bearer {token}"}
            # Two clients: the rollout watch never waits behind the traffic's connections.
            async with httpx.AsyncClient(base_url=url, timeout=30, transport=AiohttpTransport(
                    limits=limits, trust_env=False)) as users, httpx.AsyncClient(base_url=url, timeout=30) as client:
                view.start(header)
                rollouts = [Rollout(scenario) for scenario in SCENARIOS]
                for rollout in rollouts:
                    answer = await client.post(f"/admin/deployments/{rollout.scenario.deployment}/canary",
                                               json={"version": rollout.scenario.canary}, headers=admin)
                    answer.raise_for_status()
                    view.line(f"[{time.monotonic() - started:5.1f}s] {rollout.scenario.deployment}: canary "
                              f"{rollout.scenario.canary} started at {STAGES[0]:g} % — {rollout.scenario.story}")
                traffic = Traffic(users, rate=pace.rate, users=pace.users, rng=random.Random(7))
                traffic.start()
                try:
                    result = await _follow(client, admin, rollouts, traffic, view, started, pace)
                    if options.keep:
                        traffic.slow_down(5)
                        view.line(f"--keep: the gateway keeps running at {url} (dashboard {url}/dashboard, "
                                  f"admin token {token}); Ctrl-C stops it.")
                        with contextlib.suppress(asyncio.CancelledError):
                            while process.poll() is None:
                                view.update(rollouts, traffic, time.monotonic() - started)
                                await asyncio.sleep(1)
                finally:
                    await traffic.stop()
                    view.stop()
        _summary(rollouts, result, time.monotonic() - started, print)
        return 0 if result else 1


async def _follow(client: httpx.AsyncClient, admin: dict[str, str], rollouts: list[Rollout], traffic: Traffic,
                  view: View, started: float, pace: Pace) -> bool:
    """Poll the admin API until both rollouts ended or the deadline passed; True when they ended as scripted."""
    seen: set[int] = set()
    # Wall-clock time of the demo's start, to date events by their own timestamps.
    epoch = time.time() - (time.monotonic() - started)
    polls = 0
    while True:
        elapsed = time.monotonic() - started
        with_compare = polls % 3 == 0
        polls += 1
        try:
            answers = await asyncio.gather(*(_poll(client, admin, rollout, elapsed, with_compare=with_compare)
                                             for rollout in rollouts))
        except httpx.TransportError:
            # A slow answer on a busy machine: ask again, within the demo's deadline.
            if elapsed > pace.deadline_s:
                view.line(f"[{elapsed:5.1f}s] the rollouts did not end within {pace.deadline_s:.0f} s")
                return False
            await asyncio.sleep(1)
            continue
        for rollout, (state, events, compare) in zip(rollouts, answers, strict=True):
            for event in reversed(events):
                if event["id"] in seen or event["actor"] != "scheduler":
                    continue
                seen.add(event["id"])
                view.line(_event_line(event, _seconds_since(event.get("at"), epoch, elapsed)))
                _note_path(rollout, event)
            rollout.decision = next((f"{e['action'].replace('_', ' ')}: {headline(e)}" for e in events
                                     if e["actor"] == "scheduler"), rollout.decision)
            if compare is not None:
                rollout.compare = compare
            if not rollout.path and state["status"] == "canary":
                rollout.path.append(f"{state['canary_percent']:g} %")
            rollout.status, rollout.percent = state["status"], state["canary_percent"]
            if rollout.ended and rollout.ended_at is None:
                rollout.ended_at = elapsed
        view.update(rollouts, traffic, elapsed)
        if all(rollout.ended for rollout in rollouts):
            return all(rollout.status == rollout.scenario.expected for rollout in rollouts)
        if elapsed > pace.deadline_s:
            view.line(f"[{elapsed:5.1f}s] the rollouts did not end within {pace.deadline_s:.0f} s")
            return False
        await asyncio.sleep(1)


async def _poll(client: httpx.AsyncClient, admin: dict[str, str], rollout: Rollout, elapsed: float, *,
                with_compare: bool) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
    """A rollout's state, its newest events and (while its canary runs, when asked) its compare table."""
    name = rollout.scenario.deployment
    hours = (elapsed + 5) / 3600
    state, events = await asyncio.gather(client.get(f"/admin/deployments/{name}", headers=admin),
                                         client.get(f"/admin/deployments/{name}/events?limit=20", headers=admin))
    current = state.json()
    compare = None
    if current["status"] == "canary" and (with_compare or rollout.compare is None):
        compare = (await client.get(f"/admin/deployments/{name}/compare?hours={hours:.6f}", headers=admin)).json()
    return current, events.json()["events"], compare


def _seconds_since(stamp: object, epoch: float, fallback: float) -> float:
    """Seconds from the demo's start to an event's ISO timestamp."""
    if not isinstance(stamp, str):
        return fallback
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return fallback
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() - epoch


def _event_line(event: dict[str, Any], elapsed: float) -> str:
    before, after = event.get("from") or {}, event.get("to") or {}
    action = event["action"]
    if action == "advanced":
        what = f"advance {before.get('canary_percent', 0):g} % → {after.get('canary_percent', 0):g} %"
    elif action == "promoted":
        what = f"promote at {before.get('canary_percent', 0):g} %: {before.get('canary')} is the new stable"
    elif action == "rolled_back":
        what = f"roll back at {before.get('canary_percent', 0):g} %: every user back on {before.get('stable')}"
    else:
        what = f"{action.replace('_', ' ')} at {before.get('canary_percent', 0):g} %"
    return f"[{elapsed:5.1f}s] {event['deployment']}: {what} — {headline(event)}"


def _note_path(rollout: Rollout, event: dict[str, Any]) -> None:
    action, after = event["action"], event.get("to") or {}
    if action == "advanced":
        rollout.path.append(f"{after.get('canary_percent', 0):g} %")
    elif action == "promoted":
        rollout.path.append("promoted")
    elif action == "rolled_back":
        rollout.path.append("rolled back")


def _summary(rollouts: list[Rollout], result: bool, elapsed: float, write: Callable[[str], None]) -> None:
    write("")
    for rollout in rollouts:
        if rollout.compare is not None:
            period = "over the rollout" + (f" (until its end at {rollout.ended_at:.0f} s)" if rollout.ended_at else "")
            for text in compare_table(rollout.compare, period):
                write(text)
            write("")
    for rollout in rollouts:
        write(f"{rollout.scenario.deployment}: {' → '.join(rollout.path) or 'no decision'}"
              + (f" after {rollout.ended_at:.0f} s" if rollout.ended_at is not None else ""))
    verdict = "the good canary was promoted and the bad one rolled back" if result else \
        "the rollouts did not end as scripted"
    write(f"demo finished in {elapsed:.0f} s: {verdict}.")


# -- the gateway process --------------------------------------------------------------------------


@contextlib.contextmanager
def _gateway(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`canary-gateway serve` on the demo's config, stopped (SIGTERM, then SIGKILL) on the way out."""
    with log.open("wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config)],
                                   stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


async def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    return
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                raise DemoError("the gateway did not start: " + (" / ".join(tail) or "no output"))
            await asyncio.sleep(0.1)


class DemoError(Exception):
    """The demo could not run; the message says why, in one line."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
