"""The anthropic Python SDK, unchanged, against the gateway's `/v1/messages`: the canary runs natively on the
Anthropic fake, the stable is translated to the OpenAI fake."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest

from tests.clients.conftest import CANARY_USER, CLIENT_KEY, STABLE_USER, answer_of, expect_version
from tests.conftest import Gateway
from tests.fakes import FakeAnthropic, FakeUpstream

USERS = pytest.mark.parametrize("user", [STABLE_USER, CANARY_USER], ids=["stable", "canary"])


@pytest.fixture
def client(mixed: Gateway) -> Iterator[anthropic.Anthropic]:
    sdk = anthropic.Anthropic(base_url=mixed.url, api_key=CLIENT_KEY, max_retries=0, timeout=20)
    yield sdk
    sdk.close()


@USERS
def test_messages_create(client: anthropic.Anthropic, fake: FakeUpstream, claude: FakeAnthropic, user: str) -> None:
    message = client.messages.create(model="support-bot", max_tokens=200, system="app prompt",
                                     messages=[{"role": "user", "content": "Hi"}], metadata={"user_id": user})
    assert message.type == "message" and message.content[0].type == "text"
    assert message.content[0].text == answer_of(user)
    assert message.usage.output_tokens > 0
    expect_version(fake, claude, user)


@USERS
def test_messages_stream(client: anthropic.Anthropic, fake: FakeUpstream, claude: FakeAnthropic, user: str) -> None:
    with client.messages.stream(model="support-bot", max_tokens=200, system="app prompt",
                                messages=[{"role": "user", "content": "Hi"}], metadata={"user_id": user}) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    # The OpenAI fake streams fixed pieces; the Anthropic fake streams its plain answer.
    assert text == (answer_of(user) if user == CANARY_USER else "piece0 piece1 piece2 ")
    assert final.content[0].text == text and final.stop_reason == "end_turn"
    expect_version(fake, claude, user)


@USERS
def test_tool_use(client: anthropic.Anthropic, fake: FakeUpstream, claude: FakeAnthropic, user: str) -> None:
    tool = {"name": "get_weather", "description": "Weather for a city", "input_schema": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    message = client.messages.create(model="support-bot", max_tokens=200, tools=[tool], metadata={"user_id": user},
                                     messages=[{"role": "user", "content": "Weather in Paris?"}])
    [call] = [block for block in message.content if block.type == "tool_use"]
    assert (call.name, call.input) == ("get_weather", {"city": "Paris"}) and message.stop_reason == "tool_use"
    expect_version(fake, claude, user)


@USERS
def test_count_tokens(client: anthropic.Anthropic, fake: FakeUpstream, claude: FakeAnthropic, user: str) -> None:
    counted = client.messages.count_tokens(model="support-bot", system="app prompt",
                                           messages=[{"role": "user", "content": "one two three"}],
                                           extra_headers={"X-User-Id": user})
    assert counted.input_tokens > 0
    if user == CANARY_USER:  # answered by the Anthropic upstream, with the canary's prompt in `system`
        assert claude.received[-1].path == "/v1/messages/count_tokens"
        expect_version(fake, claude, user)
