"""A fake OpenAI-compatible upstream: a real HTTP server on 127.0.0.1.

It runs its own event loop in a thread, records what it received, and can
misbehave on demand: error statuses, delays, hangs, redirects, HTML or
truncated bodies, slow or cut streams, CRLF line endings.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

# Request bodies the fakes accept: the real APIs take tens of MB (vision calls).
MAX_BODY = 64 * 1024 * 1024


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float


@dataclass
class Behaviour:
    """What the next calls get; tests set fields before calling the gateway."""

    status: int = 200
    error_body: str | None = None
    retry_after: str | None = None
    # "ok", "html", "truncated", "no_usage", "bad_usage", "redirect", "hang"
    mode: str = "ok"
    delay: float = 0.0
    fail_first: int = 0
    chunk_delay: float = 0.0
    # A stream's headers go out at once; its first event after this long.
    first_chunk_delay: float = 0.0
    # Per call, by the body's `user`: `delay` and `chunk_delay` for that user's calls.
    delays: dict[str, float] = field(default_factory=dict)
    chunk_delays: dict[str, float] = field(default_factory=dict)
    chunk_counts: dict[str, int] = field(default_factory=dict)
    chunks: int = 3
    cut_after: int | None = None
    crlf: bool = False
    usage_in_last_chunk: bool = False
    # Upstream models that answer `status` (default 500) while others answer normally.
    fail_models: frozenset[str] = frozenset()
    # Upstream models that fail this share of calls at random (HTTP 500).
    error_rates: dict[str, float] = field(default_factory=dict)
    # Upstream models whose answers are empty.
    empty_models: frozenset[str] = frozenset()
    # Judge mode: the answer is a verdict; the first key found in the judged text picks the score.
    judge_scores: dict[str, float] | None = None
    judge_text: str | None = None  # a verdict to send verbatim instead


class ServerThread:
    """An aiohttp application served on 127.0.0.1 from a thread with its own event loop."""

    def __init__(self, app: web.Application) -> None:
        self.port = free_port()
        self._app = app
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._serve, name="fake-server", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake server did not start")

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        # Handlers are cancelled when their client goes away, like a real server's would stop sending.
        self._runner = web.AppRunner(
            self._app, access_log=None, handle_signals=False, handler_cancellation=True, shutdown_timeout=0.5
        )
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()


@dataclass
class FakeUpstream:
    behaviour: Behaviour = field(default_factory=Behaviour)
    received: list[Received] = field(default_factory=list)
    # When the last streamed chunk (or the [DONE] event) was written, per call.
    stream_finished_at: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        self._server = ServerThread(app)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}/v1"

    @property
    def hits(self) -> int:
        return len(self.received)

    def start(self) -> FakeUpstream:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def reset(self) -> None:
        self.behaviour = Behaviour()
        self.received.clear()
        self.stream_finished_at.clear()

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        """An embedding of the `input`, after the `delays` entry of the body's `user` (for pass-through tests)."""
        body = await request.json()
        self.received.append(Received(request.path, dict(request.headers), body, time.monotonic()))
        await asyncio.sleep(self.behaviour.delays.get(body.get("user"), self.behaviour.delay))
        return web.json_response({
            "object": "list", "model": body["model"],
            "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5]}],
            "usage": {"prompt_tokens": 2, "total_tokens": 2},
        })

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append(Received(request.path, dict(request.headers), body, time.monotonic()))
        b = self.behaviour
        delay = b.delays.get(body.get("user"), b.delay)
        if delay:
            await asyncio.sleep(delay)
        if b.mode == "hang":
            await asyncio.sleep(3600)
        if b.mode == "redirect":
            return web.Response(status=302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
        failing = b.status >= 400 and (b.fail_first == 0 or len(self.received) <= b.fail_first)
        random_failure = random.random() < b.error_rates.get(body.get("model", ""), 0.0)
        if failing or body.get("model") in b.fail_models or random_failure:
            status = b.status if b.status >= 400 else 500
            headers = {"Retry-After": b.retry_after} if b.retry_after else {}
            text = b.error_body or json.dumps(
                {"error": {"message": f"fake failure {status}", "type": "server_error", "code": None}}
            )
            return web.Response(status=status, text=text, content_type="application/json", headers=headers)
        if b.mode == "html":
            return web.Response(text="<html><body>Bad gateway</body></html>", content_type="text/html")
        if b.mode == "truncated":
            return web.Response(text='{"id": "chatcmpl-1", "choices": [{"mes', content_type="application/json")
        if body.get("stream"):
            return await self._stream(request, body)
        answer = completion(body, usage=self._usage())
        if body.get("model") in b.empty_models:
            answer["choices"][0]["message"]["content"] = ""
        if b.judge_scores is not None or b.judge_text is not None:
            answer["choices"][0]["message"]["content"] = self._verdict(body)
        return web.json_response(answer)

    def _verdict(self, body: dict[str, Any]) -> str:
        b = self.behaviour
        if b.judge_text is not None:
            return b.judge_text
        judged = body["messages"][-1]["content"]
        score = next((value for key, value in (b.judge_scores or {}).items() if key in judged), 0.0)
        return json.dumps({"score": score, "reason": "fake verdict"})

    def _usage(self) -> Any:
        mode = self.behaviour.mode
        if mode == "no_usage":
            return None
        if mode == "bad_usage":
            return {"prompt_tokens": "many", "completion_tokens": -3}
        return {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}

    async def _stream(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        b = self.behaviour
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if b.first_chunk_delay:
            await asyncio.sleep(b.first_chunk_delay)
        end = b"\r\n\r\n" if b.crlf else b"\n\n"
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        user = str(body.get("user"))
        pieces = [f"piece{i} " for i in range(b.chunk_counts.get(user, b.chunks))]
        chunk_delay = b.chunk_delays.get(user, b.chunk_delay)
        for index, piece in enumerate(pieces):
            if b.cut_after is not None and index >= b.cut_after:
                self.stream_finished_at.append(time.monotonic())
                return response  # the connection ends without [DONE]
            last = index == len(pieces) - 1
            usage = self._usage() if (include_usage and b.usage_in_last_chunk and last) else None
            event = chunk(body, {"content": piece} if index else {"role": "assistant", "content": piece},
                          usage=usage, include_usage=include_usage, finish="stop" if last else None)
            await response.write(b"data: " + json.dumps(event).encode() + end)
            if chunk_delay:
                await asyncio.sleep(chunk_delay)
        for tool in (body.get("tools") or [])[:1]:
            name = tool["function"]["name"]
            for index, part in enumerate(('{"city":', ' "Paris"}')):
                call: dict[str, Any] = {"index": 0, "function": {"arguments": part}}
                if index == 0:
                    call.update({"id": "call_fake1", "type": "function"})
                    call["function"]["name"] = name
                event = chunk(body, {"tool_calls": [call]}, usage=None, include_usage=include_usage, finish=None)
                await response.write(b"data: " + json.dumps(event).encode() + end)
        if include_usage and not b.usage_in_last_chunk:
            usage_event = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1,
                           "model": body["model"], "choices": [], "usage": self._usage()}
            await response.write(b"data: " + json.dumps(usage_event).encode() + end)
        await response.write(b"data: [DONE]" + end)
        self.stream_finished_at.append(time.monotonic())
        await response.write_eof()
        return response


class WebhookReceiver:
    """A real HTTP server that collects the JSON POSTed to it (alert webhooks)."""

    def __init__(self, *, fail_first: int = 0) -> None:
        self.received: list[dict[str, Any]] = []
        self.attempts = 0
        self._fail_first = fail_first
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/hook", self._collect)
        self._server = ServerThread(app)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}/hook"

    def start(self) -> WebhookReceiver:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    async def _collect(self, request: web.Request) -> web.StreamResponse:
        self.attempts += 1
        if self.attempts <= self._fail_first:
            return web.Response(status=503)
        self.received.append(await request.json())
        return web.json_response({"ok": True})


def completion(body: dict[str, Any], *, usage: Any) -> dict[str, Any]:
    """An answer naming the system prompt it saw; a call to the first tool when tools were offered."""
    system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
    message: dict[str, Any] = {"role": "assistant", "content": f"answer to [{system}]"}
    tools = body.get("tools") or []
    if tools:
        message["tool_calls"] = [{"id": "call_fake1", "type": "function", "function": {
            "name": tools[0]["function"]["name"], "arguments": json.dumps({"city": "Paris"})}}]
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1,
        "model": body["model"],
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tools else "stop"}],
        "usage": usage,
    }


def chunk(
    body: dict[str, Any],
    delta: dict[str, Any],
    *,
    usage: Any,
    include_usage: bool,
    finish: str | None,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": body["model"],
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if include_usage:
        event["usage"] = usage
    return event


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class AnthropicBehaviour:
    status: int = 200
    error_type: str = "api_error"
    retry_after: str | None = None
    # Streams: send an `error` event after this many text deltas.
    error_after: int | None = None
    chunk_delay: float = 0.0


@dataclass
class FakeAnthropic:
    """A fake Anthropic Messages API: plain and SSE answers, tool use, errors."""

    behaviour: AnthropicBehaviour = field(default_factory=AnthropicBehaviour)
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/v1/messages", self._messages)
        self._server = ServerThread(app)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}"

    def start(self) -> FakeAnthropic:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def reset(self) -> None:
        self.behaviour = AnthropicBehaviour()
        self.received.clear()

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append(Received(request.path, dict(request.headers), body, time.monotonic()))
        b = self.behaviour
        if b.status >= 400:
            headers = {"retry-after": b.retry_after} if b.retry_after else {}
            error = {"type": "error", "error": {"type": b.error_type, "message": f"fake anthropic {b.status}"}}
            return web.json_response(error, status=b.status, headers=headers)
        text = f"claude answer to [{body.get('system', '')}]"
        tool = body["tools"][0]["name"] if body.get("tools") else None
        if body.get("stream"):
            return await self._stream(request, body, text, tool)
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        if tool:
            content.append({"type": "tool_use", "id": "toolu_fake1", "name": tool, "input": {"city": "Paris"}})
        return web.json_response({
            "id": "msg_fake", "type": "message", "role": "assistant", "model": body["model"], "content": content,
            "stop_reason": "tool_use" if tool else "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 20, "output_tokens": 9, "cache_read_input_tokens": 5,
                      "cache_creation_input_tokens": 2},
        })

    async def _stream(self, request: web.Request, body: dict[str, Any], text: str,
                      tool: str | None) -> web.StreamResponse:
        b = self.behaviour
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(kind: str, data: dict[str, Any]) -> None:
            await response.write(f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode())
            if b.chunk_delay:
                await asyncio.sleep(b.chunk_delay)

        await send("message_start", {"message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": body["model"], "content": [],
            "stop_reason": None, "usage": {"input_tokens": 20, "output_tokens": 1, "cache_read_input_tokens": 5,
                                           "cache_creation_input_tokens": 2}}})
        await send("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        await send("ping", {})
        for index, piece in enumerate(text.split(" ")):
            if b.error_after is not None and index >= b.error_after:
                await send("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})
                return response
            await send("content_block_delta", {"index": 0, "delta": {
                "type": "text_delta", "text": piece if index == 0 else " " + piece}})
        await send("content_block_stop", {"index": 0})
        if tool:
            await send("content_block_start", {"index": 1, "content_block": {
                "type": "tool_use", "id": "toolu_fake1", "name": tool, "input": {}}})
            for part in ('{"city":', ' "Paris"}'):
                await send("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta",
                                                                         "partial_json": part}})
            await send("content_block_stop", {"index": 1})
        await send("message_delta", {"delta": {"stop_reason": "tool_use" if tool else "end_turn",
                                               "stop_sequence": None}, "usage": {"output_tokens": 9}})
        await send("message_stop", {})
        await response.write_eof()
        return response
