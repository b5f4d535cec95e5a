"""gateway.chat.parse_chat_request: refuse a bad call naming the field; pass the rest through."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.api.errors import http_status
from gateway.chat import MAX_USER_ID_CHARS, UNSAFE_KEYS, parse_chat_request
from gateway.errors import ClientError, InvalidRequest

HI = [{"role": "user", "content": "hi"}]


def raw(**fields: Any) -> bytes:
    payload: dict[str, Any] = {"model": "support-bot", "messages": HI}
    payload.update(fields)
    return json.dumps(payload).encode()


def without(key: str) -> bytes:
    payload: dict[str, Any] = {"model": "support-bot", "messages": HI}
    del payload[key]
    return json.dumps(payload).encode()


def refused(data: bytes, *, header_user: str | None = None) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_chat_request(data, header_user=header_user)
    error = info.value
    assert isinstance(error, ClientError)
    assert http_status(error) == 400
    assert error.message
    return error


# -- a good request ------------------------------------------------------------------------


def test_minimal_request() -> None:
    request = parse_chat_request(raw())
    assert request.model == "support-bot"
    assert request.stream is False
    assert request.wants_usage is False
    assert request.user is None
    assert request.body == {"model": "support-bot", "messages": HI}


def test_full_request_passes_through() -> None:
    messages = [
        {"role": "system", "content": "s"},
        {"role": "developer", "content": [{"type": "text", "text": "d"}]},
        {"role": "user", "content": [{"type": "text", "text": "q"}]},
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "tool", "content": "42", "tool_call_id": "c"},
        {"role": "function", "content": "x", "name": "f"},
    ]
    fields = {
        "temperature": 0.5,
        "top_p": 1,
        "presence_penalty": -1.5,
        "frequency_penalty": 0,
        "max_tokens": 10,
        "max_completion_tokens": 20,
        "n": 1,
        "seed": -3,
        "top_logprobs": 2,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "alice",
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "logit_bias": {"50256": -100},
    }
    request = parse_chat_request(raw(messages=messages, **fields))
    assert request.stream is True
    assert request.wants_usage is True
    assert request.user == "alice"
    assert request.body == {"model": "support-bot", "messages": messages, **fields}


# -- the body as a whole ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"{'model': 'x'}", b'{"model": "x",}', b"\xff\xfe\x00", b"nul\x00", b'{"a": 1} trailing'],
)
def test_malformed_json(data: bytes) -> None:
    assert "JSON" in refused(data).message


@pytest.mark.parametrize("data", [b"[]", b"[{}]", b'"text"', b"42", b"null", b"true"])
def test_non_object_body(data: bytes) -> None:
    assert "object" in refused(data).message


@pytest.mark.parametrize("depth", [100_000, 1_000_000])
def test_deeply_nested_json_is_refused_quickly(depth: int) -> None:
    for data in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth):
        started = time.perf_counter()
        error = refused(data)
        assert time.perf_counter() - started < 2.0
        assert "nested" in error.message or "JSON" in error.message


def test_deep_nesting_inside_an_otherwise_valid_request() -> None:
    depth = 100_000
    data = b'{"model":"m","messages":[{"role":"user","content":"x"}],"metadata":' + b"[" * depth + b"]" * depth + b"}"
    refused(data)


# -- model -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [None, "", 5, ["support-bot"], {"name": "x"}, True])
def test_bad_model(model: Any) -> None:
    assert refused(raw(model=model)).param == "model"


def test_missing_model() -> None:
    assert refused(without("model")).param == "model"


# -- messages ----------------------------------------------------------------------------------


@pytest.mark.parametrize("messages", [None, "hi", {"role": "user", "content": "hi"}, [], 3])
def test_messages_not_a_non_empty_list(messages: Any) -> None:
    assert refused(raw(messages=messages)).param == "messages"


def test_missing_messages() -> None:
    assert refused(without("messages")).param == "messages"


@pytest.mark.parametrize("message", ["hi", None, 1, ["user", "hi"]])
def test_message_not_an_object(message: Any) -> None:
    assert refused(raw(messages=[HI[0], message])).param == "messages[1]"


@pytest.mark.parametrize(
    "role",
    [
        "robot",
        "",
        None,
        "USER",
        1,
        1.5,
        False,
        pytest.param(["user"], id="list"),
        pytest.param({"name": "user"}, id="object"),
    ],
)
def test_wrong_role(role: Any) -> None:
    messages = [HI[0], {"role": role, "content": "x"}]
    assert refused(raw(messages=messages)).param == "messages[1].role"


def test_missing_role() -> None:
    assert refused(raw(messages=[{"content": "x"}])).param == "messages[0].role"


@pytest.mark.parametrize("content", [1, 1.5, True, {"type": "text", "text": "x"}])
def test_wrong_content_type(content: Any) -> None:
    messages = [HI[0], HI[0], {"role": "assistant", "content": content}]
    assert refused(raw(messages=messages)).param == "messages[2].content"


def test_first_bad_message_is_named() -> None:
    messages = [HI[0], {"role": "nobody"}, {"role": "user", "content": 5}]
    assert refused(raw(messages=messages)).param == "messages[1].role"


# -- stream and stream_options ---------------------------------------------------------------------


@pytest.mark.parametrize("stream", ["true", "false", 1, 0, [], {}])
def test_stream_must_be_a_boolean(stream: Any) -> None:
    assert refused(raw(stream=stream)).param == "stream"


def test_stream_null_is_false() -> None:
    request = parse_chat_request(raw(stream=None))
    assert request.stream is False


@pytest.mark.parametrize("stream", [True, False])
def test_stream_boolean(stream: bool) -> None:
    assert parse_chat_request(raw(stream=stream)).stream is stream


@pytest.mark.parametrize("extra", [{}, {"stream": False}, {"stream": None}])
def test_stream_options_without_stream(extra: dict[str, Any]) -> None:
    error = refused(raw(stream_options={"include_usage": True}, **extra))
    assert error.param == "stream_options"


def test_stream_options_null_without_stream_is_fine() -> None:
    assert parse_chat_request(raw(stream_options=None)).wants_usage is False


@pytest.mark.parametrize("options", ["yes", [], 1, True])
def test_stream_options_must_be_an_object(options: Any) -> None:
    assert refused(raw(stream=True, stream_options=options)).param == "stream_options"


@pytest.mark.parametrize("include", ["true", 1, 0, None, []])
def test_include_usage_must_be_a_boolean(include: Any) -> None:
    error = refused(raw(stream=True, stream_options={"include_usage": include}))
    assert error.param == "stream_options.include_usage"


@pytest.mark.parametrize(
    ("options", "wants"), [({}, False), ({"include_usage": False}, False), ({"include_usage": True}, True)]
)
def test_wants_usage(options: dict[str, Any], wants: bool) -> None:
    request = parse_chat_request(raw(stream=True, stream_options=options))
    assert request.wants_usage is wants
    assert request.body["stream_options"] == options


# -- sampling parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["temperature", "top_p", "presence_penalty", "frequency_penalty"])
@pytest.mark.parametrize("value", ["hot", True, False, [0.5], {"v": 1}, "0.5"])
def test_number_params_refuse_non_numbers(name: str, value: Any) -> None:
    error = refused(raw(**{name: value}))
    assert error.param == name
    assert name in error.message


@pytest.mark.parametrize("name", ["temperature", "top_p", "presence_penalty", "frequency_penalty"])
@pytest.mark.parametrize("value", [0, 1, 0.25, -2.0, None])
def test_number_params_accept_numbers(name: str, value: Any) -> None:
    assert parse_chat_request(raw(**{name: value})).body[name] == value


@pytest.mark.parametrize("name", ["max_tokens", "max_completion_tokens", "n", "seed", "top_logprobs"])
@pytest.mark.parametrize("value", [1.5, 10.0, "10", True, [1]])
def test_integer_params_refuse_non_integers(name: str, value: Any) -> None:
    error = refused(raw(**{name: value}))
    assert error.param == name
    assert name in error.message


@pytest.mark.parametrize("name", ["max_tokens", "max_completion_tokens", "n", "seed", "top_logprobs"])
def test_integer_params_accept_integers(name: str) -> None:
    assert parse_chat_request(raw(**{name: 7})).body[name] == 7


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_non_finite_numbers_are_refused(literal: bytes) -> None:
    data = b'{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":' + literal + b"}"
    refused(data)


# -- user ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1, 1.5, True, ["alice"], {"id": "alice"}])
def test_user_must_be_a_string(value: Any) -> None:
    assert refused(raw(user=value)).param == "user"


def test_user_from_the_body() -> None:
    assert parse_chat_request(raw(user="alice")).user == "alice"


def test_user_from_the_header_when_the_body_has_none() -> None:
    assert parse_chat_request(raw(), header_user="bob").user == "bob"
    assert parse_chat_request(raw(user=None), header_user="bob").user == "bob"


def test_body_user_wins_over_the_header() -> None:
    assert parse_chat_request(raw(user="alice"), header_user="bob").user == "alice"


def test_no_user_anywhere_is_anonymous() -> None:
    assert parse_chat_request(raw()).user is None
    assert parse_chat_request(raw(), header_user="").user is None
    assert parse_chat_request(raw(user=""), header_user=None).user is None


def test_header_user_is_not_written_into_the_body() -> None:
    assert "user" not in parse_chat_request(raw(), header_user="bob").body


def test_user_id_length_limit() -> None:
    assert MAX_USER_ID_CHARS == 1024
    longest = "u" * MAX_USER_ID_CHARS
    assert parse_chat_request(raw(user=longest)).user == longest
    assert refused(raw(user=longest + "u")).param == "user"
    assert refused(raw(), header_user=longest + "u").param == "user"
    # Characters, not bytes: 1024 emoji are 4096 UTF-8 bytes and still fine.
    emoji = "\U0001f600" * MAX_USER_ID_CHARS
    assert parse_chat_request(raw(user=emoji)).user == emoji


def test_unusual_user_ids_are_kept_verbatim() -> None:
    for user_id in ["\U0001f600", "nul\x00x", " spaced ", "\ud800"]:
        data = json.dumps({"model": "m", "messages": HI, "user": user_id}).encode()
        assert parse_chat_request(data).user == user_id


# -- unsafe keys ----------------------------------------------------------------------------------------

UNSAFE = ["api_base", "base_url", "api_key", "extra_headers", "headers", "organization", "api_version"]


def test_the_unsafe_key_list() -> None:
    assert set(UNSAFE) <= UNSAFE_KEYS


@pytest.mark.parametrize("key", UNSAFE)
def test_unsafe_key_is_removed(key: str) -> None:
    request = parse_chat_request(raw(**{key: "http://attacker.example/v1"}))
    assert key not in request.body


def test_all_unsafe_keys_at_once_and_harmless_keys_kept() -> None:
    unsafe = {key: {"Authorization": "Bearer x"} if "header" in key else "x" for key in UNSAFE}
    harmless = {"metadata": {"team": "a"}, "logprobs": True, "vendor_flag": [1, 2], "parallel_tool_calls": False}
    request = parse_chat_request(raw(**unsafe, **harmless))
    assert request.body == {"model": "support-bot", "messages": HI, **harmless}


@settings(max_examples=100, deadline=None)
@given(
    extra=st.dictionaries(
        st.text(min_size=1, max_size=12).filter(
            lambda key: key not in {"model", "messages", "stream", "stream_options", "user"}
            and key not in {"temperature", "top_p", "presence_penalty", "frequency_penalty"}
            and key not in {"max_tokens", "max_completion_tokens", "n", "seed", "top_logprobs"}
        ),
        st.one_of(st.none(), st.booleans(), st.text(max_size=10), st.integers(), st.lists(st.integers(), max_size=3)),
        max_size=5,
    )
)
def test_other_keys_pass_through_unless_unsafe(extra: dict[str, Any]) -> None:
    request = parse_chat_request(raw(**extra))
    for key, value in extra.items():
        if key in UNSAFE_KEYS:
            assert key not in request.body
        else:
            assert request.body[key] == value


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_other_errors(data: bytes) -> None:
    with contextlib.suppress(InvalidRequest):
        parse_chat_request(data)


@settings(max_examples=150, deadline=None)
@given(
    body=st.recursive(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(allow_nan=False, allow_infinity=False),
            st.text(max_size=8),
        ),
        lambda children: st.one_of(
            st.lists(children, max_size=3), st.dictionaries(st.text(max_size=8), children, max_size=3)
        ),
        max_leaves=20,
    ),
    header_user=st.one_of(st.none(), st.text(max_size=20)),
)
def test_arbitrary_json_is_parsed_or_refused(body: Any, header_user: str | None) -> None:
    try:
        request = parse_chat_request(json.dumps(body).encode(), header_user=header_user)
    except InvalidRequest as error:
        assert error.message
    else:
        assert isinstance(request.model, str) and request.model
        assert isinstance(request.stream, bool)
