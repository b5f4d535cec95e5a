"""Pure quality evaluation: built-in evaluators, and the judge's prompts and verdict parsing.

An evaluator scores one answer in [0, 1], or returns None when it does not
apply (the `json` evaluator on a call that asked for no JSON). Built-in
evaluators are cheap and deterministic; the LLM judge's call itself is made
by `gateway.quality`, which uses `judge_body` and `parse_verdict` from here.

The pairwise judge (the shadow stage) compares two answers to one
conversation, blind: they are labelled A and B, never by version, and each
pair is asked twice, once in each order, so that a judge's preference for a
position cancels out (Zheng et al., "Judging LLM-as-a-Judge with MT-Bench
and Chatbot Arena", NeurIPS 2023, section 3.3: position bias, controlled by
swapping). `pairwise_body` builds one order's request, `parse_preference`
reads its verdict, `win_score` combines the two orders into the canary's
score: 1 won both, 0.5 a tie (or one order each: the judge followed the
position, not the answers), 0 lost both, 0.75 / 0.25 a win or a loss and a tie.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

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


DEFAULT_PAIRWISE_RUBRIC = """You compare two answers that AI assistants gave to the same conversation.
You are not told which assistant wrote which answer, and their order is random: never prefer an
answer for its position, its length or its tone alone.
Decide which answer better serves the user's last request, in this order of importance:
1. correctness: no false statements, no wrong code, no invented facts;
2. helpfulness: it does what was asked, completely, and follows the conversation's instructions
   (format, language, constraints);
3. relevance and focus: no padding, no ignoring of the question;
4. clarity.
An answer that refuses a reasonable request, is empty, or ignores the question loses to any
reasonable answer. When both are equally good, or equally bad, answer "tie".
Reply with JSON only: {"winner": "A" or "B" or "tie", "reason": "<one short sentence>"}."""

# The judge's verdict on one order: which label it preferred.
Preference = Literal["A", "B", "tie"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One answered call, as the evaluators see it."""

    request_id: str
    deployment: str
    version: str
    messages: Sequence[Mapping[str, Any]]
    # The answer's text: the reply's content, else its refusal.
    answer: str | None
    wants_json: bool = False
    schema: Mapping[str, Any] | None = field(default=None)
    # The reply as the client got it (the first choice's message, reassembled from a
    # stream): content, refusal, tool_calls, reasoning_content. None: text only.
    message: Mapping[str, Any] | None = None

    @property
    def tool_calls(self) -> list[Mapping[str, Any]]:
        calls = self.message.get("tool_calls") if self.message is not None else None
        return [call for call in calls if isinstance(call, Mapping)] if isinstance(calls, list) else []

    @property
    def refusal(self) -> str | None:
        refusal = self.message.get("refusal") if self.message is not None else None
        return refusal if isinstance(refusal, str) and refusal else None


class Evaluator(Protocol):
    @property
    def source(self) -> str: ...

    def score(self, sample: Sample) -> float | None: ...


@dataclass(frozen=True, slots=True)
class NonEmpty:
    source: str

    def score(self, sample: Sample) -> float | None:
        """1 for text that is not blank or a tool call, else 0 (a refusal's text counts: `refusal` judges it)."""
        return 1.0 if (sample.answer and sample.answer.strip()) or sample.tool_calls else 0.0


@dataclass(frozen=True, slots=True)
class Refusal:
    source: str
    phrases: tuple[str, ...]

    def score(self, sample: Sample) -> float | None:
        """0 for a refusal: the reply's `refusal` field, or a refusal phrase opening its text."""
        if sample.refusal is not None:
            return 0.0
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


def score_id(request_id: str, source: str) -> str:
    """The id of an evaluator's score of one call (SHA-256 hex of both): evaluators are deterministic, so a
    call evaluated twice (sampled for quality and copied to a shadow canary) is stored once (ids are unique)."""
    return hashlib.sha256(f"{request_id}\x00{source}".encode("utf-8", "surrogatepass")).hexdigest()


def build_evaluators(settings: Sequence[EvaluatorSettings]) -> list[Evaluator]:
    """The evaluators a deployment's `quality.evaluators` configure, in order."""
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
                                        f"<answer>\n{answer_for_judge(sample)}\n</answer>"},
        ],
    }


def answer_for_judge(sample: Sample) -> str:
    """The reply as the judge reads it: its text, each tool call, and a refusal, each on its own lines."""
    parts: list[str] = []
    content = sample.message.get("content") if sample.message is not None else sample.answer
    if isinstance(content, str) and content:
        parts.append(content)
    for call in sample.tool_calls:
        function = call.get("function") if isinstance(call.get("function"), Mapping) else {}
        assert isinstance(function, Mapping)
        parts.append(f"[tool call] {function.get('name')}({function.get('arguments') or ''})")
    if sample.refusal is not None:
        parts.append(f"[refusal] {sample.refusal}")
    return "\n".join(parts)


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


def pairwise_body(
    messages: Sequence[Mapping[str, Any]],
    first: str | None,
    second: str | None,
    *,
    model: str,
    rubric: str | None,
    params: Mapping[str, Any],
) -> dict[str, Any]:
    """The chat request asking the judge which of two answers is better: `first` is A, `second` is B.

    The app's conversation is shown without its system messages (they are the
    versions' own prompts, and would tell the versions apart).
    """
    return {
        **params,
        "model": model,
        "messages": [
            {"role": "system", "content": rubric or DEFAULT_PAIRWISE_RUBRIC},
            {"role": "user", "content": f"<conversation>\n{_conversation(messages)}\n</conversation>\n\n"
                                        f"<answer_a>\n{first or ''}\n</answer_a>\n\n"
                                        f"<answer_b>\n{second or ''}\n</answer_b>"},
        ],
    }


_PREFERENCE_WORD = re.compile(r"^\W*(?:answer\s+)?(a|b|tie)\W*$", re.IGNORECASE)


def parse_preference(text: str) -> Preference | None:
    """The label a pairwise verdict prefers: JSON (`{"winner": "A"}`) first, a bare `A`, `B` or `tie` second.

    `Answer A`, lower case and surrounding punctuation are read too; anything
    else is None (unreadable), never a tie.
    """
    for candidate in [text.strip(), *_SCORE_IN_JSON.findall(text)]:
        try:
            data = json.loads(candidate)
        except (ValueError, RecursionError):
            continue
        if isinstance(data, dict) and "winner" in data:
            return _preference(data["winner"])
    return _preference(text)


def win_score(canary_first: Preference, stable_first: Preference) -> float:
    """The canary's score for one pair from both orders' verdicts, in {0, 0.25, 0.5, 0.75, 1}.

    `canary_first`: the verdict when the canary's answer was A; `stable_first`:
    when it was B. Each order gives the canary 1 (preferred), 0.5 (tie) or 0;
    the pair's score is their mean, so a judge that always prefers one
    position scores every pair 0.5.
    """
    first = {"A": 1.0, "tie": 0.5, "B": 0.0}[canary_first]
    second = {"B": 1.0, "tie": 0.5, "A": 0.0}[stable_first]
    return (first + second) / 2


def _preference(value: object) -> Preference | None:
    if not isinstance(value, str):
        return None
    match = _PREFERENCE_WORD.match(value.strip())
    if match is None:
        return None
    word = match.group(1).lower()
    return "tie" if word == "tie" else "A" if word == "a" else "B"


def _conversation(messages: Sequence[Mapping[str, Any]]) -> str:
    return "\n\n".join(
        f"[{message.get('role')}]\n{_text(message.get('content'))}"
        for message in messages
        if message.get("role") not in ("system", "developer")
    )
