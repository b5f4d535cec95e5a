"""Request bodies: the default limit serves vision calls; a per-worker budget keeps memory flat."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from typing import Any

import httpx
import pytest

from gateway.config import ServerSettings, settings_from_dict
from gateway.errors import ConfigError
from tests.conftest import Gateway
from tests.fakes import FakeUpstream


def photo_message(size: int) -> list[dict[str, Any]]:
    """One user message with a base64 JPEG-sized image part of `size` raw bytes."""
    data = base64.b64encode(os.urandom(size)).decode()
    return [{"role": "user", "content": [
        {"type": "text", "text": "What is in this photo?"},
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{data}", "detail": "high"}},
    ]}]


def test_the_default_limits() -> None:
    server = ServerSettings()
    assert server.max_body_bytes == 32 * 1024 * 1024
    assert server.max_body_bytes_in_flight == 256 * 1024 * 1024


def test_a_budget_smaller_than_one_body_is_refused_at_load() -> None:
    with pytest.raises(ConfigError, match=r"server\.max_body_bytes_in_flight: must be at least max_body_bytes"):
        settings_from_dict({"server": {"max_body_bytes": 2048, "max_body_bytes_in_flight": 1024}})


@pytest.mark.parametrize("stream", [False, True])
def test_a_photo_is_served_with_the_default_limit(make_gateway: Any, fake: FakeUpstream, stream: bool) -> None:
    # The test config sets a small limit; the default is what is under test here.
    gateway: Gateway = make_gateway({"server": {"max_body_bytes": ServerSettings().max_body_bytes}})
    messages = photo_message(1_500_000)
    assert len(json.dumps(messages)) > 2_000_000
    with gateway.client() as http:
        answer = http.post("/v1/chat/completions", json={"model": "support-bot", "messages": messages,
                                                         "stream": stream})
    assert answer.status_code == 200, answer.text[:300]
    assert fake.received[0].body["messages"][-1] == messages[0]


def _hold_a_stream_open(gateway: Gateway, messages: list[dict[str, Any]], started: threading.Event) -> None:
    with gateway.client() as http, http.stream("POST", "/v1/chat/completions", json={
            "model": "support-bot", "messages": messages, "stream": True}) as answer:
        assert answer.status_code == 200
        for _ in answer.iter_bytes():
            started.set()


def test_bodies_beyond_the_budget_wait_for_the_ones_held(make_gateway: Any, fake: FakeUpstream) -> None:
    gateway: Gateway = make_gateway({"server": {"max_body_bytes": 100_000, "max_body_bytes_in_flight": 150_000}})
    fake.behaviour.chunk_delay, fake.behaviour.chunks = 0.4, 4
    messages = photo_message(60_000)  # about 80 KB of JSON
    started = threading.Event()
    holder = threading.Thread(target=_hold_a_stream_open, args=(gateway, messages, started))
    holder.start()
    try:
        assert started.wait(10)
        body = json.dumps({"model": "support-bot", "messages": messages}).encode()
        with gateway.client() as http:
            declared = http.post("/v1/chat/completions", content=body,
                                 headers={"content-type": "application/json"})
            chunked = http.post("/v1/chat/completions", content=iter([body[:50_000], body[50_000:]]),
                                headers={"content-type": "application/json"})
        for refused in (declared, chunked):
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "gateway_overloaded"
        assert fake.hits == 1
    finally:
        holder.join(20)
    # Once the stream has ended its body no longer counts.
    with gateway.client() as http:
        deadline = time.monotonic() + 5
        while (answer := http.post("/v1/chat/completions", content=body,
                                   headers={"content-type": "application/json"})).status_code == 503:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert answer.status_code == 200
    assert fake.hits == 2


def test_an_oversized_body_is_still_413_before_the_budget(make_gateway: Any, fake: FakeUpstream) -> None:
    gateway: Gateway = make_gateway({"server": {"max_body_bytes": 100_000, "max_body_bytes_in_flight": 150_000}})
    body = json.dumps({"model": "support-bot", "messages": photo_message(120_000)}).encode()
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        answer = http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 413
    assert fake.hits == 0
