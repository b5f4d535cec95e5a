"""Parameters mapped by model family, and a version removing an app's parameter (`params: {name: null}`)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from openai.types.chat import ChatCompletionMessageParam

from gateway.families import DEFAULT, OPENAI_REASONING, adapt, openai_family
from gateway.models import Version
from gateway.prompts import build_upstream_body
from gateway.providers.openai import OpenAIProvider
from tests.conftest import Gateway
from tests.fakes import FakeUpstream

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


@pytest.mark.parametrize(("model", "family"), [
    ("o1", OPENAI_REASONING), ("o3-mini", OPENAI_REASONING), ("o4-mini-2025-04-16", OPENAI_REASONING),
    ("gpt-5", OPENAI_REASONING), ("gpt-5-mini", OPENAI_REASONING), ("openai/o3-mini", OPENAI_REASONING),
    ("gpt-5-chat-latest", DEFAULT), ("gpt-4o", DEFAULT), ("gpt-4o-mini", DEFAULT), ("omni-moderation", DEFAULT),
    ("deepseek-chat", DEFAULT), ("llama3:8b", DEFAULT),
])
def test_families_by_model_name(model: str, family: Any) -> None:
    assert openai_family(model) is family


def test_a_reasoning_model_gets_max_completion_tokens_and_no_sampling_params() -> None:
    body = {"model": "o3-mini", "messages": MESSAGES, "max_tokens": 100, "temperature": 0.2, "top_p": 0.9,
            "presence_penalty": 0.1, "frequency_penalty": 0.1, "logprobs": True, "top_logprobs": 2, "seed": 7}
    adapted, removed = adapt(body, OPENAI_REASONING)
    assert adapted == {"model": "o3-mini", "messages": MESSAGES, "max_completion_tokens": 100, "seed": 7}
    assert sorted(removed) == ["frequency_penalty", "logprobs", "presence_penalty", "temperature", "top_logprobs",
                               "top_p"]
    assert body["max_tokens"] == 100  # the input is not modified


def test_max_completion_tokens_already_set_wins_over_max_tokens() -> None:
    adapted, removed = adapt({"model": "o1", "max_tokens": 100, "max_completion_tokens": 300}, OPENAI_REASONING)
    assert adapted == {"model": "o1", "max_completion_tokens": 300}
    assert removed == ["max_tokens"]


def test_other_models_keep_their_parameters_untouched() -> None:
    body = {"model": "gpt-4o", "max_tokens": 100, "temperature": 0.2}
    assert adapt(body, openai_family("gpt-4o")) == (body, [])


def test_each_removal_is_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    provider = OpenAIProvider("openai", api_key="")
    with caplog.at_level(logging.DEBUG, logger="gateway.providers"):
        provider.build_request({"model": "o3-mini", "messages": MESSAGES, "temperature": 0.2}, stream=False)
    assert any("temperature" in record.getMessage() and "o3-mini" in record.getMessage()
               and record.levelno == logging.DEBUG for record in caplog.records)


def _version(**params: Any) -> Version:
    return Version(name="v", provider="p", model="m", params=params)


def test_a_null_param_removes_the_apps_parameter() -> None:
    body = {"model": "bot", "messages": MESSAGES, "max_tokens": 50, "temperature": 0.2}
    upstream = build_upstream_body(_version(max_tokens=None), body, stream=False)
    assert "max_tokens" not in upstream and upstream["temperature"] == 0.2
    # A null for a parameter the app did not send is fine too.
    assert "seed" not in build_upstream_body(_version(seed=None), body, stream=True)


@pytest.mark.parametrize(("app", "version", "expected"), [
    ({"max_tokens": 50}, {"max_completion_tokens": 500}, {"max_completion_tokens": 500}),
    ({"max_completion_tokens": 50}, {"max_tokens": 500}, {"max_tokens": 500}),
    ({"max_completion_tokens": 50}, {}, {"max_completion_tokens": 50}),
])
def test_a_version_token_limit_replaces_the_apps_under_either_name(
    app: dict[str, Any], version: dict[str, Any], expected: dict[str, Any]
) -> None:
    upstream = build_upstream_body(_version(**version), {"model": "bot", "messages": MESSAGES, **app}, stream=False)
    assert {key: upstream[key] for key in ("max_tokens", "max_completion_tokens") if key in upstream} == expected


# -- end to end -----------------------------------------------------------------------------------


@pytest.fixture
def reasoning(make_gateway: Any) -> Gateway:
    """v1 on gpt-4o, the canary v2 on o3-mini at 100 %: every call goes to the reasoning model."""
    gateway: Gateway = make_gateway({"deployments": {"support-bot": {
        "versions": {"v1": {"model": "gpt-4o"}, "v2": {"model": "o3-mini", "params": {}}},
        "policy": {"stages": [100]}}}})
    return gateway


@pytest.mark.parametrize("stream", [False, True])
def test_moving_a_canary_to_a_reasoning_model_keeps_the_apps_calls_working(
    reasoning: Gateway, fake: FakeUpstream, stream: bool
) -> None:
    client = reasoning.openai()
    answer = client.chat.completions.create(model="support-bot", messages=MESSAGES, user="u1", max_tokens=100,
                                            temperature=0.2, top_p=0.5, stream=stream)
    if stream:
        list(answer)
    [received] = fake.received
    assert received.body["model"] == "o3-mini"
    assert received.body["max_completion_tokens"] == 100
    assert not {"max_tokens", "temperature", "top_p"} & received.body.keys()
    [row] = reasoning.records(1)
    assert (row["version"], row["status"]) == ("v2", "ok")


@pytest.mark.parametrize("stream", [False, True])
def test_a_version_removes_an_app_parameter(make_gateway: Any, fake: FakeUpstream, stream: bool) -> None:
    gateway: Gateway = make_gateway({"deployments": {"support-bot": {
        "versions": {"v2": {"params": {"max_tokens": None, "temperature": 0.3}}}, "policy": {"stages": [100]}}}})
    answer = gateway.openai().chat.completions.create(model="support-bot", messages=MESSAGES, user="u1",
                                                      max_tokens=100, stream=stream)
    if stream:
        list(answer)
    [received] = fake.received
    assert "max_tokens" not in received.body
    assert received.body["temperature"] == 0.3


def test_a_version_with_a_null_param_is_created_through_the_admin_api(make_gateway: Any, fake: FakeUpstream) -> None:
    gateway: Gateway = make_gateway({"deployments": {"support-bot": {"canary": None}}})
    with gateway.admin() as admin:
        created = admin.post("/admin/deployments/support-bot/versions", json={
            "name": "v3", "provider": "fake", "model": "model-b", "params": {"max_tokens": None}})
        assert created.status_code == 201, created.text
        assert created.json()["params"] == {"max_tokens": None}
        assert admin.post("/admin/deployments/support-bot/canary",
                          json={"version": "v3", "percent": 100}).status_code == 200
    gateway.openai().chat.completions.create(model="support-bot", messages=MESSAGES, user="u1", max_tokens=9)
    assert "max_tokens" not in fake.received[-1].body
