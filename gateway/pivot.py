"""Pure: how a call in each inbound API reaches a provider of each wire API.

OpenAI chat completions is the pivot (as LiteLLM does): every provider
translates chat completions to its wire (`Provider.build_request`), and every
other inbound API translates to chat completions. A call whose inbound API is
the provider's own wire skips both translations and goes **native**: its body
is injected in its own format and sent as it is, its answer and stream come
back unchanged (`Provider.build_native_request`, `parse_native_answer`,
`native_stream_relay`).

| inbound API \\ provider wire | `chat_completions` | `responses` | `messages` |
|---|---|---|---|
| `chat` | native | pivot (chat → Responses in the provider) | pivot (chat → Messages in the provider) |
| `responses` | pivot (Responses → chat here) | native | pivot (Responses → chat → Messages) |
| `messages` | pivot (Messages → chat here) | pivot (Messages → chat → Responses) | native |

Each inbound API is a `Surface` in `SURFACES`: its native wire, its prompt
injection in its own format, its translation to chat (strict: what cannot be
translated is refused by name, never dropped) and a tolerant chat view of a
native request for the evaluators. The relay calls `upstream_body` once per
call, after the version is chosen: whether a call is native depends on the
version's provider.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.inbound import InboundApi
from gateway.models import Version, WireApi
from gateway.prompts import build_messages_body, build_responses_body, build_upstream_body
from gateway.translators import messages_chat, responses_chat

Body = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Surface:
    """What the relay needs to know of one inbound API.

    - `wire`: the wire API a provider must speak for a call to go native;
    - `inject(version, body, stream=...)`: the upstream body of a native call,
      the version's prompt, examples, model and params applied in the API's own
      format (a new body; `body` is not modified);
    - `to_chat(body)`: the request as a chat-completions body for the pivot;
      raises InvalidRequest naming the first field it cannot translate;
    - `chat_view(body)`: a native upstream body read as a chat-completions body
      (`messages`, `response_format`) for the evaluators and the judge; never
      raises, leaves out what has no chat form.
    """

    wire: WireApi
    inject: Callable[..., Body]
    to_chat: Callable[[Body], Body]
    chat_view: Callable[[Body], Body]


def _same(body: Body) -> Body:
    return body


SURFACES: Mapping[InboundApi, Surface] = {
    "chat": Surface(wire="chat_completions", inject=build_upstream_body, to_chat=_same, chat_view=_same),
    "messages": Surface(wire="messages", inject=build_messages_body, to_chat=messages_chat.to_chat_request,
                        chat_view=messages_chat.chat_view),
    "responses": Surface(wire="responses", inject=build_responses_body, to_chat=responses_chat.to_chat_request,
                         chat_view=responses_chat.chat_view),
}


@dataclass(frozen=True, slots=True)
class Prepared:
    """The upstream body of a call, and whether it goes native (in the inbound API's format) or through the pivot."""

    body: Body
    native: bool


def upstream_body(api: InboundApi, version: Version, body: Body, *, stream: bool, wire: WireApi) -> Prepared:
    """The body to send for a call of inbound `api` served by `version` on a provider speaking `wire`.

    Native when `wire` is the API's own: injected in its format. Otherwise
    translated to chat completions, then injected there (`gateway.prompts`).
    Raises InvalidRequest (naming the field) for what the pivot cannot carry.
    """
    surface = SURFACES[api]
    if surface.wire == wire:
        return Prepared(surface.inject(version, body, stream=stream), native=True)
    return Prepared(build_upstream_body(version, surface.to_chat(body), stream=stream), native=False)


def chat_view(api: InboundApi, body: Body, *, native: bool) -> Body:
    """The upstream body of a call as chat completions, for the evaluators: the pivot's body is already one."""
    return SURFACES[api].chat_view(body) if native else body
