"""The admin API: auth on every route, rollout changes with compare-and-set, audit, sync, replicas."""

from __future__ import annotations

import concurrent.futures
import hashlib
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from gateway.analysis.histogram import ALPHA
from gateway.app import create_app
from gateway.config import settings_from_dict
from gateway.errors import ConfigError
from tests.conftest import ADMIN_TOKEN, Gateway, base_config, merge, query, seed
from tests.fakes import FakeUpstream

MESSAGES = [{"role": "user", "content": "hello"}]


def canary_share(gateway: Gateway, users: list[str]) -> dict[str, str]:
    with gateway.client() as http:
        return {
            user: http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES, "user": user})
            .headers["x-canary-version"]
            for user in users
        }


def expected(users: list[str], percent: float, canary: str = "v2", stable: str = "v1") -> dict[str, str]:
    def version(user: str) -> str:
        bucket = int(hashlib.md5(f"support-bot:{user}".encode()).hexdigest(), 16) % 10000
        return canary if bucket < percent * 100 else stable

    return {user: version(user) for user in users}


def admin_paths(gateway: Gateway) -> list[tuple[str, str]]:
    """Every admin route the app serves (from its OpenAPI schema), with path parameters filled in."""
    found: list[tuple[str, str]] = []
    for path, operations in gateway.app.openapi()["paths"].items():
        if not path.startswith("/admin"):
            continue
        for action in ("promote", "rollback", "pause", "resume") if "{action}" in path else ("",):
            filled = path.replace("{name}", "support-bot").replace("{action}", action)
            assert "{" not in filled, path
            found.extend((method.upper(), filled) for method in operations)
    return found


def test_every_admin_route_refuses_a_missing_or_wrong_token(gateway: Gateway) -> None:
    routes = admin_paths(gateway)
    assert len(routes) >= 11
    attempts = [None, "wrong-token", "' OR '1'='1", "'; SELECT pg_sleep(5); --", ADMIN_TOKEN + "x", ""]
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        for method, path in routes:
            for variant in (path, path + "/", path + "?x=1"):
                for method_used in (method, "HEAD"):
                    for token in attempts:
                        headers = {"Authorization": f"Bearer {token}".strip()} if token is not None else {}
                        started = time.monotonic()
                        answer = http.request(method_used, variant, headers=headers, json={})
                        assert answer.status_code in (401, 429), (method_used, variant, token, answer.status_code)
                        assert time.monotonic() - started < 1.0
        assert http.get("/admin/not-a-route").status_code in (401, 429)


def test_repeated_failures_are_rate_limited(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        codes = [http.get("/admin/deployments", headers={"Authorization": "Bearer guess"}).status_code
                 for _ in range(25)]
        assert codes[:20] == [401] * 20
        limited = http.get("/admin/deployments", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert set(codes[20:]) == {429}
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1


def test_without_an_admin_token_the_admin_api_is_closed_but_the_proxy_serves(make_gateway: Any) -> None:
    gateway = make_gateway({"admin_tokens": {"ops": ""}})
    with gateway.admin() as http:
        closed = http.get("/admin/deployments")
    assert closed.status_code == 403 and closed.json()["error"]["code"] == "forbidden"
    with gateway.client() as http:
        assert http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES}).status_code == 200


def test_deployment_shape(gateway: Gateway) -> None:
    with gateway.admin() as http:
        listed = http.get("/admin/deployments").json()["deployments"]
        one = http.get("/admin/deployments/support-bot").json()
        missing = http.get("/admin/deployments/nope")
    assert [d["name"] for d in listed] == ["support-bot"]
    assert {"name", "stable", "canary", "canary_percent", "stage", "status", "paused", "versions", "policy"} <= set(one)
    assert (one["stable"], one["canary"], one["canary_percent"], one["status"]) == ("v1", "v2", 5.0, "canary")
    assert {v["name"]: (v["provider"], v["model"]) for v in one["versions"]} == {
        "v1": ("fake", "model-a"), "v2": ("fake", "model-b")}
    assert one["policy"]["stages"] == [5.0, 25.0, 50.0, 100.0]
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_set_percent_routes_at_once_and_is_audited(gateway: Gateway) -> None:
    users = [f"user-{i}" for i in range(200)]
    with gateway.admin() as http:
        answer = http.put("/admin/deployments/support-bot/canary-percent", json={"percent": 40, "reason": "ramp"})
        assert answer.status_code == 200 and answer.json()["canary_percent"] == 40.0
        assert answer.json()["stage"] == 1  # past 25 %, below 50 %
        assert canary_share(gateway, users) == expected(users, 40)
        bad = http.put("/admin/deployments/support-bot/canary-percent", json={"percent": 150})
        typed = http.put("/admin/deployments/support-bot/canary-percent", json={"percent": "lots"})
        events = http.get("/admin/deployments/support-bot/events").json()["events"]
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "percent"
    assert typed.status_code == 400 and typed.json()["error"]["param"] == "percent"
    newest = events[0]
    assert {"id", "at", "deployment", "action", "actor", "from", "to", "reason", "snapshot"} == set(newest)
    assert (newest["action"], newest["actor"], newest["reason"]) == ("percent_set", "ops", "ramp")
    assert (newest["from"]["canary_percent"], newest["to"]["canary_percent"]) == (5.0, 40.0)
    assert [event["id"] for event in events] == sorted((event["id"] for event in events), reverse=True)
    assert events[-1]["action"] == "deployment_created" and events[-1]["actor"] == "config"


def test_versions_are_created_once_and_validated(gateway: Gateway, fake: FakeUpstream) -> None:
    version = {"name": "v3", "provider": "fake", "model": "model-c", "system_prompt": "You are v3.",
               "params": {"temperature": 0.1}}
    with gateway.admin() as http:
        created = http.post("/admin/deployments/support-bot/versions", json=version)
        again = http.post("/admin/deployments/support-bot/versions", json={**version, "model": "other"})
        unknown_provider = http.post("/admin/deployments/support-bot/versions",
                                     json={**version, "name": "v4", "provider": "opnai"})
        bad_name = http.post("/admin/deployments/support-bot/versions", json={**version, "name": "v 4/.."})
        reserved = http.post("/admin/deployments/support-bot/versions",
                             json={**version, "name": "v5", "params": {"stream": True}})
        no_deployment = http.post("/admin/deployments/nope/versions", json=version)
        running = http.post("/admin/deployments/support-bot/canary", json={"version": "v3"})
        http.post("/admin/deployments/support-bot/rollback", json={"reason": "make room"})
        started = http.post("/admin/deployments/support-bot/canary", json={"version": "v3", "percent": 100})
        unknown_version = http.post("/admin/deployments/support-bot/canary", json={"version": "v9"})
    assert created.status_code == 201 and created.json()["model"] == "model-c"
    assert again.status_code == 409
    assert unknown_provider.status_code == 400 and unknown_provider.json()["error"]["param"] == "provider"
    assert bad_name.status_code == 400 and bad_name.json()["error"]["param"] == "name"
    assert reserved.status_code == 400
    assert no_deployment.status_code == 404
    assert running.status_code == 409 and "still running" in running.json()["error"]["message"]
    assert started.status_code == 200 and started.json()["canary"] == "v3"
    assert unknown_version.status_code == 404
    with gateway.client() as http:
        answer = http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES, "user": "a"})
    assert answer.headers["x-canary-version"] == "v3"
    assert fake.received[-1].body["model"] == "model-c" and fake.received[-1].body["temperature"] == 0.1


def test_promote_makes_the_canary_stable(gateway: Gateway) -> None:
    with gateway.admin() as http:
        promoted = http.post("/admin/deployments/support-bot/promote", json={"reason": "looks good"}).json()
        again = http.post("/admin/deployments/support-bot/promote")
    assert (promoted["stable"], promoted["canary"], promoted["canary_percent"], promoted["status"]) == (
        "v2", None, 0.0, "promoted")
    assert again.status_code == 409
    assert set(canary_share(gateway, [f"u{i}" for i in range(50)]).values()) == {"v2"}


def test_rollback_sends_everyone_to_stable_and_keeps_the_canary_recorded(gateway: Gateway) -> None:
    with gateway.admin() as http:
        http.put("/admin/deployments/support-bot/canary-percent", json={"percent": 100})
        assert set(canary_share(gateway, ["a", "b", "c"]).values()) == {"v2"}
        rolled = http.post("/admin/deployments/support-bot/rollback", json={"reason": "quality dropped"}).json()
        events = http.get("/admin/deployments/support-bot/events?limit=1").json()["events"]
    assert (rolled["canary"], rolled["canary_percent"], rolled["status"]) == ("v2", 0.0, "rolled_back")
    assert set(canary_share(gateway, [f"u{i}" for i in range(50)]).values()) == {"v1"}
    assert len(events) == 1 and events[0]["reason"] == "quality dropped"


def test_pause_and_resume(gateway: Gateway) -> None:
    with gateway.admin() as http:
        assert http.post("/admin/deployments/support-bot/pause").json()["paused"] is True
        assert http.post("/admin/deployments/support-bot/resume").json()["paused"] is False
        actions = [e["action"] for e in http.get("/admin/deployments/support-bot/events").json()["events"]]
    assert actions[:2] == ["resumed", "paused"]


def test_a_stale_revision_loses_with_409_and_writes_no_event(gateway: Gateway) -> None:
    with gateway.admin() as http:
        revision = http.get("/admin/deployments/support-bot").json()["revision"]
        first = http.put("/admin/deployments/support-bot/canary-percent", json={"percent": 10, "revision": revision})
        second = http.put("/admin/deployments/support-bot/canary-percent", json={"percent": 20, "revision": revision})
        state = http.get("/admin/deployments/support-bot").json()
        events = http.get("/admin/deployments/support-bot/events").json()["events"]
    assert first.status_code == 200 and second.status_code == 409
    assert state["canary_percent"] == 10.0 and state["revision"] == revision + 1
    assert [e["action"] for e in events].count("percent_set") == 1


def test_concurrent_conflicting_writes_never_both_apply(gateway: Gateway) -> None:
    def act(action: str) -> int:
        with gateway.admin() as http:
            return http.post(f"/admin/deployments/support-bot/{action}", json={"reason": action}).status_code

    for _ in range(3):
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            codes = sorted(pool.map(act, ["promote", "rollback"]))
        assert codes == [200, 409]
        with gateway.admin() as http:
            state = http.get("/admin/deployments/support-bot").json()
            events = http.get("/admin/deployments/support-bot/events").json()["events"]
            ended = [e for e in events if e["action"] in ("promoted", "rolled_back")]
            assert len(ended) == 1 and state["status"] == ended[0]["action"]
            # start the next round from a fresh canary
            next_canary = "v1" if state["stable"] == "v2" else "v2"
            restarted = http.post("/admin/deployments/support-bot/canary", json={"version": next_canary})
            assert restarted.status_code == 200, restarted.text
            query(
                gateway.settings.database_url, "DELETE FROM rollout_events WHERE action IN ('promoted', 'rolled_back')"
            )


def test_admin_changes_survive_a_restart(make_gateway: Any) -> None:
    first = make_gateway()
    with first.admin() as http:
        http.put("/admin/deployments/support-bot/canary-percent", json={"percent": 33.33})
    first.stop()
    second = make_gateway()
    with second.admin() as http:
        state = http.get("/admin/deployments/support-bot").json()
    assert state["canary_percent"] == 33.33
    users = [f"user-{i}" for i in range(100)]
    assert canary_share(second, users) == expected(users, 33.33)


def test_a_new_declared_canary_starts_a_rollout_at_the_first_stage(make_gateway: Any) -> None:
    first = make_gateway()
    with first.admin() as http:
        http.put("/admin/deployments/support-bot/canary-percent", json={"percent": 50})
    first.stop()
    v3 = {"provider": "fake", "model": "model-c", "system_prompt": "You are v3."}
    second = make_gateway({"deployments": {"support-bot": {"canary": "v3", "versions": {"v3": v3}}}})
    with second.admin() as http:
        state = http.get("/admin/deployments/support-bot").json()
        newest = http.get("/admin/deployments/support-bot/events").json()["events"][0]
    assert (state["canary"], state["canary_percent"], state["status"]) == ("v3", 5.0, "canary")
    assert (newest["action"], newest["actor"]) == ("canary_started", "config")
    assert "replaces canary 'v2'" in newest["reason"]


async def test_a_redefined_version_stops_the_start(make_gateway: Any, database_url: str, fake: FakeUpstream,
                                                   tmp_path: Any) -> None:
    make_gateway().stop()
    config = merge(base_config(database_url, fake.url, tmp_path / "spool"),
                   {"deployments": {"support-bot": {"versions": {"v2": {"system_prompt": "Changed!"}}}}})
    app = create_app(settings_from_dict(config))
    with pytest.raises(ConfigError, match=r"^deployments\.support-bot\.versions\.v2: differs from the stored"):
        async with app.router.lifespan_context(app):
            pass


def test_two_replicas_follow_one_change_within_two_seconds(make_gateway: Any) -> None:
    a = make_gateway()
    b = make_gateway({"database": {"refresh_interval": "1s"}})
    users = [f"user-{i}" for i in range(200)]
    assert canary_share(b, users) == expected(users, 5)
    with a.admin() as http:
        changed_at = time.monotonic()
        assert http.put("/admin/deployments/support-bot/canary-percent", json={"percent": 60}).status_code == 200
    while canary_share(b, users[:20]) != expected(users[:20], 60):
        assert time.monotonic() - changed_at < 2.0, "replica B did not follow within 2 s"
        time.sleep(0.05)
    # B swaps its snapshot whole: once some users follow the change, all do.
    assert canary_share(b, users) == expected(users, 60)


def test_admin_writes_answer_503_while_the_database_is_down(fake: FakeUpstream, tmp_path: Any) -> None:
    config = base_config("postgresql+asyncpg://postgres@127.0.0.1:1/none", fake.url, tmp_path / "spool")
    config["database"] = {"pool_timeout": "1s"}
    gateway = Gateway(settings_from_dict(config)).start()
    try:
        with gateway.admin() as http:
            answer = http.put("/admin/deployments/support-bot/canary-percent", json={"percent": 10})
    finally:
        gateway.stop()
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "store_unavailable"
    assert "Traceback" not in answer.text


def test_compare_matches_hand_computed_numbers(gateway: Gateway) -> None:
    url = gateway.settings.database_url
    qualities = [0.8, 0.9, None, 1.0, 0.7, None, None, None, None, None]
    stable = [{"version": "v1", "latency_ms": float(ms), "quality": q, "cost_usd": 0.002}
              for ms, q in zip(range(100, 1100, 100), qualities, strict=True)]
    stable.append({"version": "v1", "latency_ms": 50.0, "status": "error", "http_status": 502, "cost_usd": None})
    canary = [{"version": "v2", "latency_ms": 200.0, "quality": 0.9, "cost_usd": 0.001, "ttft_ms": 40.0},
              {"version": "v2", "latency_ms": 400.0, "quality": 0.5, "cost_usd": 0.003, "ttft_ms": 80.0},
              {"version": "v2", "latency_ms": 9999.0, "status": "client_cancelled", "http_status": 499},
              {"version": "v2", "latency_ms": 300.0, "created_at": datetime.now(UTC) - timedelta(hours=30)}]
    seed(url, stable + canary)
    with gateway.admin() as http:
        result = http.get("/admin/deployments/support-bot/compare?hours=24").json()
    s, c = result["stable"], result["canary"]
    assert (result["deployment"], result["hours"]) == ("support-bot", 24)
    assert (s["version"], s["requests"], s["errors"], s["scored"]) == ("v1", 11, 1, 4)
    assert s["error_rate"] == pytest.approx(1 / 11)
    assert s["avg_quality"] == pytest.approx(0.85)
    # Percentiles come from merged minute histograms: within ALPHA (1 %) of the exact ones.
    assert s["p50_latency_ms"] == pytest.approx(550.0, rel=ALPHA)  # 100..1000 interpolated
    assert s["p95_latency_ms"] == pytest.approx(955.0, rel=ALPHA)
    assert s["p95_ttft_ms"] is None
    assert s["avg_cost"] == pytest.approx(0.002) and s["total_cost"] == pytest.approx(0.02)
    assert s["avg_prompt_tokens"] == pytest.approx(10.0)
    assert (c["version"], c["requests"], c["errors"], c["scored"]) == ("v2", 2, 0, 2)
    assert c["avg_quality"] == pytest.approx(0.7)
    assert c["p50_latency_ms"] == pytest.approx(300.0, rel=ALPHA)
    assert c["p95_latency_ms"] == pytest.approx(390.0, rel=ALPHA)
    assert c["p95_ttft_ms"] == pytest.approx(78.0, rel=ALPHA)
    diff = result["diff_pct"]
    assert diff["avg_quality"] == pytest.approx((0.7 - 0.85) / 0.85 * 100, abs=0.01)
    assert diff["avg_cost"] == pytest.approx(0.0)
    assert diff["error_rate"] == pytest.approx(-100.0)
    with gateway.admin() as http:
        bad = http.get("/admin/deployments/support-bot/compare?hours=-1")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "hours"


def test_ids_in_events_never_include_secrets(gateway: Gateway) -> None:
    with gateway.admin() as http:
        http.post("/admin/deployments/support-bot/rollback", json={"reason": "r"})
    dump = str(query(gateway.settings.database_url, "SELECT * FROM rollout_events"))
    assert ADMIN_TOKEN not in dump and "sk-test-SENTINEL" not in dump
    assert re.search(r"'actor': 'ops'", dump)
