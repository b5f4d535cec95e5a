"""Chat completions to a version on Anthropic: no field dropped in silence, every answer mapped deliberately.

Each test is a public gateway bug report replayed against the strict fakes:
what the client sent, what the Anthropic upstream received, what the client
got back, plain and streamed where streaming changes the path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.migrate import upgrade
from tests.conftest import Gateway, users_in
from tests.fakes import FakeAnthropic
from tests.fakes.anthropic import API_KEY as ANTHROPIC_KEY

CANARY_USER = users_in(50, canary=True, count=1)[0]
STREAMED = pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Translation does not touch storage: SQLite only."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    upgrade(url)
    return url


def canary_config(claude: FakeAnthropic, **version: Any) -> dict[str, Any]:
    return {
        "providers": {"claude": {"kind": "anthropic", "base_url": claude.url, "api_key": ANTHROPIC_KEY,
                                 "retries": 0}},
        "deployments": {"support-bot": {"versions": {"v2": {"provider": "claude", "model": "claude-sonnet-4-5",
                                                            "params": {"max_tokens": 500}, **version}},
                                        "policy": {"stages": [50, 100]}}},
    }


@pytest.fixture
def on_claude(make_gateway: Any, claude: FakeAnthropic) -> Gateway:
    gateway: Gateway = make_gateway(canary_config(claude))
    return gateway


def call(gateway: Gateway, stream: bool, **body: Any) -> dict[str, Any]:
    """POST a chat completion as the canary user; the answer as one ChatCompletion (streams reassembled here)."""
    payload = {"model": "support-bot", "user": CANARY_USER, "messages": [{"role": "user", "content": "Hi"}], **body}
    if stream:
        payload["stream"] = True
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        answer = http.post("/v1/chat/completions", json=payload)
    if not stream or answer.status_code != 200:
        return {"status": answer.status_code, **answer.json()}
    content, finish = "", None
    calls: dict[int, dict[str, Any]] = {}
    for line in answer.text.split("\n"):
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[6:])
        assert "error" not in event, event
        for choice in event["choices"]:
            content += choice["delta"].get("content") or ""
            finish = choice["finish_reason"] or finish
            for tool in choice["delta"].get("tool_calls") or []:
                entry = calls.setdefault(tool["index"], {"id": None, "type": "function",
                                                         "function": {"name": "", "arguments": ""}})
                entry["id"] = tool.get("id") or entry["id"]
                entry["function"]["name"] += (tool.get("function") or {}).get("name") or ""
                entry["function"]["arguments"] += (tool.get("function") or {}).get("arguments") or ""
    message: dict[str, Any] = {"role": "assistant", "content": content or None}
    if calls:
        message["tool_calls"] = [calls[index] for index in sorted(calls)]
    return {"status": 200, "choices": [{"index": 0, "message": message, "finish_reason": finish}]}


def upstream_body(claude: FakeAnthropic) -> dict[str, Any]:
    assert not claude.refused, claude.refused
    body: dict[str, Any] = claude.received[-1].body
    return body


# -- 1. fields with an Anthropic counterpart are mapped --------------------------------------------------


@STREAMED
def test_parallel_tool_calls_false_gives_one_call(on_claude: Gateway, claude: FakeAnthropic, stream: bool) -> None:
    answer = call(on_claude, stream, tools=[WEATHER, TIME], tool_choice="auto", parallel_tool_calls=False)
    assert upstream_body(claude)["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert answer["status"] == 200
    assert len(answer["choices"][0]["message"]["tool_calls"]) == 1


def test_parallel_tool_calls_by_default_gives_every_call(on_claude: Gateway, claude: FakeAnthropic) -> None:
    answer = call(on_claude, False, tools=[WEATHER, TIME], tool_choice="auto")
    assert [c["function"]["name"] for c in answer["choices"][0]["message"]["tool_calls"]] == ["get_weather",
                                                                                            "get_time"]


SUM_FORMAT = {"type": "json_schema", "json_schema": {"name": "sum", "strict": True, "schema": {
    "type": "object", "properties": {"total": {"type": "integer"}}, "required": ["total"],
    "additionalProperties": False}}}


@STREAMED
def test_response_format_json_schema_is_carried(on_claude: Gateway, claude: FakeAnthropic, stream: bool) -> None:
    answer = call(on_claude, stream, response_format=SUM_FORMAT)
    assert answer["status"] == 200
    choice = answer["choices"][0]
    assert json.loads(choice["message"]["content"]) == {"total": 1}  # the fake model's answer to this schema
    assert choice["finish_reason"] == "stop" and not choice["message"].get("tool_calls")


def test_cache_control_is_kept(make_gateway: Any, claude: FakeAnthropic) -> None:
    gateway: Gateway = make_gateway(canary_config(claude, system_prompt="You are v2.", prompt_mode="prepend"))
    marker = {"type": "ephemeral"}
    answer = call(gateway, False, messages=[
        {"role": "system", "content": [{"type": "text", "text": "Long app prompt.", "cache_control": marker}]},
        {"role": "user", "content": [{"type": "text", "text": "Long document.", "cache_control": marker},
                                     {"type": "text", "text": "Question?"}]}])
    assert answer["status"] == 200
    body = upstream_body(claude)
    assert isinstance(body["system"], list)
    assert {"type": "text", "text": "Long app prompt.", "cache_control": marker} in body["system"]
    assert body["system"][0]["text"] == "You are v2."  # prepended
    assert {"type": "text", "text": "Long document.", "cache_control": marker} in body["messages"][0]["content"]


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("stop", ["END", "STOP"], {"stop_sequences": ["END", "STOP"]}),
    ("user", CANARY_USER, {"metadata": {"user_id": CANARY_USER}}),
    ("service_tier", "auto", {"service_tier": "auto"}),
])
def test_fields_with_a_counterpart_are_mapped(on_claude: Gateway, claude: FakeAnthropic, field: str, value: Any,
                                              expected: dict[str, Any]) -> None:
    answer = call(on_claude, False, **{field: value})
    assert answer["status"] == 200
    body = upstream_body(claude)
    assert {key: body.get(key) for key in expected} == expected


def test_reasoning_effort_turns_thinking_on(on_claude: Gateway, claude: FakeAnthropic) -> None:
    answer = call(on_claude, False, reasoning_effort="high")
    assert answer["status"] == 200
    body = upstream_body(claude)
    assert (body.get("thinking") or {}).get("type") in ("enabled", "adaptive") or \
        (body.get("output_config") or {}).get("effort") == "high"


# -- 1. fields without one are refused, naming the field -------------------------------------------------


@pytest.mark.parametrize(("field", "value"), [
    ("n", 2), ("logprobs", True), ("seed", 7), ("presence_penalty", 0.5), ("frequency_penalty", 0.5),
])
def test_fields_without_a_counterpart_are_refused(on_claude: Gateway, claude: FakeAnthropic, field: str,
                                                  value: Any) -> None:
    answer = call(on_claude, False, **{field: value})
    assert answer["status"] == 400
    assert answer["error"]["param"] == field and field in answer["error"]["message"]
    assert not claude.received


def test_an_audio_part_is_refused(on_claude: Gateway, claude: FakeAnthropic) -> None:
    answer = call(on_claude, False, messages=[{"role": "user", "content": [
        {"type": "text", "text": "Transcribe"}, {"type": "input_audio", "input_audio": {"data": "AAAA",
                                                                                      "format": "wav"}}]}])
    assert answer["status"] == 400 and "input_audio" in answer["error"]["message"]
    assert not claude.received


# -- 2. answers are normalised ---------------------------------------------------------------------------


@STREAMED
def test_a_tool_without_parameters_gets_an_empty_object(on_claude: Gateway, claude: FakeAnthropic,
                                                        stream: bool) -> None:
    answer = call(on_claude, stream, tools=[TIME], tool_choice="required")
    [tool_call] = answer["choices"][0]["message"]["tool_calls"]
    assert tool_call["function"] == {"name": "get_time", "arguments": "{}"}


@pytest.mark.parametrize(("stop_reason", "finish_reason"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("refusal", "content_filter"),
    ("model_context_window_exceeded", "length"),
])
@STREAMED
def test_every_stop_reason_maps_deliberately(on_claude: Gateway, claude: FakeAnthropic, stream: bool,
                                             stop_reason: str, finish_reason: str) -> None:
    claude.behaviour.stop_reason = stop_reason
    answer = call(on_claude, stream)
    assert answer["choices"][0]["finish_reason"] == finish_reason


@STREAMED
def test_an_unknown_stop_reason_is_not_all_fine(on_claude: Gateway, claude: FakeAnthropic, stream: bool) -> None:
    claude.behaviour.stop_reason = "a_reason_from_next_year"
    answer = call(on_claude, stream)
    assert answer["status"] != 200 or answer["choices"][0]["finish_reason"] != "stop"
