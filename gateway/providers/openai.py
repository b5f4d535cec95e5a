"""OpenAI-compatible chat completions (OpenAI, DeepSeek, vLLM, Ollama, ...).

Answers are relayed byte for byte; the gateway only reads them for usage.
Streams are relayed event by event: an SSE event is forwarded as soon as its
terminating blank line has arrived, unchanged, except the usage the gateway
asked for on the client's behalf, which a client that did not ask never sees.
Requests are adapted to the upstream model's family (`gateway.families`:
`max_tokens` → `max_completion_tokens` for reasoning models, parameters the
family refuses removed with a debug log).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from gateway.errors import UpstreamBadResponse, UpstreamStatusError
from gateway.families import Family, adapt, openai_family
from gateway.models import Usage, WireApi
from gateway.providers.base import (
    Answer,
    Provider,
    StreamTranslator,
    UpstreamRequest,
    data_of,
    error_body,
    usage_from,
)

log = logging.getLogger("gateway.providers")

class OpenAIProvider(Provider):
    """Wire `chat_completions`, the pivot's own format: a chat call here is native, and the
    native methods are the pivot's."""

    wire: WireApi = "chat_completions"

    def __init__(
        self,
        name: str,
        *,
        api_key: str,
        headers: Mapping[str, str] | None = None,
        stream_options: bool = True,
    ) -> None:
        super().__init__(name, api_key=api_key, headers=headers)
        # False: the upstream refuses `stream_options`, so it is never sent.
        self._stream_options = stream_options
        # Upstream model → its family; versions use a handful of models.
        self._families: dict[str, Family] = {}

    def build_request(self, body: dict[str, Any], *, stream: bool) -> UpstreamRequest:
        if not self._stream_options and "stream_options" in body:
            body = {key: value for key, value in body.items() if key != "stream_options"}
        body = self.for_family(body)
        headers = {**self.json_headers(stream=stream), **self.auth_headers()}
        return UpstreamRequest(
            path="/chat/completions",
            headers=headers,
            content=json.dumps(body, separators=(",", ":")).encode(),
        )

    def for_family(self, body: dict[str, Any]) -> dict[str, Any]:
        """`body` adapted to its model's family (`gateway.families`), each removed parameter logged at debug level.

        Works on chat-completions and Responses bodies alike: the names a
        family renames or removes are the same in both where both have them.
        """
        family = self._families.get(body["model"])
        if family is None:
            family = self._families[body["model"]] = openai_family(body["model"])
        body, removed = adapt(body, family)
        if removed:
            log.debug("removed %s: not supported by model %r (family %s)", ", ".join(removed), body["model"],
                      family.name)
        return body

    def auth_headers(self) -> dict[str, str]:
        """OpenAI's bearer token (none for a keyless local server)."""
        return {"authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def parse_answer(self, content: bytes) -> Answer:
        try:
            data = json.loads(content)
        except (ValueError, RecursionError) as exc:
            raise UpstreamBadResponse("upstream answered with a body that is not JSON") from exc
        if isinstance(data, dict) and not isinstance(data.get("choices"), list) and data.get("error"):
            raise self.embedded_error(content)
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise UpstreamBadResponse("upstream answered with JSON that is not a chat completion")
        return Answer(content=content, usage=openai_usage(data.get("usage")))

    def answer_text(self, content: bytes) -> str | None:
        try:
            message = json.loads(content)["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError, RecursionError):
            return None
        text = message.get("content") if isinstance(message, dict) else None
        return text if isinstance(text, str) else None

    def stream_translator(self, *, wants_usage: bool, collect: bool = False) -> StreamTranslator:
        return OpenAIStreamRelay(wants_usage=wants_usage, collect=collect)

    def build_native_request(self, body: dict[str, Any], *, stream: bool) -> UpstreamRequest:
        return self.build_request(body, stream=stream)

    def parse_native_answer(self, content: bytes) -> Answer:
        return self.parse_answer(content)

    def native_stream_relay(self, *, wants_usage: bool, collect: bool = False) -> StreamTranslator:
        return self.stream_translator(wants_usage=wants_usage, collect=collect)

    def error_from(self, status: int, content: bytes, headers: Mapping[str, str]) -> UpstreamStatusError:
        error = error_body(content, status)
        return self.status_error(
            status, error.message, error_type=error.type, code=error.code, retry_after=headers.get("retry-after"),
            param=error.param, headers=self.relayed_headers(headers),
        )


class OpenAIStreamRelay(StreamTranslator):
    def __init__(self, *, wants_usage: bool, collect: bool = False) -> None:
        super().__init__(collect=collect)
        self._wants_usage = wants_usage

    def _event(self, event: bytes, terminator: bytes) -> bytes:
        payload = data_of(event)
        if payload is None:
            return event  # comments, keep-alives, retry hints
        if payload == b"[DONE]":
            self.done = True
            return event
        if b'"usage"' in payload and b'"usage":null' not in payload and b'"usage": null' not in payload:
            event = self._take_usage(event, payload, terminator)
        elif b'"error"' in payload and _is_error(payload):
            self.error_kind = "stream_error"
        if self._assembly is not None and event:
            self._collect_chunk(payload)
        if event and not self.started:
            self.started = True
        return event

    def _collect_chunk(self, payload: bytes) -> None:
        try:
            data = json.loads(payload)
        except (ValueError, RecursionError):
            return
        if isinstance(data, dict):
            self._collect(data)

    def _take_usage(self, event: bytes, payload: bytes, terminator: bytes) -> bytes:
        try:
            data = json.loads(payload)
        except (ValueError, RecursionError):
            return event
        if not isinstance(data, dict) or not isinstance(data.get("usage"), dict):
            return event
        self.usage = openai_usage(data["usage"])
        if self._wants_usage:
            return event
        if not data.get("choices"):
            return b""  # the usage-only chunk the client did not ask for
        data["usage"] = None
        return b"data: " + json.dumps(data, separators=(",", ":")).encode() + terminator


def openai_usage(data: object) -> Usage:
    """Token usage from OpenAI's `usage` object (`CompletionUsage` in openai-python), cached prompt tokens included.

    Anything malformed becomes None (never an error).
    """
    usage = usage_from(data, "prompt_tokens", "completion_tokens")
    details = data.get("prompt_tokens_details") if isinstance(data, dict) else None
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if isinstance(cached, int) and not isinstance(cached, bool) and cached >= 0:
        return Usage(usage.prompt_tokens, usage.completion_tokens, cache_read_tokens=cached)
    return usage


def _is_error(payload: bytes) -> bool:
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("error") is not None
