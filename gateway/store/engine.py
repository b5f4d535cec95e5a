"""The database engine, its dialect checked once, and the translation of database errors.

Database exceptions are translated here, once, for every query module of the
package: `StoreUnavailable` when the database cannot be reached or timed out
(retry later), `StoreRejected` when it refused the values (retrying will not
help). Both keep the driver's exception as their cause.

Two dialects are served: PostgreSQL (asyncpg) and SQLite (aiosqlite).
`Dialect.of(engine)` looks the dialect up once; the query modules branch on
its fields, never on the engine's name.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError, StatementError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.analysis.histogram import bucket_of
from gateway.config import DatabaseSettings
from gateway.errors import StoreRejected, StoreUnavailable

T = TypeVar("T")


def create_engine(url: str, settings: DatabaseSettings, *, checks: bool = False) -> AsyncEngine:
    """An engine for `url` (`postgresql+asyncpg://` or `sqlite+aiosqlite://`); connects lazily.

    Every statement is bounded by `settings.statement_timeout` (seconds); on
    PostgreSQL the pool is sized and timed out by `settings`. `checks`: the
    rollout checks' PostgreSQL engine instead, one connection or two, each
    statement bounded by `settings.check_timeout`. Behind a transaction-mode
    pooler (`settings.pooler`) the timeout is set in each transaction
    (`SET LOCAL`), since such a pooler refuses it as a startup parameter and
    shares each server connection between clients.
    """
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": settings.statement_timeout})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    timeout = settings.check_timeout if checks else settings.statement_timeout
    timeout_ms = str(int(timeout * 1000))
    server_settings = {"application_name": "canary-gateway"}
    if settings.pooler == "none":
        server_settings["statement_timeout"] = timeout_ms
    engine = create_async_engine(
        url,
        pool_size=1 if checks else settings.pool_size,
        max_overflow=1 if checks else settings.max_overflow,
        pool_timeout=settings.pool_timeout,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={
            "timeout": settings.pool_timeout,
            "command_timeout": timeout + 1,
            "server_settings": server_settings,
            **pooler_connect_args(settings.pooler),
        },
    )
    if settings.pooler == "transaction":
        event.listen(engine.sync_engine, "begin", functools.partial(_set_local_timeout, timeout_ms))
    return engine


def pooler_connect_args(pooler: str) -> dict[str, Any]:
    """asyncpg connect arguments (through SQLAlchemy's asyncpg dialect) for PostgreSQL behind `pooler`.

    `transaction` (a pooler in transaction mode): no prepared statement is
    cached, by asyncpg or by SQLAlchemy, and every statement is prepared
    unnamed, so nothing is left on a server connection that the pooler then
    hands to another client (a named statement would collide with another
    client's, or pile up: SQLAlchemy's asyncpg dialect documentation,
    "Prepared Statement Name with PGBouncer"). `none`: nothing to add.
    """
    if pooler != "transaction":
        return {}
    return {"statement_cache_size": 0, "prepared_statement_cache_size": 0,
            "prepared_statement_name_func": _unnamed_statement}


def _unnamed_statement() -> str:
    return ""  # PostgreSQL's unnamed statement: replaced by the next one, never left behind


def _set_local_timeout(timeout_ms: str, connection: Any) -> None:
    connection.exec_driver_sql(f"SET LOCAL statement_timeout = {int(timeout_ms)}")


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    register_sqlite_functions(connection, _record)
    sqlite_journal(connection, _record)
    cursor = connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def sqlite_journal(connection: Any, _record: Any) -> None:
    """SQLite's write-ahead log, synced at checkpoints only (`synchronous=NORMAL`): a `connect` listener.

    WAL stays set in the database file; NORMAL is per connection. A commit
    survives the process crashing, not necessarily the machine losing power.
    """
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def register_sqlite_functions(connection: Any, _record: Any) -> None:
    """SQLite's `canary_latency_bucket(ms)`, which PostgreSQL gets from the migrations (a `connect` listener)."""
    connection.create_function("canary_latency_bucket", 1, _latency_bucket, deterministic=True)


def _latency_bucket(latency_ms: float | None) -> int | None:
    return None if latency_ms is None else bucket_of(latency_ms)


@dataclass(frozen=True)
class Dialect:
    """What the queries need to know about the database, looked up once per engine."""

    postgresql: bool
    paramstyle: str
    insert: Callable[..., Any]

    @classmethod
    def of(cls, engine: AsyncEngine) -> Dialect:
        """The dialect of `engine`; PostgreSQL or else SQLite.

        SQLAlchemy's PostgreSQL dialect is imported here, for a PostgreSQL
        engine only (2 MB of RSS a gateway on SQLite does not hold).
        """
        postgresql = engine.dialect.name == "postgresql"
        insert: Callable[..., Any] = sqlite_insert
        if postgresql:
            from sqlalchemy.dialects.postgresql import insert
        return cls(postgresql=postgresql, paramstyle=engine.dialect.paramstyle, insert=insert)


def few_shapes(values: Iterable[T]) -> list[T]:
    """`values` as a list whose length is a power of two (the last value repeated), for `IN (...)` on SQLite.

    An `IN` list is written into the SQL as one `?` per value, and Python's
    sqlite3 keeps every distinct statement prepared, up to 128 per
    connection (`cached_statements`), in SQLite's own memory: a list of
    every length would fill that cache with large statements. Padded, a
    statement has one shape per power of two. A repeated value changes no
    `IN`. An empty `values` stays empty.
    """
    padded = list(values)
    if padded:
        padded += [padded[-1]] * ((1 << (len(padded) - 1).bit_length()) - len(padded))
    return padded


def power_of_two_chunks(count: int, largest: int) -> Iterator[slice]:
    """Slices covering `count` items in order, each a power of two long, none longer than `largest` (≥ 1).

    For multi-row statements on SQLite: a batch of any size is written with
    at most ~log2(`largest`) distinct statements per full batch, so the
    prepared-statement cache (see `few_shapes`) holds a handful of them
    instead of one per batch size (measured: 129 sizes of the 21-column
    record INSERT held 17 MB of SQLite memory per connection).
    """
    top = 1 << (max(1, largest).bit_length() - 1)
    start = 0
    while start < count:
        size = min(top, 1 << ((count - start).bit_length() - 1))
        yield slice(start, start + size)
        start += size


class Database:
    """The engine and its dialect, shared by the query classes of this package."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = Dialect.of(engine)

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()

    async def ping(self) -> None:
        """One trivial query; raises StoreUnavailable when the database does not answer it."""
        async with translated_errors(), self.engine.connect() as connection:
            await connection.exec_driver_sql("SELECT 1")


@contextlib.asynccontextmanager
async def translated_errors() -> AsyncIterator[None]:
    """Translate database exceptions raised in the block into `StoreRejected` / `StoreUnavailable`.

    The message names only the exception's type (database messages may quote
    the values).
    """
    try:
        yield
    except DBAPIError as exc:
        if _refused_values(exc):
            raise StoreRejected(f"the database refused the values ({type(exc.orig).__name__})") from exc
        raise StoreUnavailable(f"the database is unavailable ({type(exc).__name__})") from exc
    except UnicodeError as exc:
        # Text the driver cannot encode (an unpaired surrogate): these values will never be stored.
        raise StoreRejected("the database refused the values (text that is not UTF-8)") from exc
    except StatementError as exc:
        if isinstance(exc.orig, UnicodeError):
            raise StoreRejected("the database refused the values (text that is not UTF-8)") from exc
        raise StoreUnavailable(f"the database is unavailable ({type(exc).__name__})") from exc
    except (PoolTimeout, SQLAlchemyError, OSError, TimeoutError) as exc:
        raise StoreUnavailable(f"the database is unavailable ({type(exc).__name__})") from exc


def _refused_values(exc: DBAPIError) -> bool:
    """A data exception or constraint violation (SQLSTATE classes 22 and 23), not an outage."""
    if isinstance(exc, IntegrityError | DataError):
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in ("22", "23")
