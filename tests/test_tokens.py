"""gateway.tokens: the estimate of a Messages call's input tokens for a version on a chat-completions provider."""

from __future__ import annotations

import json
import logging

import pytest
import tiktoken

from gateway.models import Version
from gateway.tokens import CHARS_PER_TOKEN, Encodings, encoding_name, estimate_tokens

V1 = Version(name="v1", provider="openai", model="gpt-4o", system_prompt="You are v1.")
# A real tiktoken encoding whose tokens are single bytes: a count is the text's UTF-8 length.
BYTES = tiktoken.Encoding(name="bytes", pat_str=r"[\s\S]", mergeable_ranks={bytes([i]): i for i in range(256)},
                          special_tokens={})
FRAMING_2 = 3 * 2 + 3  # two messages (system, user) and the answer's start


def body(**fields: object) -> dict[str, object]:
    return {"model": "support-bot", "messages": [{"role": "user", "content": "Hi"}], **fields}


def test_the_versions_prompt_replaces_the_apps_and_is_counted() -> None:
    assert estimate_tokens(V1, body(system="A much longer app prompt"), BYTES) == FRAMING_2 + len("You are v1.Hi")


def test_tools_tool_calls_and_attachments_count() -> None:
    tool = {"name": "get_weather", "input_schema": {"type": "object"}}
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Hi"},
                                     {"type": "image", "source": {"type": "url", "url": "https://e.com/a.png"}}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "18 C"}]},
    ]
    function = json.dumps({"name": "get_weather", "arguments": "{}"})
    expected = (3 * 4 + 3 + 85 + len("You are v1.") + len("Hi") + len(function) + len("18 C")
                + len(json.dumps([tool])))
    assert estimate_tokens(V1, body(messages=messages, tools=[tool]), BYTES) == expected


def test_without_an_encoding_four_characters_a_token() -> None:
    assert CHARS_PER_TOKEN == 4
    assert estimate_tokens(V1, body(), None) == FRAMING_2 + 3 + 1  # ceil(11 / 4) + ceil(2 / 4)


@pytest.mark.parametrize(("model", "name"), [("gpt-4o", "o200k_base"), ("openai/gpt-4o-mini", "o200k_base"),
                                             ("gpt-4", "cl100k_base"), ("gpt-3.5-turbo", "cl100k_base"),
                                             ("llama-3.1-70b", "o200k_base")])
def test_the_encoding_of_a_model(model: str, name: str) -> None:
    assert encoding_name(model) == name


def test_an_encoding_that_cannot_load_is_tried_once_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    tried: list[str] = []

    def offline(name: str) -> tiktoken.Encoding:
        tried.append(name)
        raise ConnectionError("no network")

    encodings = Encodings(offline)
    with caplog.at_level(logging.WARNING, logger="gateway.tokens"):
        assert encodings.get("o200k_base") is None and encodings.get("o200k_base") is None
    assert tried == ["o200k_base"]
    assert [record.getMessage() for record in caplog.records] == [
        "tiktoken encoding o200k_base could not be loaded (ConnectionError); token counts are estimated at 4 "
        "characters per token"]
    assert Encodings(lambda name: BYTES).get("cl100k_base") is BYTES
