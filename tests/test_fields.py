"""The field tables account for every field of the SDK's types, and the README shows them as generated.

The request and answer fields are read from openai-python's own types (the
installed SDK), so a field a new SDK adds fails here until the table says
what each provider kind does with it.
"""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionAssistantMessageParam,
    ChatCompletionContentPartImageParam,
    ChatCompletionContentPartInputAudioParam,
    ChatCompletionContentPartRefusalParam,
    ChatCompletionContentPartTextParam,
    ChatCompletionDeveloperMessageParam,
    ChatCompletionMessage,
    ChatCompletionSystemMessageParam,
    ChatCompletionToolMessageParam,
    ChatCompletionUserMessageParam,
    completion_create_params,
)
from openai.types.chat.chat_completion import Choice
from openai.types.chat.chat_completion_content_part_param import File
from openai.types.completion_usage import CompletionUsage

from gateway.config import params_refusal, settings_from_dict
from gateway.errors import ConfigError
from gateway.fields import (
    ANSWER,
    EXTENSIONS,
    MESSAGE_FIELDS,
    REQUEST,
    UNKNOWN,
    answer_fields_table,
    anthropic_refusal,
    request_table,
)
from gateway.providers.anthropic import _MESSAGE_KEYS, _PART_KEYS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
MESSAGE_TYPES = {
    "system": ChatCompletionSystemMessageParam, "developer": ChatCompletionDeveloperMessageParam,
    "user": ChatCompletionUserMessageParam, "assistant": ChatCompletionAssistantMessageParam,
    "tool": ChatCompletionToolMessageParam,
}
PART_TYPES = {"text": ChatCompletionContentPartTextParam, "image_url": ChatCompletionContentPartImageParam,
              "file": File, "refusal": ChatCompletionContentPartRefusalParam}


def keys(typed_dict: type) -> set[str]:
    return set(typing.get_type_hints(typed_dict))


def test_every_field_of_the_chat_request_has_a_row() -> None:
    sdk = keys(completion_create_params.CompletionCreateParamsStreaming) | \
        keys(completion_create_params.CompletionCreateParamsNonStreaming)
    assert set(REQUEST) - EXTENSIONS == sdk


def test_every_message_and_part_field_is_known_to_the_translator_and_documented() -> None:
    documented = " ".join(MESSAGE_FIELDS)
    for role, message_type in MESSAGE_TYPES.items():
        assert keys(message_type) <= _MESSAGE_KEYS[role], role
        for key in keys(message_type) - {"role"}:
            assert f"`{key}`" in documented or f"].{key}`" in documented, (role, key)
    for kind, part_type in PART_TYPES.items():
        assert keys(part_type) <= _PART_KEYS[kind], kind
    assert "`input_audio` part" in documented and keys(ChatCompletionContentPartInputAudioParam) >= {"input_audio"}
    for part_type in (ChatCompletionContentPartImageParam, ChatCompletionContentPartTextParam):
        for key in keys(part_type) - {"type", "text"}:
            assert key in documented, key


def test_every_field_of_the_answer_has_a_row() -> None:
    documented = " ".join(ANSWER)
    for model, prefix in ((ChatCompletion, ""), (Choice, ""), (ChatCompletionMessage, "message."),
                          (CompletionUsage, "usage.")):
        for name in model.model_fields:
            if name not in ("message", "usage", "index"):
                assert f"`{prefix}{name}`" in documented or f"`{name}`" in documented, name


def test_the_readme_shows_the_tables_the_code_generates() -> None:
    assert request_table() in README, "README.md's request field table is out of date: paste request_table()"
    assert answer_fields_table() in README, "README.md's answer field table is out of date: paste " \
                                            "answer_fields_table()"


@pytest.mark.parametrize(("name", "value"), [
    ("n", 1), ("n", None), ("logprobs", False), ("top_logprobs", 0), ("seed", None), ("presence_penalty", 0),
    ("frequency_penalty", 0.0), ("logit_bias", {}), ("logit_bias", {"50256": 0}), ("modalities", ["text"]),
    ("verbosity", "medium"), ("service_tier", "priority"), ("reasoning_effort", "none"), ("prediction", {}),
    ("store", True), ("prompt_cache_key", "k"), ("web_search_options", {"search_context_size": "medium"}),
])
def test_values_that_change_nothing_are_taken(name: str, value: object) -> None:
    assert anthropic_refusal(name, value) is None


@pytest.mark.parametrize(("name", "value"), [
    ("n", 2), ("n", True), ("logprobs", True), ("top_logprobs", 3), ("seed", 7), ("presence_penalty", 0.5),
    ("frequency_penalty", -1), ("logit_bias", {"50256": -100}), ("modalities", ["text", "audio"]),
    ("audio", {"voice": "alloy", "format": "wav"}), ("moderation", {"model": "omni-moderation-latest"}),
    ("verbosity", "low"), ("service_tier", "flex"), ("reasoning_effort", "extreme"),
    ("functions", [{"name": "f"}]), ("function_call", "auto"),
    ("web_search_options", {"search_context_size": "high"}),
])
def test_values_without_a_counterpart_are_refused(name: str, value: object) -> None:
    assert anthropic_refusal(name, value) not in (None, UNKNOWN)


def test_a_field_openai_does_not_know_is_refused() -> None:
    assert anthropic_refusal("temprature", 0.5) == UNKNOWN


# -- a version's own params --------------------------------------------------------------------------


def config(kind: str, params: dict[str, object], **provider: object) -> dict[str, object]:
    version = {"provider": "claude", "model": "claude-x", "params": params}
    return {"providers": {"claude": {"kind": kind, **provider}},
            "deployments": {"support-bot": {"stable": "v1", "versions": {"v1": version}}}}


@pytest.mark.parametrize(("params", "param"), [({"seed": 7}, "seed"), ({"n": 3}, "n"),
                                               ({"temperature": 0.2, "thinking": {"type": "enabled"}}, "thinking")])
def test_a_version_on_anthropic_with_params_anthropic_cannot_take_does_not_load(params: dict[str, object],
                                                                                  param: str) -> None:
    with pytest.raises(ConfigError, match=rf"^deployments\.support-bot\.versions\.v1\.params\.{param}: "):
        settings_from_dict(config("anthropic", params, base_url="https://api.anthropic.com"))


def test_the_same_params_load_on_openai_and_a_simulated_chat_api() -> None:
    for kind, provider in (("openai", {"base_url": "https://api.openai.com/v1"}), ("simulated", {})):
        settings = settings_from_dict(config(kind, {"seed": 7, "n": 3}, **provider))
        assert settings.deployments["support-bot"].versions["v1"].params == {"seed": 7, "n": 3}


def test_a_simulated_messages_api_refuses_them_too_and_null_always_loads() -> None:
    with pytest.raises(ConfigError, match=r"params\.seed: Anthropic has no seeded sampling"):
        settings_from_dict(config("simulated", {"seed": 7}, simulation={"api": "messages"}))
    settings = settings_from_dict(config("anthropic", {"seed": None, "max_tokens": 300, "top_k": 5},
                                         base_url="https://api.anthropic.com"))
    assert params_refusal(settings.deployments["support-bot"].versions["v1"].params,
                          settings.providers["claude"]) is None


def test_a_judge_on_anthropic_with_params_it_cannot_take_does_not_load() -> None:
    data = config("anthropic", {}, base_url="https://api.anthropic.com")
    data["deployments"]["support-bot"]["quality"] = {  # type: ignore[index]
        "judge": {"provider": "claude", "model": "claude-x", "params": {"logprobs": True}}}
    with pytest.raises(ConfigError, match=r"^deployments\.support-bot\.quality\.judge\.params\.logprobs: "):
        settings_from_dict(data)
