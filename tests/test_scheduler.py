"""Rollout automation end to end: real traffic, real checks, real webhooks, through the API only."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Gateway
from tests.fakes import FakeUpstream, WebhookReceiver

MESSAGES = [{"role": "user", "content": "hello"}]
FAST_POLICY = {"stages": [5, 25, 50, 100], "check_interval": "1s", "window": "1h", "min_stage_duration": "1s",
               "min_requests": 5}
SAME_PRICE = {"model-a": {"input": 1.0, "output": 2.0}, "model-b": {"input": 1.0, "output": 2.0}}


def users_in(percent: float, *, canary: bool, count: int) -> list[str]:
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
    """Calls the gateway continuously from a thread, half from users in the first-stage canary."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._users = [u for pair in zip(users_in(5, canary=True, count=50), users_in(5, canary=False, count=50),
                                         strict=True) for u in pair]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.statuses: dict[int, int] = {}

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with self._gateway.client() as http:
            index = 0
            while not self._stop.is_set():
                user = self._users[index % len(self._users)]
                index += 1
                answer = http.post("/v1/chat/completions",
                                   json={"model": "support-bot", "messages": MESSAGES, "user": user})
                self.statuses[answer.status_code] = self.statuses.get(answer.status_code, 0) + 1


def wait_for(check: Any, *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(fail_first=1).start()
    yield receiver
    receiver.stop()


def state_changes(gateway: Gateway) -> list[dict[str, Any]]:
    with gateway.admin() as http:
        events = http.get("/admin/deployments/support-bot/events?limit=1000").json()["events"]
    return [e for e in reversed(events) if e["action"] not in ("hold", "inconclusive")]


def test_a_good_canary_is_promoted_stage_by_stage(make_gateway: Any, webhook: WebhookReceiver) -> None:
    gateway = make_gateway({"pricing": SAME_PRICE, "alerts": {"webhooks": [webhook.url]},
                            "deployments": {"support-bot": {"policy": FAST_POLICY}}})
    started = time.monotonic()
    with Traffic(gateway) as traffic:
        def promoted() -> bool:
            with gateway.admin() as http:
                return bool(http.get("/admin/deployments/support-bot").json()["status"] == "promoted")

        wait_for(promoted, timeout=50, what="the promotion")
    assert time.monotonic() - started < 60
    assert set(traffic.statuses) == {200}

    changes = state_changes(gateway)
    assert [(e["action"], e["to"]["canary_percent"]) for e in changes] == [
        ("deployment_created", 5.0), ("advanced", 25.0), ("advanced", 50.0), ("advanced", 100.0),
        ("promoted", 0.0)]
    assert all(e["actor"] == "scheduler" for e in changes[1:])
    final = changes[-1]
    assert (final["to"]["stable"], final["to"]["canary"], final["to"]["status"]) == ("v2", None, "promoted")
    assert final["snapshot"]["canary"]["requests"] >= 5 and final["snapshot"]["canary"]["errors"] == 0
    assert "quality: no scores on stable and canary, quality rules skipped" in final["snapshot"]["reasons"]

    with gateway.client() as http:
        versions = {http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES,
                                                            "user": f"after-{i}"}).headers["x-canary-version"]
                    for i in range(30)}
    assert versions == {"v2"}
    wait_for(lambda: len(webhook.received) >= 4, timeout=15, what="the alerts")
    assert [alert["decision"] for alert in webhook.received] == ["advance", "advance", "advance", "promote"]
    assert "promoted to stable" in webhook.received[-1]["text"]


def test_a_failing_canary_is_rolled_back_once_with_an_alert(
    make_gateway: Any, fake: FakeUpstream, webhook: WebhookReceiver
) -> None:
    changes = {"pricing": SAME_PRICE, "alerts": {"webhooks": [webhook.url]},
               "providers": {"fake": {"retries": 0}},
               "deployments": {"support-bot": {"policy": {**FAST_POLICY, "min_stage_duration": "1h"}}}}
    first = make_gateway(changes)
    second = make_gateway(changes)  # another replica on the same database
    fake.behaviour.fail_models = frozenset({"model-b"})
    with Traffic(first):
        def rolled_back() -> bool:
            with first.admin() as http:
                return bool(http.get("/admin/deployments/support-bot").json()["status"] == "rolled_back")

        wait_for(rolled_back, timeout=20, what="the rollback")
        time.sleep(2.5)  # both replicas' schedulers get another chance to double-apply
    changes_seen = [e for e in state_changes(first) if e["action"] == "rolled_back"]
    assert len(changes_seen) == 1
    event = changes_seen[0]
    assert event["actor"] == "scheduler" and "error_rate 1.000 >" in event["reason"]
    assert event["snapshot"]["canary"]["errors"] == event["snapshot"]["canary"]["requests"] >= 5
    assert event["to"]["canary"] == "v2" and event["to"]["canary_percent"] == 0.0

    wait_for(lambda: webhook.received, timeout=15, what="the rollback alert")
    assert webhook.attempts >= 2  # the first delivery failed and was retried
    [alert] = webhook.received
    assert alert["decision"] == "rollback" and alert["deployment"] == "support-bot"
    assert any("error_rate" in reason and "rollback" in reason for reason in alert["reasons"])
    assert "rolled back" in alert["text"] and alert["snapshot"]["canary"]["errors"] >= 5

    with second.client() as http:
        answers = [http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES,
                                                           "user": user}) for user in users_in(5, canary=True,
                                                                                                count=20)]
    assert {a.headers["x-canary-version"] for a in answers} == {"v1"}
    with first.client() as http:
        metrics = http.get("/metrics").text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(metrics) for s in family.samples}
    rollbacks = sum(value for (name, _), value in samples.items() if name == "canary_rollbacks_total")
    assert rollbacks <= 1


def test_check_now_reports_and_a_paused_rollout_is_not_changed(make_gateway: Any, fake: FakeUpstream) -> None:
    gateway = make_gateway({"providers": {"fake": {"retries": 0}}, "deployments": {"support-bot": {
        "policy": {**FAST_POLICY, "check_interval": "1h"}}}})
    with gateway.admin() as http:
        empty = http.post("/admin/check").json()
        again = http.post("/admin/check").json()
        events = http.get("/admin/deployments/support-bot/events").json()["events"]
    assert empty == {"decisions": [{"deployment": "support-bot", "decision": "inconclusive",
                                    "reasons": [empty["decisions"][0]["reasons"][0]], "applied": False}]}
    assert again["decisions"][0]["decision"] == "inconclusive"
    assert [e["action"] for e in events].count("inconclusive") == 1  # recorded once per stage

    fake.behaviour.fail_models = frozenset({"model-b"})
    with gateway.admin() as http:
        http.post("/admin/deployments/support-bot/pause", json={"reason": "investigating"})
    with gateway.client() as http:
        for user in users_in(5, canary=True, count=6) + users_in(5, canary=False, count=6):
            http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES, "user": user})
    time.sleep(0.3)  # let the recorder write
    with gateway.admin() as http:
        paused = http.post("/admin/check").json()["decisions"][0]
        state = http.get("/admin/deployments/support-bot").json()
        http.post("/admin/deployments/support-bot/resume")
        resumed = http.post("/admin/check").json()["decisions"][0]
        after = http.get("/admin/deployments/support-bot").json()
    assert (paused["decision"], paused["applied"]) == ("rollback", False)
    assert paused["reasons"][-1] == "rollout is paused: decision not applied"
    assert (state["status"], state["canary_percent"]) == ("canary", 5.0)
    assert (resumed["decision"], resumed["applied"]) == ("rollback", True)
    assert (after["status"], after["canary_percent"]) == ("rolled_back", 0.0)
    with gateway.admin() as http:
        assert http.post("/admin/check").json() == {"decisions": []}  # nothing is running any more


def test_check_requires_the_admin_token(gateway: Gateway) -> None:
    assert httpx.post(f"{gateway.url}/admin/check").status_code == 401
