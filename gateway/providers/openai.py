"""OpenAI-compatible chat completions (OpenAI, DeepSeek, vLLM, Ollama, ...).

Answers are relayed byte for byte; the gateway only reads them for usage.
Streams are relayed event by event: an SSE event is forwarded as soon as its
terminating blank line has arrived, unchanged, except the usage the gateway
asked for on the client's behalf, which a client that did not ask never sees.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from gateway.errors import UpstreamBadResponse, UpstreamStatusError
from gateway.models import Usage
from gateway.providers.base import (
    Answer,
    Provider,
    StreamTranslator,
    UpstreamRequest,
    sse_error_event,
    usage_from,
)

# An SSE event ends at the first empty line, whatever the line endings.
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r|\r\n\n|\n\r\n")
_LINE_END = re.compile(rb"\r\n|\n|\r")


class OpenAIProvider(Provider):
    def build_request(self, body: dict[str, Any], *, stream: bool) -> UpstreamRequest:
        headers = {
            **self._extra_headers,
            "content-type": "application/json",
            "accept": "text/event-stream" if stream else "application/json",
            "accept-encoding": "identity",
        }
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        return UpstreamRequest(
            path="/chat/completions",
            headers=headers,
            content=json.dumps(body, separators=(",", ":")).encode(),
        )

    def parse_answer(self, content: bytes) -> Answer:
        try:
            data = json.loads(content)
        except (ValueError, RecursionError):
            raise UpstreamBadResponse("upstream answered with a body that is not JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise UpstreamBadResponse("upstream answered with JSON that is not a chat completion")
        return Answer(content=content, usage=usage_from(data.get("usage"), "prompt_tokens", "completion_tokens"))

    def answer_text(self, content: bytes) -> str | None:
        try:
            message = json.loads(content)["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError, RecursionError):
            return None
        text = message.get("content") if isinstance(message, dict) else None
        return text if isinstance(text, str) else None

    def stream_translator(self, *, wants_usage: bool, collect_text: bool = False) -> StreamTranslator:
        return OpenAIStreamRelay(wants_usage=wants_usage, collect_text=collect_text)

    def error_from(self, status: int, content: bytes, headers: Mapping[str, str]) -> UpstreamStatusError:
        message, error_type, code = f"HTTP {status}", None, None
        try:
            error = json.loads(content).get("error")
        except (ValueError, AttributeError, RecursionError):
            error = None
        if isinstance(error, dict):
            message = str(error.get("message") or message)
            error_type = error.get("type") if isinstance(error.get("type"), str) else None
            code = error.get("code") if isinstance(error.get("code"), str) else None
        elif isinstance(error, str):
            message = error
        return self.status_error(
            status, message, error_type=error_type, code=code, retry_after=headers.get("retry-after")
        )


class OpenAIStreamRelay(StreamTranslator):
    def __init__(self, *, wants_usage: bool, collect_text: bool = False) -> None:
        self._wants_usage = wants_usage
        self._buffer = b""
        self._done = False
        self._parts: list[str] | None = [] if collect_text else None

    def feed(self, chunk: bytes) -> bytes:
        buffer = self._buffer + chunk if self._buffer else chunk
        out: list[bytes] = []
        start = 0
        while match := _EVENT_END.search(buffer, start):
            event = buffer[start : match.end()]
            start = match.end()
            relayed = self._event(event, buffer[match.start() : match.end()])
            if relayed:
                out.append(relayed)
        self._buffer = buffer[start:]
        return b"".join(out)

    def finish(self) -> bytes:
        tail = b""
        if self._buffer.strip():
            # The upstream ended without the final blank line; judge what it sent.
            tail = self._event(self._buffer + b"\n\n", b"\n\n")
            self._buffer = b""
        if self._parts is not None:
            self.text = "".join(self._parts)
        if self._done:
            return tail
        self.error_kind = "stream_truncated"
        return tail + sse_error_event("the upstream stream ended before it was complete", "stream_truncated")

    def _event(self, event: bytes, terminator: bytes) -> bytes:
        payload = _data_of(event)
        if payload is None:
            return event  # comments, keep-alives, retry hints
        if payload == b"[DONE]":
            self._done = True
            return event
        if b'"usage"' in payload and b'"usage":null' not in payload and b'"usage": null' not in payload:
            event = self._take_usage(event, payload, terminator)
        elif b'"error"' in payload and _is_error(payload):
            self.error_kind = "stream_error"
        if self._parts is not None:
            self._collect(payload)
        if event and not self.started:
            self.started = True
        return event

    def _collect(self, payload: bytes) -> None:
        try:
            delta = json.loads(payload)["choices"][0]["delta"]
        except (ValueError, KeyError, IndexError, TypeError, RecursionError):
            return
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(content, str) and self._parts is not None:
            self._parts.append(content)

    def _take_usage(self, event: bytes, payload: bytes, terminator: bytes) -> bytes:
        try:
            data = json.loads(payload)
        except (ValueError, RecursionError):
            return event
        if not isinstance(data, dict) or not isinstance(data.get("usage"), dict):
            return event
        self.usage = usage_from(data["usage"], "prompt_tokens", "completion_tokens")
        if self._wants_usage:
            return event
        if not data.get("choices"):
            return b""  # the usage-only chunk the client did not ask for
        data["usage"] = None
        return b"data: " + json.dumps(data, separators=(",", ":")).encode() + terminator


def _data_of(event: bytes) -> bytes | None:
    """The joined `data:` lines of an SSE event, or None if it has none."""
    if event.startswith(b"data: ") and b"\ndata:" not in event and b"\rdata:" not in event:
        return event[6:].rstrip(b"\r\n")
    lines = [line for line in _LINE_END.split(event) if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(line[6:] if line.startswith(b"data: ") else line[5:] for line in lines)


def _is_error(payload: bytes) -> bool:
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("error") is not None
