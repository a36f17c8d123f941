"""Building the async engine (never at import time)."""

from __future__ import annotations

from functools import partial
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.db import folding


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, busy_timeout_ms: int = 30000) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the single writer; busy_timeout queues writers
    # instead of failing them at once.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    cursor.close()
    # The catalog's case folding, as PostgreSQL's lower() does it (app.db.folding).
    folding.register(dbapi_connection)


def _take_over_transactions(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is deferred).
    dbapi_connection.isolation_level = None


def _begin_immediate(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


#: The `application_name` of the read pool's PostgreSQL sessions (pg_stat_activity).
READS_APPLICATION_NAME = "ims-reads"

# PostgreSQL connections of one process, at most (README "Running at scale" sizes
# max_connections from them; docker-compose.yml sets it, and a test checks both):
#: the main pool, for every transaction: kept open, and opened beyond that under load;
POOL_SIZE, POOL_OVERFLOW = 10, 20
#: the read pool of `GenericPlanReads`;
READ_POOL_SIZE, READ_POOL_OVERFLOW = 4, 4
#: the LISTEN connection of the job event bus (app.jobs.events_pg), outside both pools.
LISTEN_CONNECTIONS = 1
PG_CONNECTIONS_PER_PROCESS = POOL_SIZE + POOL_OVERFLOW + READ_POOL_SIZE + READ_POOL_OVERFLOW + LISTEN_CONNECTIONS

#: Options of every engine. A failing statement's error would otherwise print its bound
#: parameters (wrapped data keys, sealed key material, token hashes), and unexpected errors
#: are logged with their traceback: the SQL is enough to tell what failed.
_COMMON: dict[str, Any] = {"json_deserializer": orjson.loads, "hide_parameters": True}


def make_generic_plan_engine(url: str) -> AsyncEngine:
    """A small PostgreSQL pool for `GenericPlanReads`: its sessions keep one generic plan per
    prepared statement, are read-only, and run each read statement on its own (autocommit: no
    BEGIN and ROLLBACK round trips around it; under READ COMMITTED every statement had its own
    snapshot anyway). No pre-ping either: `GenericPlanReads.run` retries a read once on a fresh
    connection when the one it got was dead."""
    return create_async_engine(
        url, pool_size=READ_POOL_SIZE, max_overflow=READ_POOL_OVERFLOW, isolation_level="AUTOCOMMIT", **_COMMON,
        connect_args={"server_settings": {"plan_cache_mode": "force_generic_plan",
                                          "default_transaction_read_only": "on",
                                          "application_name": READS_APPLICATION_NAME}},
    )


def make_engine(url: str, *, echo: bool = False, writer: bool = False) -> AsyncEngine:
    """An engine for `url`. On SQLite a `writer` engine opens every transaction with
    BEGIN IMMEDIATE: read-then-write transactions then queue for the write lock up
    front instead of failing with SQLITE_BUSY when another writer committed between."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30}, **_COMMON)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        if writer:
            event.listen(engine.sync_engine, "connect", _take_over_transactions)
            event.listen(engine.sync_engine, "begin", _begin_immediate)
        return engine
    return create_async_engine(url, echo=echo, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW, pool_pre_ping=True,
                               **_COMMON)


def sync_url(url: str) -> str:
    """The synchronous driver URL Alembic uses for the same database (asyncpg's `ssl` option
    is libpq's `sslmode` for psycopg2)."""
    if "+asyncpg" in url:
        from app.config import _renamed_query_option

        url = _renamed_query_option(url, "ssl", "sslmode")
    return url.replace("+aiosqlite", "").replace("+asyncpg", "+psycopg2")


def make_sync_read_engine(url: str, *, busy_timeout_ms: int = 30000, pool_size: int = 4) -> Engine:
    """A synchronous engine on the same SQLite file, for `SyncReads`: its connections move
    between the read threads (SQLite's own locking guards each; one thread uses one at a time)."""
    engine = create_engine(
        sync_url(url), connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False},
        **_COMMON, pool_size=pool_size, max_overflow=pool_size,
    )
    event.listen(engine, "connect", partial(_sqlite_pragmas, busy_timeout_ms=busy_timeout_ms))
    event.listen(engine, "connect", _query_only)
    return engine


def make_sync_write_engine(url: str, *, pool_size: int = 2) -> Engine:
    """A synchronous engine on the same SQLite file, for `SyncWrites`: every transaction opens
    with BEGIN IMMEDIATE, as on the async writer engine."""
    engine = create_engine(
        sync_url(url), connect_args={"timeout": 30, "check_same_thread": False},
        **_COMMON, pool_size=pool_size, max_overflow=pool_size,
    )
    event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "connect", _take_over_transactions)
    event.listen(engine, "begin", _begin_immediate)
    return engine


def _query_only(dbapi_connection: Any, _record: Any) -> None:
    """The read engines never write: a write slipped into a read fails instead of committing."""
    dbapi_connection.execute("PRAGMA query_only=ON")
