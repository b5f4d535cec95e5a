"""Agent frameworks whose default is the Responses API: openai-agents and pydantic-ai, unchanged."""

from __future__ import annotations

import openai
import pytest
from agents import Agent, RunConfig, Runner
from agents.models.openai_provider import OpenAIProvider as AgentsOpenAIProvider
from pydantic_ai import Agent as PydanticAgent
from pydantic_ai.models import infer_model
from pydantic_ai.providers.openai import OpenAIProvider

from tests.clients.conftest import CANARY_USER, CLIENT_KEY, STABLE_USER, answer_of, expect_version, stable_path
from tests.conftest import Gateway
from tests.fakes import FakeAnthropic, FakeUpstream

USERS = pytest.mark.parametrize("user", [STABLE_USER, CANARY_USER], ids=["stable", "canary"])


@USERS
async def test_openai_agents_default_agent(responses_mixed: Gateway, fake: FakeUpstream, claude: FakeAnthropic,
                                           user: str, stable_api: str) -> None:
    client = openai.AsyncOpenAI(base_url=f"{responses_mixed.url}/v1", api_key=CLIENT_KEY, max_retries=0,
                                default_headers={"X-User-Id": user})
    try:
        agent = Agent(name="Support", instructions="app prompt", model="support-bot")
        config = RunConfig(model_provider=AgentsOpenAIProvider(openai_client=client), tracing_disabled=True)
        result = await Runner.run(agent, "Hi", run_config=config)
    finally:
        await client.close()
    assert result.final_output == answer_of(user)
    assert fake.received[-1].path == stable_path(stable_api) if user == STABLE_USER else True
    expect_version(fake, claude, user)


@USERS
async def test_pydantic_ai_openai_model(responses_mixed: Gateway, fake: FakeUpstream, claude: FakeAnthropic,
                                        user: str) -> None:
    client = openai.AsyncOpenAI(base_url=f"{responses_mixed.url}/v1", api_key=CLIENT_KEY, max_retries=0,
                                default_headers={"X-User-Id": user})
    try:
        model = infer_model("openai:support-bot", provider_factory=lambda _: OpenAIProvider(openai_client=client))
        result = await PydanticAgent(model, instructions="app prompt").run("Hi")
    finally:
        await client.close()
    assert result.output == answer_of(user)
    expect_version(fake, claude, user)
