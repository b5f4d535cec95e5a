"""What a proxied call leaves in the database: one record per call without secrets, feedback scores.

Storage is under test here, so these run on SQLite and PostgreSQL (the rest of
the proxy's behaviour is in test_proxy.py, on SQLite alone).
"""

from __future__ import annotations

import json
import time

import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import PROVIDER_KEY, Gateway

CLIENT_KEY = "client-secret-never-forwarded"
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "app prompt"},
    {"role": "user", "content": "hello"},
]


def test_every_call_has_one_record_without_secrets(gateway: Gateway) -> None:
    client = gateway.openai(CLIENT_KEY)
    ids = []
    for i in range(6):
        raw = client.chat.completions.with_raw_response.create(
            model="support-bot", messages=MESSAGES, user=f"raw-user-{i}", stream=False
        )
        ids.append(raw.headers["x-request-id"])
    stream = client.chat.completions.create(model="support-bot", messages=MESSAGES, user="raw-user-s", stream=True)
    list(stream)

    rows = gateway.records(7)
    assert len(rows) == 7
    assert set(ids) <= {row["id"] for row in rows}
    for row in rows:
        model, price = ("model-b", (3.0, 4.0)) if row["version"] == "v2" else ("model-a", (1.0, 2.0))
        assert row["deployment"] == "support-bot"
        assert row["provider"] == "fake"
        assert row["upstream_model"] == model
        assert row["status"] == "ok" and row["http_status"] == 200 and row["error_kind"] is None
        assert row["prompt_tokens"] == 11 and row["completion_tokens"] == 7
        assert row["cost_usd"] == pytest.approx((11 * price[0] + 7 * price[1]) / 1e6)
        assert row["latency_ms"] > 0
        assert len(row["user_hash"]) == 32 and not row["user_hash"].startswith("raw-user")
        assert row["quality"] is None
        assert row["api"] == "chat"
    streamed = [row for row in rows if row["stream"]]
    assert len(streamed) == 1 and streamed[0]["ttft_ms"] is not None
    dump = json.dumps(rows, default=str)
    assert PROVIDER_KEY not in dump and CLIENT_KEY not in dump and "raw-user" not in dump


def test_feedback_sets_the_quality_of_a_record(gateway: Gateway) -> None:
    client = gateway.openai(CLIENT_KEY)
    raw = client.chat.completions.with_raw_response.create(model="support-bot", messages=MESSAGES, user="u")
    request_id = raw.headers["x-request-id"]
    with gateway.client() as http:
        accepted = http.post("/v1/feedback", json={"request_id": request_id, "score": 0.8})
        unknown = http.post("/v1/feedback", json={"request_id": "no-such-id", "score": 0.8})
        out_of_range = http.post("/v1/feedback", json={"request_id": request_id, "score": 1.5})
    assert accepted.status_code == 200 and accepted.json()["status"] == "recorded"
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "request_id"
    assert out_of_range.status_code == 400 and out_of_range.json()["error"]["param"] == "score"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        [row] = gateway.records(1)
        if row["quality"] is not None:
            break
        time.sleep(0.05)
    assert row["id"] == request_id and row["quality"] == 0.8
