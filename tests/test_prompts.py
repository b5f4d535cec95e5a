"""gateway.prompts: a version + the app's request → the upstream body (chat completions, and Anthropic Messages
for a native Messages call)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.models import Version
from gateway.prompts import build_messages_body, build_upstream_body

SHOTS = (
    {"role": "user", "content": "How do I reset my password?"},
    {"role": "assistant", "content": "Settings → Security → Reset password."},
)


def version(**changes: Any) -> Version:
    fields: dict[str, Any] = {
        "name": "v2",
        "provider": "openai",
        "model": "upstream-model",
        "system_prompt": "VERSION PROMPT",
    }
    fields.update(changes)
    return Version(**fields)


def body(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "support-bot", "messages": list(messages), **extra}


def system(text: Any) -> dict[str, Any]:
    return {"role": "system", "content": text}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def systems_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [message for message in result["messages"] if message["role"] in ("system", "developer")]


# -- system prompt modes ------------------------------------------------------------


def test_replace_drops_the_apps_system_message() -> None:
    result = build_upstream_body(version(), body(system("APP PROMPT"), user("hi")), stream=False)
    assert result["messages"] == [system("VERSION PROMPT"), user("hi")]


def test_replace_is_the_default_mode() -> None:
    assert version().prompt_mode == "replace"


def test_replace_without_an_app_system_message() -> None:
    result = build_upstream_body(version(), body(user("hi")), stream=False)
    assert result["messages"] == [system("VERSION PROMPT"), user("hi")]


def test_replace_drops_developer_messages_too() -> None:
    app = body({"role": "developer", "content": "APP DEV"}, user("hi"), system("APP SYS"))
    result = build_upstream_body(version(), app, stream=False)
    assert result["messages"] == [system("VERSION PROMPT"), user("hi")]


def test_prepend_puts_the_version_prompt_first() -> None:
    app = body(system("APP PROMPT"), user("hi"))
    result = build_upstream_body(version(prompt_mode="prepend"), app, stream=False)
    assert result["messages"] == [system("VERSION PROMPT\n\nAPP PROMPT"), user("hi")]


def test_append_puts_the_version_prompt_last() -> None:
    app = body(system("APP PROMPT"), user("hi"))
    result = build_upstream_body(version(prompt_mode="append"), app, stream=False)
    assert result["messages"] == [system("APP PROMPT\n\nVERSION PROMPT"), user("hi")]


@pytest.mark.parametrize("mode", ["prepend", "append"])
def test_prepend_and_append_without_an_app_system_message(mode: str) -> None:
    result = build_upstream_body(version(prompt_mode=mode), body(user("hi")), stream=False)
    assert result["messages"] == [system("VERSION PROMPT"), user("hi")]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("prepend", "VERSION PROMPT\n\nAPP ONE\n\nAPP DEV"),
        ("append", "APP ONE\n\nAPP DEV\n\nVERSION PROMPT"),
    ],
)
def test_several_app_system_messages_merge_into_one(mode: str, expected: str) -> None:
    app = body(system("APP ONE"), {"role": "developer", "content": "APP DEV"}, user("hi"))
    result = build_upstream_body(version(prompt_mode=mode), app, stream=False)
    assert result["messages"] == [system(expected), user("hi")]
    assert len(systems_of(result)) == 1


@pytest.mark.parametrize("mode", ["prepend", "append"])
def test_list_of_parts_system_content_keeps_its_parts(mode: str) -> None:
    marked = {"type": "text", "text": "part one", "cache_control": {"type": "ephemeral"}}
    parts = [marked, {"type": "text", "text": ""}, {"type": "text", "text": "part two"}]
    app = body(system(parts), {"role": "developer", "content": "APP DEV"}, user("hi"))
    result = build_upstream_body(version(prompt_mode=mode), app, stream=False)
    own = {"type": "text", "text": "VERSION PROMPT"}
    app_parts = [marked, {"type": "text", "text": "part two"}, {"type": "text", "text": "APP DEV"}]
    assert result["messages"] == [system([own, *app_parts] if mode == "prepend" else [*app_parts, own]), user("hi")]


def test_list_of_parts_in_replace_mode_is_dropped() -> None:
    parts = [{"type": "text", "text": "APP PROMPT"}]
    result = build_upstream_body(version(), body(system(parts), user("hi")), stream=False)
    assert result["messages"] == [system("VERSION PROMPT"), user("hi")]


@pytest.mark.parametrize("mode", ["prepend", "append"])
def test_empty_app_system_content_adds_no_separator(mode: str) -> None:
    app = body(system(""), system(None), system([]), user("hi"))
    result = build_upstream_body(version(prompt_mode=mode), app, stream=False)
    assert result["messages"] == [system("VERSION PROMPT"), user("hi")]


@pytest.mark.parametrize("mode", ["prepend", "append"])
def test_empty_version_prompt_keeps_the_apps(mode: str) -> None:
    result = build_upstream_body(
        version(system_prompt="", prompt_mode=mode), body(system("APP PROMPT"), user("hi")), stream=False
    )
    assert result["messages"] == [system("APP PROMPT"), user("hi")]


def test_empty_version_prompt_in_replace_mode_sends_no_system_message() -> None:
    result = build_upstream_body(version(system_prompt=""), body(system("APP PROMPT"), user("hi")), stream=False)
    assert result["messages"] == [user("hi")]


def test_app_system_message_in_the_middle_is_moved_not_duplicated() -> None:
    app = body(user("one"), system("LATE"), assistant("two"), user("three"))
    result = build_upstream_body(version(prompt_mode="append"), app, stream=False)
    assert result["messages"] == [system("LATE\n\nVERSION PROMPT"), user("one"), assistant("two"), user("three")]


# -- few-shot ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["replace", "prepend", "append"])
def test_few_shot_goes_after_the_system_message_and_before_the_conversation(mode: str) -> None:
    app = body(system("APP PROMPT"), user("q1"), assistant("a1"), user("q2"))
    result = build_upstream_body(version(few_shot=SHOTS, prompt_mode=mode), app, stream=False)
    messages = result["messages"]
    assert messages[0]["role"] == "system"
    assert messages[1:3] == list(SHOTS)
    assert messages[3:] == [user("q1"), assistant("a1"), user("q2")]


def test_few_shot_without_any_system_prompt_comes_first() -> None:
    result = build_upstream_body(version(system_prompt="", few_shot=SHOTS), body(user("q")), stream=False)
    assert result["messages"] == [*SHOTS, user("q")]


def test_few_shot_messages_are_copies() -> None:
    shots = ({"role": "user", "content": "example"},)
    result = build_upstream_body(version(few_shot=shots), body(user("q")), stream=False)
    result["messages"][1]["content"] = "changed"
    assert shots[0]["content"] == "example"


def test_conversation_messages_keep_their_extra_fields() -> None:
    tool_call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }
    tool_answer = {"role": "tool", "tool_call_id": "c1", "content": "42"}
    named = {"role": "user", "content": [{"type": "text", "text": "hi"}], "name": "bob"}
    result = build_upstream_body(version(), body(named, tool_call, tool_answer), stream=False)
    assert result["messages"] == [system("VERSION PROMPT"), named, tool_call, tool_answer]


# -- model and params ----------------------------------------------------------------------


def test_version_model_replaces_the_deployment_name() -> None:
    result = build_upstream_body(version(), body(user("hi")), stream=False)
    assert result["model"] == "upstream-model"


def test_version_params_override_and_other_app_params_pass_through() -> None:
    app = body(
        user("hi"),
        temperature=1.5,
        top_p=0.5,
        max_tokens=100,
        user="alice",
        tools=[{"type": "function", "function": {"name": "f"}}],
        response_format={"type": "json_object"},
        vendor_extension={"x": 1},
    )
    result = build_upstream_body(version(params={"temperature": 0.3, "max_tokens": 50}), app, stream=False)
    assert result["temperature"] == 0.3
    assert result["max_tokens"] == 50
    assert result["top_p"] == 0.5
    assert result["user"] == "alice"
    assert result["tools"] == app["tools"]
    assert result["response_format"] == {"type": "json_object"}
    assert result["vendor_extension"] == {"x": 1}


def test_version_params_the_app_did_not_send_are_added() -> None:
    result = build_upstream_body(version(params={"seed": 7, "top_p": 0.9}), body(user("hi")), stream=False)
    assert result["seed"] == 7
    assert result["top_p"] == 0.9


def test_input_body_is_not_mutated() -> None:
    app = body(
        system("APP PROMPT"),
        {"role": "developer", "content": [{"type": "text", "text": "dev"}]},
        user("hi"),
        temperature=1.0,
        stream=True,
        stream_options={"include_usage": False, "other": "kept"},
    )
    before = copy.deepcopy(app)
    v = version(params={"temperature": 0.1}, few_shot=SHOTS, prompt_mode="prepend")
    build_upstream_body(v, app, stream=True)
    assert app == before
    build_upstream_body(v, app, stream=False)
    assert app == before


def test_result_is_a_new_object() -> None:
    app = body(user("hi"), stream=True, stream_options={"include_usage": False})
    result = build_upstream_body(version(), app, stream=True)
    assert result is not app
    assert result["messages"] is not app["messages"]
    assert result["stream_options"] is not app["stream_options"]


# -- stream options -------------------------------------------------------------------------


def test_stream_asks_for_usage() -> None:
    result = build_upstream_body(version(), body(user("hi"), stream=True), stream=True)
    assert result["stream"] is True
    assert result["stream_options"] == {"include_usage": True}


def test_stream_overrides_include_usage_false_and_keeps_other_options() -> None:
    app = body(user("hi"), stream=True, stream_options={"include_usage": False, "continuous_usage_stats": True})
    result = build_upstream_body(version(), app, stream=True)
    assert result["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}


def test_stream_flag_comes_from_the_argument() -> None:
    result = build_upstream_body(version(), body(user("hi")), stream=True)
    assert result["stream"] is True
    assert result["stream_options"]["include_usage"] is True


def test_non_stream_drops_stream_options() -> None:
    app = body(user("hi"), stream=False, stream_options={"include_usage": True})
    result = build_upstream_body(version(), app, stream=False)
    assert "stream_options" not in result
    assert result.get("stream", False) is False


def test_non_stream_without_stream_options() -> None:
    result = build_upstream_body(version(), body(user("hi")), stream=False)
    assert "stream_options" not in result
    assert result.get("stream", False) is False


# -- properties --------------------------------------------------------------------------------

texts = st.text(max_size=30)
roles = st.sampled_from(["system", "developer", "user", "assistant"])
messages = st.lists(st.fixed_dictionaries({"role": roles, "content": texts}), min_size=1, max_size=8)


@settings(max_examples=150, deadline=None)
@given(
    app_messages=messages,
    prompt=texts,
    mode=st.sampled_from(["replace", "prepend", "append"]),
    shots=st.lists(
        st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": texts}), max_size=3
    ),
    stream=st.booleans(),
)
def test_shape_of_any_result(
    app_messages: list[dict[str, Any]], prompt: str, mode: str, shots: list[dict[str, str]], stream: bool
) -> None:
    app = body(*app_messages, temperature=1.0)
    before = copy.deepcopy(app)
    v = version(system_prompt=prompt, prompt_mode=mode, few_shot=tuple(shots))
    result = build_upstream_body(v, app, stream=stream)

    assert app == before
    out = result["messages"]
    conversation = [m for m in app_messages if m["role"] not in ("system", "developer")]
    app_prompts = [m["content"] for m in app_messages if m["role"] in ("system", "developer") and m["content"]]
    has_system = bool(prompt) or (mode != "replace" and bool(app_prompts))
    head = 1 if has_system else 0
    # At most one system message, and only at the front; no developer message survives.
    assert [m["role"] for m in out[:head]] == ["system"] * head
    assert all(m["role"] not in ("system", "developer") for m in out[head:])
    assert out[head : head + len(shots)] == shots
    assert out[head + len(shots) :] == conversation
    if has_system:
        content = out[0]["content"]
        if prompt:
            assert prompt in content
        if mode == "replace":
            assert content == prompt
        else:
            for app_prompt in app_prompts:
                assert app_prompt in content
            if prompt and app_prompts:
                assert content.startswith(prompt) if mode == "prepend" else content.endswith(prompt)
    assert result["model"] == "upstream-model"
    assert result["temperature"] == 1.0
    assert ("stream_options" in result) is stream


# -- Anthropic Messages, native ------------------------------------------------------------------------

BLOCKS = [{"type": "text", "text": "APP PROMPT", "cache_control": {"type": "ephemeral"}}]


def messages_request(**fields: Any) -> dict[str, Any]:
    return {"model": "support-bot", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}], **fields}


@pytest.mark.parametrize(("mode", "app", "expected"), [
    ("replace", "APP PROMPT", "VERSION PROMPT"),
    ("replace", BLOCKS, "VERSION PROMPT"),
    ("prepend", "APP PROMPT", "VERSION PROMPT\n\nAPP PROMPT"),
    ("append", "APP PROMPT", "APP PROMPT\n\nVERSION PROMPT"),
    # A block list stays one: the app's blocks keep their cache_control.
    ("prepend", BLOCKS, [{"type": "text", "text": "VERSION PROMPT"}, *BLOCKS]),
    ("append", BLOCKS, [*BLOCKS, {"type": "text", "text": "VERSION PROMPT"}]),
    ("prepend", None, "VERSION PROMPT"),
    ("append", [], "VERSION PROMPT"),
])
def test_messages_system_by_prompt_mode(mode: str, app: Any, expected: Any) -> None:
    body = messages_request(**({"system": app} if app is not None else {}))
    before = copy.deepcopy(body)
    upstream = build_messages_body(version(prompt_mode=mode), body, stream=False)
    assert upstream["system"] == expected
    assert body == before


def test_messages_without_a_version_prompt() -> None:
    assert build_messages_body(version(system_prompt="", prompt_mode="prepend"), messages_request(system=BLOCKS),
                               stream=False)["system"] == BLOCKS
    assert "system" not in build_messages_body(version(system_prompt=""), messages_request(system="APP"),
                                               stream=False)


def test_messages_few_shot_model_and_params_as_a_chat_call_to_anthropic_gets_them() -> None:
    body = messages_request(top_p=0.5, stop_sequences=["APP"], metadata={"user_id": "u1"})
    upstream = build_messages_body(
        version(few_shot=SHOTS, params={"max_completion_tokens": 300, "temperature": 0.1, "stop": "END",
                                        "top_p": None, "service_tier": "default"}),
        body, stream=True)
    assert upstream == {"model": "upstream-model", "system": "VERSION PROMPT", "max_tokens": 300,
                        "messages": [*SHOTS, {"role": "user", "content": "Hi"}], "metadata": {"user_id": "u1"},
                        "temperature": 0.1, "stop_sequences": ["END"], "service_tier": "standard_only",
                        "stream": True}


def test_messages_reasoning_effort_becomes_thinking_with_its_budget_on_the_apps_limit() -> None:
    upstream = build_messages_body(version(params={"reasoning_effort": "low", "temperature": None}),
                                   messages_request(temperature=0.5), stream=False)
    assert upstream["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert upstream["max_tokens"] == 100 + 2048 and "temperature" not in upstream


def test_messages_for_a_token_count_take_no_params() -> None:
    upstream = build_messages_body(version(params={"max_tokens": 300, "temperature": 0.1}),
                                   {"model": "support-bot", "messages": [{"role": "user", "content": "Hi"}]},
                                   stream=False, params=False)
    assert upstream == {"model": "upstream-model", "system": "VERSION PROMPT",
                        "messages": [{"role": "user", "content": "Hi"}]}
