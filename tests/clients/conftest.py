"""A running gateway for real clients: stable on the fake OpenAI upstream, canary on the fake Anthropic one.

Both fakes are strict (tests/fakes); a client test proves a call by what the
client got back and by what the upstream received: the canary user's call
must reach the Anthropic fake carrying the canary's system prompt, the stable
user's the OpenAI fake carrying the stable's. These tests exercise clients,
not storage, so they run on SQLite only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.migrate import upgrade
from tests.conftest import Gateway, users_in
from tests.fakes import FakeAnthropic, FakeUpstream
from tests.fakes.anthropic import API_KEY as ANTHROPIC_KEY
from tests.fakes.anthropic import system_text
from tests.fakes.openai import responses_system

STABLE_USER = users_in(50, canary=False, count=1)[0]
CANARY_USER = users_in(50, canary=True, count=1)[0]
STABLE_PROMPT = "You are v1."
CANARY_PROMPT = "You are v2."
CLIENT_KEY = "client-key-never-forwarded"
# The pass-through of the OpenAI API's other routes, to the OpenAI fake (its default routes).
PASSTHROUGH = {"passthrough": {"provider": "fake"}}


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    upgrade(url)
    return url


MIXED = {
    "providers": {"claude": {"kind": "anthropic", "base_url": None, "api_key": ANTHROPIC_KEY, "retries": 0}},
    "pricing": {"claude-sonnet-4-5": {"input": 3.0, "output": 15.0}},
    "deployments": {"support-bot": {
        "versions": {"v2": {"provider": "claude", "model": "claude-sonnet-4-5", "system_prompt": CANARY_PROMPT,
                            "params": {"max_tokens": 500}}},
        "policy": {"stages": [50, 100]}}},
}


@pytest.fixture
def mixed_config(claude: FakeAnthropic) -> dict[str, Any]:
    """The config changes that put the canary on the Anthropic fake (stable stays on the OpenAI fake)."""
    config: dict[str, Any] = {**MIXED, "providers": {"claude": {**MIXED["providers"]["claude"],
                                                                "base_url": claude.url}}}
    return config


@pytest.fixture
def mixed(make_gateway: Any, mixed_config: dict[str, Any]) -> Gateway:
    gateway: Gateway = make_gateway(mixed_config)
    return gateway


@pytest.fixture(params=["chat_completions", "responses"], ids=["stable-pivot", "stable-native"])
def stable_api(request: pytest.FixtureRequest) -> str:
    """The wire API of stable's OpenAI provider: chat completions (a Responses call takes the pivot) or Responses."""
    api: str = request.param
    return api


@pytest.fixture
def responses_mixed(make_gateway: Any, mixed_config: dict[str, Any], stable_api: str) -> Gateway:
    """The mixed gateway with stable's provider on `stable_api`: Responses calls reach it translated or natively."""
    config = {**mixed_config, "providers": {**mixed_config["providers"], "fake": {"api": stable_api}}}
    gateway: Gateway = make_gateway(config)
    return gateway


@dataclass
class Seen:
    """Which upstream a call reached and the system prompt it carried there."""

    upstream: str  # "openai" or "anthropic"
    prompt: str
    body: dict[str, Any]


def last_seen(fake: FakeUpstream, claude: FakeAnthropic) -> Seen:
    """The latest call either fake received (and did not refuse), with its system prompt."""
    calls = [("openai", r) for r in fake.received] + [("anthropic", r) for r in claude.received]
    assert calls, "no upstream received the call"
    upstream, received = max(calls, key=lambda call: call[1].at)
    assert not fake.refused and not claude.refused, f"an upstream refused the call: {fake.refused or claude.refused}"
    body = received.body
    if upstream == "anthropic":
        return Seen(upstream, system_text(body), body)
    if received.path.endswith("/responses"):
        return Seen(upstream, responses_system(body), body)
    system = next((m["content"] for m in body.get("messages", []) if m["role"] in ("system", "developer")), "")
    return Seen(upstream, system if isinstance(system, str) else "".join(p["text"] for p in system), body)


def expect_version(fake: FakeUpstream, claude: FakeAnthropic, user: str) -> Seen:
    """Assert the call of `user` reached its version's upstream with its version's system prompt."""
    seen = last_seen(fake, claude)
    if user == CANARY_USER:
        assert (seen.upstream, seen.prompt) == ("anthropic", CANARY_PROMPT)
    else:
        assert (seen.upstream, seen.prompt) == ("openai", STABLE_PROMPT)
    return seen


def answer_of(user: str) -> str:
    """The plain answer text each version's fake gives."""
    return f"claude answer to [{CANARY_PROMPT}]" if user == CANARY_USER else f"answer to [{STABLE_PROMPT}]"


def streamed_answer_of(user: str, stable_api: str) -> str:
    """The streamed answer text: the OpenAI fake's chat stream is "piece0 piece1 piece2 ", its Responses stream the
    plain answer word by word."""
    return "piece0 piece1 piece2 " if user == STABLE_USER and stable_api == "chat_completions" else answer_of(user)


def stable_path(stable_api: str) -> str:
    """The path a stable call reaches on the OpenAI fake."""
    return "/v1/responses" if stable_api == "responses" else "/v1/chat/completions"
