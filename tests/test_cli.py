"""The command line as a user runs it: real processes, the shipped example config."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ADMIN_TOKEN, query
from tests.fakes import free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.yaml"


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=60,
    )


def wait_until_ready(url: str, process: subprocess.Popen[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "the gateway did not become ready"
        time.sleep(0.1)


def test_a_config_error_is_one_line_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("provider: openai\n        model: gpt-4o-mini\n        system_prompt: "
                                               '"You are a concise', "provider: opnai\n        model: gpt-4o-mini\n"
                                               '        system_prompt: "You are a concise'))
    result = run_cli("serve", "--config", str(bad), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "canary-gateway: config error: deployments.support-bot.versions.v2.provider: unknown provider 'opnai'"
    ]
    assert "Traceback" not in result.stderr + result.stdout


def test_a_missing_config_file_is_one_line(tmp_path: Path) -> None:
    result = run_cli("serve", "--config", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "nope.yaml" in result.stderr


def test_migrate_creates_the_schema(tmp_path: Path) -> None:
    result = run_cli("migrate", "--config", str(EXAMPLE), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    tables = query(
        f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}", "SELECT name FROM sqlite_master WHERE type='table'"
    )
    assert {"deployments", "versions", "request_records", "alembic_version"} <= {row["name"] for row in tables}


def test_serve_runs_the_example_config_on_sqlite(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(EXAMPLE), "--port", str(port)],
        cwd=tmp_path, env={**os.environ, "OPENAI_API_KEY": "sk-example-SENTINEL-0000000000"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, process)
        models = httpx.get(f"{url}/v1/models").json()
        assert [model["id"] for model in models["data"]] == ["support-bot"]
        answer = httpx.post(f"{url}/v1/chat/completions", timeout=30, json={
            "model": "support-bot", "messages": [{"role": "user", "content": "hi"}], "user": "u1"})
        # No provider is reachable from here: the error must still be OpenAI-shaped.
        assert answer.status_code in (502, 504)
        assert set(answer.json()["error"]) >= {"message", "type", "code"}
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    # 128 + SIGTERM, after the graceful shutdown: the last log line made it out.
    assert process.returncode == 128 + signal.SIGTERM
    assert '"msg": "gateway stopped"' in stderr
    assert "Traceback" not in stderr and "sk-example-SENTINEL" not in stderr
    rows = query(f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}", "SELECT status, error_kind FROM request_records")
    assert len(rows) == 1 and rows[0]["status"] == "error"


def admin_cli(gateway: Any, *args: str, token: str = ADMIN_TOKEN) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, "--url", gateway.url, "--token", token, cwd=ROOT)


def test_admin_commands_against_a_running_gateway(gateway: Any) -> None:
    status = admin_cli(gateway, "status")
    assert status.returncode == 0, status.stderr
    header, row = status.stdout.splitlines()
    assert header.split() == ["Deployment", "Stable", "Canary", "Percent", "Stage", "Status", "Mode", "Paused",
                              "Revision"]
    assert row.split()[:7] == ["support-bot", "v1", "v2", "5.00", "0", "canary", "canary"]

    moved = admin_cli(gateway, "set-percent", "support-bot", "25", "--reason", "ramp up")
    assert moved.returncode == 0 and "25.00 %" in moved.stdout

    compare = admin_cli(gateway, "compare", "support-bot", "--hours", "24")
    assert compare.returncode == 0, compare.stderr
    lines = compare.stdout.splitlines()
    assert lines[1] == f"{'Metric':<20}{'Stable':>11}{'Canary':>11}{'Diff':>11}"
    assert lines[2] == "-" * 51
    assert [line.split()[0] for line in lines[3:8]] == ["requests", "avg_quality", "p95_latency", "avg_cost",
                                                         "error_rate"]
    assert lines[9] == "This stage, canary / stable with anytime-valid bounds:"
    assert {line.split()[0] for line in lines[11:-1]} >= {"error_rate", "quality", "p95_latency", "cost"}
    assert lines[-1].startswith("Decision now: not enough data yet")

    paused = admin_cli(gateway, "pause", "support-bot")
    assert paused.returncode == 0 and "paused" in paused.stdout
    rolled = admin_cli(gateway, "rollback", "support-bot", "--reason", "bad answers")
    assert rolled.returncode == 0 and "status rolled_back" in rolled.stdout
    with gateway.admin() as http:
        events = http.get("/admin/deployments/support-bot/events").json()["events"]
    assert (events[0]["action"], events[0]["actor"], events[0]["reason"]) == ("rolled_back", "ops", "bad answers")
    assert (events[2]["action"], events[2]["reason"]) == ("percent_set", "ramp up")


def test_admin_command_errors_are_one_line(gateway: Any) -> None:
    refused = run_cli("status", "--url", f"http://127.0.0.1:{free_port()}", "--token", "x", cwd=ROOT)
    wrong = admin_cli(gateway, "status", token="wrong")
    missing = admin_cli(gateway, "promote", "no-such-bot")
    admin_cli(gateway, "promote", "support-bot")
    conflict = admin_cli(gateway, "promote", "support-bot")
    for result, text in ((refused, "cannot connect"), (wrong, "401"), (missing, "(404)"), (conflict, "(409)")):
        assert result.returncode == 1
        assert len(result.stderr.strip().splitlines()) == 1 and text in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_several_workers_report_one_set_of_metrics(tmp_path: Path, fake: Any) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "database_url: sqlite+aiosqlite:///" + str(tmp_path / "gateway.db") + "\n"
        "providers:\n  fake: {kind: openai, base_url: '" + fake.url + "', api_key: sk-x-0000000000}\n"
        "deployments:\n  bot:\n    stable: v1\n    versions:\n      v1: {provider: fake, model: model-a}\n"
        f"recorder: {{spool_dir: '{tmp_path / 'spool'}'}}\n"
    )
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port), "--workers", "2"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process)
        for _ in range(40):  # new connections, so both workers answer some
            httpx.post(
                f"{url}/v1/chat/completions", json={"model": "bot", "messages": [{"role": "user", "content": "x"}]}
            )
        totals = set()
        for _ in range(6):
            text = httpx.get(f"{url}/metrics").text
            totals.add(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                           if line.startswith("canary_requests_total{")))
        assert totals == {40.0}
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
