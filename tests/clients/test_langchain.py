"""LangChain's chat models and embeddings, unchanged, against the gateway."""

from __future__ import annotations

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

from tests.clients.conftest import (
    CANARY_USER,
    CLIENT_KEY,
    PASSTHROUGH,
    STABLE_USER,
    answer_of,
    expect_version,
    streamed_answer_of,
)
from tests.conftest import PROVIDER_KEY, Gateway
from tests.fakes import FakeAnthropic, FakeUpstream

USERS = pytest.mark.parametrize("user", [STABLE_USER, CANARY_USER], ids=["stable", "canary"])


def chat_openai(gateway: Gateway, user: str, **options: object) -> ChatOpenAI:
    return ChatOpenAI(model="support-bot", base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0,
                      default_headers={"X-User-Id": user}, **options)


@USERS
def test_chat_openai(mixed: Gateway, fake: FakeUpstream, claude: FakeAnthropic, user: str) -> None:
    model = chat_openai(mixed, user)
    assert model.invoke("Hi").text == answer_of(user)
    expect_version(fake, claude, user)
    streamed = "".join(chunk.text for chunk in model.stream("Hi"))
    assert streamed == (answer_of(user) if user == CANARY_USER else "piece0 piece1 piece2 ")
    expect_version(fake, claude, user)


@USERS
def test_chat_openai_on_the_responses_api(responses_mixed: Gateway, fake: FakeUpstream, claude: FakeAnthropic,
                                          user: str, stable_api: str) -> None:
    model = chat_openai(responses_mixed, user, use_responses_api=True)
    assert model.invoke("Hi").text == answer_of(user)
    expect_version(fake, claude, user)
    assert "".join(chunk.text for chunk in model.stream("Hi")) == streamed_answer_of(user, stable_api)
    expect_version(fake, claude, user)


@USERS
def test_chat_anthropic(mixed: Gateway, fake: FakeUpstream, claude: FakeAnthropic, user: str) -> None:
    model = ChatAnthropic(model="support-bot", base_url=mixed.url, api_key=CLIENT_KEY, max_retries=0,
                          max_tokens=200, default_headers={"X-User-Id": user})
    assert model.invoke("Hi").text == answer_of(user)
    expect_version(fake, claude, user)
    streamed = "".join(chunk.text for chunk in model.stream("Hi"))
    assert streamed == (answer_of(user) if user == CANARY_USER else "piece0 piece1 piece2 ")
    expect_version(fake, claude, user)


def test_openai_embeddings_through_the_pass_through(make_gateway: object, fake: FakeUpstream) -> None:
    gateway: Gateway = make_gateway(PASSTHROUGH)  # type: ignore[operator]
    embeddings = OpenAIEmbeddings(model="text-embedding-3-small", base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY,
                                  check_embedding_ctx_length=False, max_retries=0)
    vectors = embeddings.embed_documents(["alpha", "beta"])
    assert [len(vector) for vector in vectors] == [4, 4] and vectors[1][0] == pytest.approx(0.2)
    [received] = fake.received
    assert received.path == "/v1/embeddings" and received.body["model"] == "text-embedding-3-small"
    assert received.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"
    assert not fake.refused
