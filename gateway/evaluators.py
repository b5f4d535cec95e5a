"""Pure quality evaluation: built-in evaluators, and the judge's prompt and verdict parsing.

An evaluator scores one answer in [0, 1], or returns None when it does not
apply (the `json` evaluator on a call that asked for no JSON). Built-in
evaluators are cheap and deterministic; the LLM judge's call itself is made
by `gateway.quality`, which uses `judge_body` and `parse_verdict` from here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.config import EvaluatorSettings

# Phrases that open a refusal, per language; matched case-insensitively near the start of an answer.
REFUSAL_PHRASES: Mapping[str, tuple[str, ...]] = {
    "en": ("i'm sorry, but i can't", "i am sorry, but i cannot", "i can't help with", "i cannot help with",
           "i can't assist with", "i cannot assist with", "i'm unable to", "i am unable to", "i won't be able to",
           "as an ai language model", "i must decline", "i can't comply", "i cannot comply",
           "i'm not able to help", "i can't provide", "i cannot provide"),
    "de": ("es tut mir leid, aber ich kann", "ich kann dabei nicht helfen", "ich kann ihnen dabei nicht helfen",
           "das kann ich nicht", "als ki-sprachmodell", "ich bin nicht in der lage"),
    "fr": ("je suis désolé, mais je ne peux pas", "je ne peux pas vous aider", "je ne peux pas répondre",
           "en tant que modèle de langage", "je ne suis pas en mesure"),
    "es": ("lo siento, pero no puedo", "no puedo ayudarte con", "no puedo ayudar con",
           "como modelo de lenguaje", "no estoy en condiciones de"),
}
# A refusal opens the answer; a phrase deep inside a long answer is usually a quotation.
_REFUSAL_WINDOW = 300

DEFAULT_RUBRIC = """You are a strict evaluator of an AI assistant's answer.
Judge the final assistant answer in the conversation below for correctness, helpfulness,
relevance to the user's request, and clarity. An answer that refuses a reasonable request,
is empty, is wrong, or ignores the question scores low.
Reply with JSON only: {"score": <a number from 0 to 1>, "reason": "<one short sentence>"}."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One answered call, as the evaluators see it."""

    request_id: str
    deployment: str
    version: str
    messages: Sequence[Mapping[str, Any]]
    answer: str | None
    wants_json: bool = False
    schema: Mapping[str, Any] | None = field(default=None)


class Evaluator(Protocol):
    @property
    def source(self) -> str: ...

    def score(self, sample: Sample) -> float | None: ...


@dataclass(frozen=True, slots=True)
class NonEmpty:
    source: str

    def score(self, sample: Sample) -> float | None:
        return 1.0 if sample.answer and sample.answer.strip() else 0.0


@dataclass(frozen=True, slots=True)
class Refusal:
    source: str
    phrases: tuple[str, ...]

    def score(self, sample: Sample) -> float | None:
        opening = " ".join((sample.answer or "")[:_REFUSAL_WINDOW].lower().replace("’", "'").split())
        return 0.0 if any(phrase in opening for phrase in self.phrases) else 1.0


@dataclass(frozen=True, slots=True)
class ValidJson:
    """Applies when the call asked for JSON (`response_format`) or the version declares a schema."""

    source: str

    def score(self, sample: Sample) -> float | None:
        if not sample.wants_json and sample.schema is None:
            return None
        try:
            document = json.loads(sample.answer or "")
        except (ValueError, RecursionError):
            return 0.0
        if sample.schema is not None:
            import jsonschema  # only for calls that need it: it is a heavy import

            try:
                jsonschema.validate(document, sample.schema)
            except jsonschema.ValidationError:
                return 0.0
        return 1.0


@dataclass(frozen=True, slots=True)
class Length:
    source: str
    min_chars: int
    max_chars: int | None

    def score(self, sample: Sample) -> float | None:
        size = len(sample.answer or "")
        return 1.0 if size >= self.min_chars and (self.max_chars is None or size <= self.max_chars) else 0.0


@dataclass(frozen=True, slots=True)
class Pattern:
    source: str
    must_match: re.Pattern[str] | None
    must_not_match: re.Pattern[str] | None

    def score(self, sample: Sample) -> float | None:
        answer = sample.answer or ""
        if self.must_match is not None and not self.must_match.search(answer):
            return 0.0
        if self.must_not_match is not None and self.must_not_match.search(answer):
            return 0.0
        return 1.0


def build_evaluators(settings: Sequence[EvaluatorSettings]) -> list[Evaluator]:
    evaluators: list[Evaluator] = []
    for item in settings:
        if item.type == "non_empty":
            evaluators.append(NonEmpty(item.source))
        elif item.type == "refusal":
            phrases = tuple(phrase for language in item.languages for phrase in REFUSAL_PHRASES[language])
            evaluators.append(Refusal(item.source, phrases))
        elif item.type == "json":
            evaluators.append(ValidJson(item.source))
        elif item.type == "length":
            evaluators.append(Length(item.source, item.min_chars, item.max_chars))
        else:
            evaluators.append(Pattern(
                item.source,
                re.compile(item.must_match) if item.must_match else None,
                re.compile(item.must_not_match) if item.must_not_match else None,
            ))
    return evaluators


def wants_json(body: Mapping[str, Any]) -> tuple[bool, Mapping[str, Any] | None]:
    """Whether a chat request asked for JSON, and the schema it gave if any."""
    response_format = body.get("response_format")
    if not isinstance(response_format, dict):
        return False, None
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return True, schema if isinstance(schema, dict) else None
    return kind == "json_object", None


def judge_body(sample: Sample, *, model: str, rubric: str | None, params: Mapping[str, Any]) -> dict[str, Any]:
    """The chat request that asks the judge for a verdict on `sample`."""
    conversation = "\n\n".join(
        f"[{message.get('role')}]\n{_text(message.get('content'))}"
        for message in sample.messages
        if message.get("role") != "system"
    )
    return {
        **params,
        "model": model,
        "messages": [
            {"role": "system", "content": rubric or DEFAULT_RUBRIC},
            {"role": "user", "content": f"<conversation>\n{conversation}\n</conversation>\n\n"
                                        f"<answer>\n{sample.answer or ''}\n</answer>"},
        ],
    }


_SCORE_IN_JSON = re.compile(r"\{[^{}]*\}")
_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(\s*/\s*(10|100|5))?(?!\w|\.\d)")


def parse_verdict(text: str) -> float | None:
    """A judge's score in [0, 1]: JSON (`{"score": ...}`) first, a bare number second, else None.

    "7/10" and "80/100" are scaled; a number outside [0, 1] without a scale is
    not a score. None means the verdict could not be read; it is never 0.
    """
    for candidate in [text.strip(), *_SCORE_IN_JSON.findall(text)]:
        try:
            data = json.loads(candidate)
        except (ValueError, RecursionError):
            continue
        if isinstance(data, dict) and "score" in data:
            return _unit(data["score"])
    for number, _, scale in _NUMBER.findall(text):
        value = float(number) / float(scale) if scale else float(number)
        if 0.0 <= value <= 1.0:
            return value
    return None


def _unit(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and 0.0 <= number <= 1.0 else None


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""
