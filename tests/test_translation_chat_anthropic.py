"""Chat completions to a version on Anthropic: no field dropped in silence, every answer mapped deliberately.

Each test is a public gateway bug report replayed against the strict fakes:
what the client sent, what the Anthropic upstream received, what the client
got back, plain and streamed where streaming changes the path.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import settings_from_dict
from gateway.errors import ConfigError, InvalidRequest
from gateway.fields import DEFAULT_MAX_TOKENS, JSON_OBJECT_TOOL, REQUEST, THINKING_BUDGETS
from gateway.migrate import upgrade
from gateway.providers.anthropic import AnthropicStreamTranslator, to_chat_completion, to_messages_request
from tests.conftest import Gateway, base_config, merge, users_in, wait_for
from tests.fakes import FakeAnthropic, FakeUpstream
from tests.fakes.anthropic import API_KEY as ANTHROPIC_KEY

pytestmark = pytest.mark.sqlite_only("translation is under test, not storage")

CANARY_USER = users_in(50, canary=True, count=1)[0]
STABLE_USER = users_in(50, canary=False, count=1)[0]
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


@pytest.fixture
def bare_claude(make_gateway: Any, claude: FakeAnthropic) -> Gateway:
    """The canary on Anthropic with no prompt and no params of its own: the app's fields as they are."""
    config = canary_config(claude)
    config["deployments"]["support-bot"]["canary"] = "v3"
    config["deployments"]["support-bot"]["versions"] = {"v3": {"provider": "claude", "model": "claude-sonnet-4-5"}}
    gateway: Gateway = make_gateway(config)
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


SUM_SCHEMA = {"type": "object", "properties": {"total": {"type": "integer"}}, "required": ["total"],
              "additionalProperties": False}
SUM_FORMAT = {"type": "json_schema", "json_schema": {"name": "sum", "strict": True, "schema": SUM_SCHEMA}}


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


@pytest.mark.parametrize(("fields", "expected"), [
    ({"tool_choice": "required"}, {"type": "any", "disable_parallel_tool_use": True}),
    ({"tool_choice": {"type": "function", "function": {"name": "get_time"}}},
     {"type": "tool", "name": "get_time", "disable_parallel_tool_use": True}),
    ({}, {"type": "auto", "disable_parallel_tool_use": True}),
    ({"tool_choice": "none"}, {"type": "none"}),  # nothing to disable: no tool is called
])
def test_parallel_tool_calls_false_with_every_tool_choice(on_claude: Gateway, claude: FakeAnthropic,
                                                          fields: dict[str, Any], expected: dict[str, Any]) -> None:
    answer = call(on_claude, False, tools=[WEATHER, TIME], parallel_tool_calls=False, **fields)
    assert answer["status"] == 200
    assert upstream_body(claude)["tool_choice"] == expected
    assert len(answer["choices"][0]["message"].get("tool_calls") or []) <= 1


def test_allowed_tools_cut_the_tools_sent(on_claude: Gateway, claude: FakeAnthropic) -> None:
    answer = call(on_claude, False, tools=[WEATHER, TIME], tool_choice={"type": "allowed_tools", "allowed_tools": {
        "mode": "required", "tools": [{"type": "function", "function": {"name": "get_time"}}]}})
    body = upstream_body(claude)
    assert [tool["name"] for tool in body["tools"]] == ["get_time"] and body["tool_choice"] == {"type": "any"}
    assert [c["function"]["name"] for c in answer["choices"][0]["message"]["tool_calls"]] == ["get_time"]


def test_a_json_schema_becomes_anthropics_structured_output(on_claude: Gateway, claude: FakeAnthropic) -> None:
    call(on_claude, False, response_format=SUM_FORMAT)
    body = upstream_body(claude)
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": SUM_SCHEMA}}
    assert "tools" not in body


@STREAMED
def test_a_json_object_comes_back_as_the_content(on_claude: Gateway, claude: FakeAnthropic, stream: bool) -> None:
    answer = call(on_claude, stream, response_format={"type": "json_object"},
                  messages=[{"role": "user", "content": "Answer in JSON."}])
    assert answer["status"] == 200
    body = upstream_body(claude)
    assert body["tool_choice"] == {"type": "tool", "name": JSON_OBJECT_TOOL}
    assert body["tools"][-1]["name"] == JSON_OBJECT_TOOL
    choice = answer["choices"][0]
    assert isinstance(json.loads(choice["message"]["content"]), dict)
    assert choice["finish_reason"] == "stop" and not choice["message"].get("tool_calls")


@STREAMED
def test_a_json_object_with_the_apps_tools_lets_the_model_call_them(on_claude: Gateway, claude: FakeAnthropic,
                                                                    stream: bool) -> None:
    answer = call(on_claude, stream, response_format={"type": "json_object"}, tools=[WEATHER],
                  parallel_tool_calls=False)
    body = upstream_body(claude)
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert [tool["name"] for tool in body["tools"]] == ["get_weather", JSON_OBJECT_TOOL]
    [tool_call] = answer["choices"][0]["message"]["tool_calls"]  # the fake calls the first tool offered
    assert tool_call["function"]["name"] == "get_weather"
    assert answer["choices"][0]["finish_reason"] == "tool_calls"


def test_the_json_evaluator_scores_what_the_client_got(make_gateway: Any, claude: FakeAnthropic) -> None:
    config = canary_config(claude)
    config["deployments"]["support-bot"]["quality"] = {"sample_rate": 1.0, "evaluators": [{"type": "json"}]}
    gateway: Gateway = make_gateway(config)
    for response_format in (SUM_FORMAT, {"type": "json_object"}):
        for stream in (False, True):
            assert call(gateway, stream, response_format=response_format,
                        messages=[{"role": "user", "content": "1+0 in JSON?"}])["status"] == 200

    def canary_json() -> dict[str, Any] | None:
        with gateway.admin() as http:
            result = http.get("/admin/deployments/support-bot/compare?hours=1").json()
        scores: dict[str, Any] = result["canary"]["quality_by_source"].get("evaluator:json", {})
        return scores if scores.get("count") == 4 else None

    assert wait_for(canary_json, timeout=10, what="the evaluations") == {"avg": 1.0, "count": 4}


def test_the_forced_json_tool_name_is_the_gateways(on_claude: Gateway, claude: FakeAnthropic) -> None:
    own = {"type": "function", "function": {"name": JSON_OBJECT_TOOL, "parameters": {"type": "object"}}}
    answer = call(on_claude, False, tools=[own])
    assert answer["status"] == 400 and answer["error"]["param"] == "tools[0].function.name"
    assert not claude.received


def test_cache_marks_of_every_kind_are_kept(make_gateway: Any, claude: FakeAnthropic) -> None:
    gateway: Gateway = make_gateway(canary_config(claude, system_prompt="You are v2.", prompt_mode="append"))
    answer = call(gateway, False, messages=[
        {"role": "system", "content": "App prompt.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"role": "developer", "content": [{"type": "text", "text": "Dev rules.",
                                           "prompt_cache_breakpoint": {"mode": "explicit", "ttl": "30m"}}]},
        {"role": "user", "content": "Question?", "cache_control": {"type": "ephemeral"}}])
    assert answer["status"] == 200
    body = upstream_body(claude)
    assert body["system"] == [
        {"type": "text", "text": "App prompt.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"type": "text", "text": "Dev rules.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"type": "text", "text": "You are v2."}]  # appended, after the app's blocks
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "Question?", "cache_control": {"type": "ephemeral"}}]}]


def test_string_system_prompts_stay_one_string(make_gateway: Any, claude: FakeAnthropic) -> None:
    gateway: Gateway = make_gateway(canary_config(claude, system_prompt="You are v2.", prompt_mode="prepend"))
    call(gateway, False, messages=[{"role": "system", "content": "App prompt."}, {"role": "user", "content": "Hi"}])
    assert upstream_body(claude)["system"] == "You are v2.\n\nApp prompt."


@pytest.mark.parametrize(("fields", "expected"), [
    ({"stop": ["END", "STOP"]}, {"stop_sequences": ["END", "STOP"]}),
    ({"stop": "END"}, {"stop_sequences": ["END"]}),
    ({"user": CANARY_USER}, {"metadata": {"user_id": CANARY_USER}}),
    ({"user": None, "safety_identifier": CANARY_USER}, {"metadata": {"user_id": CANARY_USER}}),
    ({"user": None, "metadata": {"user_id": CANARY_USER, "team": "support"}}, {"metadata": {"user_id": CANARY_USER}}),
    ({"service_tier": "auto"}, {"service_tier": "auto"}),
    ({"service_tier": "default"}, {"service_tier": "standard_only"}),
    ({"service_tier": "priority"}, {"service_tier": "auto"}),
    ({"temperature": 0.4, "top_p": 0.9, "top_k": 5}, {"temperature": 0.4, "top_p": 0.9, "top_k": 5}),
    ({"temperature": 1.5}, {"temperature": 1}),  # OpenAI's 0-2, Anthropic's 0-1: capped
    ({"max_completion_tokens": 64, "max_tokens": 32}, {"max_tokens": 64}),
    ({}, {"max_tokens": DEFAULT_MAX_TOKENS}),
    ({"web_search_options": {"user_location": {"type": "approximate", "approximate": {"city": "Paris"}}}},
     {"tools": [{"type": "web_search_20250305", "name": "web_search",
                 "user_location": {"type": "approximate", "city": "Paris"}}]}),
])
def test_fields_with_a_counterpart_are_mapped(bare_claude: Gateway, claude: FakeAnthropic, fields: dict[str, Any],
                                              expected: dict[str, Any]) -> None:
    answer = call(bare_claude, False, **fields)
    assert answer["status"] == 200, answer
    body = upstream_body(claude)
    assert {key: body.get(key) for key in expected} == expected


@pytest.mark.parametrize("fields", [
    {"n": 1, "logprobs": False, "top_logprobs": 0, "presence_penalty": 0, "frequency_penalty": 0.0,
     "logit_bias": {"50256": 0}, "seed": None, "modalities": ["text"], "verbosity": "medium"},
    {"prompt_cache_key": "tenant-7", "prompt_cache_retention": "24h", "prompt_cache_options": {"mode": "explicit"},
     "store": True, "prediction": {"type": "content", "content": "Hello"}},
])
def test_fields_that_change_nothing_are_taken(on_claude: Gateway, claude: FakeAnthropic,
                                              fields: dict[str, Any]) -> None:
    answer = call(on_claude, False, **fields)
    assert answer["status"] == 200, answer
    assert not set(fields) & set(upstream_body(claude))


def test_message_fields_that_change_nothing_are_taken(on_claude: Gateway, claude: FakeAnthropic) -> None:
    answer = call(on_claude, False, messages=[
        {"role": "user", "content": "Hi", "name": "bob"},
        {"role": "assistant", "content": "Hello.", "reasoning_content": "Greet back.", "annotations": [],
         "refusal": None, "tool_calls": None, "function_call": None, "audio": None},
        {"role": "user", "content": "Bye"}])
    assert answer["status"] == 200, answer
    assert upstream_body(claude)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]},
        {"role": "user", "content": [{"type": "text", "text": "Bye"}]}]


def test_stream_options_are_taken(on_claude: Gateway, claude: FakeAnthropic) -> None:
    answer = call(on_claude, True, stream_options={"include_usage": True, "include_obfuscation": False})
    assert answer["status"] == 200 and "stream_options" not in upstream_body(claude)


def test_reasoning_effort_turns_thinking_on(on_claude: Gateway, claude: FakeAnthropic) -> None:
    answer = call(on_claude, False, reasoning_effort="high", temperature=0.3)
    assert answer["status"] == 200
    body = upstream_body(claude)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": THINKING_BUDGETS["high"]}
    # The budget comes on top of the version's 500: the visible answer keeps its limit.
    assert body["max_tokens"] == 500 + THINKING_BUDGETS["high"]
    assert "temperature" not in body  # Anthropic takes none with thinking
    assert answer["choices"][0]["message"]["reasoning_content"] == "Let me think."


def test_reasoning_effort_none_turns_thinking_off(on_claude: Gateway, claude: FakeAnthropic) -> None:
    answer = call(on_claude, False, reasoning_effort="none", temperature=0.3)
    body = upstream_body(claude)
    assert answer["status"] == 200 and body["thinking"] == {"type": "disabled"} and body["temperature"] == 0.3


@pytest.mark.parametrize(("fields", "param"), [
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"tools": [WEATHER], "tool_choice": "required"}, "tool_choice"),
])
def test_what_thinking_cannot_take_is_refused(on_claude: Gateway, claude: FakeAnthropic, fields: dict[str, Any],
                                              param: str) -> None:
    answer = call(on_claude, False, reasoning_effort="low", **fields)
    assert answer["status"] == 400 and answer["error"]["param"] == param
    assert not claude.received


def test_images_and_pdfs_become_blocks(on_claude: Gateway, claude: FakeAnthropic) -> None:
    pdf = base64.b64encode(b"%PDF-1.4 fake").decode()
    answer = call(on_claude, False, messages=[{"role": "user", "content": [
        {"type": "text", "text": "Compare."},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "high"}},
        {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{pdf}", "filename": "a.pdf"}}]}])
    assert answer["status"] == 200
    assert upstream_body(claude)["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": pdf}}]


def test_an_answer_says_its_service_tier() -> None:
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
               "content": [{"type": "text", "text": "Hi."}], "stop_reason": "end_turn", "stop_sequence": None,
               "usage": {"input_tokens": 3, "output_tokens": 2, "service_tier": "priority"}}
    completion, _ = to_chat_completion(message)
    assert completion["service_tier"] == "priority"
    translator = AnthropicStreamTranslator(wants_usage=False)
    start = {"type": "message_start", "message": {**message, "content": [], "stop_reason": None}}
    out = translator.feed(f"event: message_start\ndata: {json.dumps(start)}\n\n".encode())
    assert json.loads(out[6:])["service_tier"] == "priority"


# -- 1. fields without one are refused, naming the field -------------------------------------------------


@pytest.mark.parametrize(("field", "value"), [
    ("n", 2), ("logprobs", True), ("seed", 7), ("presence_penalty", 0.5), ("frequency_penalty", 0.5),
    ("top_logprobs", 2), ("logit_bias", {"50256": -100}), ("modalities", ["text", "audio"]),
    ("audio", {"voice": "alloy", "format": "wav"}), ("verbosity", "low"), ("service_tier", "flex"),
    ("moderation", {"model": "omni-moderation-latest"}), ("functions", [{"name": "get_time"}]),
    ("function_call", "auto"), ("web_search_options", {"search_context_size": "high"}),
    ("temprature", 0.5),  # a field OpenAI does not know either
])
def test_fields_without_a_counterpart_are_refused(on_claude: Gateway, claude: FakeAnthropic, field: str,
                                                  value: Any) -> None:
    answer = call(on_claude, False, **{field: value})
    assert answer["status"] == 400
    assert answer["error"]["param"] == field and field in answer["error"]["message"]
    assert answer["error"]["type"] == "invalid_request_error"
    assert not claude.received


@pytest.mark.parametrize(("message", "param"), [
    ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png",
                                                                      "detail": "low"}}]},
     "messages[0].content[0].image_url.detail"),
    ({"role": "user", "content": [{"type": "file", "file": {"file_id": "file-abc"}}]}, "messages[0].content[0].file"),
    ({"role": "user", "content": "Hi", "mood": "curious"}, "messages[0].mood"),
    ({"role": "function", "name": "get_time", "content": "12:00"}, "messages[0].role"),
])
def test_message_fields_without_a_counterpart_are_refused(on_claude: Gateway, claude: FakeAnthropic,
                                                          message: dict[str, Any], param: str) -> None:
    answer = call(on_claude, False, messages=[message])
    assert answer["status"] == 400 and answer["error"]["param"] == param
    assert not claude.received


_WORDS = st.sampled_from(["auto", "none", "required", "text", "json_object", "json_schema", "function", "image_url",
                          "input_audio", "file", "refusal", "user", "assistant", "tool", "high", "low", "flex"])
_KEYS = st.sampled_from(["type", "text", "function", "name", "parameters", "image_url", "url", "detail", "content",
                         "role", "arguments", "id", "json_schema", "schema", "allowed_tools", "mode", "tools", "file",
                         "file_data", "cache_control", "user_id", "user_location", "approximate", "refusal"])
_JSON = st.recursive(st.none() | st.booleans() | st.integers(-3, 5) | st.floats(allow_nan=False, allow_infinity=False)
                     | st.text(max_size=5) | _WORDS,
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4),
                     max_leaves=12)
_MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["system", "developer", "user", "assistant", "tool"])},
                                 optional={key: _JSON for key in ("content", "tool_calls", "tool_call_id", "name",
                                                                  "cache_control", "refusal")})
_BODY = st.fixed_dictionaries({"model": st.just("claude-x"), "messages": st.lists(_MESSAGE, min_size=1, max_size=4)},
                              optional={name: _JSON for name in REQUEST if name not in ("model", "messages")})


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(_BODY, st.booleans())
def test_any_body_is_translated_or_refused_by_name(body: dict[str, Any], stream: bool) -> None:
    try:
        to_messages_request(body, stream=stream)
    except InvalidRequest as refused:
        assert refused.param  # never a crash, never a refusal that names nothing


def test_a_custom_tool_is_refused(on_claude: Gateway, claude: FakeAnthropic) -> None:
    answer = call(on_claude, False, tools=[{"type": "custom", "custom": {"name": "grep"}}])
    assert answer["status"] == 400 and answer["error"]["param"] == "tools[0]"


def test_a_refusal_is_the_versions_error_and_stable_forwards_the_field(on_claude: Gateway, claude: FakeAnthropic,
                                                                       fake: FakeUpstream) -> None:
    refused = call(on_claude, False, seed=7)
    with httpx.Client(base_url=on_claude.url, timeout=30) as http:
        stable = http.post("/v1/chat/completions", json={"model": "support-bot", "user": STABLE_USER, "seed": 7,
                                                         "messages": [{"role": "user", "content": "Hi"}]})
    assert refused["status"] == 400 and stable.status_code == 200
    assert fake.received[-1].body["seed"] == 7
    rows = {row["version"]: row for row in on_claude.records(2)}
    assert (rows["v2"]["status"], rows["v2"]["http_status"], rows["v2"]["error_kind"]) == ("error", 400,
                                                                                        "untranslatable")
    assert rows["v1"]["status"] == "ok"


# -- 1. a version's own params ---------------------------------------------------------------------------


def test_a_version_can_remove_a_field_anthropic_has_no_counterpart_for(make_gateway: Any,
                                                                      claude: FakeAnthropic) -> None:
    gateway: Gateway = make_gateway(canary_config(claude, params={"max_tokens": 500, "seed": None, "n": None}))
    answer = call(gateway, True, seed=7, n=1)
    assert answer["status"] == 200
    assert not {"seed", "n"} & set(upstream_body(claude))


def test_a_version_anthropic_cannot_serve_is_refused_by_the_admin_api(on_claude: Gateway) -> None:
    version = {"name": "v3", "provider": "claude", "model": "claude-sonnet-4-5", "params": {"seed": 7}}
    with on_claude.admin() as http:
        refused = http.post("/admin/deployments/support-bot/versions", json=version)
        taken = http.post("/admin/deployments/support-bot/versions",
                          json={**version, "params": {"temperature": 0.2, "reasoning_effort": "low"}})
        on_openai = http.post("/admin/deployments/support-bot/versions",
                              json={**version, "name": "v4", "provider": "fake"})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == "params.seed" and "v3" in error["message"] and "seed" in error["message"]
    assert taken.status_code == 201 and on_openai.status_code == 201


def test_a_version_anthropic_cannot_serve_does_not_load(claude: FakeAnthropic, database_url: str,
                                                        fake: FakeUpstream, tmp_path: Path) -> None:
    config = merge(base_config(database_url, fake.url, tmp_path / "spool"),
                   canary_config(claude, params={"max_tokens": 500, "n": 2}))
    with pytest.raises(ConfigError, match=r"^deployments\.support-bot\.versions\.v2\.params\.n: "):
        settings_from_dict(config)


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
