"""Pure: what each part of an Anthropic answer becomes in OpenAI's chat-completions vocabulary.

Every `stop_reason` (anthropic-sdk-python `types/stop_reason.py`), content
block type (`types/content_block.py`) and stream delta type
(`types/raw_content_block_delta.py`) is listed here with what it becomes, on
purpose; the translators read these tables, and so does the README's table
of them (`answer_table`), so the two cannot drift.

A value these tables do not know is never taken for "all fine": an unknown
`stop_reason` is relayed as the `finish_reason` as it is (never "stop") and
logged; an unknown block or delta type is left out and logged.

OpenAI's side comes from openai-python `types/chat/chat_completion.py`
(`finish_reason`: stop, length, tool_calls, content_filter, function_call)
and `chat_completion_message.py` / `chat_completion_chunk.py` (`content`,
`refusal`, `tool_calls`); `reasoning_content` is the field OpenAI-compatible
reasoning APIs (DeepSeek, vLLM) use for a model's visible reasoning.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

log = logging.getLogger("gateway.providers")

# stop_reason → finish_reason.
FINISH_REASONS: Mapping[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    # The context window ended the answer: cut short, like a token limit.
    "model_context_window_exceeded": "length",
    # A long server-tool turn paused unfinished; the client continues it by asking again.
    "pause_turn": "length",
    "tool_use": "tool_calls",
    # A safety refusal; the message's `refusal` says why (see `refusal_text`).
    "refusal": "content_filter",
}

# What a content block of each type becomes in the OpenAI message (plain) or chunk deltas (streamed).
CONTENT = "content"
REASONING = "reasoning_content"
TOOL_CALL = "tool_calls"
OMITTED = "omitted"
BLOCKS: Mapping[str, str] = {
    "text": CONTENT,
    "thinking": REASONING,
    # Encrypted reasoning: nothing a client can read.
    "redacted_thinking": OMITTED,
    "tool_use": TOOL_CALL,
    # Server tools run at Anthropic; their results feed the text that follows them.
    "server_tool_use": OMITTED,
    "web_search_tool_result": OMITTED,
    "web_fetch_tool_result": OMITTED,
    "code_execution_tool_result": OMITTED,
    "bash_code_execution_tool_result": OMITTED,
    "text_editor_code_execution_tool_result": OMITTED,
    "tool_search_tool_result": OMITTED,
    "container_upload": OMITTED,
}
# Stream delta type → what it adds to.
DELTAS: Mapping[str, str] = {
    "text_delta": CONTENT,
    "thinking_delta": REASONING,
    "input_json_delta": TOOL_CALL,
    # The thinking block's signature: opaque, for Anthropic only.
    "signature_delta": OMITTED,
    # OpenAI's chunks have no place for citations; the cited text itself is in `content`.
    "citations_delta": OMITTED,
}
# A refusal that gives no explanation.
DEFAULT_REFUSAL = "The model declined to answer this request."


def finish_reason(stop_reason: object) -> str | None:
    """OpenAI's finish_reason for an Anthropic stop_reason; an unknown one as it is, never "stop"."""
    if isinstance(stop_reason, str):
        mapped = FINISH_REASONS.get(stop_reason)
        if mapped is not None:
            return mapped
        log.warning("unknown Anthropic stop_reason %r relayed as the finish_reason", stop_reason[:64])
        return stop_reason[:64]
    log.warning("an Anthropic answer ended without a stop_reason")
    return None


def block_role(block_type: object) -> str:
    """What a content block of `block_type` becomes (CONTENT, REASONING, TOOL_CALL or OMITTED)."""
    role = BLOCKS.get(block_type) if isinstance(block_type, str) else None
    if role is None:
        log.warning("unknown Anthropic content block type %r left out of the answer", str(block_type)[:64])
        return OMITTED
    return role


def delta_role(delta_type: object) -> str:
    """What a stream delta of `delta_type` adds to (CONTENT, REASONING, TOOL_CALL or OMITTED)."""
    role = DELTAS.get(delta_type) if isinstance(delta_type, str) else None
    if role is None:
        log.warning("unknown Anthropic stream delta type %r left out of the answer", str(delta_type)[:64])
        return OMITTED
    return role


def refusal_text(stop_reason: object, stop_details: object) -> str | None:
    """The OpenAI `refusal` for an answer Anthropic ended with stop_reason "refusal", else None."""
    if stop_reason != "refusal":
        return None
    explanation = stop_details.get("explanation") if isinstance(stop_details, Mapping) else None
    return explanation if isinstance(explanation, str) and explanation else DEFAULT_REFUSAL


# How the README describes each outcome; `answer_table` renders the tables above with them.
_FINISH_NOTES: Mapping[str, str] = {
    "length": " (the answer is incomplete)",
    "content_filter": ", and `refusal` (the explanation Anthropic gives)",
}
_ROLE_TEXT: Mapping[str, str] = {
    CONTENT: "`content`",
    REASONING: "`reasoning_content` (as DeepSeek and vLLM name it)",
    TOOL_CALL: "`tool_calls`; a tool without input gets arguments `\"{}\"`, streamed too",
    OMITTED: "left out: nothing an OpenAI client can read; server tools' results are in the text after them",
}


def answer_table() -> str:
    """The README's table of what each part of an Anthropic answer becomes, rendered from these tables."""
    rows = ["| Anthropic | OpenAI |", "|---|---|"]
    for finish in dict.fromkeys(FINISH_REASONS.values()):
        reasons = ", ".join(f"`{reason}`" for reason, mapped in FINISH_REASONS.items() if mapped == finish)
        rows.append(f"| stop reason {reasons} | `finish_reason: {finish}`{_FINISH_NOTES.get(finish, '')} |")
    rows.append("| a stop reason not listed | relayed as the `finish_reason` as it is, never `stop`; logged |")
    for role in (CONTENT, REASONING, TOOL_CALL, OMITTED):
        parts = [f"`{name}` block" for name, mapped in BLOCKS.items() if mapped == role]
        parts += [f"`{name}`" for name, mapped in DELTAS.items() if mapped == role]
        rows.append(f"| {', '.join(parts)} | {_ROLE_TEXT[role]} |")
    rows.append("| a block or delta type not listed | left out and logged |")
    return "\n".join(rows) + "\n"
