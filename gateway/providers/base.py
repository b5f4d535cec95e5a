"""The interface every wire format implements.

A provider speaks one wire API (`Provider.wire`: `chat_completions`,
`responses` or `messages`) and has two ways in:

- the pivot: it turns the OpenAI chat-completions body the gateway built into
  the upstream's request (`build_request`), the upstream's answer back into a
  `chat.completion` (`parse_answer`), and its stream into
  `chat.completion.chunk` events (`stream_translator`);
- the native path, for a call whose inbound API is the provider's own wire
  (`gateway.pivot` decides): the body, already injected in that format, goes
  upstream as it is (`build_native_request`), the answer comes back unchanged
  with its usage read (`parse_native_answer`), and the stream is relayed event
  by event while its usage and answer are read (`native_stream_relay`).

It also maps the upstream's error answers. It does no I/O: sending,
deadlines and retries belong to `gateway.upstream`.

Why one module over 400 lines: it is the provider contract (both paths' abstract
methods with their wire-format sources) and the helpers every provider shares
to honour it (error bodies, usage readers, SSE framing); split, each provider
would import from several places to implement one interface.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import UpstreamRefused, UpstreamStatusError
from gateway.models import Usage, WireApi
from gateway.providers.assembly import ChunkAssembly, completion_choices

_KEY_LIKE = re.compile(r"\b(sk-[A-Za-z0-9_\-*]{6,}|sk-ant-[A-Za-z0-9_\-*]{6,})")
# The client-facing status for an upstream error status; anything else is 502.
# The provider's statuses that mean the caller's request is refused, relayed as they are.
_CALLERS_FAULT = frozenset({400, 413, 422, 429})


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """One call to send: `path` (with any query string) is appended to the provider's base URL.

    `fixed_path` says the path is one of a few the gateway builds itself, so
    its parsed URL may be cached; pass-through paths come from clients and are not.
    """

    path: str
    headers: Mapping[str, str]
    content: bytes
    method: str = "POST"
    fixed_path: bool = True


@dataclass(frozen=True, slots=True)
class Answer:
    """A complete answer ready for the client, with the upstream headers it relays.

    `content` is a `chat.completion` on the pivot, or the upstream's own bytes
    on the native path; then `choices` holds the same answer read as
    chat-completion choices (`{"index", "message", "finish_reason"}`) for the
    evaluators, which read chat, or `read_choices` reads them when asked (a
    conversion only sampled and shadowed calls pay for). `chat_choices()`
    gives them whichever way they come.
    """

    content: bytes
    usage: Usage
    headers: Mapping[str, str] = field(default_factory=dict)
    choices: list[dict[str, Any]] | None = None
    read_choices: Callable[[], list[dict[str, Any]]] | None = None

    def chat_choices(self) -> list[dict[str, Any]]:
        """The answer as chat-completion choices; [] when it has none."""
        if self.choices is not None:
            return self.choices
        if self.read_choices is not None:
            return self.read_choices()
        return completion_choices(self.content)


class StreamTranslator(ABC):
    """Incremental, per-call translation of an upstream SSE stream into OpenAI SSE bytes.

    `feed` gets raw upstream bytes in arbitrary pieces and returns the bytes to
    send to the client now (possibly empty): every complete SSE event goes to
    `_event` as soon as its terminating blank line has arrived. `finish` is
    called once the upstream stream ends and returns the closing bytes; if the
    stream ended before its terminator, they end in an SSE error event and
    `error_kind` is set.
    """

    usage: Usage = Usage()
    # Set once the first event carrying an answer has been produced.
    started: bool = False
    error_kind: str | None = None
    # The choices the client was sent, reassembled once the stream ends, when asked for (`collect`).
    choices: list[dict[str, Any]] | None = None
    # Set by the subclass when the upstream's end-of-stream marker arrived.
    done: bool = False

    def __init__(self, *, collect: bool = False) -> None:
        self._buffer = b""
        self._assembly: ChunkAssembly | None = ChunkAssembly() if collect else None

    def feed(self, chunk: bytes) -> bytes:
        """Bytes for the client for `chunk`, raw bytes of the upstream's SSE stream.

        Events may be split across chunks: a partial event is held until its end
        arrives. Returns b"" when nothing is complete yet.
        """
        buffer = self._buffer + chunk if self._buffer else chunk
        out: list[bytes] = []
        start = 0
        while match := EVENT_END.search(buffer, start):
            relayed = self._event(buffer[start : match.end()], buffer[match.start() : match.end()])
            start = match.end()
            if relayed:
                out.append(relayed)
        self._buffer = buffer[start:]
        return b"".join(out)

    def finish(self) -> bytes:
        """The tail for the client once the upstream stream ended.

        An event left without its final blank line is judged as sent; a stream
        that ended before its end marker yields an SSE error event (and
        `error_kind` says so).
        """
        tail = b""
        if self._buffer.strip():
            # The upstream ended without the final blank line; judge what it sent.
            tail = self._event(self._buffer + b"\n\n", b"\n\n")
            self._buffer = b""
        if self._assembly is not None:
            self.choices = self._assembly.choices()
        if self.done:
            return tail
        self.error_kind = self.error_kind or "stream_truncated"
        return tail + self.error_event("the upstream stream ended before it was complete", "stream_truncated")

    def error_event(self, message: str, code: str) -> bytes:
        """The final event that tells the client the stream failed, in the format the client reads.

        The pivot's is OpenAI's `data: {"error": ...}` (`sse_error_event`);
        a native relay answers in its own wire's error event.
        """
        return sse_error_event(message, code)

    def _collect(self, chunk: Mapping[str, Any]) -> None:
        """Count one `chat.completion.chunk` sent to the client into the reassembled answer."""
        if self._assembly is not None:
            self._assembly.add(chunk)

    @abstractmethod
    def _event(self, event: bytes, terminator: bytes) -> bytes:
        """Bytes for the client for one complete upstream event (with its terminator)."""


# An SSE event ends at the first empty line, whatever the line endings.
EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r|\r\n\n|\n\r\n")
_LINE_END = re.compile(rb"\r\n|\n|\r")


def data_of(event: bytes) -> bytes | None:
    """The joined `data:` lines of an SSE event, or None if it has none."""
    if event.startswith(b"data: ") and b"\ndata:" not in event and b"\rdata:" not in event:
        return event[6:].rstrip(b"\r\n")
    # `event: <type>` then one data line, as the Responses and Messages APIs write every event.
    start = event.find(b"\ndata:")
    if (start > 0 and event.startswith(b"data: ", start + 1) and not event.startswith(b"data:")
            and b"\r" not in event and event.find(b"data:", start + 7) < 0):
        end = event.find(b"\n", start + 7)
        return event[start + 7 : end] if end >= 0 else event[start + 7 :]
    lines = [line for line in _LINE_END.split(event) if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(line[6:] if line.startswith(b"data: ") else line[5:] for line in lines)


class Provider(ABC):
    """One upstream wire format; holds no connection, only the provider's settings.

    `wire` is the API the provider speaks upstream. The pivot methods
    (`build_request`, `parse_answer`, `answer_text`, `stream_translator`) take
    and give OpenAI chat completions whatever the wire; the native methods take
    and give the wire's own format and are called only for calls whose
    inbound API is that wire (see `gateway.pivot`).
    """

    wire: WireApi = "chat_completions"

    def __init__(self, name: str, *, api_key: str, headers: Mapping[str, str] | None = None) -> None:
        self.name = name
        self._api_key = api_key
        self._extra_headers = dict(headers or {})

    @abstractmethod
    def build_request(self, body: dict[str, Any], *, stream: bool) -> UpstreamRequest:
        """The upstream call for `body`, an OpenAI chat-completions request body already injected.

        Returns the path (relative to the provider's base URL), headers and
        JSON bytes in the upstream's wire format (OpenAI: `CompletionCreateParams`
        of openai-python; Anthropic: `MessageCreateParams` of anthropic-sdk-python).
        `stream` asks for a server-sent-event answer. Raises InvalidRequest for a
        body the upstream's format cannot express.
        """

    def check_chat_messages(self, messages: list[Any]) -> None:
        """Refuse a message of a client's chat request that `build_request` could not translate.

        Called on the client's own `messages`, before the version's injection
        moves them, so that the InvalidRequest names the client's index
        (`messages[2].content[1].image_url.detail`). The default takes every
        message (a chat-completions upstream gets them as they are).
        """
        return None

    @abstractmethod
    def auth_headers(self) -> dict[str, str]:
        """The headers that carry the provider's key (and any the API requires on every call).

        Never logged; `scrub` removes the key from anything the upstream echoes.
        """

    @abstractmethod
    def parse_answer(self, content: bytes) -> Answer:
        """A complete (non-streamed) upstream answer as the client gets it.

        `content` is the upstream's JSON body; the `Answer` holds an OpenAI
        `chat.completion` (openai-python `types/chat/chat_completion.py`) as
        bytes, and its token usage. Raises UpstreamBadResponse when `content`
        is not a valid answer.
        """

    @abstractmethod
    def answer_text(self, content: bytes) -> str | None:
        """The text of the first choice of a complete upstream answer (`content`: its JSON body), for evaluation.

        None when the answer carries no text (a tool call only) or cannot be read.
        """

    @abstractmethod
    def stream_translator(self, *, wants_usage: bool, collect: bool = False) -> StreamTranslator:
        """A translator for one streamed call: upstream SSE bytes in, OpenAI `chat.completion.chunk` events out.

        `wants_usage`: the client asked for `stream_options.include_usage`, so
        the usage chunk is relayed (it is read either way). `collect`: also
        reassemble what the client is sent, for evaluation.
        """

    def build_native_request(self, body: dict[str, Any], *, stream: bool) -> UpstreamRequest:
        """The upstream call for `body`, a request already in this provider's wire format and injected.

        The body goes upstream as the client wrote it but for the injection
        (`gateway.pivot`). Raises InvalidRequest for a body the upstream would
        be sent in vain. Every provider whose `wire` is an inbound API's
        native format overrides this and the two methods below.
        """
        raise NotImplementedError(f"provider kind {type(self).__name__} takes no native {self.wire} calls")

    def parse_native_answer(self, content: bytes) -> Answer:
        """A complete upstream answer in the provider's wire format, for a client that speaks it.

        `Answer.content` is `content` unchanged; `usage` is read from it and
        `choices` holds it read as chat-completion choices, for the
        evaluators. Raises UpstreamBadResponse when `content` is not a valid
        answer, and the mapped error for an error inside a 200 answer.
        """
        raise NotImplementedError(f"provider kind {type(self).__name__} takes no native {self.wire} calls")

    def native_stream_relay(self, *, wants_usage: bool, collect: bool = False) -> StreamTranslator:
        """A relay for one native stream: upstream SSE events go to the client unchanged, event by event.

        It reads the usage (`StreamTranslator.usage`), marks `done` at the
        wire's end-of-stream event and `error_kind` at an error event, ends a
        truncated stream with the wire's own error event (`error_event`), and
        with `collect` reassembles the answer as chat-completion choices.
        `wants_usage`: the client asked for usage it would otherwise not be
        sent (chat's `stream_options.include_usage`); wires that always send
        usage ignore it.
        """
        raise NotImplementedError(f"provider kind {type(self).__name__} takes no native {self.wire} calls")

    @abstractmethod
    def error_from(self, status: int, content: bytes, headers: Mapping[str, str]) -> UpstreamStatusError:
        """The error to raise for an upstream answer with HTTP `status` (>= 400), its body and headers.

        UpstreamRefused when the caller is at fault (relayed), UpstreamOverloaded
        when the provider says it is overloaded, UpstreamStatusError otherwise;
        the message is scrubbed of keys (see `status_error`).
        """

    def json_headers(self, *, stream: bool) -> dict[str, str]:
        """Headers every JSON call sends; identity encoding keeps relayed bytes as they came."""
        return {
            **self._extra_headers,
            "content-type": "application/json",
            "accept": "text/event-stream" if stream else "application/json",
            "accept-encoding": "identity",
        }

    def scrub(self, text: str) -> str:
        """Remove the provider key, and anything shaped like one, from upstream text."""
        if self._api_key:
            text = text.replace(self._api_key, "[redacted]")
        return _KEY_LIKE.sub("[redacted]", text)

    def status_error(
        self,
        status: int | None,
        message: str,
        *,
        error_type: str | None = None,
        code: str | None = None,
        retry_after: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> UpstreamStatusError:
        """Classify an upstream error status; the message is scrubbed of keys and capped.

        The client's own mistakes (400, 413, 422) and rate limits (429) become
        UpstreamRefused, relayed with the provider's `error_type`, `code` and
        (on 429) `retry_after`, its `param` and the rate-limit `headers`
        (`relayed_headers`); anything else (the gateway's key refused, the
        version's model unknown, a server fault) is the operator's problem:
        an UpstreamStatusError whose message names the provider and status.
        `status` None: an error the upstream reported inside a 200 answer
        without saying which status it stands for.
        """
        if status in _CALLERS_FAULT:
            return UpstreamRefused(
                self.scrub(message)[:2000],
                upstream_status=status,
                error_type=error_type or "invalid_request_error",
                code=code,
                retry_after=retry_after if status == 429 else None,
                param=param,
                headers=headers,
            )
        said = f"answered HTTP {status}" if status is not None else "answered with an error"
        return UpstreamStatusError(
            self.scrub(f"upstream provider '{self.name}' {said}: {message}")[:2000],
            upstream_status=status or 502,
            code="upstream_error",
        )

    def embedded_error(self, content: bytes) -> UpstreamStatusError:
        """The error for a 200 answer whose body is an error (OpenRouter and other aggregators do this).

        The status the error stands for is its numeric `code` (OpenRouter's
        `{"error": {"code": 429, "message": ...}}`) or `status`; without one
        the client gets 502 with the upstream's message.
        """
        error = error_body(content, 200)
        return self.status_error(error.status, error.message, error_type=error.type, code=error.code,
                                 param=error.param)

    def relayed_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """The upstream response headers the client gets too: rate limits and retry hints.

        OpenAI's `x-ratelimit-*` and `retry-after-ms` (openai-python reads
        `retry-after-ms` before `retry-after` to time its retries). `headers`
        must have lower-case names (httpx's do).
        """
        return {name: value for name, value in headers.items()
                if name.startswith("x-ratelimit-") or name == "retry-after-ms"}


def usage_from(data: object, prompt_key: str, completion_key: str) -> Usage:
    """Tolerant usage extraction: anything malformed becomes None, never an error."""
    if not isinstance(data, dict):
        return Usage()
    prompt, completion = data.get(prompt_key), data.get(completion_key)
    return Usage(
        prompt_tokens=prompt if isinstance(prompt, int) and not isinstance(prompt, bool) and prompt >= 0 else None,
        completion_tokens=completion
        if isinstance(completion, int) and not isinstance(completion, bool) and completion >= 0
        else None,
    )


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """What an upstream's JSON error body says: both wire formats nest it under "error".

    `status` is the HTTP status an error embedded in a 200 answer stands for
    (a numeric `code` or a `status` between 400 and 599), else None.
    """

    message: str
    type: str | None = None
    code: str | None = None
    status: int | None = None
    param: str | None = None


def error_body(content: bytes, status: int) -> ErrorBody:
    """Tolerant: a body that is not the expected JSON still yields a message."""
    try:
        error = json.loads(content).get("error")
    except (ValueError, AttributeError, RecursionError):
        error = None
    if isinstance(error, str):
        return ErrorBody(message=error)
    if not isinstance(error, dict):
        return ErrorBody(message=f"HTTP {status}")

    def text(key: str) -> str | None:
        value = error.get(key)
        return value if isinstance(value, str) else None

    def http_status(key: str) -> int | None:
        value = error.get(key)
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        return value if isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599 else None

    return ErrorBody(
        message=str(error.get("message") or f"HTTP {status}"),
        type=text("type"),
        code=text("code"),
        status=http_status("code") or http_status("status"),
        param=text("param"),
    )


def sse_error_event(message: str, code: str) -> bytes:
    """A final SSE event that OpenAI's SDKs raise as an APIError."""
    payload = {"error": {"message": message, "type": "upstream_error", "code": code}}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"
