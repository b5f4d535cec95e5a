"""Rollout automation end to end: real traffic, real checks, real webhooks, through the API only."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import FAST_POLICY, SAME_PRICE, Gateway, Traffic, users_in, wait_for
from tests.fakes import FakeUpstream, WebhookReceiver

MESSAGES = [{"role": "user", "content": "hello"}]
@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(fail_first=1).start()
    yield receiver
    receiver.stop()


def state_changes(gateway: Gateway) -> list[dict[str, Any]]:
    with gateway.admin() as http:
        events = http.get("/admin/deployments/support-bot/events?limit=1000").json()["events"]
    return [e for e in reversed(events) if e["action"] not in ("hold", "dry_run")]


@pytest.mark.timeout(300)
def test_a_good_canary_is_promoted_through_every_stage_to_stable(make_gateway: Any, webhook: WebhookReceiver) -> None:
    gateway = make_gateway({"pricing": SAME_PRICE, "alerts": {"webhooks": [webhook.url]},
                            "deployments": {"support-bot": {"policy": FAST_POLICY}}})
    with Traffic(gateway) as traffic:
        def promoted() -> bool:
            with gateway.admin() as http:
                return bool(http.get("/admin/deployments/support-bot").json()["status"] == "promoted")

        wait_for(promoted, timeout=180, what="the promotion")
    assert set(traffic.statuses) == {200}

    changes = state_changes(gateway)
    assert [(e["action"], e["to"]["canary_percent"]) for e in changes] == [
        ("deployment_created", 5.0), ("advanced", 25.0), ("advanced", 50.0), ("promoted", 0.0)]
    assert all(e["actor"] == "scheduler" for e in changes[1:])
    final = changes[-1]
    assert (final["to"]["stable"], final["to"]["canary"], final["to"]["status"]) == ("v2", None, "promoted")
    assert final["reason"] == "every gate passed at 50 %, the last stage → promote"
    snapshot = final["snapshot"]
    assert snapshot["evidence"]["canary"]["calls"] >= 5 and snapshot["evidence"]["canary"]["errors"] == 0
    gates = {m["metric"]: m for m in snapshot["metrics"] if m["role"] == "gate"}
    assert {name: gate["verdict"] for name, gate in gates.items()} == {
        "error_rate": "pass", "quality": "pass", "p95_latency": "pass", "cost": "pass"}
    assert gates["quality"]["line"] == "quality: no scores on either version: gate passes"
    assert gates["cost"]["upper"] <= 1.3 and gates["cost"]["lower"] <= 1.0 <= gates["cost"]["upper"]

    with gateway.client() as http:
        versions = {http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES,
                                                            "user": f"after-{i}"}).headers["x-canary-version"]
                    for i in range(30)}
    assert versions == {"v2"}
    wait_for(lambda: len(webhook.received) >= 3, timeout=15, what="the alerts")
    assert [alert["decision"] for alert in webhook.received] == ["advance", "advance", "promote"]
    assert "promoted to stable" in webhook.received[-1]["text"]


@pytest.mark.timeout(300)
def test_a_canary_with_doubled_errors_is_rolled_back_once_with_an_alert(
    make_gateway: Any, fake: FakeUpstream, webhook: WebhookReceiver
) -> None:
    policy = {**FAST_POLICY, "stages": [50, 100], "min_stage_duration": "1h", "critical_error_rate": 0.9,
              "false_rollback_rate": 0.05}
    changes = {"pricing": SAME_PRICE, "alerts": {"webhooks": [webhook.url]}, "providers": {"fake": {"retries": 0}},
               "deployments": {"support-bot": {"policy": policy}}}
    first = make_gateway(changes)
    second = make_gateway(changes)  # another replica on the same database
    fake.behaviour.error_rates = {"model-a": 0.25, "model-b": 0.5}
    with Traffic(first, threads=3):
        def rolled_back() -> bool:
            with first.admin() as http:
                return bool(http.get("/admin/deployments/support-bot").json()["status"] == "rolled_back")

        wait_for(rolled_back, timeout=180, what="the rollback")
        time.sleep(2.5)  # a fixed wait on purpose: both replicas get more checks in which nothing may happen
    changes_seen = [e for e in state_changes(first) if e["action"] == "rolled_back"]
    assert len(changes_seen) == 1
    event = changes_seen[0]
    assert event["actor"] == "scheduler" and event["to"]["canary"] == "v2" and event["to"]["canary_percent"] == 0.0
    assert event["reason"].startswith("error rate ×") and event["reason"].endswith("> 1.5 → rollback")
    [test] = [m for m in event["snapshot"]["metrics"] if m["verdict"] == "rollback"]
    assert test["metric"] == "error_rate" and test["lower"] > 1.5 and test["estimate"] > test["lower"]
    evidence = event["snapshot"]["evidence"]
    assert evidence["canary"]["error_rate"] > evidence["stable"]["error_rate"]

    wait_for(lambda: webhook.received, timeout=15, what="the rollback alert")
    assert webhook.attempts >= 2  # the first delivery failed and was retried
    [alert] = webhook.received
    assert alert["decision"] == "rollback" and alert["deployment"] == "support-bot"
    assert "rolled back" in alert["text"] and "error rate ×" in alert["text"]

    with second.client() as http:
        answers = [http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES,
                                                           "user": user}) for user in users_in(50, canary=True,
                                                                                                count=20)]
    assert {a.headers["x-canary-version"] for a in answers} == {"v1"}
    with first.client() as http:
        metrics = http.get("/metrics").text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(metrics) for s in family.samples}
    rollbacks = sum(value for (name, _), value in samples.items() if name == "canary_rollbacks_total")
    assert rollbacks <= 1


@pytest.mark.timeout(300)
def test_a_sample_ratio_mismatch_holds_with_an_alert(make_gateway: Any, webhook: WebhookReceiver) -> None:
    """The canary gets 2 % of the users at a configured 5 %: no verdict, an alert, and the what-if says why."""
    started = time.monotonic()
    gateway = make_gateway({"pricing": SAME_PRICE, "alerts": {"webhooks": [webhook.url]},
                            "deployments": {"support-bot": {"policy": {**FAST_POLICY, "check_interval": "1h"}}}})
    users = users_in(5, canary=True, count=20) + users_in(5, canary=False, count=980)
    with gateway.client() as http:
        for user in users:
            assert http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES,
                                                           "user": user}).status_code == 200
    gateway.records(len(users))
    time.sleep(max(0.0, 62 - (time.monotonic() - started)))  # the test runs from a minute into the stage
    with gateway.admin() as http:
        [decision] = http.post("/admin/check").json()["decisions"]
        preview = http.get("/admin/deployments/support-bot/decision").json()
        state = http.get("/admin/deployments/support-bot").json()
        events = http.get("/admin/deployments/support-bot/events").json()["events"]
    assert (decision["decision"], decision["applied"]) == ("hold", False)
    assert decision["alerts"] == ["sample_ratio_mismatch"]
    assert decision["summary"].startswith("sample ratio mismatch: canary has 2.00% of users, expected 5.00%")
    assert (state["status"], state["canary_percent"]) == ("canary", 5.0)
    assert events[0]["action"] == "hold" and events[0]["snapshot"]["srm_p_value"] < 0.001
    assert preview["changes_nothing"] and preview["decision"] == "hold" and preview["srm_p_value"] < 0.001
    assert preview["evidence"]["canary"]["users"] == 20 and preview["evidence"]["stable"]["users"] == 980
    wait_for(lambda: webhook.received, timeout=15, what="the mismatch alert")
    assert webhook.received[0]["alerts"] == ["sample_ratio_mismatch"]
    assert "sample ratio mismatch" in webhook.received[0]["text"]


def test_check_now_reports_and_a_paused_rollout_is_not_changed(make_gateway: Any, fake: FakeUpstream) -> None:
    gateway = make_gateway({"providers": {"fake": {"retries": 0}}, "deployments": {"support-bot": {
        "policy": {**FAST_POLICY, "check_interval": "1h"}}}})
    with gateway.admin() as http:
        empty = http.post("/admin/check").json()
        again = http.post("/admin/check").json()
        events = http.get("/admin/deployments/support-bot/events").json()["events"]
    [first] = empty["decisions"]
    assert (first["decision"], first["applied"], first["dry_run"]) == ("hold", False, False)
    assert first["summary"] == ("not enough data yet (canary has 0 of 5 calls; stable has 0 of 5 calls; "
                                "min_requests 5 each) → hold")
    assert again["decisions"][0]["decision"] == "hold"
    assert [e["action"] for e in events].count("hold") == 1  # recorded once per stage

    fake.behaviour.fail_models = frozenset({"model-b"})
    with gateway.admin() as http:
        http.post("/admin/deployments/support-bot/pause", json={"reason": "investigating"})
    with gateway.client() as http:
        for user in users_in(5, canary=True, count=6) + users_in(5, canary=False, count=6):
            http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES, "user": user})
    gateway.records(12)  # the checks below read what the recorder wrote
    with gateway.admin() as http:
        paused = http.post("/admin/check").json()["decisions"][0]
        state = http.get("/admin/deployments/support-bot").json()
        http.post("/admin/deployments/support-bot/resume")
        resumed = http.post("/admin/check").json()["decisions"][0]
        after = http.get("/admin/deployments/support-bot").json()
    assert (paused["decision"], paused["applied"]) == ("rollback", False)
    assert paused["summary"].startswith("critical: canary error rate 100.0% in 6 calls")
    assert paused["reasons"][-1] == "rollout is paused: decision not applied"
    assert (state["status"], state["canary_percent"]) == ("canary", 5.0)
    assert (resumed["decision"], resumed["applied"]) == ("rollback", True)
    assert (after["status"], after["canary_percent"]) == ("rolled_back", 0.0)
    with gateway.admin() as http:
        assert http.post("/admin/check").json() == {"decisions": []}  # nothing is running any more
        preview = http.get("/admin/deployments/support-bot/decision").json()
    assert preview["running"] is False and preview["decision"] is None
    assert preview["message"] == "no canary is running (status: rolled_back): nothing to decide"


def test_dry_run_records_decisions_and_changes_nothing(make_gateway: Any, fake: FakeUpstream,
                                                      webhook: WebhookReceiver) -> None:
    gateway = make_gateway({"providers": {"fake": {"retries": 0}}, "alerts": {"webhooks": [webhook.url]},
                            "deployments": {"support-bot": {"policy": {
                                **FAST_POLICY, "check_interval": "1h", "mode": "dry_run"}}}})
    fake.behaviour.fail_models = frozenset({"model-b"})
    with gateway.client() as http:
        for user in users_in(5, canary=True, count=8) + users_in(5, canary=False, count=8):
            http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES, "user": user})
    gateway.records(16)
    with gateway.admin() as http:
        [decision] = http.post("/admin/check").json()["decisions"]
        http.post("/admin/check")
        state = http.get("/admin/deployments/support-bot").json()
        events = http.get("/admin/deployments/support-bot/events").json()["events"]
    assert (decision["decision"], decision["applied"], decision["dry_run"]) == ("rollback", False, True)
    assert (state["status"], state["canary_percent"]) == ("canary", 5.0)
    dry = [e for e in events if e["action"] == "dry_run"]
    assert len(dry) == 1 and dry[0]["snapshot"]["dry_run"] is True and dry[0]["snapshot"]["decision"] == "rollback"
    assert dry[0]["reason"].startswith("dry run, would rollback: critical: canary error rate")
    time.sleep(1.0)
    assert webhook.received == [] and webhook.attempts == 0


def test_check_requires_the_admin_token(gateway: Gateway) -> None:
    assert httpx.post(f"{gateway.url}/admin/check").status_code == 401
    assert httpx.get(f"{gateway.url}/admin/deployments/support-bot/decision").status_code == 401
