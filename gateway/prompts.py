"""Pure prompt injection: a version + the app's request → the upstream request body.

The version's system prompt, few-shot messages, model and params win over the
app's; parameters the app sent and the version does not set pass through. A
version's param set to null removes the app's parameter of that name, and
a version setting one of `max_tokens` / `max_completion_tokens` replaces the
app's value of either (they are two names of one limit).

System prompt modes:
- `replace`: the app's system (and developer) messages are dropped, the
  version's prompt is the only system message;
- `prepend`: one system message, the version's prompt followed by the app's;
- `append`: one system message, the app's followed by the version's prompt.

The combined system message is one string (the prompts joined by blank
lines) unless one of the app's system messages came as content parts: then
it is a list of parts, the version's prompt as a text part of its own and the
app's parts as they came, so that what the parts carry (`cache_control`
marks, which the Anthropic translation keeps) survives the injection. A
system message's own `cache_control` moves onto its last part for the same
reason.

The result is `[system?] + few_shot + the app's other messages`.

`build_messages_body` does the same for an Anthropic Messages request that
goes natively to an Anthropic provider: the prompt goes into `system` by the
same modes (a block list keeps the app's blocks, `cache_control` included),
the few-shot messages before the app's, and the version's params as the
Messages fields a chat call to that provider gets them as
(`providers.anthropic.native_params`).

`build_responses_body` does the same for an OpenAI Responses request sent
natively: the combined system prompt is its `instructions` (the app's
`instructions` and its system/developer input items are the app's system
prompts), the few-shot messages are input items before the app's, and the
version's params are applied under their Responses names:
`max_tokens` / `max_completion_tokens` → `max_output_tokens`,
`response_format` → `text.format`, `verbosity` → `text.verbosity`,
`reasoning_effort` → `reasoning.effort`. Chat parameters the Responses API
has no field for (`stop`, `seed`, `n`, the penalties, `logit_bias`,
`logprobs`, audio, `prediction`, `web_search_options`, `functions`) are not
sent on a native call (logged at debug level).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from gateway.inbound import content_text
from gateway.models import Version
from gateway.providers.anthropic import native_params
from gateway.translators.chat_responses import text_format_of

log = logging.getLogger("gateway.prompts")

_SYSTEM_ROLES = ("system", "developer")
_TOKEN_LIMITS = {"max_tokens": "max_completion_tokens", "max_completion_tokens": "max_tokens"}


def build_upstream_body(version: Version, body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    """A new body for the upstream; `body` is not modified."""
    app_system: list[Any] = []
    conversation: list[Any] = []
    for message in body["messages"]:
        if message.get("role") in _SYSTEM_ROLES:
            app_system.append(_system_content(message))
        else:
            conversation.append(message)

    system = _combine(version.system_prompt, app_system, version.prompt_mode)
    messages: list[Any] = [{"role": "system", "content": system}] if system else []
    messages.extend({"role": shot["role"], "content": shot["content"]} for shot in version.few_shot)
    messages.extend(conversation)

    upstream = {**body, **version.params, "model": version.model, "messages": messages}
    if version.params:
        for name, value in version.params.items():
            if value is None:
                del upstream[name]
            elif name in _TOKEN_LIMITS:
                other = _TOKEN_LIMITS[name]
                if other not in version.params:
                    upstream.pop(other, None)
    if stream:
        # Always ask for usage so the record has token counts; the relay hides
        # the usage chunk from a client that did not ask for it.
        options = dict(body.get("stream_options") or {})
        options["include_usage"] = True
        upstream["stream"] = True
        upstream["stream_options"] = options
    else:
        upstream.pop("stream_options", None)
    return upstream


# A version's chat-named params under their Responses name (nested ones as "parent.child").
_RESPONSES_NAMES = {"max_tokens": "max_output_tokens", "max_completion_tokens": "max_output_tokens",
                    "response_format": "text.format", "verbosity": "text.verbosity",
                    "reasoning_effort": "reasoning.effort"}
_CHAT_ONLY = frozenset({"stop", "seed", "n", "frequency_penalty", "presence_penalty", "logit_bias", "logprobs",
                        "audio", "modalities", "prediction", "web_search_options", "functions", "function_call",
                        "stream_options"})


def build_responses_body(version: Version, body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    """A new Responses request for the upstream (see the module docstring); `body` is not modified."""
    items = body.get("input")
    app_system: list[str] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        app_system.append(instructions)
    kept: Any = items
    if isinstance(items, list):
        kept = []
        for item in items:
            if isinstance(item, dict) and (item.get("type") or "message") == "message" and \
                    item.get("role") in _SYSTEM_ROLES:
                text = content_text(item.get("content"))
                if text:
                    app_system.append(text)
            else:
                kept.append(item)
    upstream = {**body, "model": version.model}
    shots = [{"role": shot["role"], "content": shot["content"]} for shot in version.few_shot]
    if shots or kept is not items:
        app_items = [{"role": "user", "content": kept}] if isinstance(kept, str) else list(kept or [])
        upstream["input"] = [*shots, *app_items]
    system = _combine(version.system_prompt, app_system, version.prompt_mode)
    if system:
        upstream["instructions"] = system
    else:
        upstream.pop("instructions", None)
    for name, value in version.params.items():
        if name in _CHAT_ONLY:
            log.debug("version %s: param %r has no Responses name; not sent natively", version.name, name)
            continue
        if name == "response_format" and value is not None:
            value = text_format_of(value)
        target = _RESPONSES_NAMES.get(name, name)
        parent, _, child = target.partition(".")
        if not child:
            if value is None:
                upstream.pop(parent, None)
            else:
                upstream[parent] = value
            continue
        nested = dict(upstream.get(parent) or {})
        if value is None:
            nested.pop(child, None)
        else:
            nested[child] = value
        upstream[parent] = nested
    if stream:
        upstream["stream"] = True
    return upstream


def _combine(version_prompt: str, app_contents: list[Any], mode: str) -> str | list[Any]:
    """The system message's content: a string, or a list of parts when the app sent parts (module docstring)."""
    if mode == "replace":
        return version_prompt
    if not any(isinstance(content, list) and content for content in app_contents):
        texts = [content_text(content) for content in app_contents]
        ordered = [version_prompt, *texts] if mode == "prepend" else [*texts, version_prompt]
        return "\n\n".join(text for text in ordered if text)
    app_parts = [part for content in app_contents for part in _parts(content)]
    own = [{"type": "text", "text": version_prompt}] if version_prompt else []
    return [*own, *app_parts] if mode == "prepend" else [*app_parts, *own]


def _system_content(message: dict[str, Any]) -> Any:
    """An app system message's content; a `cache_control` of the message moves onto its last part, so the
    merge into one system message keeps it."""
    content = message.get("content")
    mark = message.get("cache_control")
    if mark is None:
        return content
    parts = _parts(content)
    if parts and isinstance(parts[-1], dict):
        parts[-1] = {**parts[-1], "cache_control": mark}
    return parts


def _parts(content: object) -> list[Any]:
    """A system message's content as parts; empty texts left out (no upstream takes an empty text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        return []
    return [part for part in content
            if not (isinstance(part, dict) and part.get("type") == "text" and part.get("text") == "")]



# The Messages field a version's param set to null removes from the app's request (`max_tokens` stays:
# Anthropic requires one).
NATIVE_MESSAGES_REMOVALS: Mapping[str, str] = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "stop": "stop_sequences",
    "reasoning_effort": "thinking",
    "response_format": "output_config",
    "service_tier": "service_tier",
}


def build_messages_body(version: Version, body: dict[str, Any], *, stream: bool, params: bool = True
                        ) -> dict[str, Any]:
    """A new Anthropic Messages body for the upstream, `body` (the app's Messages request) injected; `body` is
    not modified.

    `system` by `version.prompt_mode`: `replace` sets the version's prompt
    (no `system` when it is empty); `prepend`/`append` join it with the
    app's: to a string with a blank line, to a block list as a text block of
    its own, so the app's blocks keep their `cache_control`. The few-shot
    messages go before the app's. The version's params become the Messages
    fields a chat call to the same provider gets them as (`native_params`:
    `reasoning_effort` → `thinking`, its budget added to `max_tokens`;
    `response_format` → `output_config`; `stop` → `stop_sequences`; `user` →
    `metadata.user_id`; ...); one set to null removes the app's field
    (NATIVE_MESSAGES_REMOVALS). `params=False` leaves them out (a token count
    takes no sampling fields).
    """
    upstream = {**body, "model": version.model}
    system = _messages_system(version.system_prompt, body.get("system"), version.prompt_mode)
    if system is None:
        upstream.pop("system", None)
    else:
        upstream["system"] = system
    if version.few_shot:
        upstream["messages"] = [
            *({"role": shot["role"], "content": shot["content"]} for shot in version.few_shot), *body["messages"]]
    if params and version.params:
        mapped, budget = native_params(version.params)
        for name, value in version.params.items():
            if value is None and name in NATIVE_MESSAGES_REMOVALS:
                upstream.pop(NATIVE_MESSAGES_REMOVALS[name], None)
        if isinstance(mapped.get("metadata"), dict) and isinstance(upstream.get("metadata"), dict):
            mapped["metadata"] = {**upstream["metadata"], **mapped["metadata"]}
        upstream.update(mapped)
        if budget and "max_tokens" not in mapped and isinstance(upstream.get("max_tokens"), int):
            upstream["max_tokens"] += budget
    if stream:
        upstream["stream"] = True
    return upstream


def _messages_system(version_prompt: str, app: object, mode: str) -> str | list[Any] | None:
    if mode == "replace" or app is None or app == "" or app == []:
        return version_prompt or None
    if not version_prompt:
        return app if isinstance(app, str | list) else None
    if isinstance(app, list):
        block = {"type": "text", "text": version_prompt}
        return [block, *app] if mode == "prepend" else [*app, block]
    parts = [version_prompt, str(app)] if mode == "prepend" else [str(app), version_prompt]
    return "\n\n".join(parts)
