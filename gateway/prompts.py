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

The result is `[system?] + few_shot + the app's other messages`.
"""

from __future__ import annotations

from typing import Any

from gateway.inbound import content_text
from gateway.models import Version

_SYSTEM_ROLES = ("system", "developer")
_TOKEN_LIMITS = {"max_tokens": "max_completion_tokens", "max_completion_tokens": "max_tokens"}


def build_upstream_body(version: Version, body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    """A new body for the upstream; `body` is not modified."""
    app_system: list[str] = []
    conversation: list[Any] = []
    for message in body["messages"]:
        if message.get("role") in _SYSTEM_ROLES:
            app_system.append(content_text(message.get("content")))
        else:
            conversation.append(message)

    system = _combine(version.system_prompt, [text for text in app_system if text], version.prompt_mode)
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


def _combine(version_prompt: str, app_prompts: list[str], mode: str) -> str:
    if mode == "replace":
        return version_prompt
    parts = [version_prompt, *app_prompts] if mode == "prepend" else [*app_prompts, version_prompt]
    return "\n\n".join(part for part in parts if part)

