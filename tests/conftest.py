"""Fixtures: databases (SQLite and PostgreSQL), a fake upstream, a running gateway; shared helpers.

Every test that takes `database_url` (directly or through `make_gateway` /
`gateway`) runs twice, on SQLite and on PostgreSQL, unless its module or the
test is marked `sqlite_only` because storage is not what it tests. The
PostgreSQL runs carry the `postgres` marker and use a throwaway database
created for the test session on 127.0.0.1:5432 (override with
CANARY_TEST_POSTGRES_URL), every table emptied before each test.

Without a reachable PostgreSQL those tests are skipped, saying why, and the
rest runs (`-m "not postgres"` leaves them out altogether). CI sets
CANARY_TEST_REQUIRE_POSTGRES=1, which turns an unreachable PostgreSQL into a
failure instead: there, nothing is skipped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import hashlib
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.app import create_app
from gateway.config import DatabaseSettings, Settings, settings_from_dict
from gateway.migrate import upgrade
from gateway.models import RequestRecord
from gateway.store import Store, create_engine
from gateway.tables import Base
from tests.fakes import FakeAnthropic, FakeUpstream, free_port

ADMIN_URL = os.environ.get("CANARY_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
PROVIDER_KEY = "sk-test-SENTINEL-provider-key-0123456789"
ADMIN_TOKEN = "admin-SENTINEL-token-9876543210"
# Every table of the schema but Alembic's, emptied before each PostgreSQL test.
TABLES = tuple(table.name for table in Base.metadata.sorted_tables)
MESSAGES = [{"role": "user", "content": "hello"}]
# Seconds-long rollouts: judged as soon as each version has 5 calls; the confidence
# sequence tuned for the few hundred users these tests have.
# Latency on this shared machine is noise: a wide slack keeps the latency gate out of the way.
FAST_POLICY = {"stages": [5, 25, 50, 100], "check_interval": "1s", "min_stage_duration": "1s", "min_requests": 5,
               "sequential_tuning": 200, "promote_when": {"latency_slack_ms": 10000}}
SAME_PRICE = {"model-a": {"input": 1.0, "output": 2.0}, "model-b": {"input": 1.0, "output": 2.0}}


def query(url: str, sql: str, **params: Any) -> list[dict[str, Any]]:
    """Run one statement against the test database and return its rows as dicts."""

    async def run() -> list[dict[str, Any]]:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as connection:
                result = await connection.execute(text(sql), params)
                return [dict(row._mapping) for row in result] if result.returns_rows else []
        finally:
            await engine.dispose()

    # A thread of its own: async tests call this while their loop is running.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: needs the PostgreSQL server of CANARY_TEST_POSTGRES_URL")
    config.addinivalue_line("markers", "sqlite_only(reason): storage is not under test; one database is enough")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`database_url` and `unmigrated_database_url` are SQLite and PostgreSQL (SQLite alone under `sqlite_only`)."""
    for name in ("database_url", "unmigrated_database_url"):
        if name not in metafunc.fixturenames:
            continue
        kinds: list[Any] = ["sqlite"]
        if metafunc.definition.get_closest_marker("sqlite_only") is None:
            kinds.append(pytest.param("postgresql", marks=pytest.mark.postgres))
        metafunc.parametrize(name, kinds, indirect=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"postgres_server", "postgres_url"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The URL of the test server's admin database, once it answered.

    Skips the test, saying why, when the server cannot be reached; fails
    instead under CANARY_TEST_REQUIRE_POSTGRES (CI).
    """
    try:
        query(ADMIN_URL, "SELECT 1")
    except (OSError, SQLAlchemyError) as exc:
        if os.environ.get("CANARY_TEST_REQUIRE_POSTGRES"):
            raise
        host = ADMIN_URL.rpartition("@")[2]
        pytest.skip(f"PostgreSQL is not reachable at {host} ({type(exc).__name__}); start it or set "
                    "CANARY_TEST_POSTGRES_URL to run these tests")
    return ADMIN_URL


@pytest.fixture(scope="session")
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A migrated throwaway database on the test server, dropped at the end of the session."""
    name = f"canary_test_{uuid.uuid4().hex[:10]}"
    base, _, _ = ADMIN_URL.rpartition("/")
    _autocommit(ADMIN_URL, f'CREATE DATABASE "{name}"')
    url = f"{base}/{name}"
    upgrade(url)
    yield url
    _autocommit(ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _autocommit(url: str, sql: str) -> None:
    async def run() -> None:
        engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as connection:
                await connection.execute(text(sql))
        finally:
            await engine.dispose()

    asyncio.run(run())


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, migrated database of each kind (see `pytest_generate_tests`)."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
        upgrade(url)
        return url
    postgres: str = request.getfixturevalue("postgres_url")
    query(postgres, f"TRUNCATE {', '.join(TABLES)} CASCADE")
    return postgres


@pytest.fixture
def unmigrated_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database with no schema at all, of each kind; in a directory that does not exist yet on SQLite."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh' / 'gateway.db'}"
        return
    server: str = request.getfixturevalue("postgres_server")
    name = f"canary_fresh_{uuid.uuid4().hex[:10]}"
    _autocommit(server, f'CREATE DATABASE "{name}"')
    yield f"{server.rpartition('/')[0]}/{name}"
    _autocommit(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(upstream: FakeUpstream) -> FakeUpstream:
    """The session's fake upstream, reset to good behaviour for this test."""
    upstream.reset()
    return upstream


@pytest.fixture(scope="session")
def anthropic_upstream() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


@pytest.fixture
def claude(anthropic_upstream: FakeAnthropic) -> FakeAnthropic:
    """The session's fake Anthropic upstream, reset to good behaviour for this test."""
    anthropic_upstream.reset()
    return anthropic_upstream


def base_config(database_url: str, upstream_url: str, spool_dir: Path) -> dict[str, Any]:
    return {
        "database_url": database_url,
        "user_id_salt": "test-salt",
        "admin_tokens": {"ops": ADMIN_TOKEN},
        "server": {"max_body_bytes": 65536},
        "database": {"refresh_interval": "200ms"},
        "recorder": {"flush_interval": "50ms", "spool_dir": str(spool_dir)},
        "providers": {
            "fake": {
                "kind": "openai",
                "base_url": upstream_url,
                "api_key": PROVIDER_KEY,
                "timeout_s": 5,
                "retries": 2,
            },
        },
        "pricing": {"model-a": {"input": 1.0, "output": 2.0}, "model-b": {"input": 3.0, "output": 4.0}},
        "deployments": {
            "support-bot": {
                "stable": "v1",
                "canary": "v2",
                "versions": {
                    "v1": {"provider": "fake", "model": "model-a", "system_prompt": "You are v1."},
                    "v2": {
                        "provider": "fake",
                        "model": "model-b",
                        "system_prompt": "You are v2.",
                        "params": {"temperature": 0.3},
                    },
                },
                "policy": {"stages": [5, 25, 50, 100]},
            }
        },
    }


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class Gateway:
    """A real gateway served by uvicorn on 127.0.0.1, in a thread with its own loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_config=None, access_log=False, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="gateway", daemon=True)
        self._sdk_clients: list[openai.OpenAI] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Gateway:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        for client in self._sdk_clients:
            client.close()
        self._sdk_clients.clear()
        self.server.should_exit = True
        self._thread.join(30)

    def openai(self, api_key: str = "client-secret-never-forwarded") -> openai.OpenAI:
        """The official OpenAI SDK pointed at this gateway; closed when the gateway stops."""
        client = openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=20)
        self._sdk_clients.append(client)
        return client

    def records(self, expected: int, *, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until `expected` request records are stored, then return them all."""
        deadline = time.monotonic() + timeout
        while True:
            rows = query(self.settings.database_url, "SELECT * FROM request_records ORDER BY created_at, id")
            if len(rows) >= expected or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def admin(self, token: str = ADMIN_TOKEN) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def make_gateway(database_url: str, fake: FakeUpstream, tmp_path: Path) -> Iterator[Any]:
    """Start gateways with the test config plus `changes`; all are stopped at the end."""
    started: list[Gateway] = []

    def make(changes: dict[str, Any] | None = None) -> Gateway:
        config = merge(base_config(database_url, fake.url, tmp_path / "spool"), changes or {})
        gateway = Gateway(settings_from_dict(config)).start()
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        gateway.stop()


@pytest.fixture
def gateway(make_gateway: Any) -> Gateway:
    gw: Gateway = make_gateway()
    return gw


# -- a throwaway PostgreSQL cluster, for tests that stop, start or freeze the database -------------------

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class Cluster:
    """A PostgreSQL cluster of its own (initdb on a free port; as `postgres` when run as root)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="canary-pg-"))
        self.data = self.directory / "data"
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-l", str(self.directory / "log"),
                  "-o", f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1", "start")

    def stop(self) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-m", "fast", "stop")

    def processes(self) -> list[int]:
        """The postmaster and every process it started."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = []
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            except OSError:
                continue
            if fields.get("PPid", "").strip() == str(postmaster):
                children.append(int(status.parent.name))
        return [postmaster, *children]

    def freeze(self) -> None:
        """SIGSTOP every process: connections stay open and nothing answers (a hung database)."""
        for pid in self.processes():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self.processes():
            os.kill(pid, signal.SIGCONT)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A started throwaway cluster, stopped and removed after the test."""
    if not (PG_BIN / "initdb").exists() or (os.geteuid() == 0 and shutil.which("runuser") is None):
        pytest.skip("PostgreSQL 15 server binaries are not installed here")
    made = Cluster()
    made.init()
    made.start()
    yield made
    with contextlib.suppress(OSError, ValueError):
        made.thaw()
    with contextlib.suppress(subprocess.CalledProcessError):
        made.stop()
    made.remove()


# -- helpers shared by test modules -------------------------------------------------------------


def users_in(percent: float, *, canary: bool, count: int) -> list[str]:
    """`count` user ids that support-bot routes to the canary (or not) at `percent`."""
    chosen = []
    for index in range(100_000):
        user = f"user-{index}"
        bucket = int(hashlib.md5(f"support-bot:{user}".encode()).hexdigest(), 16) % 10000
        if (bucket < percent * 100) == canary:
            chosen.append(user)
            if len(chosen) == count:
                return chosen
    raise AssertionError("not enough users")


class Traffic:
    """Calls the gateway continuously from threads, each call from a user drawn from `users`."""

    def __init__(self, gateway: Gateway, users: list[str] | None = None, *, threads: int = 2) -> None:
        self._gateway = gateway
        self._users = users or [f"user-{index}" for index in range(3000)]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(seed,), daemon=True) for seed in range(threads)]
        self.statuses: dict[int, int] = {}

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        with self._gateway.client() as http:
            while not self._stop.is_set():
                answer = http.post("/v1/chat/completions",
                                   json={"model": "support-bot", "messages": MESSAGES, "user": rng.choice(self._users)})
                self.statuses[answer.status_code] = self.statuses.get(answer.status_code, 0) + 1


def wait_for(check: Any, *, timeout: float, what: str) -> Any:
    """Poll `check()` every 0.1 s until it is truthy and return its value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def seed(url: str, rows: list[dict[str, Any]]) -> None:
    """Write request records of support-bot, five minutes old, with `rows` overriding the defaults.

    Through the store's batch insert, as the gateway writes them: the aggregates follow.
    """
    records = []
    for index, row in enumerate(rows):
        values = {
            "id": f"r{index}",
            "created_at": datetime.now(UTC) - timedelta(minutes=5),
            "deployment": "support-bot",
            "user_hash": None,
            "provider": "fake",
            "upstream_model": "m",
            "stream": False,
            "status": "ok",
            "http_status": 200,
            "error_kind": None,
            "ttft_ms": None,
            "prompt_tokens": 10,
            "completion_tokens": 20,
            "cost_usd": 0.001,
            "quality": None,
            **row,
        }
        records.append(RequestRecord(**values))

    async def run() -> None:
        store = Store(create_engine(url, DatabaseSettings()))
        try:
            await store.insert_batch(records=records, scores=[])
        finally:
            await store.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


def reference_variance(x: Any, y: Any) -> float:
    """Var(Σy/Σx) by the delta method written out from per-user moments (numpy arrays; users with x > 0)."""
    import numpy as np

    keep = x > 0
    x, y = x[keep], y[keep]
    mx, my = x.mean(), y.mean()
    cov = np.cov(np.vstack([x, y]), ddof=1)
    gradient = np.array([-my / mx**2, 1 / mx])
    # max: when y is proportional to x the variance is 0, which rounding may put just below.
    return max(float(gradient @ cov @ gradient) / len(x), 0.0)


def reference_multiplier(units: int, alpha: float, tuning: float) -> float:
    """The two-sided normal-mixture boundary at `units` over √units, found with SciPy:
    ∫ exp(λb − λ²t/2) dN(0, ρ²)(λ) = 1/α, ρ tuned for `tuning` users (Waudby-Smith et al. 2024)."""
    import math

    from scipy import integrate, optimize

    log_term = -2 * math.log(alpha)
    rho = math.sqrt((log_term + math.log(log_term + 1)) / tuning)

    def excess(boundary: float) -> float:
        # The integrand is a bell around λ* = b / (t + 1/ρ²): integrate where it lives, both signs of λ.
        peak, width = boundary / (units + rho**-2), (units + rho**-2) ** -0.5
        reach = abs(peak) + 40 * width
        density = 1 / (rho * math.sqrt(2 * math.pi))  # N(0, ρ²), written out: scipy's pdf is slow per point
        value, _ = integrate.quad(
            lambda lam: math.exp(lam * boundary - lam * lam * units / 2 - lam * lam / (2 * rho * rho)) * density,
            -reach, reach, points=[peak], limit=200)
        return value - 1 / alpha

    boundary = optimize.brentq(excess, math.sqrt(units), 10 * math.sqrt(units))
    return float(boundary / math.sqrt(units))


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def dashboard(gateway: Gateway) -> Iterator[Any]:
    """A headless Chromium page on the gateway's dashboard, signed in with the admin token (playwright)."""
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian package `chromium`)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1700})
            page.goto(f"{gateway.url}/dashboard")
            page.fill("#token", ADMIN_TOKEN)
            page.click("#sign-in button[type=submit]")
            page.wait_for_selector("#deployments button[data-deployment='support-bot']")
            yield page
        finally:
            browser.close()
