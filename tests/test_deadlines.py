"""Deadlines of an upstream call: the total deadline bounds the call, the idle
timeout only the silence between chunks of a stream that has started, and the
optional first-byte timeout the wait for the answer to begin.

Scaled down from the defaults (`timeout_s: 60`, `idle_timeout_s: 30`, where a
35 s answer must be served): here 3 s and 0.6 s, with answers taking 1.2 s.
"""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import Gateway
from tests.fakes import FakeUpstream

pytestmark = pytest.mark.sqlite_only("deadlines of upstream calls are under test, not storage")

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "think hard"}]
SCALED = {"providers": {"fake": {"timeout_s": 3, "idle_timeout_s": 0.6, "retries": 0}}}


def stream_text(gateway: Gateway) -> str:
    parts = []
    for event in gateway.openai().chat.completions.create(
        model="support-bot", messages=MESSAGES, user="u", stream=True
    ):
        if event.choices and event.choices[0].delta.content:
            parts.append(event.choices[0].delta.content)
    return "".join(parts)


def test_a_plain_answer_slower_than_the_idle_timeout_is_served(make_gateway: Any, fake: FakeUpstream) -> None:
    gateway = make_gateway(SCALED)
    fake.behaviour.delay = 1.2  # twice the idle timeout, well inside the deadline
    answer = gateway.openai().chat.completions.create(model="support-bot", messages=MESSAGES, user="u")
    assert answer.choices[0].message.content.startswith("answer to")
    [row] = gateway.records(1)
    assert row["status"] == "ok" and row["http_status"] == 200 and row["latency_ms"] >= 1200


@pytest.mark.parametrize("wait", ["headers", "first_chunk"])
def test_a_stream_slow_to_start_is_not_cut_by_the_idle_timeout(
    make_gateway: Any, fake: FakeUpstream, wait: str
) -> None:
    gateway = make_gateway(SCALED)
    if wait == "headers":
        fake.behaviour.delay = 1.2
    else:
        fake.behaviour.first_chunk_delay = 1.2
    assert stream_text(gateway) == "piece0 piece1 piece2 "
    [row] = gateway.records(1)
    assert row["status"] == "ok" and row["error_kind"] is None and row["ttft_ms"] >= 1200


def test_silence_between_chunks_is_bounded_by_the_idle_timeout(make_gateway: Any, fake: FakeUpstream) -> None:
    gateway = make_gateway(SCALED)
    fake.behaviour.chunks = 3
    fake.behaviour.chunk_delay = 2.0  # after the first chunk: longer than idle, shorter than the deadline
    started = time.monotonic()
    with pytest.raises(openai.APIError, match=r"sent nothing for 0\.6 s"):
        stream_text(gateway)
    assert time.monotonic() - started > 0.5  # the message names the idle timeout that fired
    [row] = gateway.records(1)
    assert row["status"] == "error" and row["error_kind"] == "timeout"


def test_the_total_deadline_bounds_a_slow_answer(make_gateway: Any, fake: FakeUpstream) -> None:
    gateway = make_gateway({"providers": {"fake": {"timeout_s": 1, "idle_timeout_s": 0.6, "retries": 0}}})
    fake.behaviour.delay = 1.5
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        gateway.openai().chat.completions.create(model="support-bot", messages=MESSAGES, user="u")
    assert caught.value.status_code == 504 and time.monotonic() - started > 0.9  # not before the deadline
    assert caught.value.body["code"] == "upstream_timeout"  # type: ignore[index]


def test_the_first_byte_timeout_bounds_a_plain_answer(make_gateway: Any, fake: FakeUpstream) -> None:
    gateway = make_gateway({"providers": {"fake": {"timeout_s": 3, "first_byte_timeout_s": 0.5, "retries": 0}}})
    fake.behaviour.delay = 1.2
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        gateway.openai().chat.completions.create(model="support-bot", messages=MESSAGES, user="u")
    assert caught.value.status_code == 504 and time.monotonic() - started > 0.4
    assert "first_byte_timeout_s" in caught.value.message
    [row] = gateway.records(1)
    assert row["status"] == "error" and row["error_kind"] == "timeout" and row["http_status"] == 504


def test_the_first_byte_timeout_bounds_a_stream_s_first_chunk(make_gateway: Any, fake: FakeUpstream) -> None:
    gateway = make_gateway({"providers": {"fake": {"timeout_s": 3, "first_byte_timeout_s": 0.5, "retries": 0}}})
    fake.behaviour.first_chunk_delay = 1.2
    started = time.monotonic()
    with pytest.raises(openai.APIError, match="first_byte_timeout_s"):
        stream_text(gateway)
    assert time.monotonic() - started > 0.4  # the message names the first-byte timeout, not the total one
    [row] = gateway.records(1)
    assert row["status"] == "error" and row["error_kind"] == "timeout"


def test_the_first_byte_timeout_leaves_a_started_stream_alone(make_gateway: Any, fake: FakeUpstream) -> None:
    gateway = make_gateway({"providers": {"fake": {"timeout_s": 3, "first_byte_timeout_s": 0.5, "retries": 0}}})
    fake.behaviour.chunks = 4
    fake.behaviour.chunk_delay = 0.3  # the whole stream takes 1.2 s, more than the first-byte timeout
    assert stream_text(gateway) == "piece0 piece1 piece2 piece3 "
