"""End to end: the official openai SDK → a real gateway → a real fake upstream → the database."""

from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PROVIDER_KEY, Gateway, wait_for
from tests.fakes import FakeUpstream, free_port

pytestmark = pytest.mark.sqlite_only("routing, relaying and errors are under test; stored records: test_records.py")

CLIENT_KEY = "client-secret-never-forwarded"
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "app prompt"},
    {"role": "user", "content": "hello"},
]


def sdk(gateway: Gateway) -> openai.OpenAI:
    return gateway.openai(CLIENT_KEY)


def formula_version(user: str, percent: float) -> str:
    bucket = int(hashlib.md5(f"support-bot:{user}".encode()).hexdigest(), 16) % 10000
    return "v2" if bucket < percent * 100 else "v1"


def test_users_land_where_the_formula_says(gateway: Gateway, fake: FakeUpstream) -> None:
    client = sdk(gateway)
    users = [f"user-{i}" for i in range(400)]
    seen: dict[str, str] = {}
    for user in users:
        raw = client.chat.completions.with_raw_response.create(model="support-bot", messages=MESSAGES, user=user)
        seen[user] = raw.headers["x-canary-version"]
        assert raw.headers["x-canary-deployment"] == "support-bot"
        assert raw.parse().choices[0].message.content == f"answer to [You are {seen[user]}.]"

    assert seen == {user: formula_version(user, 5.0) for user in users}
    assert 0 < sum(version == "v2" for version in seen.values()) < 60

    for user, received in zip(users, fake.received, strict=True):
        body = received.body
        assert body["user"] == user
        if seen[user] == "v2":
            assert body["model"] == "model-b"
            assert body["temperature"] == 0.3
        else:
            assert body["model"] == "model-a"
            assert "temperature" not in body
        assert body["messages"] == [
            {"role": "system", "content": f"You are {seen[user]}."},
            {"role": "user", "content": "hello"},
        ]

    again = {user: sdk(gateway).chat.completions.with_raw_response.create(
        model="support-bot", messages=MESSAGES, user=user).headers["x-canary-version"] for user in users[:50]}
    assert again == {user: seen[user] for user in users[:50]}


def test_user_id_from_header_and_anonymous_goes_to_stable(gateway: Gateway) -> None:
    canary_user = next(f"u{i}" for i in range(10_000) if formula_version(f"u{i}", 5.0) == "v2")
    with gateway.client() as http:
        by_header = http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES},
                              headers={"X-User-Id": canary_user})
        anonymous = [http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES})
                     for _ in range(20)]
    assert by_header.headers["x-canary-version"] == "v2"
    assert {answer.headers["x-canary-version"] for answer in anonymous} == {"v1"}


def test_safety_identifier_and_metadata_user_id_route_like_user(
    gateway: Gateway, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    canary_user = next(f"u{i}" for i in range(10_000) if formula_version(f"u{i}", 5.0) == "v2")
    caplog.set_level(logging.DEBUG, logger="gateway.relay")
    client = sdk(gateway)
    by_safety_id = client.chat.completions.with_raw_response.create(
        model="support-bot", messages=MESSAGES, safety_identifier=canary_user, prompt_cache_key="not-a-user")
    by_metadata = client.chat.completions.with_raw_response.create(
        model="support-bot", messages=MESSAGES, metadata={"user_id": canary_user}, store=False)
    cache_key_only = client.chat.completions.with_raw_response.create(
        model="support-bot", messages=MESSAGES, prompt_cache_key=canary_user)
    assert [answer.headers["x-canary-version"] for answer in (by_safety_id, by_metadata, cache_key_only)] == [
        "v2", "v2", "v1"]
    assert fake.received[0].body["safety_identifier"] == canary_user  # forwarded as the app sent it
    sources = [record.__dict__.get("user_id_source") for record in caplog.records if record.msg == "user id from %s"]
    assert sources == ["safety_identifier", "metadata.user_id", None]
    rows = gateway.records(3)
    assert len({row["user_hash"] for row in rows[:2]}) == 1 and rows[2]["user_hash"] is None
    # Stored as the salted HMAC-SHA256 of the id (hex, first 32 digits), never the id itself.
    assert rows[0]["user_hash"] == hmac.new(b"test-salt", canary_user.encode(), hashlib.sha256).hexdigest()[:32]


def test_the_user_id_header_name_is_configurable(make_gateway: Any) -> None:
    gateway = make_gateway({"server": {"user_id_header": "X-End-User"}})
    canary_user = next(f"u{i}" for i in range(10_000) if formula_version(f"u{i}", 5.0) == "v2")
    body = {"model": "support-bot", "messages": MESSAGES}
    with gateway.client() as http:
        configured = http.post("/v1/chat/completions", json=body, headers={"X-End-User": canary_user})
        default_name = http.post("/v1/chat/completions", json=body, headers={"X-User-Id": canary_user})
    assert (configured.headers["x-canary-version"], default_name.headers["x-canary-version"]) == ("v2", "v1")


def test_provider_key_goes_upstream_and_client_key_never_does(gateway: Gateway, fake: FakeUpstream) -> None:
    sdk(gateway).chat.completions.create(model="support-bot", messages=MESSAGES, user="u")
    headers = {key.lower(): value for key, value in fake.received[-1].headers.items()}
    assert headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert CLIENT_KEY not in json.dumps(headers)


def test_unsafe_body_keys_cannot_redirect_the_call(gateway: Gateway, fake: FakeUpstream) -> None:
    with gateway.client() as http:
        answer = http.post("/v1/chat/completions", json={
            "model": "support-bot", "messages": MESSAGES, "api_base": "http://169.254.169.254/",
            "base_url": "http://evil.example/", "extra_headers": {"Authorization": "Bearer stolen"},
        })
    assert answer.status_code == 200
    body = fake.received[-1].body
    assert not {"api_base", "base_url", "extra_headers"} & body.keys()


def test_stream_is_relayed_while_the_upstream_is_still_sending(gateway: Gateway, fake: FakeUpstream) -> None:
    fake.behaviour.chunks = 5
    fake.behaviour.chunk_delay = 0.3
    stream = sdk(gateway).chat.completions.create(model="support-bot", messages=MESSAGES, user="u", stream=True)
    arrivals = []
    texts = []
    for event in stream:
        arrivals.append(time.monotonic())
        texts.append(event.choices[0].delta.content if event.choices else None)
    assert texts == [f"piece{i} " for i in range(5)]
    wait_for(lambda: fake.stream_finished_at, timeout=5, what="the upstream to finish its stream")
    assert arrivals[0] < fake.stream_finished_at[-1] - 1.0


def test_a_client_that_leaves_after_the_done_event_got_the_whole_answer(gateway: Gateway, fake: FakeUpstream) -> None:
    """The upstream keeps its connection open after [DONE]; the client closes as soon as it reads it."""
    fake.behaviour.linger_after_done = 3.0
    with gateway.client() as http, http.stream("POST", "/v1/chat/completions", json={
            "model": "support-bot", "messages": MESSAGES, "user": "u", "stream": True}) as answer:
        lines = []
        for line in answer.iter_lines():
            lines.append(line)
            if line == "data: [DONE]":
                break
    assert lines[-1] == "data: [DONE]"
    [row] = gateway.records(1)
    assert (row["status"], row["http_status"], row["error_kind"], row["completion_tokens"]) == ("ok", 200, None, 7)


def test_stream_hides_the_usage_chunk_unless_asked(gateway: Gateway, fake: FakeUpstream) -> None:
    client = sdk(gateway)
    unasked = list(client.chat.completions.create(model="support-bot", messages=MESSAGES, user="u", stream=True))
    assert all(event.usage is None for event in unasked)
    assert all(event.choices for event in unasked)
    assert fake.received[-1].body["stream_options"] == {"include_usage": True}

    asked = list(client.chat.completions.create(model="support-bot", messages=MESSAGES, user="u", stream=True,
                                                stream_options={"include_usage": True}))
    usage = asked[-1].usage
    assert asked[-1].choices == [] and usage is not None and usage.completion_tokens == 7

    rows = gateway.records(2)
    assert [(row["prompt_tokens"], row["completion_tokens"]) for row in rows] == [(11, 7), (11, 7)]


def test_usage_inside_the_last_content_chunk_is_stripped_when_not_asked(
    gateway: Gateway, fake: FakeUpstream
) -> None:
    fake.behaviour.usage_in_last_chunk = True
    events = list(sdk(gateway).chat.completions.create(model="support-bot", messages=MESSAGES, user="u",
                                                        stream=True))
    assert [event.choices[0].delta.content for event in events] == ["piece0 ", "piece1 ", "piece2 "]
    assert all(event.usage is None for event in events)
    assert gateway.records(1)[0]["completion_tokens"] == 7


def test_crlf_stream_is_relayed_byte_for_byte(gateway: Gateway, fake: FakeUpstream) -> None:
    fake.behaviour.crlf = True
    with gateway.client() as http, http.stream("POST", "/v1/chat/completions", json={
        "model": "support-bot", "messages": MESSAGES, "stream": True,
        "stream_options": {"include_usage": True},
    }) as answer:
        raw = b"".join(answer.iter_raw())
    assert raw.count(b"\r\n\r\n") == 5 and raw.endswith(b"data: [DONE]\r\n\r\n")


def test_cut_stream_ends_with_an_error_event_and_an_error_record(gateway: Gateway, fake: FakeUpstream) -> None:
    fake.behaviour.chunks = 5
    fake.behaviour.cut_after = 2
    received = []
    with pytest.raises(openai.APIError, match="ended before it was complete"):
        for event in sdk(gateway).chat.completions.create(model="support-bot", messages=MESSAGES, user="u",
                                                          stream=True):
            received.append(event)
    assert len(received) == 2
    [row] = gateway.records(1)
    assert row["status"] == "error" and row["error_kind"] == "stream_truncated"


def error_of(answer: httpx.Response) -> dict[str, Any]:
    body = answer.json()
    assert set(body) == {"error"}
    assert {"message", "type", "code"} <= set(body["error"])
    assert "Traceback" not in answer.text
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"model": "support-bot"}', "messages"),
        (b'{"model": "support-bot", "messages": "hello"}', "messages"),
        (b'{"model": "support-bot", "messages": [{"role": "wizard", "content": "x"}]}', "messages[0].role"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "support-bot", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}',
         "temperature"),
        (b'{"model": "support-bot", "messages": [{"role": "user", "content": "x"}], "stream": "true"}', "stream"),
        (b'{"model": "support-bot", "messages": [{"role": "user", "content": "x"}], '
         b'"stream_options": {"include_usage": true}}', "stream_options"),
        (b"[" * 30_000 + b"]" * 30_000, None),
    ],
)
def test_bad_requests_get_400_and_never_reach_the_upstream(
    gateway: Gateway, fake: FakeUpstream, body: bytes, param: str | None
) -> None:
    with gateway.client() as http:
        answer = http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400
    error = error_of(answer)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert fake.hits == 0


def test_unknown_deployment_is_404(gateway: Gateway, fake: FakeUpstream) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        sdk(gateway).chat.completions.create(model="no-such-bot", messages=MESSAGES)
    assert caught.value.code == "model_not_found"
    with gateway.client() as http:
        unknown = http.get("/v1/nothing-here")
        unknown_post = http.post("/v1/chat/completion", json={"model": "support-bot", "messages": MESSAGES})
    assert unknown.status_code == 404 and error_of(unknown)["code"] == "not_found"
    assert "GET /v1/nothing-here" in error_of(unknown)["message"]
    message = error_of(unknown_post)["message"]
    assert "POST /v1/chat/completion'" in message
    assert "POST /v1/chat/completions" in message and "GET /v1/models" in message
    assert fake.hits == 0


def test_a_refused_call_is_counted_once_under_one_reason(gateway: Gateway) -> None:
    with gateway.client() as http:
        assert http.post("/v1/chat/completions", json={"model": "no-such-bot", "messages": MESSAGES}).status_code == 404
        metrics = http.get("/metrics").text
    refused = [sample for family in text_string_to_metric_families(metrics) for sample in family.samples
               if sample.name == "canary_refused_requests_total" and sample.value]
    assert [(sample.labels, sample.value) for sample in refused] == [({"reason": "model_not_found"}, 1.0)]


def test_oversized_bodies_get_413_with_and_without_content_length(gateway: Gateway, fake: FakeUpstream) -> None:
    big = json.dumps({"model": "support-bot", "messages": [{"role": "user", "content": "x" * 100_000}]}).encode()
    with gateway.client() as http:
        declared = http.post("/v1/chat/completions", content=big)

        def chunks() -> Any:
            for start in range(0, len(big), 8192):
                yield big[start : start + 8192]

        chunked = http.post("/v1/chat/completions", content=chunks())
    assert declared.status_code == 413 and error_of(declared)["code"] == "payload_too_large"
    assert chunked.request.headers.get("transfer-encoding") == "chunked"
    assert chunked.status_code == 413 and error_of(chunked)["code"] == "payload_too_large"
    assert fake.hits == 0


def test_refused_connection_is_502_and_recorded(make_gateway: Any) -> None:
    gateway = make_gateway({"providers": {"fake": {"base_url": f"http://127.0.0.1:{free_port()}/v1"}}})
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(gateway).chat.completions.create(model="support-bot", messages=MESSAGES, user="u")
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_connect"
    assert time.monotonic() - started < 3
    [row] = gateway.records(1)
    assert row["status"] == "error" and row["error_kind"] == "connect" and row["http_status"] == 502


def test_upstream_timeout_is_504(make_gateway: Any, fake: FakeUpstream) -> None:
    gateway = make_gateway({"providers": {"fake": {"timeout_s": 0.5}}})
    fake.behaviour.mode = "hang"
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(gateway).chat.completions.create(model="support-bot", messages=MESSAGES, user="u")
    assert caught.value.status_code == 504
    assert 0.4 < time.monotonic() - started < 3
    [row] = gateway.records(1)
    assert row["error_kind"] == "timeout" and row["http_status"] == 504


def test_upstream_500_is_retried_then_502(gateway: Gateway, fake: FakeUpstream) -> None:
    fake.behaviour.status = 500
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(gateway).chat.completions.create(model="support-bot", messages=MESSAGES, user="u")
    assert caught.value.status_code == 502
    assert fake.hits == 3  # one call and two retries
    assert PROVIDER_KEY not in str(caught.value.body)
    [row] = gateway.records(1)
    assert row["status"] == "error" and row["http_status"] == 502


def test_a_transient_500_is_retried_to_success(gateway: Gateway, fake: FakeUpstream) -> None:
    fake.behaviour.status = 503
    fake.behaviour.fail_first = 1
    answer = sdk(gateway).chat.completions.create(model="support-bot", messages=MESSAGES, user="u")
    assert (answer.choices[0].message.content or "").startswith("answer to")
    assert fake.hits == 2


def test_upstream_429_passes_through_with_retry_after(gateway: Gateway, fake: FakeUpstream) -> None:
    fake.behaviour.status = 429
    fake.behaviour.retry_after = "7"
    with gateway.client() as http:
        answer = http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES})
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "7"
    assert error_of(answer)["message"] == "fake failure 429"
    assert fake.hits == 1


def test_upstream_error_echoing_the_key_is_scrubbed(gateway: Gateway, fake: FakeUpstream) -> None:
    fake.behaviour.status = 401
    fake.behaviour.error_body = json.dumps({"error": {"message": f"Incorrect API key provided: {PROVIDER_KEY}"}})
    with gateway.client() as http:
        answer = http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES})
    assert answer.status_code == 502
    assert PROVIDER_KEY not in answer.text and "[redacted]" in answer.text


@pytest.mark.parametrize("mode", ["html", "truncated", "redirect"])
def test_invalid_upstream_answers_are_502(gateway: Gateway, fake: FakeUpstream, mode: str) -> None:
    fake.behaviour.mode = mode
    with gateway.client() as http:
        answer = http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES})
    assert answer.status_code == 502
    assert "<html>" not in answer.text and "169.254" not in answer.text
    assert error_of(answer)["type"] == "upstream_error"
    assert fake.hits == 1


@pytest.mark.parametrize("mode", ["no_usage", "bad_usage"])
def test_missing_or_malformed_usage_still_answers(gateway: Gateway, fake: FakeUpstream, mode: str) -> None:
    fake.behaviour.mode = mode
    answer = sdk(gateway).chat.completions.create(model="support-bot", messages=MESSAGES, user="u")
    assert (answer.choices[0].message.content or "").startswith("answer to")
    [row] = gateway.records(1)
    assert row["status"] == "ok" and row["prompt_tokens"] is None and row["cost_usd"] is None


def test_client_tokens_are_required_when_configured(make_gateway: Any, fake: FakeUpstream) -> None:
    gateway = make_gateway({"client_tokens": {"app": CLIENT_KEY}})
    with gateway.client() as http:
        missing = http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES})
        wrong = http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES},
                          headers={"Authorization": "Bearer ' OR '1'='1"})
    assert missing.status_code == 401 and wrong.status_code == 401
    assert fake.hits == 0
    answer = sdk(gateway).chat.completions.create(model="support-bot", messages=MESSAGES, user="u")
    assert answer.choices
    assert fake.received[-1].headers["Authorization"] == f"Bearer {PROVIDER_KEY}"


def test_client_request_id_is_used(gateway: Gateway) -> None:
    with gateway.client() as http:
        answer = http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES},
                           headers={"X-Request-Id": "my-trace-123"})
    assert answer.headers["x-request-id"] == "my-trace-123"
    assert gateway.records(1)[0]["id"] == "my-trace-123"


def test_browser_apps_get_cors_headers_from_every_proxy_route(make_gateway: Any) -> None:
    gateway = make_gateway({"server": {"cors_origins": ["https://app.example"]}})
    calls = {
        "/v1/chat/completions": {"model": "support-bot", "messages": MESSAGES},
        "/v1/responses": {"model": "support-bot", "input": "hello"},
        "/v1/messages": {"model": "support-bot", "max_tokens": 16, "messages": [{"role": "user", "content": "hello"}]},
    }
    with gateway.client() as http:
        for path, body in calls.items():
            preflight = http.options(path, headers={"Origin": "https://app.example",
                                                    "Access-Control-Request-Method": "POST"})
            assert preflight.status_code == 200
            assert preflight.headers["access-control-allow-origin"] == "https://app.example"
            answer = http.post(path, json=body, headers={"Origin": "https://app.example"})
            assert answer.status_code == 200, answer.text
            assert answer.headers["access-control-allow-origin"] == "https://app.example"
            assert "x-canary-version" in answer.headers["access-control-expose-headers"]
            assert http.get(path).status_code == 405
    assert [row["api"] for row in gateway.records(3)] == ["chat", "responses", "messages"]


def test_models_health_and_readiness(gateway: Gateway) -> None:
    models = sdk(gateway).models.list()
    assert [model.id for model in models.data] == ["support-bot"]
    with gateway.client() as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz").json()
    assert ready["status"] == "ready" and ready["deployments"] == 1


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", {"messages": MESSAGES, "user": "u"}),
    ("/v1/responses", {"input": "hello", "user": "u"}),
    ("/v1/messages", {"max_tokens": 16, "messages": [{"role": "user", "content": "hello"}],
                      "metadata": {"user_id": "u"}}),
])
def test_client_going_away_mid_stream_cancels_the_upstream(gateway: Gateway, fake: FakeUpstream, path: str,
                                                           body: dict[str, Any]) -> None:
    fake.behaviour.chunks = 30
    fake.behaviour.chunk_delay = 0.2
    with gateway.client() as http, http.stream("POST", path, json={
        "model": "support-bot", **body, "stream": True}) as answer:
        first = next(answer.iter_raw())
    assert first.startswith((b"data: ", b"event: "))
    [row] = gateway.records(1, timeout=3)
    assert row["status"] == "client_cancelled" and row["http_status"] == 499
    wait_for(lambda: fake.streams_cut, timeout=5, what="the upstream to see its stream cut")
    assert fake.stream_finished_at == []  # the upstream's stream was cut, not read to its end


def test_a_dripping_stream_is_ended_by_the_total_deadline(make_gateway: Any, fake: FakeUpstream) -> None:
    gateway = make_gateway({"providers": {"fake": {"timeout_s": 1.0, "idle_timeout_s": 0.5}}})
    fake.behaviour.chunks = 50
    fake.behaviour.chunk_delay = 0.3  # always under the idle timeout, never finishing in time
    started = time.monotonic()
    with pytest.raises(openai.APIError, match="did not answer in time"):
        for _ in sdk(gateway).chat.completions.create(model="support-bot", messages=MESSAGES, user="u",
                                                      stream=True):
            pass
    assert time.monotonic() - started < 2.5
    [row] = gateway.records(1)
    assert row["status"] == "error" and row["error_kind"] == "timeout"


def test_calls_beyond_the_concurrency_limit_are_refused_at_once(make_gateway: Any, fake: FakeUpstream) -> None:
    gateway = make_gateway({"server": {"max_concurrency": 2}})
    fake.behaviour.delay = 1.0

    def call() -> int:
        with gateway.client() as http:
            answer = http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES})
            return int(answer.status_code)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow = [pool.submit(call) for _ in range(2)]
        deadline = time.monotonic() + 10
        while len(fake.received) < 2:  # both slow calls have reached the upstream
            assert time.monotonic() < deadline, "the slow calls never reached the upstream"
            time.sleep(0.01)
        with gateway.client() as http:
            refused = http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES})
        # Refused at once: the answer came back while both slow calls were still in flight, not queued behind them.
        in_flight = sum(not future.done() for future in slow)
        assert [future.result() for future in slow] == [200, 200]
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert error_of(refused)["code"] == "gateway_overloaded"
    assert in_flight == 2
    assert len(fake.received) == 2  # the refused call never reached the upstream
    with gateway.client() as http:
        metrics = http.get("/metrics").text
    counted = {sample.labels["reason"]: sample.value for family in text_string_to_metric_families(metrics)
               for sample in family.samples if sample.name == "canary_refused_requests_total" and sample.value}
    assert counted == {"gateway_overloaded": 1.0}


def test_a_client_over_its_rate_limit_gets_429_and_others_do_not(make_gateway: Any, fake: FakeUpstream) -> None:
    gateway = make_gateway({"client_tokens": {"app-a": "token-a", "app-b": "token-b"},
                            "server": {"rate_limit_per_minute": 5}})
    body = {"model": "support-bot", "messages": MESSAGES}
    with gateway.client() as http:
        first = [http.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer token-a"})
                 for _ in range(7)]
        other = http.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer token-b"})
    assert [answer.status_code for answer in first] == [200] * 5 + [429] * 2
    assert error_of(first[-1])["code"] == "rate_limited"
    assert 1 <= int(first[-1].headers["retry-after"]) <= 12
    assert other.status_code == 200
    assert fake.hits == 6
