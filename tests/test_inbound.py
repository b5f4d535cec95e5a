"""gateway.inbound: the user id's sources in their order, and what is refused."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import InvalidRequest
from gateway.inbound import MAX_USER_ID_CHARS, user_id


@pytest.mark.parametrize(
    ("body", "header", "expected"),
    [
        ({"user": "a", "safety_identifier": "b", "metadata": {"user_id": "c"}}, "d", ("a", "user")),
        ({"safety_identifier": "b", "metadata": {"user_id": "c"}}, "d", ("b", "safety_identifier")),
        ({"metadata": {"user_id": "c"}}, "d", ("c", "metadata.user_id")),
        ({}, "d", ("d", "header")),
        ({}, None, (None, None)),
        # Empty strings and nulls are no id: the next source is asked.
        ({"user": "", "safety_identifier": None, "metadata": {"user_id": ""}}, "d", ("d", "header")),
        ({"user": None, "safety_identifier": "b"}, None, ("b", "safety_identifier")),
        # metadata that is not an object carries no user id.
        ({"metadata": "c"}, None, (None, None)),
    ],
)
def test_sources_in_order(body: dict[str, Any], header: str | None, expected: tuple[str | None, str | None]) -> None:
    assert user_id(body, header) == expected


def test_prompt_cache_key_is_not_a_user_id() -> None:
    assert user_id({"prompt_cache_key": "tenant-7"}, None) == (None, None)
    assert user_id({"prompt_cache_key": "tenant-7"}, "u1") == ("u1", "header")


@pytest.mark.parametrize(
    ("body", "param"),
    [({"user": 42}, "user"), ({"safety_identifier": ["x"]}, "safety_identifier"),
     ({"metadata": {"user_id": {"id": 1}}}, "metadata.user_id"),
     # A later source of the wrong type is refused even when an earlier one is good.
     ({"user": "a", "safety_identifier": 7}, "safety_identifier")],
)
def test_a_user_id_of_the_wrong_type_is_refused_naming_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        user_id(body, None)
    assert caught.value.param == param and param in caught.value.message


def test_a_too_long_user_id_is_refused_naming_its_source() -> None:
    longest = "u" * MAX_USER_ID_CHARS
    assert user_id({"safety_identifier": longest}, None) == (longest, "safety_identifier")
    with pytest.raises(InvalidRequest) as caught:
        user_id({"safety_identifier": longest + "u"}, None)
    assert caught.value.param == "safety_identifier"
