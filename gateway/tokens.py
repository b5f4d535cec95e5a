"""Token counts for `POST /v1/messages/count_tokens`: the version's prompt counted with the app's.

The call is routed like a Messages call (deployment, user, version) and
injected the same way (the version's system prompt and few-shot messages;
its sampling params are not fields of a count), then:

- a version on an `anthropic` provider is counted by the provider itself
  (`POST /v1/messages/count_tokens`), exactly;
- a version on an OpenAI-compatible provider gets an **estimate** from
  tiktoken: the chat request the call would become (the version's prompt
  and few-shot messages included) in the encoding of the version's model
  (`o200k_base` for current OpenAI models and any model tiktoken does not
  know, `cl100k_base` for GPT-4 and GPT-3.5), plus OpenAI's documented
  framing of 3 tokens per message and 3 for the answer's start, the tools'
  JSON, and 85 tokens per image or file (a low-detail image's price). Other
  providers' models tokenise differently: it is an estimate, not a bill.

tiktoken reads its encoding files from the network on first use (or from
`TIKTOKEN_CACHE_DIR`); that happens in a worker thread, never on the event
loop. tiktoken itself is imported there too, on the first estimate: a
gateway that never estimates does not hold it (1.3 MB of RSS). Where it
cannot (an air-gapped host without the cache), the estimate falls back to 4
characters per token, logged once.

A count is not a request record (nothing was generated), but it is counted
in `canary_token_counts_total{deployment,version,source,status}`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from gateway.errors import GatewayError, NotFound, UpstreamBadResponse
from gateway.inbound import InboundRequest, content_text
from gateway.metrics import Metrics
from gateway.models import Version
from gateway.prompts import build_messages_body, build_upstream_body
from gateway.providers.anthropic import AnthropicProvider
from gateway.relay import loop_deadline
from gateway.routing import choose_version
from gateway.snapshot import Snapshot
from gateway.translators.messages_chat import chat_view
from gateway.upstream import UpstreamClient

log = logging.getLogger("gateway.tokens")

# OpenAI's framing of a chat request (openai-cookbook "How to count tokens with tiktoken").
TOKENS_PER_MESSAGE = 3
TOKENS_FOR_REPLY = 3
TOKENS_PER_ATTACHMENT = 85
CHARS_PER_TOKEN = 4
DEFAULT_ENCODING = "o200k_base"


class Encoding(Protocol):
    """What the estimate needs of a tokenizer (`tiktoken.Encoding` is one)."""

    def encode_ordinary(self, text: str) -> list[int]: ...


@dataclass(frozen=True, slots=True)
class Counted:
    """A count and what it was made for: `source` is `upstream` (exact) or `estimate` (tiktoken)."""

    deployment: str
    version: str
    input_tokens: int
    source: Literal["upstream", "estimate"]


def tiktoken_encoding(name: str) -> Encoding:
    """tiktoken's encoding `name` (blocking: may import tiktoken, read the network or `TIKTOKEN_CACHE_DIR`)."""
    import tiktoken

    return tiktoken.get_encoding(name)


def encoding_name(model: str) -> str:
    """The tiktoken encoding of an OpenAI model name (`gpt-4o` → o200k_base, `gpt-4` → cl100k_base); the
    default for a model tiktoken does not know. Blocking the first time (imports tiktoken)."""
    import tiktoken.model

    try:
        return tiktoken.model.encoding_name_for_model(model.rsplit("/", 1)[-1])
    except KeyError:
        return DEFAULT_ENCODING


class Encodings:
    """tiktoken encodings by name, each loaded once by `load` (blocking: call from a worker thread).

    One that cannot be loaded is None from then on (the estimate counts
    characters instead), logged once.
    """

    def __init__(self, load: Callable[[str], Encoding] = tiktoken_encoding) -> None:
        self._load = load
        self._loaded: dict[str, Encoding | None] = {}

    def get(self, name: str) -> Encoding | None:
        if name not in self._loaded:
            started = time.perf_counter()
            try:
                self._loaded[name] = self._load(name)
            except Exception as exc:  # noqa: BLE001 - whatever failed, the estimate counts characters
                log.warning("tiktoken encoding %s could not be loaded (%s); token counts are estimated at %d "
                            "characters per token", name, type(exc).__name__, CHARS_PER_TOKEN)
                self._loaded[name] = None
            else:
                log.info("tiktoken encoding %s loaded in %.1f s", name, time.perf_counter() - started)
        return self._loaded[name]


def estimate_tokens(version: Version, body: Mapping[str, Any], encoding: Encoding | None) -> int:
    """The estimated input tokens of Messages request `body` served by `version` on a chat-completions provider.

    Counts the chat request the call becomes (`messages_chat.chat_view`,
    injected by `prompts.build_upstream_body`): every message's text and
    tool calls, the tools' JSON, in `encoding` (None: 4 characters per
    token), plus OpenAI's framing (TOKENS_PER_MESSAGE, TOKENS_FOR_REPLY) and
    TOKENS_PER_ATTACHMENT per image or file.
    """
    chat = build_upstream_body(version, chat_view(body), stream=False)
    texts: list[str] = []
    attachments = 0
    for message in chat["messages"]:
        content = message.get("content")
        texts.append(content_text(content))
        if isinstance(content, list):
            attachments += sum(1 for part in content if isinstance(part, dict) and part.get("type") != "text")
        for call in message.get("tool_calls") or []:
            texts.append(json.dumps(call.get("function")))
    if body.get("tools"):
        texts.append(json.dumps(body["tools"]))
    framing = TOKENS_PER_MESSAGE * len(chat["messages"]) + TOKENS_FOR_REPLY + TOKENS_PER_ATTACHMENT * attachments
    if encoding is None:
        return framing + sum(math.ceil(len(text) / CHARS_PER_TOKEN) for text in texts)
    return framing + sum(len(encoding.encode_ordinary(text)) for text in texts)


class TokenCounter:
    """Counts the input tokens of a Messages request for the version that would serve it.

    `encodings` is a parameter so tests can give a tokenizer without the network.
    """

    def __init__(
        self,
        *,
        snapshot: Snapshot,
        clients: Mapping[str, UpstreamClient],
        metrics: Metrics,
        encodings: Encodings | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._clients = clients
        self._metrics = metrics
        self._encodings = encodings or Encodings()

    async def count(self, inbound: InboundRequest, *, received: float) -> Counted:
        """The count for `inbound` (a parsed count_tokens call).

        Raises NotFound for an unknown deployment, UpstreamError when the
        provider's own count fails (its refusals relayed as for any call).
        """
        deployment = self._snapshot.deployments.get(inbound.model)
        if deployment is None:
            raise NotFound(f"The model (deployment) '{inbound.model[:200]}' does not exist", param="model",
                           code="model_not_found")
        version = deployment.versions.get(choose_version(deployment, inbound.user))
        client = self._clients.get(version.provider) if version is not None else None
        if version is None or client is None:
            raise UpstreamBadResponse(f"deployment '{deployment.name}' has no usable version right now")
        provider = client.provider
        source: Literal["upstream", "estimate"] = "upstream" if isinstance(provider, AnthropicProvider) else \
            "estimate"
        try:
            if isinstance(provider, AnthropicProvider):
                tokens = await self._upstream(client, provider, version, inbound.body, received)
            else:
                tokens = await asyncio.to_thread(self._estimate, version, inbound.body)
        except GatewayError:
            self._metrics.token_counts.labels(deployment.name, version.name, source, "error").inc()
            raise
        self._metrics.token_counts.labels(deployment.name, version.name, source, "ok").inc()
        return Counted(deployment=deployment.name, version=version.name, input_tokens=tokens, source=source)

    async def _upstream(self, client: UpstreamClient, provider: AnthropicProvider, version: Version,
                        body: dict[str, Any], received: float) -> int:
        request = provider.count_tokens_request(build_messages_body(version, body, stream=False, params=False))
        deadline = loop_deadline(received, client.settings.timeout_s)
        response = await client.send(request, stream=False, deadline=deadline)
        try:
            answer = json.loads(response.content)
        except (ValueError, RecursionError):
            answer = None
        finally:
            await response.aclose()
        tokens = answer.get("input_tokens") if isinstance(answer, dict) else None
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise UpstreamBadResponse(f"upstream provider '{provider.name}' answered a token count without "
                                      "'input_tokens'")
        return tokens

    def _estimate(self, version: Version, body: dict[str, Any]) -> int:
        """Blocking (tokenising, perhaps loading an encoding): run in a worker thread."""
        return estimate_tokens(version, body, self._encodings.get(encoding_name(version.model)))
