"""Prometheus metrics, structured logs, the time-series API, the dashboard in Chromium, and the shipped
Grafana and Prometheus files."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gateway.analysis.histogram import ALPHA
from gateway.logs import JsonFormatter
from gateway.metrics import Metrics
from tests.conftest import ADMIN_TOKEN, PROVIDER_KEY, Gateway, seed, users_in
from tests.fakes import FakeUpstream

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = [{"role": "user", "content": "SECRET-CONTENT hello"}]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def samples(gateway: Gateway) -> list[Any]:
    with gateway.client() as http:
        text = http.get("/metrics").text
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def value(found: list[Any], name: str, **labels: str) -> float:
    return float(sum(s.value for s in found if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())))


def test_metrics_count_100_known_requests_exactly(make_gateway: Any, fake: FakeUpstream) -> None:
    gateway = make_gateway({"providers": {"fake": {"retries": 0}}})
    fake.behaviour.fail_models = frozenset({"model-b"})
    stable_users = users_in(5, canary=False, count=70)
    canary_users = users_in(5, canary=True, count=25)
    with gateway.client() as http:
        for user in stable_users + canary_users:
            http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES, "user": user})
        for _ in range(5):  # anonymous: stable, and counted as such
            http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES})
    found = samples(gateway)
    assert value(found, "canary_requests_total", deployment="support-bot", version="v1", status="ok") == 75
    assert value(found, "canary_requests_total", api="chat") == 100
    assert value(found, "canary_requests_total", deployment="support-bot", version="v2", status="error") == 25
    assert value(found, "canary_requests_total", version="v2", status="ok") == 0
    assert value(found, "canary_request_duration_seconds_count", deployment="support-bot") == 100
    assert value(found, "canary_anonymous_requests_total", deployment="support-bot") == 5
    assert value(found, "canary_tokens_total", version="v1", kind="prompt") == 75 * 11
    assert value(found, "canary_tokens_total", version="v1", kind="completion") == 75 * 7
    assert value(found, "canary_cost_usd_total", version="v1") == pytest.approx(75 * (11 * 1.0 + 7 * 2.0) / 1e6)
    assert value(found, "canary_upstream_errors_total", provider="fake", kind="status") == 25
    assert value(found, "canary_percent", deployment="support-bot") == 5.0
    buckets = sorted(float(s.labels["le"]) for s in found if s.name == "canary_request_duration_seconds_bucket"
                     and s.labels["version"] == "v1" and s.labels["le"] != "+Inf")
    assert buckets[0] == 0.05 and buckets[-1] == 120.0


def test_label_values_never_carry_what_a_client_sent(gateway: Gateway) -> None:
    hostile = ["alice@example.com", "../../etc/passwd", 'x"}\nfake_metric 1', "💥" * 20, "' OR 1=1 --"]
    with gateway.client() as http:
        for text in hostile:
            http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES, "user": text},
                      headers={"X-Request-Id": "trace-1", "X-User-Id": re.sub(r"[^\x20-\x7e]", "", text) or "x"})
            http.post("/v1/chat/completions", json={"model": text, "messages": MESSAGES, "user": text})
            http.post("/v1/" + re.sub(r"[^a-z./]", "", text), json={})
        text = http.get("/metrics").text
    labels = {value for family in text_string_to_metric_families(text) for sample in family.samples
              for key, value in sample.labels.items() if key not in ("le", "quantile")}
    allowed = {"support-bot", "v1", "v2", "fake", "ok", "error", "client_cancelled", "prompt", "completion",
               "invalid_request", "model_not_found", "not_found", "invalid_api_key",
               "chat", "responses", "messages", "passthrough", "live", "shadow", "canary", "ab_test"}
    assert labels <= allowed, labels - allowed
    for secret in ("alice", "passwd", "fake_metric", "💥", "OR 1=1", "trace-1", PROVIDER_KEY, "SECRET-CONTENT"):
        assert secret not in text


def test_one_json_log_line_per_request_without_content_or_ids(gateway: Gateway,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    with gateway.client() as http:
        answer = http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES,
                                                         "user": "user-secret-id"})
    lines = [JsonFormatter().format(record) for record in caplog.records if record.name == "gateway.access"]
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert {"ts", "level", "request_id", "deployment", "version", "status", "http_status", "latency_ms"} <= set(entry)
    assert entry["request_id"] == answer.headers["x-request-id"] and entry["status"] == "ok"
    for secret in ("user-secret-id", "SECRET-CONTENT", PROVIDER_KEY, ADMIN_TOKEN):
        assert secret not in lines[0]


def test_timeseries_buckets_per_version(gateway: Gateway) -> None:
    now = datetime.now(UTC).replace(second=30, microsecond=0)
    earlier = now - timedelta(minutes=10)
    seed(gateway.settings.database_url, [
        {"version": "v1", "latency_ms": 100.0, "created_at": earlier, "quality": 0.5},
        {"version": "v1", "latency_ms": 300.0, "created_at": earlier},
        {"version": "v1", "latency_ms": 50.0, "created_at": earlier, "status": "error", "http_status": 502},
        {"version": "v2", "latency_ms": 200.0, "created_at": now},
    ])
    with gateway.admin() as http:
        result = http.get("/admin/deployments/support-bot/timeseries?hours=1&step=60").json()
        too_many = http.get("/admin/deployments/support-bot/timeseries?hours=2000&step=60")
        not_minutes = http.get("/admin/deployments/support-bot/timeseries?hours=1&step=90")
    assert result["step"] == 60 and set(result["series"]) == {"v1", "v2"}
    [v1] = result["series"]["v1"]
    assert datetime.fromisoformat(v1["t"]) == earlier.replace(second=0)
    assert (v1["requests"], v1["errors"]) == (3, 1)
    assert v1["error_rate"] == pytest.approx(1 / 3)
    assert v1["p95_latency_ms"] == pytest.approx(290.0, rel=ALPHA)  # 100 and 300, interpolated, from histograms
    assert v1["avg_quality"] == pytest.approx(0.5)
    assert result["series"]["v2"][0]["requests"] == 1
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] in ("hours", "step")
    assert not_minutes.status_code == 400 and not_minutes.json()["error"]["param"] == "step"


def test_the_dashboard_is_served_with_a_strict_policy(gateway: Gateway) -> None:
    with gateway.client() as http:
        page = http.get("/dashboard")
        script = http.get("/dashboard/app.js")
        style = http.get("/dashboard/style.css")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert script.status_code == 200 and "sessionStorage" in script.text and "localStorage" not in script.text
    assert style.status_code == 200
    assert "http://" not in page.text and "https://" not in page.text + script.text  # nothing from a CDN


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package `chromium`)")
def test_the_dashboard_in_headless_chromium(gateway: Gateway, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    now = datetime.now(UTC)
    seed(gateway.settings.database_url, [
        {"version": version, "latency_ms": 100.0 + 40 * minute + (80 if version == "v2" else 0),
         "created_at": now - timedelta(minutes=minute * 10), "quality": 0.8 if version == "v1" else 0.85}
        for minute in range(12) for version in ("v1", "v2")
    ])
    with gateway.admin() as http:
        http.put("/admin/deployments/support-bot/canary-percent", json={"percent": 25, "reason": "ramp"})
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1700})
            page.goto(f"{gateway.url}/dashboard")
            page.fill("#token", "wrong-token")
            page.click("#sign-in button[type=submit]")
            page.wait_for_selector("#sign-in-error:has-text('refused')")
            page.fill("#token", ADMIN_TOKEN)
            page.click("#sign-in button[type=submit]")
            page.wait_for_selector("#deployments button[data-deployment='support-bot']")
            page.wait_for_selector(".chart[data-metric='p95_latency_ms'] polyline[data-version='v2']")
            assert page.text_content("#state").count("25%") == 1
            assert page.locator(".chart polyline").count() >= 6
            rows = page.locator("#compare tr[data-metric]")
            assert rows.count() == 5
            assert "+" in page.text_content("#compare tr[data-metric='p95_latency_ms']")
            gates = page.locator("#intervals tr[data-role='gate']")
            assert gates.count() == 4 and page.text_content("#stage-summary").startswith("Decision now: ")
            assert "percent_set" in page.text_content("#events")
            assert page.evaluate("Object.keys(localStorage).length") == 0
            screenshot = tmp_path / "dashboard.png"
            page.screenshot(path=str(screenshot), full_page=True)
            assert screenshot.stat().st_size > 20_000

            page.on("dialog", lambda dialog: dialog.accept("bad answers seen in the dashboard"))
            page.click("#actions button[data-action='rollback']")
            page.wait_for_selector("#state dd:has-text('rolled_back')")
        finally:
            browser.close()
    with gateway.admin() as http:
        state = http.get("/admin/deployments/support-bot").json()
        newest = http.get("/admin/deployments/support-bot/events?limit=1").json()["events"][0]
    assert (state["status"], state["canary_percent"]) == ("rolled_back", 0.0)
    assert (newest["action"], newest["actor"], newest["reason"]) == (
        "rolled_back", "ops", "bad answers seen in the dashboard")


def known_metric_names() -> set[str]:
    names = set()
    for family in Metrics(CollectorRegistry()).registry.collect():
        names.add(family.name)
        for suffix in ("_total", "_bucket", "_count", "_sum", "_created"):
            names.add(family.name + suffix)
    return names


def metric_names_in(expression: str) -> set[str]:
    return set(re.findall(r"\b(canary_[a-z_]+)", expression))


def test_the_grafana_dashboard_uses_only_real_metrics() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/canary-gateway.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    expressions += [annotation["expr"] for annotation in dashboard["annotations"]["list"]]
    used = set().union(*(metric_names_in(expression) for expression in expressions))
    assert used and used <= known_metric_names(), used - known_metric_names()
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("requests", "error rate", "p95 latency", "cost", "quality", "canary percent"):
        assert topic in titles
    assert {annotation["name"] for annotation in dashboard["annotations"]["list"]} >= {"Rollbacks", "Promotions"}
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


def test_the_prometheus_rules_are_valid() -> None:
    rules_file = ROOT / "deploy/prometheus/alerts.yml"
    rules = yaml.safe_load(rules_file.read_text())
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    assert {"CanaryRolledBack", "VersionErrorRateAboveDeployment", "RequestRecordsDropped"} <= set(alerts)
    for rule in alerts.values():
        assert metric_names_in(rule["expr"]) <= known_metric_names()
        assert rule["annotations"]["summary"] and rule["labels"]["severity"] in ("warning", "critical")
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert config["scrape_configs"][0]["metrics_path"] == "/metrics"
    promtool = shutil.which("promtool")
    if promtool:
        checked = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
