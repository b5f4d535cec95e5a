"""A/B tests end to end: a fixed split by user, a report whose intervals match SciPy, never an automatic change,
and an operator's conclusion with its audit event; through the OpenAI SDK, the admin API and the CLI."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.cli import main
from gateway.routing import in_canary
from tests.conftest import ADMIN_TOKEN, FAST_POLICY, Gateway, dashboard, reference_multiplier, reference_variance
from tests.fakes import FakeUpstream

pytestmark = pytest.mark.sqlite_only("the report reads the stage evidence, whose storage test_evidence_store.py covers")

AB_POLICY = {**FAST_POLICY, "mode": "ab_test", "ab": {"split": 50, "alpha": 0.05}}
TUNING = 200.0  # FAST_POLICY's sequential_tuning


def ab_config(policy: dict[str, Any] | None = None) -> dict[str, Any]:
    """support-bot running `v2` as an A/B test against `v1`; the checks run when the test asks (POST /admin/check)."""
    return {"providers": {"fake": {"retries": 0}},
            "deployments": {"support-bot": {"policy": {**AB_POLICY, "check_interval": "1h", **(policy or {})}}}}


def call(gateway: Gateway, users: list[str]) -> dict[str, int]:
    """One call per user through the OpenAI SDK; how many each version answered, and how many failed."""
    client = gateway.openai()
    served = {"v1": 0, "v2": 0, "failed": 0}
    for user in users:
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="support-bot", user=user, messages=[{"role": "user", "content": "hello"}])
            served[raw.headers["x-canary-version"]] += 1
        except openai.APIStatusError as exc:
            assert exc.response.headers["x-canary-version"] == "v2"
            served["failed"] += 1
    return served


def admin(gateway: Gateway, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    with gateway.admin() as http:
        answer = http.request(method, f"/admin/deployments/support-bot{path}", json=body)
        return answer.json() if answer.status_code < 300 else (answer.status_code, answer.json())


def per_user(rows: list[dict[str, Any]], version: str, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-user sums (x_u, y_u) of `version`'s records: x and y name a count or a sum over a user's calls."""
    users: dict[str, list[float]] = {}
    for row in rows:
        if row["version"] != version or row["user_hash"] is None:
            continue
        sums = users.setdefault(row["user_hash"], [0.0, 0.0])
        cost = row["uncached_cost_usd"] if row["uncached_cost_usd"] is not None else row["cost_usd"]
        values = {"calls": 1.0, "errors": float(row["status"] == "error"), "priced": float(cost is not None),
                  "cost": cost or 0.0}
        sums[0] += values[x]
        sums[1] += values[y]
    data = np.array(list(users.values()))
    return data[:, 0], data[:, 1]


def test_an_ab_test_reports_and_never_acts_whatever_the_numbers(make_gateway: Any, fake: FakeUpstream,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    fake.behaviour.error_rates = {"model-b": 0.4}  # the candidate fails 40 % of its calls
    gateway = make_gateway(ab_config())
    state = admin(gateway, "GET", "")
    assert (state["mode"], state["kind"], state["canary_percent"], state["status"]) == ("ab_test", "ab_test", 50.0,
                                                                                         "canary")
    users = [f"user-{index}" for index in range(120)]
    served = call(gateway, users * 3)
    # A fixed split, sticky by user, as a canary's: each user always on one version.
    assert served["v1"] + served["v2"] + served["failed"] == 360 and served["failed"] > 20
    assert served["v2"] + served["failed"] == 3 * sum(in_canary("support-bot", user, 50) for user in users)

    rows = gateway.records(360)
    assert len(rows) == 360
    for _ in range(3):
        with gateway.admin() as http:
            decisions = http.post("/admin/check").json()["decisions"]
        assert [(d["deployment"], d["decision"], d["applied"]) for d in decisions] == [("support-bot", "report",
                                                                                         False)]
    after = admin(gateway, "GET", "")
    assert (after["mode"], after["canary_percent"], after["status"], after["revision"]) == (
        "ab_test", 50.0, "canary", state["revision"])
    events = admin(gateway, "GET", "/events")["events"]
    assert {event["action"] for event in events} == {"deployment_created", "ab_report"}
    reports = [event for event in events if event["action"] == "ab_report"]
    assert len(reports) == 1  # recorded once while what it says stays the same
    # model-b costs more per call than model-a: a real difference too.
    assert {"error_rate", "cost"} <= set(reports[0]["snapshot"]["significant"])
    assert reports[0]["reason"].startswith("significant at the 0.05 level: ")

    answer = admin(gateway, "GET", "/ab")
    report = answer["report"]
    assert (report["stable"], report["candidate"], report["split"], report["alpha"]) == ("v1", "v2", 50.0, 0.05)
    assert report["srm"]["mismatch"] is False
    by_metric = {metric["metric"]: metric for metric in report["metrics"]}
    for name, (x, y) in {"error_rate": ("calls", "errors"), "cost": ("priced", "cost")}.items():
        stable_x, stable_y = per_user(rows, "v1", x, y)
        candidate_x, candidate_y = per_user(rows, "v2", x, y)
        stable_value = stable_y.sum() / stable_x.sum()
        candidate_value = candidate_y.sum() / candidate_x.sum()
        se = math.sqrt(reference_variance(stable_x, stable_y) + reference_variance(candidate_x, candidate_y))
        units = int((stable_x > 0).sum() + (candidate_x > 0).sum())
        radius = reference_multiplier(units, 0.05, TUNING) * se
        metric = by_metric[name]
        difference = candidate_value - stable_value
        assert (metric["stable"], metric["candidate"]) == pytest.approx((stable_value, candidate_value), rel=1e-6)
        assert (metric["lower"], metric["upper"]) == pytest.approx((difference - radius, difference + radius),
                                                                   rel=1e-5, abs=1e-12)
    assert by_metric["error_rate"]["significant"] and by_metric["error_rate"]["lower"] > 0
    assert by_metric["cost"]["significant"] and by_metric["cost"]["difference"] == pytest.approx((61 - 25) / 1e6)
    assert by_metric["quality"]["difference"] is None and not by_metric["quality"]["significant"]

    with gateway.client() as http:
        text = http.get("/metrics").text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("canary_rollout_mode", (("deployment", "support-bot"), ("mode", "ab_test")))] == 1
    assert samples[("canary_decisions_total", (("deployment", "support-bot"), ("outcome", "report")))] >= 3
    assert ("canary_rollbacks_total", (("deployment", "support-bot"),)) not in samples

    assert main(["compare", "support-bot", "--url", gateway.url, "--token", ADMIN_TOKEN]) == 0
    printed = capsys.readouterr().out.splitlines()
    start = next(index for index, line in enumerate(printed) if line.startswith("A/B test: v1 (stable) vs v2"))
    rows_printed = {line.split()[0]: line for line in printed[start + 3:] if line and not line.startswith(
        ("Sample", "Summary"))}
    assert set(rows_printed) == set(by_metric)
    assert " yes " in rows_printed["error_rate"] and " no " in rows_printed["quality"]
    assert f"[{by_metric['error_rate']['lower']:+.4g}," in rows_printed["error_rate"]
    assert any(line.startswith("Sample ratio: v2 has") and line.endswith("no mismatch") for line in printed)
    assert printed[-1] == f"Summary: {report['summary']}"


def test_concluding_an_ab_test_makes_the_winner_stable_with_an_audit_event(make_gateway: Any) -> None:
    gateway = make_gateway(ab_config())
    call(gateway, [f"user-{index}" for index in range(40)])
    gateway.records(40)
    refused = admin(gateway, "POST", "/ab/conclude", {"winner": "v3"})
    assert refused[0] == 400 and refused[1]["error"]["param"] == "winner"
    bad_as = admin(gateway, "POST", "/ab/conclude", {"winner": "v2", "as": "production"})
    assert bad_as[0] == 400
    concluded = admin(gateway, "POST", "/ab/conclude", {"winner": "v2", "reason": "shorter answers, same quality"})
    assert (concluded["stable"], concluded["canary"], concluded["status"], concluded["mode"]) == (
        "v2", None, "promoted", None)
    event = admin(gateway, "GET", "/events?limit=1")["events"][0]
    assert (event["action"], event["actor"], event["reason"]) == ("ab_concluded", "ops",
                                                                  "shorter answers, same quality")
    assert (event["from"]["mode"], event["to"]["stable"]) == ("ab_test", "v2")
    assert event["snapshot"]["winner"] == "v2" and event["snapshot"]["as"] == "stable"
    assert event["snapshot"]["report"]["calls"]["stable"] + event["snapshot"]["report"]["calls"]["candidate"] == 40
    assert call(gateway, ["someone", "else"]) == {"v1": 0, "v2": 2, "failed": 0}
    assert admin(gateway, "POST", "/ab/conclude", {"winner": "v2"})[0] == 409
    assert admin(gateway, "GET", "/ab")[0] == 409


def test_a_winning_candidate_may_start_a_canary_rollout_of_its_own(make_gateway: Any) -> None:
    gateway = make_gateway(ab_config({"stages": ["shadow", 5, 25]}))
    concluded = admin(gateway, "POST", "/ab/conclude", {"winner": "v2", "as": "canary"})
    assert (concluded["stable"], concluded["canary"], concluded["mode"], concluded["canary_percent"]) == (
        "v1", "v2", "shadow", 0.0)
    assert admin(gateway, "GET", "/events?limit=1")["events"][0]["snapshot"]["as"] == "canary"


def test_stable_winning_ends_the_test_with_every_user_on_it(make_gateway: Any) -> None:
    gateway = make_gateway(ab_config())
    ended = admin(gateway, "POST", "/ab/conclude", {"winner": "v1"})
    assert (ended["stable"], ended["canary"], ended["status"], ended["canary_percent"]) == ("v1", None, "stable", 0.0)
    assert call(gateway, [f"user-{index}" for index in range(20)]) == {"v1": 20, "v2": 0, "failed": 0}


def test_the_dashboard_shows_the_mode_and_the_report(make_gateway: Any, fake: FakeUpstream) -> None:
    fake.behaviour.error_rates = {"model-b": 0.5}
    gateway = make_gateway(ab_config())
    call(gateway, [f"user-{index}" for index in range(80)] * 2)
    gateway.records(160)
    with dashboard(gateway) as page:
        page.wait_for_selector("#ab-report tr[data-metric='error_rate']")
        assert "ab_test" in page.text_content("#state") and "ab_test" in page.text_content("#deployments")
        assert page.is_hidden("#stage") and page.is_hidden("#shadow")
        row = page.text_content("#ab-report tr[data-metric='error_rate']")
        assert "yes" in row and "[" in row
        assert page.text_content("#ab-srm").startswith("Sample ratio: v2 has")
        assert page.is_visible("#actions button[data-action='conclude']")
        page.on("dialog", lambda dialog: dialog.accept("v1"))
        page.click("#actions button[data-action='conclude']")
        page.wait_for_selector("#state dd:has-text('stable')")
    event = admin(gateway, "GET", "/events?limit=1")["events"][0]
    assert (event["action"], event["to"]["stable"], event["to"]["canary"]) == ("ab_concluded", "v1", None)
