"""The database handle and the unit of work: a transaction that rolls back unless committed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import asyncpg
from sqlalchemy import ClauseElement, Connection, Engine, Executable, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.sql.compiler import SQLCompiler

from app.compute.repository import ComputeRepository
from app.db.repositories.accounts import AccountRepository
from app.db.repositories.chunks import ChunkRepository
from app.db.repositories.images import ImageRepository
from app.db.repositories.jobs import JobRepository
from app.db.repositories.kms import KmsRepository
from app.db.repositories.sharing import SharingRepository
from app.db.repositories.storage import StorageRepository

T = TypeVar("T")
#: What a pooled asyncpg connection raises when its server process is gone (terminated,
#: restarted, the socket closed) or its protocol is left in a state it cannot leave:
#: `GenericPlanReads.rows` drops that connection and reads once more on a new one. Not a
#: statement's own failure (a cancelled query, a bad argument): that one is raised as it is.
_DISCONNECTED = (asyncpg.exceptions.PostgresConnectionError, asyncpg.exceptions.AdminShutdownError,
                 asyncpg.exceptions.CrashShutdownError, asyncpg.exceptions.CannotConnectNowError,
                 asyncpg.exceptions.InternalClientError, ConnectionError)


class _Disconnected(Exception):
    """A read's pooled connection was dead (its cause says how)."""


#: Compiled statements `GenericPlanReads.rows` keeps (one per catalog page shape in use).
_COMPILED_STATEMENTS = 512


class Reads(Protocol):
    """Where the hot reads run whole: `run(fn)` calls `fn` with a synchronous Connection of
    its own — the token of every request and its account, catalog pages (one statement with
    total, tags and members), image-list CSV pages."""

    engine: Any

    @property
    def sync_engines(self) -> tuple[Engine, ...]:
        """The engines its statements go through (statement counts, tests)."""
        ...

    async def run(self, fn: Callable[[Connection], T]) -> T: ...

    async def run_now(self, fn: Callable[[Connection], T]) -> T:
        """`run` for a short, bounded read (a request's token and account, a catalog page): on
        SQLite right on the calling thread, the event loop's, without a hand-over."""
        ...

    async def rows(self, stmt: Executable, params: dict[str, Any], *, now: bool = False) -> Sequence[Sequence[Any]]:
        """The rows of one statement, as sequences of column values (the values SQLAlchemy
        gives for them); `now`: a short read, as `run_now`."""
        ...

    async def close(self) -> None: ...


class SyncReads:
    """SQLite: a read runs whole in a thread of a small pool of its own: one hand-over to a
    thread instead of the five or six aiosqlite makes for every statement (cursor, execute,
    fetch, close, rollback) — 0.7–0.8 ms of a 6–7 ms catalog request, and with both cores
    busy with a job, each hand-over waits to be scheduled (API p99 during a RAW export 7.5–8×
    idle with the token and account read through aiosqlite, 4.2–4.3× this way)."""

    def __init__(self, engine: Engine, inline_engine: Engine, threads: int = 4) -> None:
        self.engine = engine
        #: For `run_now`: a short busy timeout, so the event loop never waits on a lock (in WAL
        #: mode readers meet one only while another connection holds the database exclusively
        #: or recovers its log); then the read goes to the threads instead.
        self.inline_engine = inline_engine
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ims-read")

    @property
    def sync_engines(self) -> tuple[Engine, ...]:
        return self.engine, self.inline_engine

    async def run(self, fn: Callable[[Connection], T]) -> T:
        def work() -> T:
            with self.engine.connect() as connection:
                return fn(connection)

        return await asyncio.get_running_loop().run_in_executor(self._pool, work)

    async def run_now(self, fn: Callable[[Connection], T]) -> T:
        """Right here, on the event loop: a key lookup costs tens of µs, less than handing it
        to a thread (idle API p50 1.6 → 1.1 ms; p99 during a RAW export 20–32 → 8–10 ms), and a
        catalog page about a millisecond, which in a thread waited for the GIL behind the
        other requests (app.services.images)."""
        try:
            with self.inline_engine.connect() as connection:
                return fn(connection)
        except OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
        return await self.run(fn)

    async def rows(self, stmt: Executable, params: dict[str, Any], *, now: bool = False) -> Sequence[Sequence[Any]]:
        def read(connection: Connection) -> Sequence[Sequence[Any]]:
            return connection.execute(stmt, params).all()

        return await (self.run_now if now else self.run)(read)

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, wait=True)
        self.engine.dispose()
        self.inline_engine.dispose()


class GenericPlanReads:
    """PostgreSQL: hot reads run on a small pool of connections that plan each statement
    once (plan_cache_mode = force_generic_plan; asyncpg prepares it once per connection): with
    a custom plan per execution PostgreSQL spent ~1 ms planning a 0.8 ms statement. The
    sessions are read-only and in autocommit, without a pre-ping (`make_generic_plan_engine`):
    one round trip per read instead of four (ping, BEGIN, the statement, ROLLBACK); a catalog
    page's read 3.16 → 2.26 ms."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._statements: dict[Executable, tuple[Any, dict[str, Callable[[Any], Any]]]] = {}

    @property
    def sync_engines(self) -> tuple[Engine, ...]:
        return (self.engine.sync_engine,)

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """`fn` on a pooled connection; once more on a fresh one when that connection was dead
        (the pool does not ping before each read: a round trip saved on every request)."""
        try:
            async with self.engine.connect() as connection:
                return await connection.run_sync(fn)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
        async with self.engine.connect() as connection:
            return await connection.run_sync(fn)

    async def run_now(self, fn: Callable[[Connection], T]) -> T:
        return await self.run(fn)

    async def rows(self, stmt: Executable, params: dict[str, Any], *, now: bool = False) -> Sequence[Sequence[Any]]:
        """On the pooled connection's asyncpg connection itself: SQLAlchemy compiles the
        statement once and processes the parameters, asyncpg runs it (its own prepared
        statement, a generic plan) and its records are the rows. SQLAlchemy's execution
        context and result layer cost ~0.5 ms of a catalog page's 1.4 ms read from Python
        (the raw fetch 0.83–0.87 ms). The values are asyncpg's: the pool's JSON codec
        (SQLAlchemy's), timestamptz as aware UTC datetimes — the types this is used with have
        no result processing on asyncpg (a test compares both paths' rows). Listeners of
        `before_cursor_execute` still see the statement (statement counts)."""
        compiled, bind_processors = self._compiled(stmt)
        state = compiled.construct_expanded_state(params, escape_names=False)
        # As SQLAlchemy's execution does: the statement's bind processors (UTCDateTime's, …),
        # and those of the values an IN list was expanded into.
        processors = {**bind_processors, **state.processors} if state.processors else bind_processors
        args = [processors[name](state.parameters[name]) if name in processors else state.parameters[name]
                for name in state.positiontup or ()]
        try:
            return await self._fetch(state.statement, args)
        except _Disconnected:
            # The server went away (a restart, a failover, an idle timeout): every pooled
            # connection is as dead as this one, and the pool does not ping. A fresh pool,
            # as SQLAlchemy's own disconnect handling does for `run`.
            await self.engine.dispose(close=False)
        try:
            return await self._fetch(state.statement, args)  # once more, on a fresh connection
        except _Disconnected as exc:
            assert exc.__cause__ is not None  # _fetch raises it from the driver's error
            raise exc.__cause__ from None

    async def _fetch(self, statement: str, args: list[Any]) -> Sequence[Sequence[Any]]:
        async with self.engine.connect() as connection:
            raw = await connection.get_raw_connection()
            driver: asyncpg.Connection = raw.driver_connection
            sync_engine = self.engine.sync_engine
            if sync_engine.dispatch.before_cursor_execute:
                for listener in sync_engine.dispatch.before_cursor_execute:
                    listener(connection.sync_connection, None, statement, tuple(args), None, False)
            try:
                records: list[asyncpg.Record] = await driver.fetch(statement, *args)
                return records
            except (*_DISCONNECTED, asyncpg.exceptions.InterfaceError) as exc:
                # An InterfaceError is also how asyncpg refuses an argument: a disconnection
                # only when the connection is closed.
                if isinstance(exc, asyncpg.exceptions.InterfaceError) and not driver.is_closed():
                    raise
                await connection.invalidate()  # out of the pool: the retry takes a new one
                raise _Disconnected from exc

    def _compiled(self, stmt: Executable) -> tuple[Any, dict[str, Callable[[Any], Any]]]:
        """The statement compiled for asyncpg with its parameters' bind processors, once per
        statement object (callers pass cached statements: `catalog_sql.page_statement` is
        memoized per shape)."""
        found = self._statements.get(stmt)
        if found is None:
            if len(self._statements) >= _COMPILED_STATEMENTS:
                self._statements.clear()
            # A select() or text(): what Database.reads is given, and what compiles to SQL.
            assert isinstance(stmt, ClauseElement)
            compiled = stmt.compile(dialect=self.engine.dialect)
            assert isinstance(compiled, SQLCompiler)
            # `_bind_processors` is what SQLAlchemy's own execution applies (default.py):
            # tuple-valued ones belong to tuple IN lists, which these statements do not use.
            processors: dict[str, Callable[[Any], Any]] = {
                name: fn for name, fn in compiled._bind_processors.items() if callable(fn)
            }
            found = self._statements[stmt] = (compiled, processors)
        return found

    async def close(self) -> None:
        await self.engine.dispose()


class Writes(Protocol):
    """Where short, hot write transactions run whole (the chunk claims on an import's write
    path): `run(fn)` calls `fn` with a synchronous Connection in a transaction of its own,
    committed when `fn` returns, rolled back if it raises."""

    async def run(self, fn: Callable[[Connection], T]) -> T: ...

    async def close(self) -> None: ...


class SyncWrites:
    """SQLite: a write transaction runs whole in a thread of a small pool on a synchronous
    engine (BEGIN IMMEDIATE, like every write of the service): one hand-over to a thread instead
    of one per step (begin, cursor, execute, fetch, close, commit) through aiosqlite, each of
    which waited to be scheduled while an import's threads kept both cores hashing."""

    def __init__(self, engine: Engine, threads: int = 2) -> None:
        self.engine = engine
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ims-write")

    async def run(self, fn: Callable[[Connection], T]) -> T:
        def work() -> T:
            with self.engine.begin() as connection:
                return fn(connection)

        return await asyncio.get_running_loop().run_in_executor(self._pool, work)

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, wait=True)
        self.engine.dispose()


class AsyncWrites:
    """PostgreSQL: the same through the async engine, the transaction run in one `run_sync`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def run(self, fn: Callable[[Connection], T]) -> T:
        async with self.engine.begin() as connection:
            return await connection.run_sync(fn)

    async def close(self) -> None:
        return None  # the engine is the Database's


class Database:
    """Owns the engine and makes sessions; one per process, built by bootstrap."""

    def __init__(self, engine: AsyncEngine, reads: Reads, write_engine: AsyncEngine | None = None,
                 writes: Writes | None = None) -> None:
        self.engine = engine
        self.write_engine = write_engine or engine
        #: Where the hot reads run (SyncReads on SQLite, GenericPlanReads on PostgreSQL).
        self.reads = reads
        #: Where short hot writes run (SyncWrites on SQLite, AsyncWrites otherwise).
        self.writes = writes or AsyncWrites(self.write_engine)
        self.sessions = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
        self.write_sessions = async_sessionmaker(self.write_engine, expire_on_commit=False, autoflush=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def uow(self, caller_id: str = "", *, write: bool = True) -> UnitOfWork:
        return UnitOfWork(self, caller_id, write=write)

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001 - health reports any failure as not ok
            return False
        return True

    async def dispose(self) -> None:
        await self.reads.close()
        await self.writes.close()
        await self.engine.dispose()
        if self.write_engine is not self.engine:
            await self.write_engine.dispose()


#: PostgreSQL's SQLSTATE of a transaction aborted to break a deadlock; how often one runs.
DEADLOCK_DETECTED = "40P01"
DEADLOCK_ATTEMPTS = 3


async def retrying_deadlocks(transaction: Callable[[], Awaitable[T]]) -> T:
    """`transaction()` (one unit of work), run again when PostgreSQL aborted it to break a
    deadlock: the abort changed nothing. Membership rows keep per-account counters
    (image_counts, by trigger) whose rows each insert, delete or status change locks; two
    batches touching the same accounts' counters in different orders can deadlock, and the
    loser would otherwise reach its caller as an internal error."""
    for attempt in range(DEADLOCK_ATTEMPTS):
        try:
            return await transaction()
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != DEADLOCK_DETECTED or attempt == DEADLOCK_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


class UnitOfWork:
    """`async with db.uow(caller) as uow: …; await uow.commit()` — anything else rolls back."""

    def __init__(self, db: Database, caller_id: str, *, write: bool = True) -> None:
        self.db = db
        self.caller_id = caller_id
        self.write = write
        self._session: AsyncSession | None = None

    @property
    def session(self) -> AsyncSession:
        assert self._session is not None, "unit of work not entered"
        return self._session

    async def __aenter__(self) -> Self:
        self._session = (self.db.write_sessions if self.write else self.db.sessions)()
        self.accounts = AccountRepository(self._session)
        self.images = ImageRepository(self._session, self.caller_id)
        self.storage = StorageRepository(self._session)
        self.chunks = ChunkRepository(self._session)
        self.kms = KmsRepository(self._session)
        self.jobs = JobRepository(self._session, self.caller_id)
        self.sharing = SharingRepository(self._session)
        self.compute = ComputeRepository(self._session, self.caller_id)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._session is not None
        # close() rolls back whatever was not committed; unlike rollback() it leaves the
        # loaded objects readable (detached, not expired) for the caller.
        try:
            await self._session.close()
        finally:
            self._session = None

    async def commit(self) -> None:
        await self.session.commit()


class SharedReader:
    """One read-only unit of work shared by every read of one query request (the page, its
    tags, its members…), one statement at a time: a request costs one connection checkout
    and one snapshot instead of one per loader. Closed when the request ends."""

    def __init__(self, db: Database, caller_id: str) -> None:
        self.db = db
        self.caller_id = caller_id
        self._uow: UnitOfWork | None = None
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[UnitOfWork]:
        async with self._lock:
            if self._uow is None:
                uow = self.db.uow(self.caller_id, write=False)
                await uow.__aenter__()
                self._uow = uow
            yield self._uow

    async def close(self) -> None:
        async with self._lock:
            if self._uow is not None:
                uow, self._uow = self._uow, None
                await uow.__aexit__(None, None, None)


def reading(db: Database, caller_id: str, reader: SharedReader | None) -> contextlib.AbstractAsyncContextManager[UnitOfWork]:
    """The request's shared reader when there is one, else a read-only unit of work of its own."""
    return reader.use() if reader is not None else db.uow(caller_id, write=False)
