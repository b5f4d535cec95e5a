"""gateway.evaluators: the built-in evaluators and the judge's verdict parsing."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import EvaluatorSettings
from gateway.evaluators import (
    DEFAULT_RUBRIC,
    Sample,
    build_evaluators,
    judge_body,
    parse_verdict,
    wants_json,
)


def sample(answer: str | None, **changes: Any) -> Sample:
    return Sample(request_id="r", deployment="d", version="v", messages=[{"role": "user", "content": "q?"}],
                  answer=answer, **changes)


def score(kind: str, answer: str | None, **options: Any) -> float | None:
    settings = EvaluatorSettings(type=kind, **{k: v for k, v in options.items() if k not in ("wants_json", "schema")})
    [evaluator] = build_evaluators([settings])
    extra = {k: v for k, v in options.items() if k in ("wants_json", "schema")}
    return evaluator.score(sample(answer, **extra))


@pytest.mark.parametrize(("answer", "expected"), [("hi", 1.0), ("", 0.0), ("   \n", 0.0), (None, 0.0)])
def test_non_empty(answer: str | None, expected: float) -> None:
    assert score("non_empty", answer) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("I'm sorry, but I can't help with that request.", 0.0),
        ("I’m sorry, but I can’t help with that.", 0.0),  # typographic apostrophes
        ("As an AI language model, I cannot have opinions.", 0.0),
        ("Es tut mir leid, aber ich kann das nicht beantworten.", 0.0),
        ("Je suis désolé, mais je ne peux pas faire cela.", 0.0),
        ("Lo siento, pero no puedo ayudar con eso.", 0.0),
        ("Go to Settings → Security → Reset password.", 1.0),
        ("Sure! " + "x" * 400 + " I can't help with quoting the manual here.", 1.0),  # deep inside: a quotation
    ],
)
def test_refusal(answer: str, expected: float) -> None:
    assert score("refusal", answer) == expected


def test_refusal_languages_are_configurable() -> None:
    assert score("refusal", "Lo siento, pero no puedo.", languages=("en",)) == 1.0


@pytest.mark.parametrize(
    ("answer", "options", "expected"),
    [
        ('{"a": 1}', {"wants_json": True}, 1.0),
        ("not json", {"wants_json": True}, 0.0),
        ("", {"wants_json": True}, 0.0),
        ("not json", {}, None),  # JSON was not asked for: the evaluator does not apply
        ('{"a": 1}', {"schema": {"type": "object", "required": ["a"]}}, 1.0),
        ('{"b": 1}', {"schema": {"type": "object", "required": ["a"]}}, 0.0),
        ("[1]", {"schema": {"type": "object"}}, 0.0),
    ],
)
def test_json(answer: str, options: dict[str, Any], expected: float | None) -> None:
    assert score("json", answer, **options) == expected


@pytest.mark.parametrize(("answer", "expected"), [("", 0.0), ("ab", 1.0), ("abcde", 1.0), ("abcdef", 0.0)])
def test_length(answer: str, expected: float) -> None:
    assert score("length", answer, min_chars=1, max_chars=5) == expected


@pytest.mark.parametrize(
    ("answer", "expected"), [("Ticket #123 opened", 1.0), ("no ticket", 0.0), ("Ticket #9, as an AI", 0.0)]
)
def test_regex(answer: str, expected: float) -> None:
    assert score("regex", answer, must_match=r"#\d+", must_not_match=r"(?i)as an ai") == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, (False, None)),
        ({"response_format": {"type": "text"}}, (False, None)),
        ({"response_format": {"type": "json_object"}}, (True, None)),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}},
         (True, {"type": "object"})),
        ({"response_format": "json"}, (False, None)),
    ],
)
def test_wants_json(body: dict[str, Any], expected: tuple[bool, Any]) -> None:
    assert wants_json(body) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"score": 0.8, "reason": "good"}', 0.8),
        ('Here is my verdict: {"score": 0.25, "reason": "thin"} hope it helps', 0.25),
        ('{"score": "0.5"}', 0.5),
        ("```json\n{\"score\": 1}\n```", 1.0),
        ("0.7", 0.7),
        ("Score: 7/10", 0.7),
        ("I'd say 80/100.", 0.8),
        ("4/5 overall", 0.8),
        ('{"score": 7}', None),  # out of range in JSON: not silently scaled
        ("The answer is great.", None),
        ("", None),
        ('{"score": null}', None),
        ('{"score": NaN}', None),
        ("There are 3 issues; overall 0.4", 0.4),  # 3 is no score, 0.4 is
    ],
)
def test_parse_verdict(text: str, expected: float | None) -> None:
    result = parse_verdict(text)
    assert result == (pytest.approx(expected) if expected is not None else None)


def test_judge_body_carries_the_conversation_and_the_answer_not_the_system_prompt() -> None:
    judged = Sample(request_id="r", deployment="d", version="v", answer="Reset it in Settings.",
                    messages=[{"role": "system", "content": "SECRET version prompt"},
                              {"role": "user", "content": [{"type": "text", "text": "How do I reset?"}]}])
    body = judge_body(judged, model="judge-model", rubric=None, params={"temperature": 0})
    assert body["model"] == "judge-model" and body["temperature"] == 0
    assert body["messages"][0] == {"role": "system", "content": DEFAULT_RUBRIC}
    assert "How do I reset?" in body["messages"][1]["content"]
    assert "Reset it in Settings." in body["messages"][1]["content"]
    assert "SECRET" not in body["messages"][1]["content"]
    assert judge_body(judged, model="m", rubric="Be kind.", params={})["messages"][0]["content"] == "Be kind."
