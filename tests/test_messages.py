"""`POST /v1/messages` and `/v1/messages/count_tokens` against a running gateway and the strict fakes.

The canary (v2) runs on the Anthropic fake, natively: what it receives is the
client's body injected, and what the client gets is the fake's answer, byte
for byte and event for event. The stable (v1) runs on the OpenAI fake through
the chat pivot. Errors come in Anthropic's shape; each call is one record
with `api = messages`.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from gateway.providers.anthropic import AnthropicProvider
from tests.conftest import Gateway, users_in, wait_for
from tests.fakes import FakeAnthropic, FakeUpstream
from tests.fakes.anthropic import API_KEY as ANTHROPIC_KEY
from tests.fakes.anthropic import answer_content, count_tokens, usage

CANARY_USER = users_in(50, canary=True, count=1)[0]
STABLE_USER = users_in(50, canary=False, count=1)[0]
APP_SYSTEM = [{"type": "text", "text": "App rules.", "cache_control": {"type": "ephemeral"}}]
HI = [{"role": "user", "content": "Hi"}]
pytestmark = pytest.mark.sqlite_only("a call's storage is one record, the same on every database")


def mixed(claude: FakeAnthropic, **changes: Any) -> dict[str, Any]:
    """Stable v1 on the OpenAI fake, canary v2 (prompt prepended) on the Anthropic fake, at 50 %."""
    return {
        "providers": {"claude": {"kind": "anthropic", "base_url": claude.url, "api_key": ANTHROPIC_KEY,
                                 "retries": 0}},
        "pricing": {"claude-sonnet-4-5": {"input": 3.0, "output": 15.0}},
        "deployments": {"support-bot": {
            "versions": {"v2": {"provider": "claude", "model": "claude-sonnet-4-5", "prompt_mode": "prepend",
                                "params": {"max_tokens": 500, "temperature": None}}},
            "policy": {"stages": [50, 100]}}},
        **changes,
    }


@pytest.fixture
def gateway(make_gateway: Any, claude: FakeAnthropic) -> Gateway:
    made: Gateway = make_gateway(mixed(claude))
    return made


def post(gateway: Gateway, user: str, path: str = "/v1/messages", **body: Any) -> httpx.Response:
    """A Messages call of `user` (in `metadata.user_id`; a token count, which has no metadata, in X-User-Id);
    fields given as None are left out."""
    headers = {"anthropic-version": "2023-06-01"}
    payload = {"model": "support-bot", "messages": HI, **body}
    if path == "/v1/messages":
        payload = {"max_tokens": 200, "metadata": {"user_id": user}, **payload}
    else:
        headers["x-user-id"] = user
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        return http.post(path, json={key: value for key, value in payload.items() if value is not None},
                         headers=headers)


def sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of every event of an Anthropic stream."""
    events = []
    for frame in text.split("\n\n"):
        if frame.strip():
            name, data = frame.split("\n", 1)
            events.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return events


# -- native: a version on Anthropic --------------------------------------------------------------------


def test_native_plain_the_body_injected_and_the_answer_as_the_upstream_sent_it(
        gateway: Gateway, claude: FakeAnthropic, fake: FakeUpstream) -> None:
    answer = post(gateway, CANARY_USER, system=APP_SYSTEM, stop_sequences=["END"])
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-canary-version"] == "v2" and answer.headers["request-id"]
    [received] = claude.received
    assert received.path == "/v1/messages" and not claude.refused and not fake.received
    # The prompt prepended as a block of its own; the app's block keeps its cache_control.
    assert received.body == {"model": "claude-sonnet-4-5", "max_tokens": 500, "messages": HI,
                             "metadata": {"user_id": CANARY_USER}, "stop_sequences": ["END"],
                             "system": [{"type": "text", "text": "You are v2."}, *APP_SYSTEM]}
    assert received.headers["x-api-key"] == ANTHROPIC_KEY
    assert answer.json() == {"id": "msg_fake", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                             "content": answer_content(received.body), "stop_reason": "end_turn",
                             "stop_sequence": None, "usage": usage()}
    [record] = gateway.records(1)
    assert (record["api"], record["version"], record["status"], record["stream"]) == ("messages", "v2", "ok", False)
    assert (record["prompt_tokens"], record["completion_tokens"]) == (27, 9)  # cache reads and writes included
    assert record["cost_usd"] == pytest.approx((27 * 3.0 + 9 * 15.0) / 1e6)


def test_native_stream_every_event_relayed_as_it_came(gateway: Gateway, claude: FakeAnthropic) -> None:
    answer = post(gateway, CANARY_USER, stream=True)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    events = sse(answer.text)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert all(data["type"] == name for name, data in events)
    text = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
    assert text == "claude answer to [You are v2.]"
    [record] = gateway.records(1)
    assert (record["api"], record["status"], record["stream"]) == ("messages", "ok", True)
    assert (record["prompt_tokens"], record["completion_tokens"]) == (27, 9) and record["ttft_ms"] is not None


def test_native_stream_error_event_relayed_and_recorded(gateway: Gateway, claude: FakeAnthropic) -> None:
    claude.behaviour.error_after = 2
    events = sse(post(gateway, CANARY_USER, stream=True).text)
    assert events[-1] == ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    [record] = gateway.records(1)
    assert (record["status"], record["error_kind"]) == ("error", "stream_error")


@pytest.mark.parametrize(("status", "error_type", "expected", "expected_type"), [
    (429, "rate_limit_error", 429, "rate_limit_error"),
    (400, "invalid_request_error", 400, "invalid_request_error"),
    (529, "overloaded_error", 503, "overloaded_error"),
    (500, "api_error", 502, "api_error"),
])
def test_native_upstream_errors_in_anthropics_shape(gateway: Gateway, claude: FakeAnthropic, status: int,
                                                     error_type: str, expected: int, expected_type: str) -> None:
    claude.behaviour.status, claude.behaviour.error_type, claude.behaviour.retry_after = status, error_type, "7"
    answer = post(gateway, CANARY_USER)
    assert answer.status_code == expected
    body = answer.json()
    assert body["type"] == "error" and body["error"]["type"] == expected_type and body["error"]["message"]
    assert ANTHROPIC_KEY not in answer.text
    if status == 429:
        assert answer.headers["retry-after"] == "7"
    [record] = gateway.records(1)
    assert (record["api"], record["status"]) == ("messages", "error")


# -- the pivot: a version on an OpenAI-compatible provider ---------------------------------------------


def test_pivot_plain(gateway: Gateway, fake: FakeUpstream, claude: FakeAnthropic) -> None:
    answer = post(gateway, STABLE_USER, system=APP_SYSTEM, temperature=0.5)
    assert answer.status_code == 200 and answer.headers["x-canary-version"] == "v1"
    [received] = fake.received
    assert not claude.received and not fake.refused
    assert received.body["messages"] == [{"role": "system", "content": "You are v1."}, {"role": "user",
                                                                                        "content": "Hi"}]
    assert (received.body["max_tokens"], received.body["temperature"], received.body["user"]) == (200, 0.5,
                                                                                                 STABLE_USER)
    message = answer.json()
    assert message["type"] == "message" and message["content"] == [{"type": "text", "text": "answer to [You are v1.]"}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"] == {"input_tokens": 11, "output_tokens": 7, "cache_creation_input_tokens": 0,
                                "cache_read_input_tokens": 0}
    [record] = gateway.records(1)
    assert (record["api"], record["version"], record["prompt_tokens"], record["completion_tokens"]) == (
        "messages", "v1", 11, 7)
    assert metric(gateway, "canary_requests_total") == (
        'canary_requests_total{api="messages",deployment="support-bot",mode="live",status="ok",version="v1"} 1.0')


def test_pivot_stream(gateway: Gateway, fake: FakeUpstream) -> None:
    events = sse(post(gateway, STABLE_USER, stream=True).text)
    assert [name for name, _ in events] == ["message_start", "content_block_start", *["content_block_delta"] * 3,
                                            "content_block_stop", "message_delta", "message_stop"]
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn" and events[-2][1]["usage"]["output_tokens"] == 7
    assert fake.received[0].body["stream_options"] == {"include_usage": True}
    [record] = gateway.records(1)
    assert (record["api"], record["status"], record["completion_tokens"]) == ("messages", "ok", 7)


def test_pivot_stream_cut_ends_in_an_error_event(gateway: Gateway, fake: FakeUpstream) -> None:
    fake.behaviour.cut_after = 1
    events = sse(post(gateway, STABLE_USER, stream=True).text)
    assert events[-1][0] == "error" and events[-1][1]["error"]["type"] == "api_error"
    [record] = gateway.records(1)
    assert (record["status"], record["error_kind"]) == ("error", "stream_truncated")


def test_pivot_tool_use_plain_and_streamed(gateway: Gateway, fake: FakeUpstream) -> None:
    tool = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
    message = post(gateway, STABLE_USER, tools=[tool], tool_choice={"type": "any"}).json()
    assert message["stop_reason"] == "tool_use"
    assert message["content"][-1] == {"type": "tool_use", "id": "call_fake1", "name": "get_weather",
                                      "input": {"city": "Paris"}}
    assert fake.received[0].body["tool_choice"] == "required"
    events = sse(post(gateway, STABLE_USER, tools=[tool], stream=True).text)
    starts = [data["content_block"] for name, data in events if name == "content_block_start"]
    assert starts[-1] == {"type": "tool_use", "id": "call_fake1", "name": "get_weather", "input": {}}
    arguments = "".join(data["delta"].get("partial_json", "") for name, data in events if name == "content_block_delta")
    assert json.loads(arguments) == {"city": "Paris"} and events[-2][1]["delta"]["stop_reason"] == "tool_use"


# -- refusals, in Anthropic's error shape ----------------------------------------------------------------


@pytest.mark.parametrize(("body", "named"), [
    ({"max_tokens": None}, "max_tokens"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "assistant", "content": "Hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": " "}]}, "messages[0].content"),
    ({"system": [{"type": "image"}]}, "system[0]"),
    ({"stream": "yes"}, "stream"),
    ({"tool_choice": {"type": "auto"}}, "tool_choice"),
    # Translation to the stable's chat-completions provider: refused by name, never dropped.
    ({"top_k": 5}, "top_k"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
])
def test_invalid_calls_are_refused_naming_the_field(gateway: Gateway, fake: FakeUpstream, body: dict[str, Any],
                                                    named: str) -> None:
    answer = post(gateway, STABLE_USER, **body)
    assert answer.status_code == 400
    error = answer.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert named in error["error"]["message"]
    assert not fake.received


def test_not_json_unknown_deployment_and_too_large(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        answer = http.post("/v1/messages", content=b"{nope")
        assert (answer.status_code, answer.json()["error"]["type"]) == (400, "invalid_request_error")
        answer = http.post("/v1/messages", json={"model": "nope", "max_tokens": 5, "messages": HI})
        assert (answer.status_code, answer.json()["error"]["type"]) == (404, "not_found_error")
        assert "'nope'" in answer.json()["error"]["message"]
        answer = http.post("/v1/messages/count_tokens", json={"model": "support-bot", "messages": HI,
                                                              "system": "x" * 70_000})
        assert (answer.status_code, answer.json()["error"]["type"]) == (413, "request_too_large")


def test_client_tokens_as_x_api_key_or_bearer(make_gateway: Any, claude: FakeAnthropic) -> None:
    gateway: Gateway = make_gateway(mixed(claude, client_tokens={"app": "client-secret-1"}))
    body = {"model": "support-bot", "max_tokens": 20, "messages": HI, "metadata": {"user_id": STABLE_USER}}
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        assert http.post("/v1/messages", json=body, headers={"x-api-key": "client-secret-1"}).status_code == 200
        assert http.post("/v1/messages", json=body,
                         headers={"authorization": "Bearer client-secret-1"}).status_code == 200
        for headers in ({"x-api-key": "wrong"}, {}):
            for path in ("/v1/messages", "/v1/messages/count_tokens"):
                answer = http.post(path, json=body, headers=headers)
                assert answer.status_code == 401
                assert answer.json() == {"type": "error", "error": {"type": "authentication_error",
                                                                    "message": "Missing or invalid API key"}}
        # The OpenAI routes keep taking only the bearer form.
        assert http.post("/v1/chat/completions", json={"model": "support-bot", "messages": HI},
                         headers={"x-api-key": "client-secret-1"}).status_code == 401


def test_the_gateway_at_its_concurrency_limit_is_overloaded_error(make_gateway: Any, claude: FakeAnthropic) -> None:
    gateway: Gateway = make_gateway(mixed(claude, server={"max_concurrency": 1}))
    claude.behaviour.chunk_delay = 0.2
    payload = {"model": "support-bot", "max_tokens": 20, "messages": HI, "metadata": {"user_id": CANARY_USER},
               "stream": True}
    with httpx.Client(base_url=gateway.url, timeout=30) as http, http.stream("POST", "/v1/messages",
                                                                             json=payload) as held:
        chunks = held.iter_bytes()  # kept: a dropped iterator closes the response, ending the call
        next(chunks)  # the one call the gateway may serve is in flight
        answer = http.post("/v1/messages", json={**payload, "stream": False})
        counted = http.post("/v1/messages/count_tokens", json={"model": "support-bot", "messages": HI})
    for refused in (answer, counted):
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["type"] == "overloaded_error"


# -- count_tokens -------------------------------------------------------------------------------------


def metric(gateway: Gateway, name: str) -> str:
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        return "\n".join(line for line in http.get("/metrics").text.splitlines() if line.startswith(name))


def test_count_tokens_native_counts_the_canarys_prompt_too(gateway: Gateway, claude: FakeAnthropic) -> None:
    answer = post(gateway, CANARY_USER, "/v1/messages/count_tokens", system="one two three")
    assert answer.status_code == 200 and answer.headers["x-canary-version"] == "v2"
    [received] = claude.received
    assert received.path == "/v1/messages/count_tokens" and not claude.refused
    # The version's prompt is counted; its params (max_tokens) are not fields of a count.
    assert received.body == {"model": "claude-sonnet-4-5", "messages": HI, "system": "You are v2.\n\none two three"}
    assert answer.json() == {"input_tokens": count_tokens(received.body)}
    assert metric(gateway, "canary_token_counts_total") == (
        'canary_token_counts_total{deployment="support-bot",source="upstream",status="ok",version="v2"} 1.0')


def test_count_tokens_estimated_for_a_chat_completions_version(gateway: Gateway, fake: FakeUpstream) -> None:
    short = post(gateway, STABLE_USER, "/v1/messages/count_tokens")
    longer = post(gateway, STABLE_USER, "/v1/messages/count_tokens",
                  messages=[{"role": "user", "content": "Hi " * 200}])
    assert short.status_code == longer.status_code == 200 and short.headers["x-canary-version"] == "v1"
    assert 0 < short.json()["input_tokens"] < longer.json()["input_tokens"]
    assert not fake.received  # an estimate asks no upstream
    assert metric(gateway, "canary_token_counts_total") == (
        'canary_token_counts_total{deployment="support-bot",source="estimate",status="ok",version="v1"} 2.0')
    # A count is no call: the only record is the one call made after it.
    assert post(gateway, STABLE_USER).status_code == 200
    assert [record["api"] for record in gateway.records(1)] == ["messages"]


def test_count_tokens_refusals(gateway: Gateway, claude: FakeAnthropic) -> None:
    answer = post(gateway, CANARY_USER, "/v1/messages/count_tokens", stream=True)
    assert (answer.status_code, answer.json()["error"]["type"]) == (400, "invalid_request_error")
    assert not claude.received
    # What only the provider knows it refuses (a count takes no sampling fields) comes back as it said.
    answer = post(gateway, CANARY_USER, "/v1/messages/count_tokens", temperature=0.5)
    assert (answer.status_code, answer.json()["error"]["type"]) == (400, "invalid_request_error")
    assert "temperature" in answer.json()["error"]["message"] and claude.refused
    assert metric(gateway, "canary_token_counts_total") == (
        'canary_token_counts_total{deployment="support-bot",source="upstream",status="error",version="v2"} 1.0')


# -- evaluators read what the Messages client got ----------------------------------------------------


def test_evaluators_judge_native_and_translated_answers_plain_and_streamed(make_gateway: Any,
                                                                           claude: FakeAnthropic) -> None:
    config = mixed(claude)
    config["deployments"]["support-bot"]["quality"] = {"sample_rate": 1.0, "evaluators": [{"type": "json"}]}
    gateway: Gateway = make_gateway(config)
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    for user in (CANARY_USER, STABLE_USER):
        for stream in (False, True):
            answer = post(gateway, user, output_config={"format": {"type": "json_schema", "schema": schema}},
                          stream=stream)
            assert answer.status_code == 200, answer.text

    def compared() -> dict[str, Any] | None:
        with gateway.admin() as http:
            result: dict[str, Any] = http.get("/admin/deployments/support-bot/compare?hours=1").json()
        done = all(result[side]["quality_by_source"].get("evaluator:json", {}).get("count") == 2
                   for side in ("stable", "canary"))
        return result if done else None

    result = wait_for(compared, timeout=10, what="the evaluations")
    for side in ("stable", "canary"):
        assert result[side]["quality_by_source"]["evaluator:json"] == {"avg": 1.0, "count": 2}


# -- a version on OpenAI's Responses API: Messages → chat → Responses, and back -----------------------


def test_a_version_on_the_responses_api_plain_and_streamed(make_gateway: Any, claude: FakeAnthropic,
                                                           fake: FakeUpstream) -> None:
    config = mixed(claude)
    config["providers"]["fake"] = {"api": "responses", "retries": 0}  # merged into the stable's provider
    gateway: Gateway = make_gateway(config)
    message = post(gateway, STABLE_USER, system="App rules.").json()
    assert message["content"] == [{"type": "text", "text": "answer to [You are v1.]"}]
    assert message["stop_reason"] == "end_turn" and message["usage"]["output_tokens"] > 0
    events = sse(post(gateway, STABLE_USER, stream=True).text)
    assert events[0][0] == "message_start" and events[-1][0] == "message_stop"
    text = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
    assert text == "answer to [You are v1.]" and events[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert [received.path for received in fake.received] == ["/v1/responses", "/v1/responses"]
    assert not fake.refused
    assert [record["api"] for record in gateway.records(2)] == ["messages", "messages"]


# -- the native relay, event by event ---------------------------------------------------------------


def native_events() -> list[bytes]:
    def event(kind: str, data: dict[str, Any]) -> bytes:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()

    return [
        event("message_start", {"message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
                                             "content": [], "stop_reason": None, "stop_sequence": None,
                                             "usage": {"input_tokens": 20, "output_tokens": 1,
                                                       "cache_read_input_tokens": 5}}}),
        event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        event("ping", {}),
        event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
        event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "lo."}}),
        event("content_block_stop", {"index": 0}),
        event("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                "usage": {"output_tokens": 9}}),
        event("message_stop", {}),
    ]


@pytest.mark.parametrize("collect", [False, True])
def test_the_native_relay_passes_every_byte_and_reads_usage(collect: bool) -> None:
    relay = AnthropicProvider("claude", api_key="k").native_stream_relay(wants_usage=False, collect=collect)
    stream = b"".join(native_events())
    out = b"".join(relay.feed(stream[start:start + 13]) for start in range(0, len(stream), 13)) + relay.finish()
    assert out == stream and relay.done and relay.error_kind is None and relay.started
    assert (relay.usage.prompt_tokens, relay.usage.completion_tokens, relay.usage.cache_read_tokens) == (25, 9, 5)
    if collect:
        assert relay.choices is not None and relay.choices[0]["message"]["content"] == "Hello."
        assert relay.choices[0]["finish_reason"] == "stop"


def test_a_native_stream_cut_before_message_stop_ends_in_anthropics_error_event() -> None:
    relay = AnthropicProvider("claude", api_key="k").native_stream_relay(wants_usage=False)
    relay.feed(b"".join(native_events()[:4]))
    tail = relay.finish()
    assert relay.error_kind == "stream_truncated"
    name, data = tail.decode().strip().split("\n")
    assert name == "event: error"
    assert json.loads(data.removeprefix("data: "))["error"] == {
        "type": "api_error", "message": "the upstream stream ended before it was complete"}
