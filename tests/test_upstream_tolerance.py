"""Upstreams that are not fully compliant: each case is one a real OpenAI-compatible upstream does.

- an upstream that refuses `stream_options` (provider setting `stream_options: false`);
- an upstream that compresses its answers although asked for identity;
- an aggregator that answers HTTP 200 with an error body (OpenRouter);
- errors whose `param`, `code` and rate-limit headers the client needs.

The misbehaving upstream is a real HTTP server on 127.0.0.1 that answers in
OpenAI's wire shapes (openai-python `types/chat/chat_completion.py`,
`chat_completion_chunk.py`) and misbehaves only in the way each test asks.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import brotli
import openai
import pytest
import zstandard
from aiohttp import web
from openai.types.chat import ChatCompletionMessageParam

from gateway.api.errors import http_status
from gateway.errors import UpstreamStatusError
from gateway.providers.anthropic import AnthropicProvider, openai_duration
from tests.conftest import Gateway
from tests.fakes import ServerThread

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


def _completion(model: str) -> dict[str, Any]:
    return {"id": "chatcmpl-odd", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "plain answer"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}


def _events(model: str, *, usage: bool) -> list[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {"id": "chatcmpl-odd", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    events = [chunk({"role": "assistant", "content": "streamed "}, None), chunk({"content": "answer"}, None),
              chunk({}, "stop")]
    if usage:
        events.append({"id": "chatcmpl-odd", "object": "chat.completion.chunk", "created": 1, "model": model,
                       "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})
    return [b"data: " + json.dumps(event).encode() + b"\n\n" for event in events] + [b"data: [DONE]\n\n"]


# Incremental compressors, one per Content-Encoding: each event is flushed as it is written.
def _compressor(encoding: str) -> Callable[[bytes, bool], bytes]:
    if encoding == "gzip":
        gz = zlib.compressobj(wbits=31)
        return lambda data, last: gz.compress(data) + gz.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
    if encoding == "deflate":
        zl = zlib.compressobj()
        return lambda data, last: zl.compress(data) + zl.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
    if encoding == "br":
        br = brotli.Compressor()
        return lambda data, last: br.process(data) + (br.finish() if last else br.flush())
    if encoding != "zstd":
        return lambda data, last: data  # an encoding nobody can decode: sent as it is, labelled
    zs = zstandard.ZstdCompressor().compressobj()
    return lambda data, last: zs.compress(data) + zs.flush(
        zstandard.COMPRESSOBJ_FLUSH_FINISH if last else zstandard.COMPRESSOBJ_FLUSH_BLOCK)


@dataclass
class OddUpstream:
    """An OpenAI-compatible upstream with one quirk at a time."""

    # Answer 400 to any call that carries `stream_options`, as some servers do.
    refuses_stream_options: bool = False
    # Compress answers with this Content-Encoding whatever the request's Accept-Encoding.
    encoding: str | None = None
    # Answer HTTP 200 with this body (an error) instead of a completion.
    error_body: dict[str, Any] | None = None
    # Streams: send this error event after the first chunk, still under HTTP 200.
    error_event: dict[str, Any] | None = None
    # Answer this status with `error_body` (an error status, unlike the 200 above).
    status: int = 200
    # Headers sent with every answer.
    headers: dict[str, str] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    accept_encodings: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._server = ServerThread(app)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}/v1"

    def start(self) -> OddUpstream:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def reset(self) -> None:
        self.refuses_stream_options, self.encoding, self.error_body, self.error_event = False, None, None, None
        self.status, self.headers = 200, {}
        self.received.clear()
        self.accept_encodings.clear()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append(body)
        self.accept_encodings.append(request.headers.get("Accept-Encoding"))
        if self.refuses_stream_options and "stream_options" in body:
            return web.json_response({"error": {"message": "Unrecognized request argument supplied: stream_options",
                                                "type": "invalid_request_error", "param": None, "code": None}},
                                     status=400)
        if self.error_body is not None:
            return web.json_response(self.error_body, status=self.status, headers=self.headers)
        headers = {**self.headers, **({"Content-Encoding": self.encoding} if self.encoding else {})}
        if not body.get("stream"):
            data = json.dumps(_completion(body["model"])).encode()
            if self.encoding:
                data = _compressor(self.encoding)(data, True)
            return web.Response(body=data, content_type="application/json", headers=headers)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **headers})
        await response.prepare(request)
        compress = _compressor(self.encoding) if self.encoding else None
        events = _events(body["model"], usage=bool((body.get("stream_options") or {}).get("include_usage")))
        if self.error_event is not None:
            events = [events[0], b"data: " + json.dumps(self.error_event).encode() + b"\n\n"]
        for index, event in enumerate(events):
            last = index == len(events) - 1
            await response.write(compress(event, last) if compress else event)
        await response.write_eof()
        return response


@pytest.fixture(scope="module")
def odd_server() -> Iterator[OddUpstream]:
    server = OddUpstream().start()
    yield server
    server.stop()


@pytest.fixture
def odd(odd_server: OddUpstream) -> OddUpstream:
    odd_server.reset()
    return odd_server


def _gateway(make_gateway: Any, odd: OddUpstream, **provider: Any) -> Gateway:
    gateway: Gateway = make_gateway({
        "providers": {"odd": {"kind": "openai", "base_url": odd.url, "retries": 0, **provider}},
        "deployments": {"support-bot": {"versions": {"v1": {"provider": "odd"}, "v2": {"provider": "odd"}}}},
    })
    return gateway


# -- stream_options -------------------------------------------------------------------------------


def test_an_upstream_refusing_stream_options_streams_when_the_provider_says_so(
    make_gateway: Any, odd: OddUpstream
) -> None:
    odd.refuses_stream_options = True
    gateway = _gateway(make_gateway, odd, stream_options=False)
    client = gateway.openai()
    events = list(client.chat.completions.create(model="support-bot", messages=MESSAGES, stream=True, user="u1"))
    assert "".join(event.choices[0].delta.content or "" for event in events if event.choices) == "streamed answer"
    # The client's own stream_options is not sent either: this upstream would refuse it.
    events = list(client.chat.completions.create(model="support-bot", messages=MESSAGES, stream=True, user="u1",
                                                 stream_options={"include_usage": True}))
    assert events[-1].choices[0].finish_reason == "stop"
    assert all("stream_options" not in body for body in odd.received)
    rows = gateway.records(2)
    assert [(row["status"], row["prompt_tokens"], row["completion_tokens"]) for row in rows] == [("ok", None, None)] * 2


def test_by_default_streams_ask_for_usage(make_gateway: Any, odd: OddUpstream) -> None:
    gateway = _gateway(make_gateway, odd)
    events = list(gateway.openai().chat.completions.create(model="support-bot", messages=MESSAGES, stream=True))
    assert all(event.usage is None for event in events)  # hidden: the client did not ask
    assert odd.received[0]["stream_options"] == {"include_usage": True}
    [row] = gateway.records(1)
    assert (row["status"], row["prompt_tokens"], row["completion_tokens"]) == ("ok", 5, 2)


# -- Content-Encoding -----------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_compressed_answers_are_decoded_plain_and_streamed(make_gateway: Any, odd: OddUpstream, encoding: str) -> None:
    odd.encoding = encoding
    gateway = _gateway(make_gateway, odd)
    client = gateway.openai()
    plain = client.chat.completions.create(model="support-bot", messages=MESSAGES)
    assert plain.choices[0].message.content == "plain answer"
    with gateway.client() as http:
        streamed = http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES,
                                                           "stream": True})
    assert streamed.status_code == 200
    assert "content-encoding" not in streamed.headers
    assert streamed.text.startswith("data: {") and streamed.text.endswith("data: [DONE]\n\n")
    deltas = [json.loads(line[6:])["choices"][0]["delta"].get("content", "")
              for line in streamed.text.split("\n\n") if line.startswith("data: {")]
    assert "".join(deltas) == "streamed answer"
    assert odd.accept_encodings == ["identity", "identity"]
    rows = gateway.records(2)
    assert [(row["status"], row["error_kind"], row["completion_tokens"]) for row in rows] == [("ok", None, 2)] * 2


def test_an_encoding_the_gateway_cannot_decode_is_a_clean_502(make_gateway: Any, odd: OddUpstream) -> None:
    odd.encoding = "x-unheard-of"
    gateway = _gateway(make_gateway, odd)
    with gateway.client() as http:
        for stream in (False, True):
            answer = http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES,
                                                             "stream": stream})
            assert answer.status_code == 502
            assert "x-unheard-of" in answer.json()["error"]["message"]
            assert answer.json()["error"]["code"] == "upstream_bad_response"


# -- HTTP 200 answers whose body is an error ------------------------------------------------------


def test_an_error_inside_a_200_answer_keeps_its_status_and_message(make_gateway: Any, odd: OddUpstream) -> None:
    odd.error_body = {"error": {"code": 429, "message": "Rate limit exceeded: free-models-per-day",
                                "metadata": {"headers": {"X-RateLimit-Limit": "50"}}}, "user_id": "user_x"}
    gateway = _gateway(make_gateway, odd)
    with pytest.raises(openai.RateLimitError) as caught:
        gateway.openai().chat.completions.create(model="support-bot", messages=MESSAGES)
    assert caught.value.status_code == 429
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["message"] == "Rate limit exceeded: free-models-per-day"
    [row] = gateway.records(1)
    assert (row["status"], row["http_status"]) == ("error", 429)


def test_an_error_inside_a_200_answer_without_a_status_is_a_502_with_its_message(
    make_gateway: Any, odd: OddUpstream
) -> None:
    odd.error_body = {"error": {"message": "No endpoints found that support tool use"}}
    gateway = _gateway(make_gateway, odd)
    with gateway.client() as http:
        answer = http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES})
    assert answer.status_code == 502
    assert "No endpoints found that support tool use" in answer.json()["error"]["message"]


def test_an_error_event_inside_a_200_stream_reaches_the_sdk(make_gateway: Any, odd: OddUpstream) -> None:
    odd.error_event = {"id": "gen-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                       "error": {"code": 502, "message": "Provider returned error"},
                       "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]}
    gateway = _gateway(make_gateway, odd)
    seen = []
    with pytest.raises(openai.APIError, match="Provider returned error"):
        for event in gateway.openai().chat.completions.create(model="support-bot", messages=MESSAGES, stream=True):
            seen.append(event)
    assert len(seen) == 1
    [row] = gateway.records(1)
    assert (row["status"], row["error_kind"]) == ("error", "stream_error")


@pytest.mark.parametrize(("error_type", "status"), [("rate_limit_error", 429), ("invalid_request_error", 400),
                                                    ("overloaded_error", 503), ("api_error", 502)])
def test_an_anthropic_error_inside_a_200_answer_keeps_its_status(error_type: str, status: int) -> None:
    body = json.dumps({"type": "error", "error": {"type": error_type, "message": "said the upstream"},
                       "request_id": "req_1"}).encode()
    with pytest.raises(UpstreamStatusError) as caught:
        AnthropicProvider("claude", api_key="").parse_answer(body)
    assert http_status(caught.value) == status
    assert "said the upstream" in caught.value.message


# -- errors keep param, code and the rate-limit headers --------------------------------------------

RATE_LIMITS = {"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "0",
               "x-ratelimit-reset-requests": "120ms", "x-ratelimit-limit-tokens": "30000",
               "x-ratelimit-remaining-tokens": "29000", "x-ratelimit-reset-tokens": "2s"}


@pytest.mark.parametrize("stream", [False, True])
def test_a_refused_call_keeps_param_code_and_rate_limit_headers(
    make_gateway: Any, odd: OddUpstream, stream: bool
) -> None:
    odd.status = 429
    odd.headers = {"Retry-After": "1", "retry-after-ms": "1200", **RATE_LIMITS}
    odd.error_body = {"error": {"message": "Rate limit reached for requests", "type": "requests",
                                "param": None, "code": "rate_limit_exceeded"}}
    gateway = _gateway(make_gateway, odd)
    with gateway.client() as http:
        answer = http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES,
                                                         "stream": stream})
    assert answer.status_code == 429
    assert answer.json()["error"] == {"message": "Rate limit reached for requests", "type": "requests",
                                      "param": None, "code": "rate_limit_exceeded"}
    assert answer.headers["retry-after"] == "1" and answer.headers["retry-after-ms"] == "1200"
    assert {name: answer.headers[name] for name in RATE_LIMITS} == RATE_LIMITS


def test_a_bad_request_keeps_the_upstreams_param_and_null_code(make_gateway: Any, odd: OddUpstream) -> None:
    odd.status = 400
    odd.error_body = {"error": {"message": "Invalid value for 'top_logprobs'.", "type": "invalid_request_error",
                                "param": "top_logprobs", "code": None}}
    gateway = _gateway(make_gateway, odd)
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.openai().chat.completions.create(model="support-bot", messages=MESSAGES)
    assert caught.value.param == "top_logprobs"
    assert caught.value.code is None
    assert caught.value.body == {"message": "Invalid value for 'top_logprobs'.", "type": "invalid_request_error",
                                 "param": "top_logprobs", "code": None}


@pytest.mark.parametrize("stream", [False, True])
def test_answers_carry_the_upstreams_rate_limit_headers(make_gateway: Any, odd: OddUpstream, stream: bool) -> None:
    odd.headers = {**RATE_LIMITS, "openai-organization": "org-secret", "set-cookie": "a=b"}
    gateway = _gateway(make_gateway, odd)
    with gateway.client() as http:
        answer = http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES,
                                                         "stream": stream})
    assert answer.status_code == 200
    assert {name: answer.headers[name] for name in RATE_LIMITS} == RATE_LIMITS
    assert "openai-organization" not in answer.headers and "set-cookie" not in answer.headers


def test_anthropic_rate_limit_headers_are_mapped_as_openai_names_them() -> None:
    reset = (datetime.now(UTC) + timedelta(seconds=90)).isoformat().replace("+00:00", "Z")
    headers = {"anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "0",
               "anthropic-ratelimit-requests-reset": reset, "anthropic-ratelimit-tokens-limit": "40000",
               "anthropic-ratelimit-tokens-remaining": "100", "anthropic-ratelimit-tokens-reset": reset,
               "anthropic-ratelimit-input-tokens-limit": "30000", "retry-after": "12", "request-id": "req_1"}
    error = AnthropicProvider("claude", api_key="").error_from(
        429, json.dumps({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}).encode(),
        headers)
    assert error.retry_after == "12"
    relayed = dict(error.headers)
    assert relayed.pop("x-ratelimit-reset-requests") in ("1m30s", "1m29s")
    assert relayed.pop("x-ratelimit-reset-tokens") in ("1m30s", "1m29s")
    assert relayed == {
        "x-ratelimit-limit-requests": "50", "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-limit-tokens": "40000", "x-ratelimit-remaining-tokens": "100",
        **{name: value for name, value in headers.items() if name.startswith("anthropic-ratelimit-")},
    }


@pytest.mark.parametrize(("seconds", "written"), [(0.02, "20ms"), (0.9994, "999ms"), (12, "12s"), (12.2, "13s"),
                                                   (360, "6m0s"), (3723, "1h2m3s"), (-5, "0ms")])
def test_durations_are_written_as_openai_writes_them(seconds: float, written: str) -> None:
    assert openai_duration(seconds) == written
