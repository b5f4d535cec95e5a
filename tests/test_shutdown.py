"""SIGTERM on a real gateway process with plain and streamed calls in flight (RELIABILITY F1, F2, F4).

The drain a load balancer expects: readiness 503 at once while the listener
still accepts (`drain_delay`), then no new connections, calls in flight
finish within `shutdown_grace` (sub-second values honoured), then what is
left is ended by the gateway itself (a 503 in OpenAI's shape for plain
calls, an SSE error event for streams, recorded as errors of kind
`shutdown`), every record is written, and the process exits.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.conftest import query
from tests.fakes import FakeUpstream, free_port

DRAIN_DELAY = 2.0
GRACE = 1.5  # "1500ms": the half second must not be truncated away
MESSAGES = [{"role": "user", "content": "hello"}]


def start_gateway(tmp_path: Path, upstream_url: str, server: dict[str, Any]) -> tuple[subprocess.Popen[str], str]:
    config = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
        "user_id_salt": "test-salt",
        "server": server,
        "recorder": {"spool_dir": str(tmp_path / "spool")},
        "providers": {"fake": {"kind": "openai", "base_url": upstream_url, "api_key": "sk-x-0000000000",
                               "timeout_s": 60, "retries": 0}},
        "deployments": {"bot": {"stable": "v1", "versions": {"v1": {"provider": "fake", "model": "model-a"}}}},
        "passthrough": {"provider": "fake", "routes": ["/v1/embeddings"]},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(path), "--port", str(port)],
        cwd=tmp_path, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "the gateway did not become ready"
        time.sleep(0.1)


class Outcome:
    """What one call saw, filled in by its thread."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: httpx.Headers | None = None
        self.body = b""
        self.finished_at: float | None = None
        self.error: str | None = None


def call(url: str, user: str, *, stream: bool) -> tuple[threading.Thread, Outcome]:
    """A call on its own thread: a pass-through embedding for users named `embed-*`, else a chat completion."""
    outcome = Outcome()

    def run() -> None:
        path, body = "/v1/chat/completions", {"model": "bot", "messages": MESSAGES, "user": user, "stream": stream}
        if user.startswith("embed"):
            path, body = "/v1/embeddings", {"model": "text-embedding-3-small", "input": "hello", "user": user}
        try:
            with httpx.Client(timeout=60) as client, client.stream("POST", f"{url}{path}", json=body) as answer:
                outcome.status, outcome.headers = answer.status_code, answer.headers
                for part in answer.iter_raw():
                    outcome.body += part
        except httpx.HTTPError as exc:  # a truncated answer is a failure the test reports
            outcome.error = repr(exc)
        outcome.finished_at = time.monotonic()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def refused(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return False
    except OSError:
        return True


def events(body: bytes) -> list[str]:
    return [line.removeprefix("data: ") for line in body.decode().splitlines() if line.startswith("data: ")]


def test_sigterm_drains_then_ends_what_is_left(tmp_path: Path, fake: FakeUpstream) -> None:
    b = fake.behaviour
    b.delays = {"plain-short": 2.8, "plain-long": 60.0, "embed-short": 2.8, "embed-long": 60.0}
    b.chunk_counts = {"stream-short": 3, "stream-long": 400}
    b.chunk_delays = {"stream-short": 0.9, "stream-long": 0.3}
    process, url = start_gateway(tmp_path, fake.url, {"drain_delay": f"{DRAIN_DELAY:g}s", "shutdown_grace": "1500ms"})
    try:
        calls = {user: call(url, user, stream=user.startswith("stream")) for user in
                 ("plain-short", "plain-long", "stream-short", "stream-long", "embed-short", "embed-long")}
        deadline = time.monotonic() + 10
        while fake.hits < 6:
            assert time.monotonic() < deadline, "the calls did not reach the upstream"
            time.sleep(0.02)
        time.sleep(0.3)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)

        time.sleep(0.5)
        # Draining: not ready, but a new connection is accepted and served.
        with httpx.Client(timeout=10) as client:
            ready = client.get(f"{url}/readyz")
            assert ready.status_code == 503 and ready.json()["status"] == "shutting_down"
            late = client.post(
                f"{url}/v1/chat/completions", json={"model": "bot", "messages": MESSAGES, "user": "late"}
            )
            assert late.status_code == 200
        assert not refused(url)

        while not refused(url):
            assert time.monotonic() - signalled < DRAIN_DELAY + 2, "the listener did not close after the delay"
            time.sleep(0.05)
        closed = time.monotonic()
        assert closed - signalled > DRAIN_DELAY - 0.2

        for thread, _ in calls.values():
            thread.join(30)
        _, stderr = process.communicate(timeout=30)
        exited = time.monotonic()
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    outcomes = {user: outcome for user, (_, outcome) in calls.items()}
    assert all(outcome.error is None for outcome in outcomes.values()), {u: o.error for u, o in outcomes.items()}
    # Finished within the grace: answered as usual.
    short = outcomes["plain-short"]
    assert short.status == 200 and json.loads(short.body)["choices"][0]["message"]["content"]
    assert events(outcomes["stream-short"].body)[-1] == "[DONE]"
    # Still running when the grace ran out: ended by the gateway, in the caller's shape.
    long = outcomes["plain-long"]
    assert long.status == 503 and long.headers is not None
    error = json.loads(long.body)["error"]
    assert error["code"] == "gateway_shutting_down" and "shutting down" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    assert long.headers["content-type"] == "application/json" and long.headers["retry-after"] == "1"
    assert long.finished_at is not None and GRACE - 0.3 < long.finished_at - closed < GRACE + 1.0
    # The pass-through too: answered within the grace, ended after it.
    assert outcomes["embed-short"].status == 200 and json.loads(outcomes["embed-short"].body)["data"]
    ended = outcomes["embed-long"]
    assert ended.status == 503 and json.loads(ended.body)["error"]["code"] == "gateway_shutting_down"
    streamed = outcomes["stream-long"]
    assert streamed.status == 200
    last = json.loads(events(streamed.body)[-1])
    assert "shutting down" in last["error"]["message"]
    assert "[DONE]" not in events(streamed.body)

    assert process.returncode == 128 + signal.SIGTERM
    assert exited - signalled < DRAIN_DELAY + GRACE + 5
    assert "Traceback" not in stderr and "graceful shutdown exceeded" not in stderr
    assert "ended 3 calls still in flight" in stderr and '"msg": "gateway stopped"' in stderr

    by_id = {row["id"]: row for row in query(
        f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}", "SELECT * FROM request_records")}
    assert len(by_id) == 7  # the six in flight and the one served while draining
    for user, outcome in outcomes.items():
        assert outcome.headers is not None
        row = by_id[outcome.headers["x-request-id"]]
        if user.endswith("short"):
            assert row["status"] == "ok" and row["error_kind"] is None, user
        else:
            assert row["status"] == "error" and row["error_kind"] == "shutdown", user
    assert by_id[long.headers["x-request-id"]]["http_status"] == 503


def test_a_repeated_sigterm_keeps_draining_and_sigint_skips_the_delay(tmp_path: Path, fake: FakeUpstream) -> None:
    process, url = start_gateway(tmp_path, fake.url, {"drain_delay": "30s", "shutdown_grace": "0s"})
    try:
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)  # as systemd and the worker supervisor both would
        time.sleep(1.0)
        assert process.poll() is None
        assert httpx.get(f"{url}/readyz").status_code == 503
        signalled = time.monotonic()
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=20)
        assert time.monotonic() - signalled < 5
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
