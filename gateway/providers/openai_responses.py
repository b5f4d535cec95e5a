"""OpenAI's Responses API as a provider's wire (`api: responses` on a provider of kind `openai`).

Native calls (inbound `/v1/responses`): the injected body goes to
`/responses` as it is, but for what the model's family refuses
(`gateway.families`: `temperature`, `top_p` and `top_logprobs` for OpenAI's
reasoning models, so a canary can move from `gpt-4.1` to `o3` unchanged);
the answer's bytes come back unchanged and its usage (`input_tokens`,
`output_tokens`, `input_tokens_details.cached_tokens`) is read; the stream
is relayed event by event, unchanged, its usage read from
`response.completed` (or `response.incomplete`, `response.failed`), and its
answer reassembled for the evaluators. A stream cut before its last event
ends with a Responses `error` event.

Pivot calls (inbound chat completions): translated both ways by
`gateway.translators.chat_responses`, the stream into `chat.completion.chunk`
events ending in `data: [DONE]`, its usage chunk shown only to a client that
asked for it (`stream_options.include_usage`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway.errors import UpstreamBadResponse
from gateway.models import Usage, WireApi
from gateway.providers.base import Answer, StreamTranslator, UpstreamRequest, data_of, usage_from
from gateway.providers.openai import OpenAIProvider
from gateway.translators.chat_responses import ChatChunks, to_chat_completion, to_responses_request

# Responses stream events after which nothing more comes.
_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})
# How OpenAI starts each event's data: its type first, read without parsing the JSON.
_TYPE_FIRST, _TYPE_FIRST_SPACED = b'{"type":"', b'{"type": "'


class OpenAIResponsesProvider(OpenAIProvider):
    """Wire `responses`: native for `/v1/responses` calls, translated for chat-completions calls."""

    wire: WireApi = "responses"

    def build_request(self, body: dict[str, Any], *, stream: bool) -> UpstreamRequest:
        return self.build_native_request(to_responses_request(self.for_family(body)), stream=stream)

    def parse_answer(self, content: bytes) -> Answer:
        response = self._response(content)
        completion = to_chat_completion(response)
        return Answer(content=json.dumps(completion, separators=(",", ":")).encode(),
                      usage=responses_usage(response.get("usage")))

    def answer_text(self, content: bytes) -> str | None:
        try:
            text = json.loads(content)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError, RecursionError):
            return None
        return text if isinstance(text, str) else None

    def stream_translator(self, *, wants_usage: bool, collect: bool = False) -> StreamTranslator:
        return ResponsesChatStream(wants_usage=wants_usage, collect=collect)

    def build_native_request(self, body: dict[str, Any], *, stream: bool) -> UpstreamRequest:
        headers = {**self.json_headers(stream=stream), **self.auth_headers()}
        return UpstreamRequest(path="/responses", headers=headers,
                               content=json.dumps(self.for_family(body), separators=(",", ":")).encode())

    def parse_native_answer(self, content: bytes) -> Answer:
        response = self._response(content)
        return Answer(content=content, usage=responses_usage(response.get("usage")),
                      read_choices=lambda: to_chat_completion(response)["choices"])

    def native_stream_relay(self, *, wants_usage: bool, collect: bool = False) -> StreamTranslator:
        return ResponsesStreamRelay(collect=collect)

    def _response(self, content: bytes) -> dict[str, Any]:
        try:
            data = json.loads(content)
        except (ValueError, RecursionError) as exc:
            raise UpstreamBadResponse("upstream answered with a body that is not JSON") from exc
        if isinstance(data, dict) and not isinstance(data.get("output"), list) and data.get("error"):
            raise self.embedded_error(content)
        if not isinstance(data, dict) or not isinstance(data.get("output"), list):
            raise UpstreamBadResponse("upstream answered with JSON that is not a Responses response")
        return data


def responses_usage(data: object) -> Usage:
    """Token usage from a Responses `usage` object (`ResponseUsage` in openai-python), cached input tokens included.

    Anything malformed becomes None (never an error).
    """
    usage = usage_from(data, "input_tokens", "output_tokens")
    details = data.get("input_tokens_details") if isinstance(data, dict) else None
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if isinstance(cached, int) and not isinstance(cached, bool) and cached >= 0:
        return Usage(usage.prompt_tokens, usage.completion_tokens, cache_read_tokens=cached)
    return usage


def _leading_type(payload: bytes) -> str | None:
    """The event's type when its data starts with it (as OpenAI writes them); None: the JSON must be read."""
    if payload.startswith(_TYPE_FIRST):
        start = len(_TYPE_FIRST)
    elif payload.startswith(_TYPE_FIRST_SPACED):
        start = len(_TYPE_FIRST_SPACED)
    else:
        return None
    end = payload.find(b'"', start)
    return payload[start:end].decode("ascii", "replace") if end > 0 else None


def _decoded(payload: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


class ResponsesStreamRelay(StreamTranslator):
    """A native Responses stream: every event relayed as it came; usage, end and errors read on the way."""

    def __init__(self, *, collect: bool = False) -> None:
        super().__init__(collect=collect)
        self._chunks = ChatChunks() if collect else None
        # Events relayed so far: OpenAI numbers them from 0, so the next `sequence_number` is this count.
        self._relayed = 0

    def _event(self, event: bytes, terminator: bytes) -> bytes:
        payload = data_of(event)
        if payload is None:
            return event
        self.started = True
        self._relayed += 1
        kind = _leading_type(payload)
        if kind is None or kind in _TERMINAL or self._chunks is not None:
            data = _decoded(payload)
            if data is not None:
                self._read(data)
        return event

    def _read(self, data: Mapping[str, Any]) -> None:
        kind = data.get("type")
        if kind in _TERMINAL:
            self.done = True
            response = data.get("response")
            if isinstance(response, dict):
                self.usage = responses_usage(response.get("usage"))
            if kind in ("error", "response.failed"):
                self.error_kind = "stream_error"
        if self._chunks is not None:
            for chunk in self._chunks.event(data):
                self._collect(chunk)

    def error_event(self, message: str, code: str) -> bytes:
        """A Responses `error` event (`ResponseErrorEvent`), numbered after the last event relayed."""
        payload = {"type": "error", "code": code, "message": message, "param": None,
                   "sequence_number": self._relayed}
        self._relayed += 1
        return b"event: error\ndata: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class ResponsesChatStream(StreamTranslator):
    """A Responses stream as `chat.completion.chunk` events for a chat-completions client."""

    def __init__(self, *, wants_usage: bool, collect: bool = False) -> None:
        super().__init__(collect=collect)
        self._wants_usage = wants_usage
        self._chunks = ChatChunks()

    def _event(self, event: bytes, terminator: bytes) -> bytes:
        payload = data_of(event)
        data = _decoded(payload) if payload is not None else None
        if data is None:
            return b""
        out: list[bytes] = []
        for chunk in self._chunks.event(data):
            if chunk.get("usage") is not None:
                self.usage = responses_usage(self._chunks.usage)
                if not self._wants_usage:
                    continue
            self._collect(chunk)
            out.append(b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n")
        if self._chunks.error is not None and not self.done:
            self.done = True
            self.error_kind = "stream_error"
            message, code = self._chunks.error
            out.append(self.error_event(message, code))
        elif self._chunks.done and not self.done:
            self.done = True
            if self._chunks.usage is not None:
                self.usage = responses_usage(self._chunks.usage)
            out.append(b"data: [DONE]\n\n")
        if out:
            self.started = True
        return b"".join(out)
