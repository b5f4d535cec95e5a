"""Alembic environment: async engine, URL from the gateway's settings."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import event, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.migrate import migration_engine_options
from gateway.store.engine import register_sqlite_functions, sqlite_journal
from gateway.tables import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = (
        config.attributes.get("database_url")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("GATEWAY_DATABASE_URL")
    )
    if not url:
        raise RuntimeError("no database URL: run `canary-gateway migrate --config PATH`")
    return str(url)


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    url = _url()
    pooler = str(config.attributes.get("pooler", "none"))
    engine = create_async_engine(url, poolclass=pool.NullPool, **migration_engine_options(url, pooler))
    if engine.dialect.name == "sqlite":
        # The migrations' SQL uses canary_latency_bucket, which PostgreSQL gets as a SQL function.
        event.listen(engine.sync_engine, "connect", register_sqlite_functions)
        # The journal the gateway's own connections use (gateway.store.engine), from the first statement:
        # in WAL with synchronous=NORMAL a commit does not wait for the disk.
        event.listen(engine.sync_engine, "connect", sqlite_journal)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
