"""Pure: the chat completion a client builds from the answer it was sent, plain or streamed.

The evaluators and the judge must score exactly what the client saw, so the
gateway rebuilds it from the bytes it sent: a plain answer's `choices` as
they are, a stream's `chat.completion.chunk`s merged the way openai-python
merges them (`lib/streaming/_deltas.py` `accumulate_delta`, used by
`ChatCompletionStreamState`): strings are concatenated, `index` and `type`
replaced, objects merged, lists of objects merged by their `index`; a choice's
`finish_reason` is the last one given. Written here rather than imported
because the OpenAI SDK is not a dependency of the gateway.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any


class ChunkAssembly:
    """Merges `chat.completion.chunk` payloads into the choices of a `chat.completion`."""

    def __init__(self) -> None:
        self._choices: dict[int, dict[str, Any]] = {}

    def add(self, chunk: Mapping[str, Any]) -> None:
        """Merge one chunk (a decoded `data:` payload); anything not shaped like a chunk is ignored."""
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            if not isinstance(index, int) or isinstance(index, bool):
                continue
            state = self._choices.get(index)
            if state is None:
                state = self._choices[index] = {"index": index, "message": {}, "finish_reason": None}
            delta = choice.get("delta")
            if isinstance(delta, dict):
                _accumulate(state["message"], delta)
            if choice.get("finish_reason"):
                state["finish_reason"] = choice["finish_reason"]

    def choices(self) -> list[dict[str, Any]]:
        """The choices so far, by index: `{"index", "message", "finish_reason"}`."""
        return [self._choices[index] for index in sorted(self._choices)]


def _accumulate(into: dict[str, Any], delta: Mapping[str, Any]) -> None:
    for key, value in delta.items():
        current = into.get(key)
        if key in ("index", "type") or (current is None and not _is_indexed(value)):
            # A copy: later deltas are merged into it, and the chunk it came from must not change.
            into[key] = copy.deepcopy(value) if isinstance(value, dict | list) else value
        elif current is None:
            into[key] = []
            _merge_list(into[key], value)
        elif isinstance(current, str) and isinstance(value, str):
            into[key] = current + value
        elif isinstance(current, dict) and isinstance(value, dict):
            _accumulate(current, value)
        elif isinstance(current, list) and isinstance(value, list):
            _merge_list(current, value)
        else:
            into[key] = value


def _is_indexed(value: object) -> bool:
    return isinstance(value, list) and any(isinstance(entry, dict) and "index" in entry for entry in value)


def _merge_list(into: list[Any], entries: list[Any]) -> None:
    if not _is_indexed(entries):
        into.extend(entries)
        return
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("index"), int):
            continue
        position = next((at for at, known in enumerate(into)
                         if isinstance(known, dict) and known.get("index") == entry["index"]), None)
        if position is None:
            merged: dict[str, Any] = {}
            _accumulate(merged, entry)
            into.append(merged)
        else:
            _accumulate(into[position], entry)


def completion_choices(content: bytes) -> list[dict[str, Any]]:
    """The choices of a plain `chat.completion` body as the client got it; [] when it has none."""
    try:
        choices = json.loads(content).get("choices")
    except (ValueError, AttributeError, RecursionError):
        return []
    return [choice for choice in choices if isinstance(choice, dict)] if isinstance(choices, list) else []


def reply_text(message: Mapping[str, Any] | None) -> str | None:
    """The text of a reply for the evaluators: its `content`, else its `refusal`, else None."""
    if message is None:
        return None
    content = message.get("content")
    if isinstance(content, str) and content:
        return content
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        return refusal
    return content if isinstance(content, str) else None
