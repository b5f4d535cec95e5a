"""Pass-through: the configured rest of an OpenAI base URL, relayed byte for byte with the gateway's key.

The upstream here is a small real HTTP server that answers the shapes these
routes have (embeddings with usage last, a model, an audio stream, a
multipart upload echoed back, a completions stream) and records exactly what
it received, bytes included.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.conftest import PROVIDER_KEY, Gateway
from tests.fakes import ServerThread

CLIENT_KEY = "client-secret-never-forwarded"
EMBEDDING = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5]}],
             "model": "text-embedding-3-small", "usage": {"prompt_tokens": 8, "total_tokens": 8}}
AUDIO_CHUNKS = [b"ID3\x00\x01", b"\xff\xfb\x90\x00" * 64, b"\x00tail"]


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class OpenAIRest:
    """The fake upstream for the pass-through routes."""

    seen: list[Seen] = field(default_factory=list)
    status: int = 200
    chunk_delay: float = 0.0

    def __post_init__(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/v1/{tail:.*}", self._any)
        self._server = ServerThread(app)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}/v1"

    def start(self) -> OpenAIRest:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    async def _any(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.method, request.path, request.query_string, dict(request.headers), body))
        if self.status >= 400:
            error = {
                "error": {
                    "message": f"Incorrect API key provided: {PROVIDER_KEY}",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            }
            return web.json_response(error, status=self.status)
        path = request.path
        if path == "/v1/embeddings":
            # Compact, as OpenAI sends it: usage is the last key.
            return web.Response(body=json.dumps(EMBEDDING, separators=(",", ":")).encode(),
                                content_type="application/json")
        if path.startswith("/v1/models/"):
            model = path.removeprefix("/v1/models/")
            if model == "missing":
                return web.json_response({"error": {"message": "The model 'missing' does not exist",
                                                    "type": "invalid_request_error", "param": None,
                                                    "code": "model_not_found"}}, status=404)
            return web.json_response({"id": model, "object": "model", "created": 1, "owned_by": "openai"},
                                     headers={"x-ratelimit-remaining-requests": "99", "set-cookie": "s=1"})
        if path == "/v1/audio/speech":
            response = web.StreamResponse(headers={"Content-Type": "audio/mpeg"})
            await response.prepare(request)
            for piece in AUDIO_CHUNKS:
                await response.write(piece)
                await asyncio.sleep(self.chunk_delay)
            await response.write_eof()
            return response
        if path == "/v1/audio/transcriptions":
            return web.json_response({"text": f"{len(body)} bytes"})
        if path == "/v1/completions":
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for text in ("Once", " upon"):
                event = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "gpt-3.5-turbo-instruct",
                         "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": None}]}
                await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        return web.json_response({"ok": True})


@pytest.fixture(scope="module")
def rest_server() -> Iterator[OpenAIRest]:
    fake = OpenAIRest().start()
    yield fake
    fake.stop()


@pytest.fixture
def rest(rest_server: OpenAIRest) -> OpenAIRest:
    rest_server.seen.clear()
    rest_server.status, rest_server.chunk_delay = 200, 0.0
    return rest_server


def passthrough_config(rest: OpenAIRest, **extra: Any) -> dict[str, Any]:
    return {
        "providers": {"openai": {"kind": "openai", "base_url": rest.url, "api_key": PROVIDER_KEY, "retries": 0}},
        "pricing": {"text-embedding-3-small": {"input": 0.02, "output": 0.0}},
        "passthrough": {"provider": "openai"},
        **extra,
    }


@pytest.fixture
def gateway(make_gateway: Any, rest: OpenAIRest) -> Gateway:
    gw: Gateway = make_gateway(passthrough_config(rest))
    return gw


def test_embeddings_are_relayed_byte_for_byte_with_the_gateways_key(gateway: Gateway, rest: OpenAIRest) -> None:
    body = b'{"model": "text-embedding-3-small",  "input": ["caf\\u00e9"], "encoding_format": "float"}'
    with gateway.client() as http:
        answer = http.post("/v1/embeddings?trace=1", content=body, headers={
            "Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json", "Cookie": "c=1"})
    assert answer.status_code == 200
    assert answer.content == json.dumps(EMBEDDING, separators=(",", ":")).encode()
    assert answer.headers["content-type"] == "application/json"  # the upstream's, as it sent it
    [seen] = rest.seen
    assert (seen.method, seen.path, seen.query, seen.body) == ("POST", "/v1/embeddings", "trace=1", body)
    assert seen.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"
    assert CLIENT_KEY not in json.dumps(seen.headers) and "Cookie" not in seen.headers
    [row] = gateway.records(1)
    assert (row["api"], row["deployment"], row["version"], row["provider"]) == (
        "passthrough", "", "/v1/embeddings", "openai")
    assert (row["upstream_model"], row["status"], row["http_status"]) == ("text-embedding-3-small", "ok", 200)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (8, 0)
    assert row["cost_usd"] == pytest.approx(8 * 0.02 / 1e6)
    assert row["id"] == answer.headers["x-request-id"]
    with gateway.client() as http:
        metrics = http.get("/metrics").text
    assert ('canary_requests_total{api="passthrough",deployment="",mode="live",status="ok",'
            'version="/v1/embeddings"} 1.0') in metrics


def test_the_openai_sdk_embeds_and_retrieves_models_through_the_gateway(gateway: Gateway, rest: OpenAIRest) -> None:
    client = gateway.openai(CLIENT_KEY)
    embedded = client.embeddings.create(model="text-embedding-3-small", input="hello")
    assert embedded.data[0].embedding == [0.25, -0.5] and embedded.usage.prompt_tokens == 8
    assert client.models.retrieve("support-bot").owned_by == "canary-gateway"  # a deployment: the gateway answers
    assert client.models.retrieve("gpt-4o").owned_by == "openai"  # anything else passes through
    assert [seen.path for seen in rest.seen] == ["/v1/embeddings", "/v1/models/gpt-4o"]
    with gateway.client() as http:
        missing = http.get("/v1/models/missing")
        ratelimited = http.get("/v1/models/gpt-4o")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"
    assert "does not exist" in missing.json()["error"]["message"]
    assert ratelimited.headers["x-ratelimit-remaining-requests"] == "99" and "set-cookie" not in ratelimited.headers


def test_audio_streams_through_as_it_arrives(gateway: Gateway, rest: OpenAIRest) -> None:
    rest.chunk_delay = 0.3
    arrivals = []
    with gateway.client() as http, http.stream("POST", "/v1/audio/speech", json={
            "model": "tts-1", "input": "Hello", "voice": "alloy"}) as answer:
        assert answer.headers["content-type"] == "audio/mpeg"
        received = b""
        for piece in answer.iter_raw():
            arrivals.append(time.monotonic())
            received += piece
    assert received == b"".join(AUDIO_CHUNKS)
    assert arrivals[-1] - arrivals[0] > 0.4  # the first bytes came before the upstream finished


def test_multipart_uploads_keep_their_bytes_and_boundary(gateway: Gateway, rest: OpenAIRest) -> None:
    files = {"file": ("note.wav", b"RIFF\x00\x01\x02wave-bytes", "audio/wav")}
    with gateway.client() as http:
        answer = http.post("/v1/audio/transcriptions", files=files, data={"model": "whisper-1"})
    [seen] = rest.seen
    assert answer.json() == {"text": f"{len(seen.body)} bytes"}
    assert seen.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert b"RIFF\x00\x01\x02wave-bytes" in seen.body
    [row] = gateway.records(1)
    assert (row["version"], row["upstream_model"], row["stream"]) == ("/v1/audio/*", "", False)


def test_a_streamed_completion_is_relayed_event_by_event(gateway: Gateway, rest: OpenAIRest) -> None:
    client = gateway.openai(CLIENT_KEY)
    texts = [event.choices[0].text for event in client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt="Once", stream=True)]
    assert texts == ["Once", " upon"]
    [row] = gateway.records(1)
    assert (row["stream"], row["status"]) == (True, "ok") and row["ttft_ms"] is not None


def test_the_proxys_limits_and_client_auth_apply(make_gateway: Any, rest: OpenAIRest) -> None:
    gateway = make_gateway(passthrough_config(rest, client_tokens={"app": CLIENT_KEY}))
    with gateway.client() as http:
        unauthenticated = http.post("/v1/embeddings", json={"model": "m", "input": "x"})
        too_large = http.post("/v1/embeddings", content=b"x" * 70_000,
                              headers={"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"})
        chunked = http.post("/v1/embeddings", content=iter([b"x" * 40_000] * 2),
                            headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    assert unauthenticated.status_code == 401 and too_large.status_code == 413 and chunked.status_code == 413
    assert rest.seen == []


def test_an_upstream_refusing_the_gateways_key_is_a_scrubbed_502(gateway: Gateway, rest: OpenAIRest) -> None:
    rest.status = 401
    with gateway.client() as http:
        answer = http.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"})
    assert answer.status_code == 502 and answer.json()["error"]["code"] == "upstream_error"
    assert PROVIDER_KEY not in answer.text
    [row] = gateway.records(1)
    assert (row["status"], row["http_status"], row["error_kind"]) == ("error", 502, "status")


def test_an_upstream_that_cannot_be_reached_is_502(make_gateway: Any, rest: OpenAIRest) -> None:
    config = passthrough_config(rest)
    config["providers"]["openai"]["base_url"] = "http://127.0.0.1:9/v1"
    gateway = make_gateway(config)
    with gateway.client() as http:
        answer = http.post("/v1/moderations", json={"input": "x"})
    assert answer.status_code == 502 and answer.json()["error"]["code"] == "upstream_connect"


def test_routes_not_configured_are_404_naming_the_path_and_the_served_routes(
    make_gateway: Any, rest: OpenAIRest
) -> None:
    gateway = make_gateway(passthrough_config(rest, passthrough={"provider": "openai", "routes": ["/v1/embeddings"]}))
    with gateway.client() as http:
        images = http.post("/v1/images/generations", json={"prompt": "a cat"})
        model = http.get("/v1/models/gpt-4o")
    assert images.status_code == 404
    message = images.json()["error"]["message"]
    assert "POST /v1/images/generations" in message and "/v1/embeddings (pass-through)" in message
    assert model.status_code == 404 and model.json()["error"]["code"] == "model_not_found"
    assert rest.seen == []


def test_pass_through_is_off_by_default(make_gateway: Any, rest: OpenAIRest) -> None:
    config = passthrough_config(rest)
    del config["passthrough"]
    gateway = make_gateway(config)
    with gateway.client() as http:
        answer = http.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"})
    assert answer.status_code == 404 and "POST /v1/embeddings" in answer.json()["error"]["message"]
    assert rest.seen == []


def test_hostile_paths_are_404_and_never_reach_another_upstream_endpoint(gateway: Gateway, rest: OpenAIRest) -> None:
    # (httpx itself resolves literal `..` segments before sending; the encoded ones reach the gateway.)
    with httpx.Client(base_url=gateway.url) as http:
        for path in ("/v1/%ED%A0%80", "/v1/images/%00x", "/v1/" + "a" * 5000,
                     "/v1/images/%2e%2e/chat/completions", "/v1/images/..%2fchat%2fcompletions",
                     "/v1/models/%2e/x", "/v1/images/a%20b"):
            assert http.post(path, json={}).status_code == 404, path
            assert http.get(path).status_code == 404, path
    assert rest.seen == []
