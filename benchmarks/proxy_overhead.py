"""What the gateway costs per call, against a bare relay measured in the same run.

Four kinds of process, so that none measures itself:

- a fake upstream (a raw asyncio HTTP/1.1 server on 127.0.0.1) that answers
  at once in each API's own wire format: OpenAI chat completions
  (`/v1/chat/completions`), OpenAI Responses (`/v1/responses`) and Anthropic
  Messages (`/v1/messages`), as JSON with usage or as that API's event stream
  (usage in it), checking the key and headers each API requires;
- the floor: a bare relay (this script's `_floor` role), a minimal FastAPI app
  served by uvicorn with the gateway's settings (one worker, no access log, no
  server header) and an aiohttp client. Per call it parses the body, picks the
  upstream by `model`, puts the upstream's model in, forwards it, and reads the
  usage (the answer's JSON, or the stream event that carries it) while the
  answer is relayed. Nothing a real relay could skip, nothing more;
- the gateway: `canary-gateway serve --config <temp config>` (SQLite in a temp
  directory, logging at info with the access log on, written to a file): one
  deployment per API surface, each version on a provider whose wire is that
  surface's (chat on an `openai` provider, Responses on an `openai` provider
  with `api: responses`, Messages on an `anthropic` provider), a stable and a
  25 % canary with a different prompt mode, few-shot examples and params;
- load generators (aiohttp clients with keep-alive, a closed loop of N
  concurrent callers), one process per run.

Every scenario (surface × plain/streamed × concurrency) runs three times back
to back, each for a warm-up and a fixed measurement window: DIRECT against the
fake upstream (the latency floor of the wire itself), through the FLOOR, and
through the GATEWAY. Both servers stay up the whole run, so the machine's load
at that moment weighs on both alike. Reported per scenario: the server's CPU
time per call (utime+stime of /proc/<pid>/stat over the window, divided by the
calls completed in it), calls per second, the latency p50 added over the
direct run, and for streams the time to first body byte, each for the floor
and the gateway and as the gateway's ratio to the floor's. The ratios are the
figures to compare across machines: absolute numbers move with the CPU and the
load; the floor moves with them.

Also checked: the gateway's start to ready (process start to /readyz 200), its
RSS after each run (after warm-up) and its peak; and that nothing was skipped:
after the gateway stops, its database must hold one request record per call
the load generators completed against it, per surface and stream flag; the
metrics, the access log and the upstream's call count must agree.

Run from the project root with the project's virtualenv:

    python benchmarks/proxy_overhead.py                           # every surface, plain and streamed, c=1,16
    python benchmarks/proxy_overhead.py --apis chat --modes json --concurrency 16 --duration 3
    python benchmarks/proxy_overhead.py --profile /tmp/prof       # + py-spy on the gateway, one more run
    python benchmarks/proxy_overhead.py --json results.json       # also save the raw figures

The "other %" column is CPU used by processes outside the benchmark during the
gateway's window (other work on a shared machine), in % of all CPUs: when it
is high, throughput and latency are understated for both servers; the CPU per
call is the least sensitive figure. `--pin` puts the servers on the last CPU
and the harness on the others. `--gateway-command` runs another build of the
gateway (`serve --config FILE` is appended). uvloop is used for the harness
processes when it is importable (`--no-uvloop` to avoid it). Nothing is
asserted: the targets are printed next to the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common import free_port, gateway_command, gateway_environment, http_get, nearest_rank

CANARY_PERCENT = 25
MB = 1024 * 1024
UPSTREAM_KEY = "sk-benchmark-not-a-real-key"
ANTHROPIC_VERSION = "2023-06-01"

# The targets (reported against, never asserted).
TARGET_CPU_RATIO = 1.5  # chat, plain, c=16: gateway CPU per call / the floor's
TARGET_RPS_SHARE = 0.60  # chat, plain, c=16: gateway calls/s / the floor's
TARGET_SURFACE_SPREAD = 1.10  # every other surface's CPU per call / chat's, same mode and concurrency
TARGET_TTFB_ADDED_MS = 1.0  # streams at c=1: gateway TTFB p50 - the floor's
TARGET_RSS_MB = 90.0  # after warm-up
TARGET_READY_S = 1.5


@dataclass(frozen=True)
class Surface:
    """One inbound API: where clients call it, its deployment, and where its wire lives upstream."""

    name: str
    path: str  # on the gateway, the floor and the fake upstream alike
    deployment: str
    stable_model: str
    canary_model: str
    stream_end: bytes  # what the last bytes of a complete stream contain


SURFACES = {
    "chat": Surface("chat", "/v1/chat/completions", "support-bot", "gpt-4o-mini", "gpt-4o", b"data: [DONE]\n\n"),
    "responses": Surface("responses", "/v1/responses", "support-bot-responses", "gpt-4.1-mini", "gpt-4.1",
                         b"response.completed"),
    "messages": Surface("messages", "/v1/messages", "support-bot-messages", "claude-haiku-4-5",
                        "claude-sonnet-4-5", b"message_stop"),
}


def _use_uvloop(enabled: bool) -> None:
    if not enabled:
        return
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


# --------------------------------------------------------------------------
# The fake upstream: a raw asyncio protocol, so that it is never the bottleneck.
# Answers are built once per (surface, model, stream) and reused.
# --------------------------------------------------------------------------

_ANSWER_TEXT = (
    "To reset your password, open Settings, choose Security, then select Reset password. "
    "You will receive an email with a link that is valid for one hour; follow it and pick "
    "a new password of at least twelve characters. If the email does not arrive, check your "
    "spam folder or contact support."
)
_PROMPT_TOKENS = 48
_COMPLETION_TOKENS = 64


def _pieces(count: int) -> list[str]:
    words = _ANSWER_TEXT.split(" ")
    per = max(1, len(words) // max(1, count))
    pieces = [" ".join(words[i * per : (i + 1) * per]) + " " for i in range(count - 1)]
    pieces.append(" ".join(words[(count - 1) * per :]))
    return pieces


def chat_answer(model: str) -> bytes:
    """A `chat.completion` (openai-python `types/chat/chat_completion.py`)."""
    return _dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": int(time.time()), "model": model,
        "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": _ANSWER_TEXT, "refusal": None},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": _PROMPT_TOKENS, "completion_tokens": _COMPLETION_TOKENS,
                  "total_tokens": _PROMPT_TOKENS + _COMPLETION_TOKENS},
    })


def chat_events(model: str, count: int, include_usage: bool) -> list[bytes]:
    """`chat.completion.chunk` events, the usage chunk when asked for, then `[DONE]`."""
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "system_fingerprint": "fp_bench"}
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": "", "refusal": None}]
    deltas += [{"content": piece} for piece in _pieces(count)]
    chunks = [{**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]}
              for delta in deltas]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]})
    if include_usage:
        for chunk in chunks:
            chunk["usage"] = None
        chunks.append({**base, "choices": [], "usage": {
            "prompt_tokens": _PROMPT_TOKENS, "completion_tokens": _COMPLETION_TOKENS,
            "total_tokens": _PROMPT_TOKENS + _COMPLETION_TOKENS}})
    return [b"data: " + _dumps(chunk) + b"\n\n" for chunk in chunks] + [b"data: [DONE]\n\n"]


def _response_object(model: str, *, status: str, completed: bool) -> dict[str, Any]:
    """A Responses `Response` (openai-python `types/responses/response.py`)."""
    output = [{"id": "msg_bench", "type": "message", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": _ANSWER_TEXT, "annotations": [], "logprobs": []}]}]
    usage = {"input_tokens": _PROMPT_TOKENS, "input_tokens_details": {"cached_tokens": 0},
             "output_tokens": _COMPLETION_TOKENS, "output_tokens_details": {"reasoning_tokens": 0},
             "total_tokens": _PROMPT_TOKENS + _COMPLETION_TOKENS}
    return {
        "id": "resp_bench", "object": "response", "created_at": int(time.time()), "status": status, "error": None,
        "incomplete_details": None, "instructions": None, "model": model, "output": output if completed else [],
        "parallel_tool_calls": True, "temperature": 1.0, "top_p": 1.0, "tool_choice": "auto", "tools": [],
        "max_output_tokens": None, "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
        "store": True, "text": {"format": {"type": "text"}, "verbosity": "medium"}, "truncation": "disabled",
        "usage": usage if completed else None, "user": None, "metadata": {},
    }


def responses_answer(model: str) -> bytes:
    return _dumps(_response_object(model, status="completed", completed=True))


def responses_events(model: str, count: int) -> list[bytes]:
    """The Responses event stream of one text answer, `response.created` to `response.completed`."""
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": _response_object(model, status="in_progress", completed=False)}),
        ("response.in_progress", {"response": _response_object(model, status="in_progress", completed=False)}),
        ("response.output_item.added", {"output_index": 0, "item": {
            "id": "msg_bench", "type": "message", "role": "assistant", "status": "in_progress", "content": []}}),
        ("response.content_part.added", {"item_id": "msg_bench", "output_index": 0, "content_index": 0,
                                         "part": {"type": "output_text", "text": "", "annotations": []}}),
    ]
    events += [("response.output_text.delta", {"item_id": "msg_bench", "output_index": 0, "content_index": 0,
                                               "delta": piece, "logprobs": []}) for piece in _pieces(count)]
    events += [
        ("response.output_text.done", {"item_id": "msg_bench", "output_index": 0, "content_index": 0,
                                       "text": _ANSWER_TEXT, "logprobs": []}),
        ("response.content_part.done", {"item_id": "msg_bench", "output_index": 0, "content_index": 0, "part": {
            "type": "output_text", "text": _ANSWER_TEXT, "annotations": []}}),
        ("response.output_item.done", {"output_index": 0, "item": _response_object(
            model, status="completed", completed=True)["output"][0]}),
        ("response.completed", {"response": _response_object(model, status="completed", completed=True)}),
    ]
    return [f"event: {kind}\n".encode() + b"data: " + _dumps({"type": kind, "sequence_number": number, **data})
            + b"\n\n" for number, (kind, data) in enumerate(events)]


def messages_answer(model: str) -> bytes:
    """An Anthropic `Message` (anthropic-sdk-python `types/message.py`)."""
    return _dumps({
        "id": "msg_bench", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": _ANSWER_TEXT}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": _PROMPT_TOKENS, "output_tokens": _COMPLETION_TOKENS,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    })


def messages_events(model: str, count: int) -> list[bytes]:
    """Anthropic's event stream of one text answer, `message_start` to `message_stop`."""
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"message": {
            "id": "msg_bench", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": _PROMPT_TOKENS, "output_tokens": 1, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0}}}),
        ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ("ping", {}),
    ]
    events += [("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}})
               for piece in _pieces(count)]
    events += [
        ("content_block_stop", {"index": 0}),
        ("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": _COMPLETION_TOKENS}}),
        ("message_stop", {}),
    ]
    return [f"event: {kind}\n".encode() + b"data: " + _dumps({"type": kind, **data}) + b"\n\n"
            for kind, data in events]


class _UpstreamStats:
    def __init__(self) -> None:
        self.connections_open = 0
        self.connections_total = 0
        self.requests = 0
        self.streams = 0
        self.refused = 0


class _UpstreamProtocol(asyncio.Protocol):
    """Minimal HTTP/1.1 with keep-alive: Content-Length bodies, one request at a time per connection."""

    def __init__(self, stats: _UpstreamStats, stream_events: int, stream_gap: float,
                 cache: dict[tuple[str, str, bool, bool], list[bytes]]) -> None:
        self._stats = stats
        self._events = stream_events
        self._gap = stream_gap
        self._cache = cache
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = transport  # type: ignore[assignment]
        self._stats.connections_open += 1
        self._stats.connections_total += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._stats.connections_open -= 1
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._process()

    def _process(self) -> None:
        while not self._busy and self._transport is not None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buffer[:end]).decode("latin-1")
            request_line, _, header_text = head.partition("\r\n")
            headers = {}
            for line in header_text.split("\r\n"):
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            if len(self._buffer) < end + 4 + length:
                return
            body = bytes(self._buffer[end + 4 : end + 4 + length])
            del self._buffer[: end + 4 + length]
            keep_alive = headers.get("connection", "").lower() != "close"
            method, path, *_ = request_line.split(" ")
            self._handle(method, path, headers, body, keep_alive)

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes, keep_alive: bool) -> None:
        transport = self._transport
        assert transport is not None
        if method == "GET" and path == "/stats":
            self._send(200, _dumps(vars(self._stats)), keep_alive)
            return
        surface = next((s for s in SURFACES.values() if method == "POST" and path == s.path), None)
        if surface is None:
            self._send(404, b'{"error":{"message":"not found"}}', keep_alive)
            return
        refusal = _refusal(surface, headers)
        try:
            request = json.loads(body)
            model = request["model"]
            stream = bool(request.get("stream"))
        except (ValueError, KeyError, TypeError):
            refusal = refusal or "the body is not JSON with a model"
        if refusal is not None:
            self._stats.refused += 1
            self._send(400, _dumps({"error": {"message": refusal}}), keep_alive)
            return
        self._stats.requests += 1
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        key = (surface.name, model, stream, include_usage)
        payload = self._cache.get(key)
        if payload is None:
            payload = self._cache[key] = _answer(surface.name, model, stream, include_usage, self._events)
        if not stream:
            self._send(200, payload[0], keep_alive)
            return
        self._stats.streams += 1
        transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n"
            + (b"connection: keep-alive\r\n\r\n" if keep_alive else b"connection: close\r\n\r\n")
        )
        if self._gap <= 0:
            transport.write(b"".join(payload) + b"0\r\n\r\n")
            if not keep_alive:
                transport.close()
            return
        self._busy = True
        asyncio.get_running_loop().create_task(self._trickle(payload, keep_alive))

    async def _trickle(self, chunks: list[bytes], keep_alive: bool) -> None:
        for chunk in chunks:
            if self._transport is None:
                return
            self._transport.write(chunk)
            await asyncio.sleep(self._gap)
        if self._transport is None:
            return
        self._transport.write(b"0\r\n\r\n")
        if not keep_alive:
            self._transport.close()
        self._busy = False
        self._process()

    def _send(self, status: int, payload: bytes, keep_alive: bool) -> None:
        assert self._transport is not None
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
        self._transport.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\nconnection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n".encode()
            + payload
        )
        if not keep_alive:
            self._transport.close()


def _refusal(surface: Surface, headers: dict[str, str]) -> str | None:
    """What the real API would refuse in these headers: its key, and Anthropic's version header."""
    if surface.name == "messages":
        if headers.get("x-api-key") != UPSTREAM_KEY:
            return "x-api-key is missing or wrong"
        if headers.get("anthropic-version") != ANTHROPIC_VERSION:
            return "anthropic-version: header is required"
        return None
    if headers.get("authorization") != f"Bearer {UPSTREAM_KEY}":
        return "the bearer key is missing or wrong"
    return None


def _answer(surface: str, model: str, stream: bool, include_usage: bool, count: int) -> list[bytes]:
    """The answer's body (plain) or its events, each as one HTTP chunk (streamed)."""
    if not stream:
        return [{"chat": chat_answer, "responses": responses_answer, "messages": messages_answer}[surface](model)]
    if surface == "chat":
        events = chat_events(model, count, include_usage)
    elif surface == "responses":
        events = responses_events(model, count)
    else:
        events = messages_events(model, count)
    return [b"%x\r\n%s\r\n" % (len(event), event) for event in events]


def upstream_main(args: argparse.Namespace) -> int:
    _use_uvloop(args.uvloop)
    stats = _UpstreamStats()
    cache: dict[tuple[str, str, bool, bool], list[bytes]] = {}

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _UpstreamProtocol(stats, args.stream_events, args.stream_gap_ms / 1000, cache),
            "127.0.0.1",
            args.port,
            backlog=1024,
            reuse_address=True,
        )
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        print("ready", flush=True)
        async with server:
            await stop.wait()

    asyncio.run(serve())
    return 0


# --------------------------------------------------------------------------
# The floor: a bare relay, FastAPI + aiohttp, served as the gateway is.
# --------------------------------------------------------------------------


def floor_main(args: argparse.Namespace) -> int:
    """Serve the bare relay on `args.port` until SIGTERM."""
    import uvicorn

    uvicorn.run(floor_app(args.upstream_port), host="127.0.0.1", port=args.port, workers=1, log_config=None,
                access_log=False, server_header=False)
    return 0


def floor_app(upstream_port: int) -> Any:
    """The bare relay's FastAPI app, relaying to the fake upstream on `upstream_port`."""
    import aiohttp
    from fastapi import FastAPI, Request
    from fastapi.responses import Response, StreamingResponse

    base = f"http://127.0.0.1:{upstream_port}"
    # deployment → (upstream URL, upstream model, upstream headers)
    routes: dict[str, tuple[str, str, dict[str, str]]] = {}
    for surface in SURFACES.values():
        headers = {"content-type": "application/json"}
        if surface.name == "messages":
            headers |= {"x-api-key": UPSTREAM_KEY, "anthropic-version": ANTHROPIC_VERSION}
        else:
            headers["authorization"] = f"Bearer {UPSTREAM_KEY}"
        routes[surface.deployment] = (base + surface.path, surface.stable_model, headers)
    sessions: list[aiohttp.ClientSession] = []

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=256, ttl_dns_cache=None)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
            sessions.append(session)
            yield

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    async def relay(request: Request) -> Response:
        body = json.loads(await request.body())
        route = routes.get(str(body.get("model"))) if isinstance(body, dict) else None
        if route is None:
            return Response(b'{"error":{"message":"unknown model"}}', status_code=404, media_type="application/json")
        url, model, headers = route
        body["model"] = model
        upstream = await sessions[0].post(url, data=_dumps(body), headers=headers)
        if not body.get("stream"):
            content = await upstream.read()
            upstream.release()
            _usage_of(json.loads(content))
            return Response(content, status_code=upstream.status, media_type="application/json")

        async def events() -> AsyncIterator[bytes]:
            pending = b""
            try:
                async for chunk in upstream.content.iter_any():
                    yield chunk
                    pending += chunk
                    while (end := pending.find(b"\n\n")) >= 0:
                        event, pending = pending[:end], pending[end + 2 :]
                        if b'"usage"' in event and b'"usage":null' not in event:
                            _usage_of(json.loads(event[event.index(b"data: ") + 6 :]))
            finally:
                upstream.release()

        return StreamingResponse(events(), status_code=upstream.status, media_type="text/event-stream")

    relay.__annotations__["request"] = Request  # the annotation is a string here (postponed evaluation)
    for surface in SURFACES.values():
        app.add_api_route(surface.path, relay, methods=["POST"])
    return app


def _usage_of(data: Any) -> tuple[int, int] | None:
    """The token counts of an answer or event of any of the three APIs (the work a relay does to record them)."""
    if not isinstance(data, dict):
        return None
    holder = data.get("response") or data.get("message") or data
    usage = holder.get("usage") if isinstance(holder, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    return (prompt, completion) if isinstance(prompt, int) and isinstance(completion, int) else None


# --------------------------------------------------------------------------
# The load generator: closed loop, aiohttp with keep-alive, one process.
# --------------------------------------------------------------------------

_SYSTEM = "You are the support assistant of ACME Corp. Answer briefly."
_QUESTION = ("Hello! I forgot my password and cannot log in to my account any more. "
             "How do I reset my password, and how long is the reset link valid?")


def request_body(surface: str, model: str, stream: bool) -> bytes:
    """The same question in each API's request shape."""
    body: dict[str, Any]
    if surface == "chat":
        body = {"model": model, "messages": [{"role": "system", "content": _SYSTEM},
                                             {"role": "user", "content": _QUESTION}],
                "max_tokens": 256, "temperature": 0.7}
        if stream:
            body["stream_options"] = {"include_usage": True}
    elif surface == "responses":
        body = {"model": model, "instructions": _SYSTEM, "input": [{"role": "user", "content": _QUESTION}],
                "max_output_tokens": 256, "temperature": 0.7}
    else:
        body = {"model": model, "system": _SYSTEM, "messages": [{"role": "user", "content": _QUESTION}],
                "max_tokens": 256, "temperature": 0.7}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def load_main(args: argparse.Namespace) -> int:
    _use_uvloop(args.uvloop)
    return asyncio.run(_load(args))


async def _load(args: argparse.Namespace) -> int:
    import aiohttp

    surface = SURFACES[args.api]
    body = request_body(surface.name, args.model, args.stream)
    url = args.url
    stream = args.stream
    base_headers = {"content-type": "application/json"}
    if surface.name == "messages":
        base_headers["anthropic-version"] = ANTHROPIC_VERSION
        if args.direct:
            base_headers["x-api-key"] = UPSTREAM_KEY
    elif args.direct:
        base_headers["authorization"] = f"Bearer {UPSTREAM_KEY}"
    latencies: list[float] = []
    ttfbs: list[float] = []
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    bad = 0
    completed_total = 0
    sequence = 0

    connector = aiohttp.TCPConnector(limit=args.concurrency, limit_per_host=0, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:
        print("ready", flush=True)
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        start_at = float(line)
        window_start = start_at + args.warmup
        window_end = window_start + args.duration
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        usage_before = os.times()

        async def caller(number: int) -> None:
            nonlocal bad, completed_total, sequence
            while time.monotonic() < window_end:
                sequence += 1
                headers = {**base_headers, "x-user-id": f"user-{number}-{sequence}"}
                started = time.monotonic()
                first: float | None = None
                status = 0
                ok = False
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        status = response.status
                        if stream:
                            tail = b""
                            async for chunk in response.content.iter_any():
                                if first is None:
                                    first = time.monotonic()
                                tail = (tail + chunk)[-4096:]
                            ok = status == 200 and surface.stream_end in tail
                        else:
                            content = await response.read()
                            ok = status == 200 and b'"usage"' in content
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    ended = time.monotonic()
                    if window_start <= ended < window_end:
                        errors[type(exc).__name__] += 1
                    await asyncio.sleep(0.01)
                    continue
                ended = time.monotonic()
                completed_total += 1
                if window_start <= ended < window_end:
                    statuses[status] += 1
                    if ok:
                        latencies.append(round((ended - started) * 1000, 4))
                        if first is not None:
                            ttfbs.append(round((first - started) * 1000, 4))
                    else:
                        bad += 1

        await asyncio.gather(*(caller(number) for number in range(args.concurrency)))
        usage_after = os.times()
    own_cpu = (usage_after.user + usage_after.system) - (usage_before.user + usage_before.system)
    json.dump(
        {
            "latencies": latencies,
            "ttfb": ttfbs,
            "statuses": {str(code): count for code, count in statuses.items()},
            "errors": dict(errors),
            "bad": bad,
            "completed_total": completed_total,
            "client_cpu_s": own_cpu,
        },
        sys.stdout,
    )
    sys.stdout.flush()
    return 0


# --------------------------------------------------------------------------
# The orchestrator.
# --------------------------------------------------------------------------


@dataclass
class Side:
    """One run of one scenario against one target (direct, floor or gateway)."""

    rps: float = 0.0
    requests: int = 0
    p50: float = float("nan")
    p99: float = float("nan")
    ttfb_p50: float = float("nan")
    ttfb_p99: float = float("nan")
    failed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    completed_total: int = 0
    host_busy_pct: float = float("nan")
    foreign_busy_pct: float = float("nan")
    client_cpu_ms_per_request: float = float("nan")
    server_cpu_ms_per_request: float = float("nan")
    server_rss_mb: float = float("nan")
    server_fds: int = 0


@dataclass
class Scenario:
    api: str
    stream: bool
    concurrency: int
    direct: Side = field(default_factory=Side)
    floor: Side = field(default_factory=Side)
    gateway: Side = field(default_factory=Side)

    @property
    def mode(self) -> str:
        return "stream" if self.stream else "json"

    def added_p50(self, side: Side) -> float:
        return side.p50 - self.direct.p50


@dataclass
class Run:
    transport: str
    ready_s: float = float("nan")
    floor_ready_s: float = float("nan")
    rss_ready_mb: float = float("nan")
    rss_warm_mb: float = 0.0
    rss_peak_mb: float = float("nan")
    floor_rss_peak_mb: float = float("nan")
    scenarios: list[Scenario] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: state is fields[0], utime fields[11], stime fields[12].
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _host_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total


def _source_state() -> str:
    """The commit the gateway runs from, and how many of its files differ from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "gateway"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"commit {commit}" + (f", {len(changed)} file(s) under gateway/ modified" if changed else ", clean")


def _stop(process: subprocess.Popen[bytes], timeout: float) -> tuple[int, bool]:
    """SIGTERM, then SIGKILL after `timeout`: (exit status, whether it had to be killed)."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout), False
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(), True


class Harness:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.script = str(Path(__file__).resolve())
        cpus = sorted(os.sched_getaffinity(0))
        self.server_cpus: set[int] | None = None
        self.harness_cpus: set[int] | None = None
        if args.pin and len(cpus) >= 2:
            self.server_cpus = {cpus[-1]}
            self.harness_cpus = set(cpus[:-1])
        self.upstream: subprocess.Popen[bytes] | None = None
        self.upstream_port = 0
        self.floor: subprocess.Popen[bytes] | None = None
        self.floor_port = 0
        self.gateway: subprocess.Popen[bytes] | None = None
        self.gateway_port = 0

    def _preexec(self, cpus: set[int] | None) -> Callable[[], None] | None:
        if cpus is None:
            return None
        return lambda: os.sched_setaffinity(0, cpus)

    def _flags(self) -> list[str]:
        return [] if self.args.uvloop else ["--no-uvloop"]

    def _ours(self) -> list[int]:
        return [os.getpid(), *(p.pid for p in (self.upstream, self.floor, self.gateway) if p is not None)]

    # -- the fake upstream and the floor -------------------------------------

    def start_upstream(self) -> None:
        self.upstream_port = free_port()
        self.upstream = subprocess.Popen(
            [sys.executable, self.script, "_upstream", "--port", str(self.upstream_port),
             "--stream-events", str(self.args.stream_events), "--stream-gap-ms", str(self.args.stream_gap_ms),
             *self._flags()],
            stdout=subprocess.PIPE,
            preexec_fn=self._preexec(self.harness_cpus),
        )
        assert self.upstream.stdout is not None
        if self.upstream.stdout.readline().strip() != b"ready":
            raise SystemExit("the fake upstream did not start")

    def upstream_stats(self) -> dict[str, int]:
        status, content = http_get(self.upstream_port, "/stats")
        stats: dict[str, int] = json.loads(content) if status == 200 else {}
        return stats

    def start_floor(self, run: Run) -> None:
        self.floor_port = free_port()
        started = time.monotonic()
        self.floor = subprocess.Popen(
            [sys.executable, self.script, "_floor", "--port", str(self.floor_port),
             "--upstream-port", str(self.upstream_port)],
            stdout=subprocess.DEVNULL,
            stderr=(self.workdir / "floor.log").open("wb"),
            preexec_fn=self._preexec(self.server_cpus),
        )
        run.floor_ready_s = self._wait_listening(self.floor, self.floor_port, started, "/nothing", 404)

    def stop_all(self) -> None:
        for process in (self.gateway, self.floor, self.upstream):
            if process is not None and process.poll() is None:
                _stop(process, 10)
        self.gateway = self.floor = self.upstream = None

    def _wait_listening(self, process: subprocess.Popen[bytes], port: int, started: float, path: str,
                        expected: int) -> float:
        deadline = started + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"a server exited at start (status {process.returncode}); see its log")
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, _ = http_get(port, path, timeout=1.0)
                if status == expected:
                    return time.monotonic() - started
            time.sleep(0.005)
        raise SystemExit(f"a server was not ready within 60 s (GET {path})")

    # -- one run of one scenario ----------------------------------------------

    def run_load(self, *, url: str, api: str, model: str, stream: bool, concurrency: int, server_pid: int | None,
                 direct: bool = False) -> Side:
        """Start the load processes, sample /proc over the window, merge their results."""
        processes = max(1, min(self.args.load_processes, concurrency))
        shares = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
        loaders = [
            subprocess.Popen(
                [sys.executable, self.script, "_load", "--url", url, "--api", api, "--model", model,
                 "--concurrency", str(share), "--duration", str(self.args.duration),
                 "--warmup", str(self.args.warmup), *(["--stream"] if stream else []),
                 *(["--direct"] if direct else []), *self._flags()],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                preexec_fn=self._preexec(self.harness_cpus),
            )
            for share in shares
        ]
        for loader in loaders:
            assert loader.stdout is not None
            if loader.stdout.readline().strip() != b"ready":
                raise SystemExit("a load generator did not start")
        start_at = time.monotonic() + 0.05
        for loader in loaders:
            assert loader.stdin is not None
            loader.stdin.write(f"{start_at}\n".encode())
            loader.stdin.flush()
        window_start = start_at + self.args.warmup
        window_end = window_start + self.args.duration
        ours = [*self._ours(), *(loader.pid for loader in loaders)]

        time.sleep(max(0.0, window_start - time.monotonic()))
        server_before = _proc_cpu_s(server_pid) if server_pid else 0.0
        ours_before = sum(_proc_cpu_s(pid) for pid in ours)
        host_before = _host_cpu()
        time.sleep(max(0.0, window_end - time.monotonic()))
        server_after = _proc_cpu_s(server_pid) if server_pid else 0.0
        ours_after = sum(_proc_cpu_s(pid) for pid in ours)
        host_after = _host_cpu()

        results = []
        for loader in loaders:
            out, _ = loader.communicate(timeout=120)
            if loader.returncode != 0:
                raise SystemExit(f"a load generator failed (exit {loader.returncode})")
            results.append(json.loads(out))

        latencies = sorted(value for result in results for value in result["latencies"])
        ttfbs = sorted(value for result in results for value in result["ttfb"])
        statuses: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        for result in results:
            statuses.update(result["statuses"])
            errors.update(result["errors"])
        ok = len(latencies)
        busy = host_after[0] - host_before[0]
        total = host_after[1] - host_before[1]
        # CPU used by processes outside the benchmark (other work on the machine), in % of all CPUs.
        ticks = os.sysconf("SC_CLK_TCK")
        foreign_pct = (100.0 * max(0.0, busy / ticks - (ours_after - ours_before)) / (total / ticks)
                       if total else float("nan"))
        side = Side(
            rps=ok / self.args.duration,
            requests=ok,
            p50=nearest_rank(latencies, 0.50),
            p99=nearest_rank(latencies, 0.99),
            ttfb_p50=nearest_rank(ttfbs, 0.50),
            ttfb_p99=nearest_rank(ttfbs, 0.99),
            failed=sum(result["bad"] for result in results) + sum(errors.values()),
            statuses=dict(statuses),
            errors=dict(errors),
            completed_total=sum(result["completed_total"] for result in results),
            host_busy_pct=100.0 * busy / total if total else float("nan"),
            foreign_busy_pct=foreign_pct,
            client_cpu_ms_per_request=1000 * sum(r["client_cpu_s"] for r in results) / max(1, ok),
        )
        if ok == 0:
            raise SystemExit(f"no request succeeded against {url}: statuses {dict(statuses)}, errors {dict(errors)}")
        if server_pid:
            side.server_cpu_ms_per_request = 1000 * (server_after - server_before) / max(1, ok)
            side.server_rss_mb = _proc_status_kb(server_pid, "VmRSS") / 1024
            side.server_fds = len(os.listdir(f"/proc/{server_pid}/fd"))
        return side

    # -- the gateway ----------------------------------------------------------

    def write_config(self, port: int, directory: Path) -> Path:
        transport = self.args.transport
        upstream = f"http://127.0.0.1:{self.upstream_port}"
        providers = {
            "chat": f"{{kind: openai, base_url: {upstream}/v1, api_key: {UPSTREAM_KEY}, transport: {transport}}}",
            "responses": f"{{kind: openai, api: responses, base_url: {upstream}/v1, api_key: {UPSTREAM_KEY}, "
                         f"transport: {transport}}}",
            "messages": f"{{kind: anthropic, base_url: {upstream}, api_key: {UPSTREAM_KEY}, transport: {transport}}}",
        }
        lines = [
            "# Generated by benchmarks/proxy_overhead.py",
            f"database_url: sqlite+aiosqlite:///{directory / 'gateway.db'}",
            "user_id_salt: benchmark-salt",
            f"server: {{host: 127.0.0.1, port: {port}, workers: 1, drain_delay: 0s, shutdown_grace: 10s}}",
            f"recorder: {{spool_dir: {directory / 'spool'}}}",
            "logging: {level: info, access_log: true}",
            "providers:",
            *(f"  fake-{name}: {spec}" for name, spec in providers.items()),
            "pricing:",
            *(f"  {model}: {{input: 0.15, output: 0.60}}" for surface in SURFACES.values()
              for model in (surface.stable_model, surface.canary_model)),
            "deployments:",
        ]
        for surface in SURFACES.values():
            lines += [
                f"  {surface.deployment}:",
                "    stable: v1",
                "    canary: v2",
                "    versions:",
                f"      v1: {{provider: fake-{surface.name}, model: {surface.stable_model}, "
                "system_prompt: 'You are a helpful assistant.', prompt_mode: replace}",
                f"      v2: {{provider: fake-{surface.name}, model: {surface.canary_model}, "
                "system_prompt: 'You are a concise, helpful assistant.', prompt_mode: prepend, "
                "few_shot: [{role: user, content: 'How do I reset my password?'}, "
                "{role: assistant, content: 'Settings, Security, Reset password.'}], params: {temperature: 0.3}}",
                f"    policy: {{stages: [{CANARY_PERCENT}, 50, 100]}}",
            ]
        config = directory / "gateway.yaml"
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return config

    def start_gateway(self, run: Run) -> tuple[Path, Path]:
        directory = self.workdir / "gateway"
        directory.mkdir()
        self.gateway_port = free_port()
        config = self.write_config(self.gateway_port, directory)
        log_path = directory / "gateway.log"
        started = time.monotonic()
        self.gateway = subprocess.Popen(
            [*gateway_command(self.args.gateway_command), "serve", "--config", str(config)],
            cwd=directory,
            env=gateway_environment(),
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
            preexec_fn=self._preexec(self.server_cpus),
        )
        run.ready_s = self._wait_listening(self.gateway, self.gateway_port, started, "/readyz", 200)
        run.rss_ready_mb = _proc_status_kb(self.gateway.pid, "VmRSS") / 1024
        return directory, log_path

    def scenario(self, api: str, stream: bool, concurrency: int) -> Scenario:
        surface = SURFACES[api]
        scenario = Scenario(api=api, stream=stream, concurrency=concurrency)
        label = f"{api} {'stream' if stream else 'json'} c={concurrency}"
        assert self.floor is not None and self.gateway is not None
        if not self.args.no_direct:
            print(f"  {label}: direct ...", flush=True)
            scenario.direct = self.run_load(
                url=f"http://127.0.0.1:{self.upstream_port}{surface.path}", api=api, model=surface.stable_model,
                stream=stream, concurrency=concurrency, server_pid=None, direct=True)
        print(f"  {label}: floor ...", flush=True)
        scenario.floor = self.run_load(
            url=f"http://127.0.0.1:{self.floor_port}{surface.path}", api=api, model=surface.deployment,
            stream=stream, concurrency=concurrency, server_pid=self.floor.pid)
        print(f"  {label}: gateway ...", flush=True)
        scenario.gateway = self.run_load(
            url=f"http://127.0.0.1:{self.gateway_port}{surface.path}", api=api, model=surface.deployment,
            stream=stream, concurrency=concurrency, server_pid=self.gateway.pid)
        return scenario

    def profile(self, spec: str) -> Side:
        """One more run of `spec` (api:mode:concurrency) with py-spy sampling the gateway (after the measured runs)."""
        assert self.gateway is not None
        py_spy = Path(sys.executable).with_name("py-spy")
        executable = str(py_spy) if py_spy.exists() else shutil.which("py-spy")
        if executable is None:
            print("  (py-spy is not installed; no profile)", flush=True)
            return Side()
        api, mode, concurrency = spec.split(":")
        output = Path(self.args.profile).with_suffix(f".{api}-{mode}-c{concurrency}.txt")
        seconds = int(self.args.warmup + self.args.duration)
        print(f"  profiling the gateway, {api} {mode} c={concurrency}, with py-spy -> {output} ...", flush=True)
        recorder = subprocess.Popen(
            [executable, "record", "--pid", str(self.gateway.pid), "--duration", str(seconds), "--rate", "250",
             "--nonblocking", "--format", "raw", "--output", str(output)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        surface = SURFACES[api]
        side = self.run_load(url=f"http://127.0.0.1:{self.gateway_port}{surface.path}", api=api,
                             model=surface.deployment, stream=mode == "stream", concurrency=int(concurrency),
                             server_pid=self.gateway.pid)
        recorder.wait(60)
        return side

    def stop_gateway(self, run: Run) -> tuple[int, float]:
        assert self.gateway is not None
        started = time.monotonic()
        code, killed = _stop(self.gateway, 30)
        if killed:
            run.problems.append("the gateway did not stop within 30 s of SIGTERM (killed)")
        self.gateway = None
        return code, time.monotonic() - started

    def scrape(self) -> dict[str, float]:
        status, content = http_get(self.gateway_port, "/metrics", timeout=5)
        values: dict[str, float] = {}
        if status != 200:
            return values
        for line in content.decode().splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                values[name] = float(value)
        return values


def check(run: Run, *, exit_code: int, stopped_in: float, sent: Counter[tuple[str, bool]],
          metrics: dict[str, float], upstream_calls: int, directory: Path, log_path: Path) -> None:
    """What went wrong: failed calls, calls not recorded, counts that disagree, error lines in the log."""
    for scenario in run.scenarios:
        for name, side in (("floor", scenario.floor), ("gateway", scenario.gateway)):
            non_200 = {code: count for code, count in side.statuses.items() if code != "200"}
            if non_200 or side.errors or side.failed:
                run.problems.append(
                    f"{name} {scenario.api} {scenario.mode} c={scenario.concurrency}: non-200 {non_200 or '-'}, "
                    f"client errors {side.errors or '-'}, failed/invalid answers {side.failed}")
    total = sum(sent.values())
    run.notes.append(f"gateway stopped {stopped_in:.2f} s after SIGTERM (exit status {exit_code})")
    if b'"gateway stopped"' not in log_path.read_bytes():
        run.problems.append("the shutdown log line ('gateway stopped') never reached the log")

    counted = sum(v for k, v in metrics.items() if k.startswith("canary_requests_total{"))
    dropped = sum(v for k, v in metrics.items() if k.startswith("canary_records_dropped_total"))
    canary = sum(v for k, v in metrics.items() if k.startswith("canary_requests_total{") and 'version="v2"' in k)
    run.notes.append(
        f"metrics: {counted:.0f} calls counted, {canary / max(1, counted):.1%} on the canary (configured "
        f"{CANARY_PERCENT} %), {dropped:.0f} records dropped; the load generators completed {total} calls "
        f"through the gateway, the upstream answered {upstream_calls}")
    if counted != total:
        run.problems.append(f"the gateway counted {counted:.0f} calls, the clients completed {total}")
    if dropped:
        run.problems.append(f"{dropped:.0f} request records dropped")

    rows: dict[tuple[str, bool], int] = {}
    with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(directory / "gateway.db")) as db:
        for api, stream, status, count in db.execute(
            "SELECT api, stream, status, count(*) FROM request_records GROUP BY api, stream, status"
        ):
            rows[(api, bool(stream))] = rows.get((api, bool(stream)), 0) + count
            if status != "ok":
                run.problems.append(f"{count} {api} records with status {status}")
    recorded = sum(rows.values())
    run.notes.append(f"database after shutdown: {recorded} request records for {total} calls completed")
    for key in sorted(set(sent) | set(rows)):
        if rows.get(key, 0) != sent.get(key, 0):
            run.problems.append(
                f"{key[0]} {'stream' if key[1] else 'json'}: {rows.get(key, 0)} records for {sent.get(key, 0)} calls")

    access = 0
    levels: Counter[str] = Counter()
    samples: list[str] = []
    with log_path.open("rb") as lines:
        for raw in lines:
            try:
                entry = json.loads(raw)
            except ValueError:
                levels["(not json)"] += 1
                if len(samples) < 3:
                    samples.append(raw.decode(errors="replace").strip()[:200])
                continue
            levels[entry.get("level", "?")] += 1
            if entry.get("logger") == "gateway.access":
                access += 1
            elif entry.get("level") in ("error", "critical", "warning") and len(samples) < 5:
                samples.append(f"{entry.get('level')}: {entry.get('logger')}: {str(entry.get('msg'))[:160]}")
    run.notes.append(f"log: {log_path.stat().st_size / MB:.1f} MB, {access} access lines, levels {dict(levels)}")
    if access != total:
        run.problems.append(f"{access} access log lines for {total} calls")
    if levels.get("error") or levels.get("critical") or levels.get("(not json)"):
        run.problems.append("error lines in the gateway log: " + " | ".join(samples))
    elif samples:
        run.notes.append("log warnings: " + " | ".join(samples))


# --------------------------------------------------------------------------
# The report.
# --------------------------------------------------------------------------


def _f(value: float, digits: int = 2) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def _ratio(a: float, b: float) -> float:
    return a / b if b and b == b and a == a else float("nan")


def table_rows(run: Run) -> list[list[str]]:
    rows = []
    for s in run.scenarios:
        floor, gateway = s.floor, s.gateway
        rows.append([
            s.api, s.mode, str(s.concurrency),
            _f(floor.server_cpu_ms_per_request, 3), _f(gateway.server_cpu_ms_per_request, 3),
            _f(_ratio(gateway.server_cpu_ms_per_request, floor.server_cpu_ms_per_request)) + "×",
            f"{floor.rps:,.0f}", f"{gateway.rps:,.0f}", f"{_ratio(gateway.rps, floor.rps):.0%}",
            f"{_f(s.added_p50(floor))} / {_f(s.added_p50(gateway))}",
            f"{_f(floor.ttfb_p50)} / {_f(gateway.ttfb_p50)}" if s.stream else "",
            _f(gateway.foreign_busy_pct, 0),
        ])
    return rows


HEADERS = ["api", "mode", "conc", "floor CPU ms/call", "gateway CPU ms/call", "CPU ×floor", "floor calls/s",
           "gateway calls/s", "calls/s of floor", "added p50 ms floor / gw", "TTFB p50 ms floor / gw", "other %"]


def print_report(run: Run, args: argparse.Namespace) -> None:
    width = 150
    print()
    print("=" * width)
    print(
        f"gateway ready in {run.ready_s:.2f} s (floor {run.floor_ready_s:.2f} s); "
        f"gateway RSS {run.rss_ready_mb:.1f} MB at ready, {run.rss_warm_mb:.1f} MB after warm-up (largest "
        f"after a run), peak {run.rss_peak_mb:.1f} MB "
        f"(floor peak {run.floor_rss_peak_mb:.1f} MB); transport {run.transport}; window {args.duration:g} s after "
        f"{args.warmup:g} s warm-up; cpus {os.cpu_count()}" + ("; pinned" if args.pin else ""))
    print(f"gateway source: {args.source}" + (f"   {args.label}" if args.label else ""))
    print("=" * width)
    from common import print_table

    print_table(HEADERS, table_rows(run), align="lllrrrrrrrrr")
    print("(added p50: latency p50 over the direct run's; other %: CPU used by processes outside the benchmark")
    print(" during the gateway's window, in % of all CPUs)")
    print()
    print(f"{'target':<70}{'measured':>24}  verdict")
    print("-" * 104)
    for target, measured, met in targets(run):
        print(f"{target:<70}{measured:>24}  {'met' if met else 'MISSED'}")
    print()
    for note in run.notes:
        print(f"note: {note}")
    for problem in run.problems:
        print(f"PROBLEM: {problem}")
    if not run.problems:
        print("every call answered, recorded, counted and logged; no error lines")


def targets(run: Run) -> list[tuple[str, str, bool]]:
    rows: list[tuple[str, str, bool]] = []
    by_key = {(s.api, s.stream, s.concurrency): s for s in run.scenarios}
    chat16 = by_key.get(("chat", False, 16))
    if chat16 is not None:
        cpu = _ratio(chat16.gateway.server_cpu_ms_per_request, chat16.floor.server_cpu_ms_per_request)
        rows.append((f"chat json c=16: CPU per call <= {TARGET_CPU_RATIO}× the floor's", f"{cpu:.2f}×",
                     cpu <= TARGET_CPU_RATIO))
        share = _ratio(chat16.gateway.rps, chat16.floor.rps)
        rows.append((f"chat json c=16: calls/s >= {TARGET_RPS_SHARE:.0%} of the floor's", f"{share:.0%}",
                     share >= TARGET_RPS_SHARE))
    for s in run.scenarios:
        chat = by_key.get(("chat", s.stream, s.concurrency))
        if s.api == "chat" or chat is None:
            continue
        spread = _ratio(s.gateway.server_cpu_ms_per_request, chat.gateway.server_cpu_ms_per_request)
        rows.append((f"{s.api} {s.mode} c={s.concurrency}: CPU per call <= {TARGET_SURFACE_SPREAD:.2f}× chat's",
                     f"{spread:.2f}×", spread <= TARGET_SURFACE_SPREAD))
    for s in run.scenarios:
        if s.stream and s.concurrency == 1:
            added = s.gateway.ttfb_p50 - s.floor.ttfb_p50
            rows.append((f"{s.api} stream c=1: TTFB p50 <= the floor's + {TARGET_TTFB_ADDED_MS:g} ms",
                         f"{added:+.2f} ms", added <= TARGET_TTFB_ADDED_MS))
    rows.append((f"gateway RSS after warm-up <= {TARGET_RSS_MB:.0f} MB", f"{run.rss_warm_mb:.1f} MB",
                 run.rss_warm_mb <= TARGET_RSS_MB))
    rows.append((f"gateway start to ready <= {TARGET_READY_S} s", f"{run.ready_s:.2f} s",
                 run.ready_s <= TARGET_READY_S))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apis", default="chat,responses,messages",
                        help="surfaces to drive, comma-separated: chat, responses, messages (default all)")
    parser.add_argument("--modes", default="json,stream", help="json, stream or json,stream (default json,stream)")
    parser.add_argument("--concurrency", default="1,16", help="comma-separated concurrencies (default 1,16)")
    parser.add_argument("--duration", type=float, default=5.0, help="measurement window per run, seconds (default 5)")
    parser.add_argument("--warmup", type=float, default=1.5, help="warm-up before each window, seconds (default 1.5)")
    parser.add_argument("--transport", choices=["aiohttp", "httpx"], default="aiohttp",
                        help="the providers' `transport:` in the generated config (default aiohttp)")
    parser.add_argument("--load-processes", type=int, default=1, help="load generator processes per run (default 1)")
    parser.add_argument("--stream-events", type=int, default=8, help="text deltas per streamed answer (default 8)")
    parser.add_argument("--stream-gap-ms", type=float, default=0.0,
                        help="pause between streamed events at the fake upstream (default 0: as fast as possible)")
    parser.add_argument("--no-direct", action="store_true",
                        help="skip the direct runs (no added latency then; quicker)")
    parser.add_argument("--pin", action="store_true", help="pin the servers to the last CPU, the harness to the others")
    parser.add_argument("--no-uvloop", dest="uvloop", action="store_false", help="plain asyncio in the harness")
    parser.add_argument("--profile", metavar="PATH",
                        help="after the runs, sample the gateway with py-spy during one more run "
                        "(raw collapsed stacks to PATH.<scenario>.txt; keep them outside the repository)")
    parser.add_argument("--profile-scenario", default="chat:json:16",
                        help="api:mode:concurrency (default chat:json:16)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    parser.add_argument("--gateway-command", metavar="CMD",
                        help="run CMD instead of canary-gateway ('serve --config FILE' is appended)")
    parser.add_argument("--label", default="", help="free text printed with the results (e.g. what else runs)")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory (configs, logs, database)")
    parser.add_argument("--smoke", action="store_true",
                        help="a check that the script works, in seconds: every surface plain and streamed at c=1, "
                        "0.5 s windows, no direct runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.warmup, args.concurrency, args.no_direct = 0.5, 0.3, "1", True
    apis = [api.strip() for api in args.apis.split(",") if api.strip()]
    if not apis or not set(apis) <= set(SURFACES):
        parser.error(f"--apis takes some of {', '.join(SURFACES)}")
    concurrencies = [int(value) for value in args.concurrency.split(",") if value.strip()]
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    if not modes or not set(modes) <= {"json", "stream"}:
        parser.error("--modes takes json, stream or json,stream")
    args.source = _source_state()

    workdir = Path(tempfile.mkdtemp(prefix="proxy-overhead-"))
    harness = Harness(args, workdir)
    run = Run(transport=args.transport)
    sent: Counter[tuple[str, bool]] = Counter()
    try:
        harness.start_upstream()
        harness.start_floor(run)
        directory, log_path = harness.start_gateway(run)
        before = harness.upstream_stats()
        for api in apis:
            for mode in modes:
                for concurrency in concurrencies:
                    scenario = harness.scenario(api, mode == "stream", concurrency)
                    run.scenarios.append(scenario)
                    sent[(api, scenario.stream)] += scenario.gateway.completed_total
                    run.rss_warm_mb = max(run.rss_warm_mb, scenario.gateway.server_rss_mb)
        assert harness.gateway is not None and harness.floor is not None
        run.rss_peak_mb = _proc_status_kb(harness.gateway.pid, "VmHWM") / 1024
        run.floor_rss_peak_mb = _proc_status_kb(harness.floor.pid, "VmHWM") / 1024
        if args.profile:
            api, mode, _ = args.profile_scenario.split(":")
            sent[(api, mode == "stream")] += harness.profile(args.profile_scenario).completed_total
        time.sleep(1.5)  # let the recorder flush (flush_interval 500 ms)
        metrics = harness.scrape()
        after = harness.upstream_stats()
        exit_code, stopped_in = harness.stop_gateway(run)
        floor_calls = sum(s.floor.completed_total + s.direct.completed_total for s in run.scenarios)
        upstream_calls = after.get("requests", 0) - before.get("requests", 0) - floor_calls
        check(run, exit_code=exit_code, stopped_in=stopped_in, sent=sent, metrics=metrics,
              upstream_calls=upstream_calls, directory=directory, log_path=log_path)
        if after.get("refused"):
            run.problems.append(f"the fake upstream refused {after['refused']} calls (see its checks)")
    finally:
        harness.stop_all()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print_report(run, args)
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(run), indent=2, default=str), encoding="utf-8")
    return 0


def _subcommand(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["_upstream", "_floor", "_load"])
    parser.add_argument("--no-uvloop", dest="uvloop", action="store_false")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream-port", type=int, default=0)
    parser.add_argument("--stream-events", type=int, default=8)
    parser.add_argument("--stream-gap-ms", type=float, default=0.0)
    parser.add_argument("--url")
    parser.add_argument("--api", default="chat")
    parser.add_argument("--model")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--direct", action="store_true")
    args = parser.parse_args(argv)
    if args.role == "_upstream":
        return upstream_main(args)
    if args.role == "_floor":
        return floor_main(args)
    return load_main(args)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("_upstream", "_floor", "_load"):
        sys.exit(_subcommand(sys.argv[1:]))
    sys.exit(main())
