"""The package keeps its shape: pure modules stay pure, imports point one way (types: scripts/check)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gateway"
PURE = (
    "routing",
    "prompts",
    "chat",
    "models",
    "errors",
    "config",
    "rollout",
    "analysis",
    "evaluators",
    "pricing",
    "limits",
    "policy",
    "families",
)
IO_LIBRARIES = ("fastapi", "starlette", "httpx", "httpx_aiohttp", "aiohttp", "sqlalchemy", "alembic", "uvicorn")


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules() -> dict[str, set[str]]:
    return {
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts): imports_of(path)
        for path in PACKAGE.rglob("*.py")
    }


@pytest.mark.parametrize("name", PURE)
def test_pure_modules_import_no_io_library(name: str) -> None:
    package = PACKAGE / name
    paths = sorted(package.rglob("*.py")) if package.is_dir() else [PACKAGE / f"{name}.py"]
    for path in paths:
        offending = {module for module in imports_of(path) if module.split(".")[0] in IO_LIBRARIES}
        assert not offending, f"{path.relative_to(PACKAGE.parent)} imports {offending}"


def test_only_the_api_layer_and_the_app_import_fastapi() -> None:
    for module, imported in modules().items():
        if module.startswith("gateway.api") or module in ("gateway.app", "gateway.cli"):
            continue
        assert not {name for name in imported if name.split(".")[0] in ("fastapi", "starlette")}, module


def test_nothing_but_the_cli_imports_the_app() -> None:
    importers = {module for module, imported in modules().items() if "gateway.app" in imported}
    assert importers <= {"gateway.cli"}
