"""Apply the Alembic migrations that ship with the gateway.

The scripts live in the repository's top-level `migrations/` folder, which the
build maps into the package as `gateway/migrations` (see setup.py): an
installed wheel finds them beside this module, a source checkout or an
editable install one level up. No scripts, or no single head revision among
them, is a broken installation: `MigrationsNotFound`, never a silent start on
an empty database.

`serve` runs this at every start; when the schema is already at the newest
revision (the usual case) it answers from one query, without loading Alembic.
A running gateway whose database was unreachable at start calls
`ensure_schema` when it first reaches it: it migrates then (or, told not to
migrate, says in the log that the schema is missing), so a database that was
never migrated does not read as "unavailable" forever.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import logging
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.errors import MigrationsNotFound, StoreUnavailable
from gateway.store.engine import pooler_connect_args

log = logging.getLogger("gateway.migrate")

_HERE = Path(__file__).resolve().parent
# Installed from a wheel first, then a source tree (checkout or editable install).
_CANDIDATES = (_HERE / "migrations", _HERE.parent / "migrations")


def migrations_dir() -> Path:
    """The folder holding `env.py` and `versions/`; raises MigrationsNotFound when there is none."""
    for candidate in _CANDIDATES:
        if (candidate / "env.py").is_file() and (candidate / "versions").is_dir():
            return candidate
    raise MigrationsNotFound(
        "no database migrations were found (looked in "
        + ", ".join(str(candidate) for candidate in _CANDIDATES)
        + "): the installation is incomplete; reinstall the canary-gateway package"
    )


def upgrade(database_url: str, revision: str = "head", *, pooler: str = "none") -> None:
    """Bring the schema to `revision`; creates the SQLite file's directory if needed.

    `pooler`: what stands between the gateway and PostgreSQL (`database.pooler`).

    Synchronous (it runs its own event loop): call it from a thread when a loop
    is running. Raises MigrationsNotFound, and SQLAlchemy's errors when the
    database cannot be reached.
    """
    directory = migrations_dir()
    head = head_revision(directory)
    if database_url.startswith("sqlite") and ":///" in database_url:
        path = database_url.split(":///", 1)[1]
        if path and path != ":memory:":
            Path(path).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    if revision == "head" and asyncio.run(current_revision(database_url, pooler=pooler)) == head:
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(directory))
    config.attributes["database_url"] = database_url
    config.attributes["pooler"] = pooler
    command.upgrade(config, revision)


def head_revision(directory: Path | None = None) -> str:
    """The revision no other migration builds on, read from the migration files.

    Raises MigrationsNotFound when the files name no revision, or several heads.
    """
    directory = directory or migrations_dir()
    revisions: dict[str, str | None] = {}
    for path in (directory / "versions").glob("*.py"):
        values: dict[str, str | None] = {}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                name, value = node.targets[0].id, node.value
                if name in ("revision", "down_revision") and isinstance(value, ast.Constant):
                    values[name] = value.value if isinstance(value.value, str) else None
        revision = values.get("revision")
        if revision is not None:
            revisions[revision] = values.get("down_revision")
    heads = set(revisions) - set(revisions.values())
    if len(heads) != 1:
        found = f"heads {', '.join(sorted(heads))}" if heads else "no revision"
        raise MigrationsNotFound(f"the migrations in {directory} have {found}; exactly one head is needed")
    return heads.pop()


async def current_revision(database_url: str, *, pooler: str = "none") -> str | None:
    """The schema's revision; None for a database that has none yet (or cannot say)."""
    engine = create_async_engine(database_url, **migration_engine_options(database_url, pooler))
    try:
        async with engine.connect() as connection:
            current = await connection.scalar(text("SELECT version_num FROM alembic_version"))
            return str(current) if current is not None else None
    except DBAPIError:
        return None  # no schema yet, or no version table: let Alembic decide
    finally:
        await engine.dispose()


def migration_engine_options(database_url: str, pooler: str) -> dict[str, Any]:
    """`create_async_engine` keyword arguments for the migrations' engine: PostgreSQL behind `pooler` needs some."""
    if database_url.startswith("sqlite"):
        return {}
    return {"connect_args": pooler_connect_args(pooler)}


async def ensure_schema(database_url: str, engine: AsyncEngine, *, apply: bool, pooler: str = "none") -> None:
    """Bring a reachable database's schema to the head revision, or say why not.

    `engine` is the gateway's own (for the check); the migration itself runs
    Alembic in a worker thread. With `apply` false a schema behind the head is
    logged (once per call) with the command that fixes it. Raises
    StoreUnavailable when the database cannot be reached, or its schema is
    behind and not migrated here; MigrationsNotFound for a broken installation.
    """
    head = head_revision()
    try:
        async with engine.connect() as connection:
            try:
                current = await connection.scalar(text("SELECT version_num FROM alembic_version"))
            except DBAPIError:
                current = None  # no version table: a database never migrated
    except (DBAPIError, OSError, TimeoutError) as exc:
        raise StoreUnavailable(f"the database is unavailable ({type(exc).__name__})") from exc
    if current == head:
        return
    found = f"at revision {current}" if current else "empty (never migrated)"
    if not apply:
        log.error("the database schema is %s; this gateway needs revision %s: run `canary-gateway migrate`",
                  found, head)
        raise StoreUnavailable(f"the database schema is {found}, not at revision {head}")
    log.warning("the database is reachable and its schema is %s: migrating to revision %s", found, head)
    try:
        await asyncio.to_thread(functools.partial(upgrade, database_url, pooler=pooler))
    except (DBAPIError, OSError) as exc:
        # Unreachable again, or another replica migrating at the same moment: the next refresh looks again.
        raise StoreUnavailable(f"migrating the database failed ({type(exc).__name__})") from exc
    log.warning("the database schema is now at revision %s", head)
