"""Pure: what an upstream model family accepts, and the request body adapted to it.

An app written against one model sends parameters another model refuses:
moving a canary from `gpt-4o` to `o3-mini` would otherwise make every call
that sends `max_tokens` fail with the upstream's 400, counted against the
canary. A family renames what has a new name there and removes what the
family does not support (the caller logs each removal at debug level).

Families of OpenAI-compatible upstream models, matched on the model name
after any `vendor/` prefix (OpenRouter-style names):

- `openai-reasoning` (`o1`, `o3`, `o4-mini`, ..., and `gpt-5` except
  `gpt-5-chat`): `max_tokens` becomes `max_completion_tokens` (openai-python
  `completion_create_params.py`: `max_tokens` "is not compatible with
  o-series models"); `temperature`, `top_p`, `presence_penalty`,
  `frequency_penalty`, `logprobs` and `top_logprobs` are removed (the API
  answers `unsupported_parameter` for them).

Every other model is taken as it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Family:
    """How one family's requests differ from the chat-completions defaults."""

    name: str
    # Parameter → the name this family knows it by; dropped when the new name is already set.
    renamed: Mapping[str, str] = field(default_factory=dict)
    # Parameters the family refuses; removed.
    unsupported: frozenset[str] = frozenset()


DEFAULT = Family("default")
OPENAI_REASONING = Family(
    "openai-reasoning",
    renamed={"max_tokens": "max_completion_tokens"},
    unsupported=frozenset(
        {"temperature", "top_p", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs"}
    ),
)
_OPENAI_REASONING = re.compile(r"^(o\d+(-|$)|gpt-5(?!-chat))")


def openai_family(model: str) -> Family:
    """The family of an OpenAI-compatible upstream model name (`o3-mini`, `openai/gpt-5`, `gpt-4o`)."""
    name = model.rsplit("/", 1)[-1].lower()
    return OPENAI_REASONING if _OPENAI_REASONING.match(name) else DEFAULT


def adapt(body: dict[str, Any], family: Family) -> tuple[dict[str, Any], list[str]]:
    """`body` for `family`, and the names of the parameters removed.

    A renamed parameter keeps its value under the new name, unless the body
    already sets the new name, whose value then wins (and the old one counts
    as removed). `body` is not modified: the result is a new dict, or `body`
    itself when nothing changes.
    """
    if family is DEFAULT or not (family.unsupported & body.keys() or family.renamed.keys() & body.keys()):
        return body, []
    adapted: dict[str, Any] = {}
    removed: list[str] = []
    for key, value in body.items():
        if key in family.unsupported:
            removed.append(key)
        elif key in family.renamed:
            new = family.renamed[key]
            if new in body:
                removed.append(key)
            else:
                adapted[new] = value
        else:
            adapted[key] = value
    return adapted, removed
