"""Reference documentation generated from the code: the configuration and the admin API.

`config_reference()` walks the settings model (`gateway.config.Settings`) and
renders every key as Markdown: its path, type, default, constraints and
description. `admin_api_reference(openapi)` renders the `/admin` operations of
the app's OpenAPI schema. `docs/configuration.md` and `docs/admin-api.md` are
their output, and a test fails when the files and the code disagree
(`canary-gateway reference config > docs/configuration.md` regenerates one).

A key's description is its `Field(description=...)` when it has one, else the
comment written beside or right above it in `gateway/config.py`. Pydantic reads
descriptions only from `Field` or attribute docstrings; the settings module
documents most keys in comments, and reading those here keeps one text per
key instead of a second copy that would drift.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from gateway.config import Settings

_DURATION_VALIDATORS = {"parse_duration": "duration", "_duration_or_zero": "duration (0: none)"}


@dataclass(frozen=True, slots=True)
class _Row:
    key: str
    type: str
    default: str
    description: str


def config_reference(model: type[BaseModel] = Settings) -> str:
    """The configuration reference as Markdown: one table per section of the settings model.

    Sections are the nested models, named by their key path (`providers.<name>`
    for maps of named entries, `quality.evaluators[]` for lists). Durations
    accept `500ms`, `30s`, `15m`, `1h`, `1d`.
    """
    lines = [
        "# Configuration reference",
        "",
        "Generated from the settings model (`gateway/config.py`) by `canary-gateway reference config`;",
        "a test fails when this file and the model disagree. `config.example.yaml` shows the keys in use.",
        "Durations accept `500ms`, `30s`, `15m`, `1h` and `1d`; `${ENV}` in a value is replaced by",
        "that environment variable.",
    ]
    for path, section in _sections(model, ""):
        lines += ["", f"## `{path or '(top level)'}`", ""]
        doc = inspect.getdoc(section)
        if doc and section.__doc__ is not None and section is not model:
            lines += [doc.splitlines()[0], ""]
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        for row in _rows(section):
            lines.append(f"| `{row.key}` | {row.type} | {row.default} | {row.description} |")
    return "\n".join(lines) + "\n"


def admin_api_reference(openapi: Mapping[str, Any]) -> str:
    """The admin API as Markdown, from the app's OpenAPI schema (`app.openapi()`).

    One row per `/admin` operation: method, path, what it does (the handler's
    docstring), its query parameters and JSON body fields (`?`: optional) and
    its documented answer statuses.
    """
    schemas = openapi.get("components", {}).get("schemas", {})
    lines = [
        "# Admin API reference",
        "",
        "Generated from the OpenAPI schema (`GET /openapi.json`) by `canary-gateway reference admin-api`;",
        "a test fails when this file and the routes disagree. Every call needs `Authorization: Bearer",
        "<admin token>`; errors are `{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`.",
        "",
        "| method | path | does | query | body | answers |",
        "|---|---|---|---|---|---|",
    ]
    for path, operations in sorted(openapi.get("paths", {}).items()):
        if not path.startswith("/admin"):
            continue
        for method, operation in operations.items():
            does = _cell((operation.get("description") or operation.get("summary") or "").split("\n\n")[0])
            body = _body_fields(operation, schemas)
            answers = ", ".join(sorted(operation.get("responses", {})))
            lines.append(f"| `{method.upper()}` | `{path}` | {does} | {_query(operation)} | {body} | {answers} |")
    return "\n".join(lines) + "\n"


def _body_fields(operation: Mapping[str, Any], schemas: Mapping[str, Any]) -> str:
    content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    schema = content.get("schema", {})
    optional = "anyOf" in schema
    reference = next((item.get("$ref", "") for item in schema.get("anyOf", [schema]) if "$ref" in item), "")
    schema = schemas.get(reference.rpartition("/")[2], {})
    properties = schema.get("properties", {})
    required = set(schema.get("required", ()))
    fields = ", ".join(f"`{name}`" + ("" if name in required else "?") for name in properties)
    return (f"optional: {fields}" if optional else fields) or "—"


def _query(operation: Mapping[str, Any]) -> str:
    return ", ".join(f"`{parameter['name']}`" + ("" if parameter.get("required") else "?")
                     for parameter in operation.get("parameters", ()) if parameter.get("in") == "query") or "—"


def _sections(model: type[BaseModel], path: str) -> Iterator[tuple[str, type[BaseModel]]]:
    yield path, model
    for name, field in model.model_fields.items():
        for suffix, nested in _nested_models(field.annotation):
            yield from _sections(nested, f"{path}.{name}{suffix}".lstrip("."))


def _nested_models(annotation: Any) -> Iterator[tuple[str, type[BaseModel]]]:
    origin, args = get_origin(annotation), get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield "", annotation
    elif origin in (Union, types.UnionType):
        for arg in args:
            yield from _nested_models(arg)
    elif origin is dict and len(args) == 2:
        for suffix, nested in _nested_models(args[1]):
            yield ".<name>" + suffix, nested
    elif origin in (tuple, list) and args:
        for suffix, nested in _nested_models(args[0]):
            yield "[]" + suffix, nested


def _rows(model: type[BaseModel]) -> Iterator[_Row]:
    comments = _field_comments(model)
    for name, field in model.model_fields.items():
        constraints = _constraints(field)
        description = field.description or comments.get(name, "")
        if constraints:
            description = f"{description} ({constraints})" if description else constraints
        yield _Row(name, _type_name(field), _default(field), _cell(description))


def _type_name(field: FieldInfo) -> str:
    for item in field.metadata:
        name = getattr(getattr(item, "func", None), "__name__", "")
        if name in _DURATION_VALIDATORS:
            return _DURATION_VALIDATORS[name]
    return _annotation_name(field.annotation)


def _annotation_name(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{arg}`" for arg in args)
    if origin is typing.Annotated:
        for item in annotation.__metadata__:
            name = getattr(getattr(item, "func", None), "__name__", "")
            if name in _DURATION_VALIDATORS:
                return _DURATION_VALIDATORS[name]
        return _annotation_name(args[0])
    if origin in (Union, types.UnionType):
        names = [_annotation_name(arg) for arg in args if arg is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is dict:
        return f"map of {_annotation_name(args[0])} → {_annotation_name(args[1])}"
    if origin in (tuple, list):
        return f"list of {_annotation_name(args[0])}"
    if annotation is SecretStr:
        return "secret string"
    if annotation is Any:
        return "any"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, SecretStr):
        return "`\"\"`" if not value.get_secret_value() else "(set)"
    if value is None:
        return "none"
    if isinstance(value, tuple):
        value = list(value)
    return _cell(f"`{value!r}`" if isinstance(value, str) else f"`{value}`")


def _constraints(field: FieldInfo) -> str:
    words = []
    for item in field.metadata:
        for kind, symbol in ((annotated_types.Ge, "≥"), (annotated_types.Gt, ">"),
                             (annotated_types.Le, "≤"), (annotated_types.Lt, "<")):
            if isinstance(item, kind):
                words.append(f"{symbol} {dataclasses.astuple(item)[0]}")
        if isinstance(item, annotated_types.MinLen):
            words.append(f"at least {item.min_length} long")
        pattern = getattr(item, "pattern", None)
        if isinstance(pattern, str):
            words.append(f"matches `{pattern}`")
    return ", ".join(words)


@cache
def _field_comments(model: type[BaseModel]) -> dict[str, str]:
    """The comment beside each field, or the block of comment lines right above it."""
    try:
        source = textwrap.dedent(inspect.getsource(model))
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.splitlines()
    found: dict[str, str] = {}
    [class_node] = ast.parse(source).body
    assert isinstance(class_node, ast.ClassDef)
    for node in class_node.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        if node.lineno in comments:
            found[node.target.id] = comments[node.lineno]
            continue
        block: list[str] = []
        line = node.lineno - 1
        while line in comments and lines[line - 1].lstrip().startswith("#"):
            block.insert(0, comments[line])
            line -= 1
        if block:
            found[node.target.id] = " ".join(block)
    return found


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")
