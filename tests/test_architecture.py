"""The package keeps its shape: the README's module map is the rule, and the code follows it.

The map (README, "Module map") gives every module of `gateway/` the modules
and I/O libraries it may import. Here it is read into `LAYERS` (module →
allowed names); the tests check that every module has a row, that no import
leaves what its row allows, and that the map itself keeps the direction of
the house: pure modules list no I/O library, only the API layer, the app and
the CLI list FastAPI, and only the CLI lists the app. Types are checked by
`scripts/check`, not here.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gateway"
IO_LIBRARIES = frozenset({
    "fastapi", "starlette", "httpx", "httpx_aiohttp", "aiohttp", "sqlalchemy", "alembic", "uvicorn", "apscheduler",
    "prometheus_client",
})
WEB = frozenset({"fastapi", "starlette"})
PURE = (
    "analysis", "chat", "config", "durations", "errors", "evaluators", "families", "fields", "inbound", "limits",
    "models", "pivot", "policy", "pricing", "prompts", "responses", "retry", "rollout", "routing", "translators",
)
_ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|.*\|\s*([^|]*?)\s*\|\s*$")


def module_map(readme: Path = ROOT / "README.md") -> dict[str, frozenset[str]]:
    """The README's module map: module (as written, `store.engine`) → the names its row allows."""
    text = readme.read_text()
    section = text[text.index("## Module map"):]
    section = section[: section.find("\n## ", 1)] if "\n## " in section[1:] else section
    layers: dict[str, frozenset[str]] = {}
    for line in section.splitlines():
        match = _ROW.match(line)
        if match:
            layers[match.group(1)] = frozenset(re.findall(r"`([^`]+)`", match.group(2)))
    return layers


LAYERS = module_map()


def module_name(path: Path) -> str:
    """`gateway/store/engine.py` → `store.engine`; the package's own `__init__.py` → `gateway`."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or "gateway"


def imports_of(path: Path) -> set[str]:
    """Absolute imports of a module: `gateway.x.y` as `x.y`, `from gateway import v` as `gateway` or `v`."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "gateway":
                names.update(f"gateway.{alias.name}" if is_module(alias.name) else "gateway" for alias in node.names)
            else:
                names.add(node.module)
    return names


def is_module(name: str) -> bool:
    """Whether `gateway.NAME` is a module or package (rather than an attribute such as `__version__`)."""
    return (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").exists()


def allowed(module: str, imported: str) -> bool:
    """Whether `module`'s row (or its package's own modules) allows importing `imported`."""
    row = LAYERS[module]
    if imported == "gateway" or imported.startswith("gateway."):
        target = imported.removeprefix("gateway.") if imported != "gateway" else "gateway"
        own_package = module.split(".")[0]  # a package's modules, and the package itself, import each other
        return any(target == name or target.startswith(f"{name}.") for name in row | {own_package})
    library = imported.split(".")[0]
    return library not in IO_LIBRARIES or library in row


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_one_row_and_every_row_a_module() -> None:
    assert sorted(set(MODULES) - set(LAYERS)) == [], "modules missing from the README's module map"
    assert sorted(set(LAYERS) - set(MODULES)) == [], "rows of the module map naming no module"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_stay_within_the_row_of_the_map(module: str) -> None:
    outside = sorted(name for name in imports_of(MODULES[module]) if not allowed(module, name))
    assert not outside, f"gateway/{MODULES[module].relative_to(PACKAGE)} imports {outside}, outside its row"


def test_the_map_keeps_the_direction_of_the_house() -> None:
    for module, row in LAYERS.items():
        if module.split(".")[0] in PURE:
            assert not row & IO_LIBRARIES, f"pure module {module} lists {sorted(row & IO_LIBRARIES)}"
        if row & WEB:
            assert module.split(".")[0] in ("api", "app", "cli"), f"{module} lists FastAPI"
        if "app" in row:
            assert module == "cli", f"{module} lists the app"
    for name in PURE:
        assert name in LAYERS, f"{name} is listed as pure but has no row"


def test_a_row_that_forbids_an_import_fails_the_check() -> None:
    assert not allowed("routing", "gateway.store")
    assert not allowed("routing", "sqlalchemy.orm")
    assert allowed("routing", "hashlib")
    assert allowed("store.engine", "gateway.store.records")  # its own package


# Imported where they are used, never while the gateway starts: each is RSS held by every worker
# (tiktoken: the count_tokens estimate; alembic, mako: a migration; rich, pygments: the demo and
# httpx's command-line client; the statistics stack: the analysis tools; SQLAlchemy's PostgreSQL
# dialect and asyncpg: a PostgreSQL database, and the serve path is checked here on SQLite's).
NOT_AT_START = ("tiktoken", "alembic", "mako", "rich", "pygments", "jinja2", "numpy", "scipy", "statsmodels",
                "sqlalchemy.dialects.postgresql", "asyncpg")


def test_the_serve_path_imports_nothing_it_does_not_need_at_start() -> None:
    script = ("import sys, uvicorn, gateway.cli, gateway.app, gateway.migrate\n"
              "from gateway.store import Store, create_engine\n"
              "from gateway.config import DatabaseSettings\n"
              "Store(create_engine('sqlite+aiosqlite:///:memory:', DatabaseSettings()))\n"
              "print(' '.join(sorted(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout.split()
    assert "sqlalchemy" in loaded and "fastapi" in loaded and "aiosqlite" in loaded
    unexpected = [name for name in loaded if any(name == banned or name.startswith(f"{banned}.")
                                                 for banned in NOT_AT_START)]
    assert unexpected == []
