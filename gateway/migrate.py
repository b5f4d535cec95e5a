"""Apply the Alembic migrations that ship with the gateway.

`serve` runs this at every start; when the schema is already at the newest
revision (the usual case) it answers from one query, without loading Alembic.
"""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema to `revision`; creates the SQLite file's directory if needed."""
    if database_url.startswith("sqlite") and ":///" in database_url:
        path = database_url.split(":///", 1)[1]
        if path and path != ":memory:":
            Path(path).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    if revision == "head" and asyncio.run(_current_revision(database_url)) == head_revision():
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = database_url
    command.upgrade(config, revision)


def head_revision() -> str | None:
    """The revision no other migration builds on, read from the migration files."""
    revisions: dict[str, str | None] = {}
    for path in (MIGRATIONS / "versions").glob("*.py"):
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
    return heads.pop() if len(heads) == 1 else None


async def _current_revision(database_url: str) -> str | None:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            current = await connection.scalar(text("SELECT version_num FROM alembic_version"))
            return str(current) if current is not None else None
    except DBAPIError:
        return None  # no schema yet, or no version table: let Alembic decide
    finally:
        await engine.dispose()
