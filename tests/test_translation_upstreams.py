"""Any upstream tolerated, parameters mapped by model family, errors kept whole, defaults that serve vision.

Public gateway bug reports replayed against the strict fakes: an
OpenAI-compatible upstream that refuses `stream_options`, one that gzips its
event stream, one that answers HTTP 200 with an error inside; a canary moved
to a reasoning model; upstream errors whose `param`, `code` and rate-limit
headers the client needs; a single base64 photo.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import settings_from_dict
from gateway.migrate import upgrade
from tests.conftest import Gateway, base_config, users_in
from tests.fakes import FakeAnthropic, FakeUpstream
from tests.fakes.anthropic import API_KEY as ANTHROPIC_KEY

CANARY_USER = users_in(50, canary=True, count=1)[0]
STABLE_USER = users_in(50, canary=False, count=1)[0]
HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Translation does not touch storage: SQLite only."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    upgrade(url)
    return url


def post(gateway: Gateway, **body: Any) -> httpx.Response:
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        return http.post("/v1/chat/completions", json={"model": "support-bot", "messages": HI, **body})


def streamed_text(answer: httpx.Response) -> str:
    assert answer.status_code == 200, answer.text
    text = ""
    for line in answer.text.split("\n"):
        if line.startswith("data: ") and line != "data: [DONE]":
            event = json.loads(line[6:])
            assert "error" not in event, event
            text += "".join(choice["delta"].get("content") or "" for choice in event["choices"])
    return text


# -- 3. upstreams that are not fully compliant --------------------------------------------------------------


def test_an_upstream_that_refuses_stream_options(make_gateway: Any, fake: FakeUpstream) -> None:
    gateway: Gateway = make_gateway({"providers": {"fake": {"stream_options": False}}})
    fake.behaviour.refuse_stream_options = True
    answer = post(gateway, user=STABLE_USER, stream=True)
    assert streamed_text(answer) == "piece0 piece1 piece2 "
    assert "stream_options" not in fake.received[-1].body
    # A client asking for usage still gets a valid stream (usage absent or estimated, as documented).
    assert streamed_text(post(gateway, user=STABLE_USER, stream=True, stream_options={"include_usage": True}))


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_that_gzips_although_asked_for_identity(gateway: Gateway, fake: FakeUpstream,
                                                            stream: bool) -> None:
    fake.behaviour.gzip = True
    answer = post(gateway, user=STABLE_USER, stream=stream)
    if stream:
        assert streamed_text(answer) == "piece0 piece1 piece2 "
    else:
        assert answer.status_code == 200
        assert answer.json()["choices"][0]["message"]["content"] == "answer to [You are v1.]"
    [row] = gateway.records(1)
    assert row["status"] == "ok"


def test_an_error_inside_a_200_keeps_its_status_and_message(gateway: Gateway, fake: FakeUpstream) -> None:
    fake.behaviour.error_in_200 = {"message": "Rate limit exceeded: free-models-per-min", "code": 429}
    answer = post(gateway, user=STABLE_USER)
    assert answer.status_code == 429
    error = answer.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert "Rate limit exceeded: free-models-per-min" in error["message"]


# -- 4. parameters by model family, and removing an app's parameter ---------------------------------------


def test_a_canary_on_a_reasoning_model_takes_the_apps_max_tokens(make_gateway: Any, fake: FakeUpstream) -> None:
    gateway: Gateway = make_gateway({"pricing": {"o3-mini": {"input": 1.1, "output": 4.4}},
                                     "deployments": {"support-bot": {"versions": {"v2": {"model": "o3-mini",
                                                                                         "params": {}}},
                                                                     "policy": {"stages": [50, 100]}}}})
    answer = post(gateway, user=CANARY_USER, max_tokens=50, temperature=0.3)
    assert answer.status_code == 200, answer.text
    assert not fake.refused
    body = fake.received[-1].body
    assert body["model"] == "o3-mini" and body["max_completion_tokens"] == 50
    assert "max_tokens" not in body and "temperature" not in body


def test_a_version_removes_an_apps_parameter_with_null(make_gateway: Any, fake: FakeUpstream) -> None:
    gateway: Gateway = make_gateway({"deployments": {"support-bot": {
        "versions": {"v2": {"params": {"max_tokens": None}}}, "policy": {"stages": [50, 100]}}}})
    answer = post(gateway, user=CANARY_USER, max_tokens=50)
    assert answer.status_code == 200, answer.text
    assert "max_tokens" not in fake.received[-1].body


# -- 6. errors keep what the client needs ------------------------------------------------------------------


def test_an_upstream_error_keeps_param_and_code(gateway: Gateway, fake: FakeUpstream) -> None:
    fake.behaviour.status = 400
    fake.behaviour.error_body = json.dumps({"error": {
        "message": "Invalid 'messages[0].content': string too long.", "type": "invalid_request_error",
        "param": "messages[0].content", "code": None}})
    answer = post(gateway, user=STABLE_USER)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["param"], error["code"]) == ("messages[0].content", None)


RATE_LIMIT_HEADERS = {"retry-after-ms": "1500", "x-ratelimit-limit-requests": "500",
                      "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1.5s"}


def test_openai_rate_limit_headers_are_relayed(gateway: Gateway, fake: FakeUpstream) -> None:
    fake.behaviour.status, fake.behaviour.retry_after = 429, "2"
    fake.behaviour.error_headers = RATE_LIMIT_HEADERS
    answer = post(gateway, user=STABLE_USER)
    assert answer.status_code == 429
    assert {name: answer.headers.get(name) for name in RATE_LIMIT_HEADERS} == RATE_LIMIT_HEADERS


def test_anthropic_rate_limit_headers_are_relayed(make_gateway: Any, claude: FakeAnthropic) -> None:
    gateway: Gateway = make_gateway({
        "providers": {"claude": {"kind": "anthropic", "base_url": claude.url, "api_key": ANTHROPIC_KEY,
                                 "retries": 0}},
        "deployments": {"support-bot": {"versions": {"v2": {"provider": "claude", "model": "claude-sonnet-4-5"}},
                                        "policy": {"stages": [50, 100]}}}})
    claude.behaviour.status, claude.behaviour.error_type, claude.behaviour.retry_after = 429, "rate_limit_error", "3"
    claude.behaviour.error_headers = {"anthropic-ratelimit-requests-limit": "50",
                                      "anthropic-ratelimit-requests-remaining": "0",
                                      "anthropic-ratelimit-requests-reset": "2026-01-01T00:00:03Z"}
    answer = post(gateway, user=CANARY_USER)
    assert answer.status_code == 429 and answer.headers["retry-after"] == "3"
    # As Anthropic sent them, or in the x-ratelimit-* names OpenAI clients read.
    remaining = answer.headers.get("anthropic-ratelimit-requests-remaining") or \
        answer.headers.get("x-ratelimit-remaining-requests")
    assert remaining == "0"


# -- 7. defaults that serve ordinary traffic ---------------------------------------------------------------


def test_the_default_body_limit_takes_a_photo(database_url: str, fake: FakeUpstream, tmp_path: Path) -> None:
    config = base_config(database_url, fake.url, tmp_path / "spool")
    del config["server"]["max_body_bytes"]  # the default, as a user gets it
    photo = base64.b64encode(b"\xff\xd8\xff" + bytes(1_500_000)).decode()  # a 1.5 MB JPEG is ~2 MB of JSON
    gateway = Gateway(settings_from_dict(config)).start()
    try:
        answer = post(gateway, user=STABLE_USER, messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{photo}"}}]}])
    finally:
        gateway.stop()
    assert answer.status_code == 200, answer.text[:200]
    assert fake.received[-1].body["messages"][-1]["content"][1]["image_url"]["url"].endswith(photo[-20:])
