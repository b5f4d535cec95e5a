"""The openai Python SDK, unchanged, against a gateway whose canary runs on Anthropic."""

from __future__ import annotations

from typing import Any

import pytest

from tests.clients.conftest import (
    CANARY_USER,
    CLIENT_KEY,
    PASSTHROUGH,
    STABLE_USER,
    answer_of,
    expect_version,
    stable_path,
    streamed_answer_of,
)
from tests.conftest import PROVIDER_KEY, Gateway
from tests.fakes import FakeAnthropic, FakeUpstream

USERS = pytest.mark.parametrize("user", [STABLE_USER, CANARY_USER], ids=["stable", "canary"])


@USERS
def test_chat_completions(mixed: Gateway, fake: FakeUpstream, claude: FakeAnthropic, user: str) -> None:
    client = mixed.openai(CLIENT_KEY)
    messages = [{"role": "system", "content": "app prompt"}, {"role": "user", "content": "Hi"}]
    answer = client.chat.completions.create(model="support-bot", messages=messages, user=user)
    assert answer.choices[0].message.content == answer_of(user)
    expect_version(fake, claude, user)
    stream = client.chat.completions.create(model="support-bot", messages=messages, user=user, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == (answer_of(user) if user == CANARY_USER else "piece0 piece1 piece2 ")
    assert chunks[-1].usage is not None
    expect_version(fake, claude, user)


@USERS
def test_responses_create(responses_mixed: Gateway, fake: FakeUpstream, claude: FakeAnthropic, user: str,
                          stable_api: str) -> None:
    client = responses_mixed.openai(CLIENT_KEY)
    answer = client.responses.create(model="support-bot", instructions="app prompt", input="Hi", user=user,
                                     store=False)
    assert answer.output_text == answer_of(user)
    assert answer.usage is not None and answer.usage.output_tokens > 0
    seen = expect_version(fake, claude, user)
    if user == STABLE_USER:
        assert fake.received[-1].path == stable_path(stable_api)
        assert "store" not in seen.body if stable_api == "chat_completions" else seen.body["store"] is False


@USERS
def test_responses_stream(responses_mixed: Gateway, fake: FakeUpstream, claude: FakeAnthropic, user: str,
                          stable_api: str) -> None:
    client = responses_mixed.openai(CLIENT_KEY)
    events = list(client.responses.create(model="support-bot", instructions="app prompt", input="Hi", user=user,
                                          stream=True))
    kinds = [event.type for event in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == streamed_answer_of(user, stable_api) == events[-1].response.output_text
    assert events[-1].response.usage is not None
    expect_version(fake, claude, user)


@USERS
def test_responses_function_call(responses_mixed: Gateway, fake: FakeUpstream, claude: FakeAnthropic,
                                 user: str) -> None:
    client = responses_mixed.openai(CLIENT_KEY)
    tool = {"type": "function", "name": "get_weather", "strict": True, "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
        "additionalProperties": False}}
    answer = client.responses.create(model="support-bot", input="Weather in Paris?", tools=[tool], user=user)
    [call] = [item for item in answer.output if item.type == "function_call"]
    assert (call.name, call.arguments) == ("get_weather", '{"city": "Paris"}')
    events = list(client.responses.create(model="support-bot", input="Weather in Paris?", tools=[tool], user=user,
                                          stream=True))
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert arguments == '{"city": "Paris"}'
    [done] = [e.item for e in events if e.type == "response.output_item.done" and e.item.type == "function_call"]
    assert (done.name, done.arguments) == ("get_weather", '{"city": "Paris"}')
    expect_version(fake, claude, user)


def test_safety_identifier_routes_a_canary_user(mixed: Gateway, fake: FakeUpstream, claude: FakeAnthropic) -> None:
    client = mixed.openai(CLIENT_KEY)
    answer = client.chat.completions.create(model="support-bot", safety_identifier=CANARY_USER,
                                            messages=[{"role": "user", "content": "Hi"}])
    assert answer.choices[0].message.content == answer_of(CANARY_USER)
    expect_version(fake, claude, CANARY_USER)


def test_safety_identifier_on_responses(mixed: Gateway, fake: FakeUpstream, claude: FakeAnthropic) -> None:
    client = mixed.openai(CLIENT_KEY)
    answer = client.responses.create(model="support-bot", input="Hi", safety_identifier=CANARY_USER)
    assert answer.output_text == answer_of(CANARY_USER)
    expect_version(fake, claude, CANARY_USER)


def test_models_retrieve_and_embeddings(make_gateway: Any, fake: FakeUpstream) -> None:
    gateway: Gateway = make_gateway(PASSTHROUGH)
    client = gateway.openai(CLIENT_KEY)
    assert client.models.retrieve("support-bot").id == "support-bot"  # a deployment: the gateway answers
    assert not fake.received
    assert client.models.retrieve("text-embedding-3-small").owned_by == "fake"  # another id: passed through
    embedded = client.embeddings.create(model="text-embedding-3-small", input="alpha")  # base64 by default
    assert len(embedded.data[0].embedding) == 4
    assert [r.path for r in fake.received] == ["/v1/models/text-embedding-3-small", "/v1/embeddings"]
    assert all(r.headers["Authorization"] == f"Bearer {PROVIDER_KEY}" for r in fake.received)
    assert not fake.refused
