"""A small declarative checker for JSON request bodies, as the fakes' validators use it.

Each check is a callable `(value, path)` that raises `Invalid` with the path of
the first offending value (`("messages", 0, "content")`) and what is wrong with
it: an extra key, a missing key, a wrong type or a wrong value. The fakes turn
an `Invalid` into each API's own error body and wording.

Why not jsonschema: each fake needs the path and the kind of the first error to
word its error the way its API does, and the shapes are written once here from
the SDKs' TypedDicts (`Required[...]` keys → `required`, the rest → `optional`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

Path = tuple[str | int, ...]
Check = Callable[[Any, Path], None]


class Invalid(Exception):
    """The first problem found: `kind` is "extra", "missing", "type" or "value"."""

    def __init__(self, path: Path, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.path = path
        self.kind = kind
        self.detail = detail

    def dotted(self) -> str:
        """`messages.0.content.1.text`, the path as Anthropic's errors name it."""
        return ".".join(str(part) for part in self.path)

    def bracketed(self) -> str:
        """`input[0].content`, the path as OpenAI's errors name it."""
        text = ""
        for part in self.path:
            text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
        return text


def anything(value: Any, path: Path) -> None:
    """Accepts any JSON value."""


def string(*, pattern: Callable[[str], bool] | None = None, describe: str = "a valid string") -> Check:
    def check(value: Any, path: Path) -> None:
        if not isinstance(value, str):
            raise Invalid(path, "type", "Input should be a valid string")
        if pattern is not None and not pattern(value):
            raise Invalid(path, "value", f"String should be {describe}")

    return check


def integer(*, minimum: int | None = None, maximum: int | None = None) -> Check:
    def check(value: Any, path: Path) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(path, "type", "Input should be a valid integer")
        if minimum is not None and value < minimum:
            raise Invalid(path, "value", f"Input should be greater than or equal to {minimum}")
        if maximum is not None and value > maximum:
            raise Invalid(path, "value", f"Input should be less than or equal to {maximum}")

    return check


def number(*, minimum: float | None = None, maximum: float | None = None) -> Check:
    def check(value: Any, path: Path) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid(path, "type", "Input should be a valid number")
        if minimum is not None and value < minimum:
            raise Invalid(path, "value", f"Input should be greater than or equal to {minimum}")
        if maximum is not None and value > maximum:
            raise Invalid(path, "value", f"Input should be less than or equal to {maximum}")

    return check


def boolean(value: Any, path: Path) -> None:
    if not isinstance(value, bool):
        raise Invalid(path, "type", "Input should be a valid boolean")


def literal(*allowed: Any) -> Check:
    def check(value: Any, path: Path) -> None:
        if isinstance(value, bool) or value not in allowed:
            names = ", ".join(repr(item) for item in allowed)
            raise Invalid(path, "value", f"Input should be {names}")

    return check


def nullable(inner: Check) -> Check:
    def check(value: Any, path: Path) -> None:
        if value is not None:
            inner(value, path)

    return check


def array(item: Check, *, min_items: int = 0, max_items: int | None = None) -> Check:
    def check(value: Any, path: Path) -> None:
        if not isinstance(value, list):
            raise Invalid(path, "type", "Input should be a valid list")
        if len(value) < min_items:
            raise Invalid(path, "value", f"List should have at least {min_items} item(s)")
        if max_items is not None and len(value) > max_items:
            raise Invalid(path, "value", f"List should have at most {max_items} item(s)")
        for index, element in enumerate(value):
            item(element, (*path, index))

    return check


def mapping(values: Check = anything) -> Check:
    """A JSON object with any keys (schemas, metadata, logit_bias)."""

    def check(value: Any, path: Path) -> None:
        if not isinstance(value, dict):
            raise Invalid(path, "type", "Input should be a valid dictionary")
        for key, element in value.items():
            values(element, (*path, key))

    return check


def obj(required: Mapping[str, Check] | None = None, optional: Mapping[str, Check] | None = None) -> Check:
    """An object with exactly these keys: every `required` one, any `optional` one, no other."""
    needed = dict(required or {})
    allowed = {**needed, **(optional or {})}

    def check(value: Any, path: Path) -> None:
        if not isinstance(value, dict):
            raise Invalid(path, "type", "Input should be a valid dictionary or object")
        for key in value:
            if key not in allowed:
                raise Invalid((*path, key), "extra", "Extra inputs are not permitted")
        for key in needed:
            if key not in value:
                raise Invalid((*path, key), "missing", "Field required")
        for key, element in value.items():
            allowed[key](element, (*path, key))

    return check


def tagged(variants: Mapping[str, Check], *, key: str = "type", default: str | None = None,
           loose: Collection[str] = ()) -> Check:
    """A union told apart by `key` (Stainless' discriminator); `loose` tags are accepted unchecked."""

    def check(value: Any, path: Path) -> None:
        if not isinstance(value, dict):
            raise Invalid(path, "type", "Input should be a valid dictionary or object")
        tag = value.get(key, default)
        if isinstance(tag, str) and tag in variants:
            variants[tag](value, path)
        elif tag not in loose:
            names = ", ".join(repr(name) for name in (*variants, *loose))
            raise Invalid((*path, key), "value", f"Input tag {tag!r} found using {key!r} does not match any of "
                                                 f"the expected tags: {names}")

    return check


def either(*options: Check) -> Check:
    """The first option that accepts the value; else the error of the option that got deepest."""

    def check(value: Any, path: Path) -> None:
        errors: list[Invalid] = []
        for option in options:
            try:
                option(value, path)
            except Invalid as error:
                errors.append(error)
            else:
                return
        raise max(errors, key=lambda error: len(error.path))

    return check

