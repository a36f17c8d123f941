"""`Database.reads.run_now` reads a few rows right on the event loop; on SQLite, when another
connection holds the database so that even a reader waits, it hands the read to the read
threads after a short busy timeout instead of holding the loop."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import col

from app.db.engine import READS_APPLICATION_NAME
from app.db.uow import Database, GenericPlanReads, SyncReads
from app.domain.images import Caller, ImageOrder, ImageQuery
from app.services.images import INLINE_PAGE_ROWS, ImageService
from tests.factories import make_account, make_image, share


async def test_a_locked_database_moves_the_read_off_the_loop(db: Database) -> None:
    if not isinstance(db.reads, SyncReads):
        pytest.skip("SQLite's read threads")
    account, _ = await make_account(db, "locked-reader")
    path = db.reads.engine.url.database
    assert path is not None
    threaded: list[str] = []
    inline: list[str] = []
    event.listen(db.reads.engine, "before_cursor_execute", lambda *a: threaded.append(a[2]))
    event.listen(db.reads.inline_engine, "before_cursor_execute", lambda *a: inline.append(a[2]))

    def name(connection: Any) -> str:
        return str(connection.execute(text("SELECT name FROM accounts WHERE id = :id"), {"id": account.id}).scalar_one())

    # Unlocked: read on the loop, no thread.
    assert await db.reads.run_now(name) == "locked-reader"
    assert (len(inline), threaded) == (1, [])

    # Only a connection alone on a WAL database can hold it exclusively: close the others.
    for engine in (db.engine, db.write_engine):
        await engine.dispose()
    db.reads.engine.dispose()
    db.reads.inline_engine.dispose()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("UPDATE accounts SET name = name WHERE id = ?", (account.id,))

    handed_over = asyncio.Event()
    threads_run = db.reads.run

    async def run(fn: Any) -> Any:
        handed_over.set()
        return await threads_run(fn)

    db.reads.run = run  # type: ignore[method-assign]

    async def release_once_handed_over() -> None:
        await handed_over.wait()
        await asyncio.sleep(0.05)  # the thread is waiting for the lock by now, or soon
        holder.execute("COMMIT")
        holder.close()

    release = asyncio.create_task(release_once_handed_over())
    assert await db.reads.run_now(name) == "locked-reader"
    await release
    assert handed_over.is_set()  # the loop gave up after its short busy timeout
    assert len(inline) == 1  # the loop's attempt never got to its statement
    assert len(threaded) == 1  # a thread read it once the holder let go



@pytest.mark.parametrize(("size", "where"), [(50, "loop"), (100, "loop"), (101, "thread"), (1000, "thread")])
async def test_catalog_pages_up_to_100_rows_are_read_on_the_loop(db: Database, size: int, where: str) -> None:
    """A page of up to INLINE_PAGE_ROWS rows is read on the event loop; a bigger one (up to
    1,000 rows of JSON columns) goes to the read threads."""
    if not isinstance(db.reads, SyncReads):
        pytest.skip("SQLite's read threads")
    account, _ = await make_account(db, "pager")
    image = await make_image(db, account)
    threaded: list[str] = []
    inline: list[str] = []
    event.listen(db.reads.engine, "before_cursor_execute", lambda *a: threaded.append(a[2]))
    event.listen(db.reads.inline_engine, "before_cursor_execute", lambda *a: inline.append(a[2]))

    page = await ImageService(db, ("region-1",)).list(
        Caller(account.id, account.name, account.role), ImageQuery(region="region-1"), ImageOrder(), size, None, with_total=True)

    assert ([v.image.id for v in page.items], page.total) == ([image.id], 1)
    assert (len(inline), len(threaded)) == ((1, 0) if where == "loop" else (0, 1))
    assert INLINE_PAGE_ROWS == 100


async def test_the_read_pools_refuse_to_write(db: Database) -> None:
    """Reads run on connections that cannot write (PostgreSQL: read-only sessions in
    autocommit; SQLite: query_only): a write slipped into a read fails and changes nothing."""
    account, _ = await make_account(db, "reader")

    def rename(connection: Any) -> None:
        connection.execute(text("UPDATE accounts SET name = 'renamed' WHERE id = :id"), {"id": account.id})

    for run in (db.reads.run, db.reads.run_now):
        with pytest.raises(DBAPIError, match="read-only|readonly"):
            await run(rename)
    async with db.uow(write=False) as uow:
        stored = await uow.accounts.get(account.id)
    assert stored is not None and stored.name == "reader"


async def test_a_dead_pooled_read_connection_is_replaced_and_the_read_retried(db: Database) -> None:
    if not isinstance(db.reads, GenericPlanReads):
        pytest.skip("PostgreSQL's read pool")
    account, _ = await make_account(db, "survivor")

    def name(connection: Any) -> str:
        return str(connection.execute(text("SELECT name FROM accounts WHERE id = :id"), {"id": account.id}).scalar_one())

    assert await db.reads.run(name) == "survivor"  # a connection now waits in the pool
    async with db.engine.connect() as admin:
        killed = (await admin.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = :app AND datname = current_database()"), {"app": READS_APPLICATION_NAME})).scalar_one()
    assert killed >= 1
    assert await db.reads.run(name) == "survivor"


async def test_rows_are_the_values_sqlalchemy_gives(db: Database) -> None:
    """`Reads.rows` of a catalog page (on PostgreSQL asyncpg's own records, past SQLAlchemy's
    result layer): every value equal, and of the same type, to what SQLAlchemy returns."""
    from app.db.repositories.catalog_sql import page_statement, shape_and_params

    alice, _ = await make_account(db, "rows-owner")
    bob, _ = await make_account(db, "rows-member")
    image = await make_image(db, alice, name="shared", tags={"b": "2", "a": "1"}, size_bytes=7,
                             disks=[{"role": "SYSTEM", "sizeGb": 3}])
    await make_image(db, alice, name="plain", size_bytes=None)
    await share(db, image, bob, "ACCEPTED")
    shape, params = shape_and_params(ImageQuery(region="region-1"), ImageOrder(), bob.id, 50, None, True,
                                     with_tags=True, with_members=True)
    page = page_statement(shape)
    assert page is not None
    fast = await db.reads.rows(page, params)
    expected = await db.reads.run(lambda connection: connection.execute(page, params).all())
    assert len(fast) == len(expected) >= 1
    for got, want in zip(fast, expected, strict=True):
        assert tuple(got) == tuple(want)
        assert [type(v) for v in got] == [type(v) for v in want]

    # Bound datetimes go through their type's processing on both paths (UTCDateTime's): an
    # offset other than UTC's is honoured, a naive value refused before it reaches the driver.
    from datetime import UTC, timedelta, timezone

    after = (image.created_at - timedelta(seconds=1)).astimezone(timezone(timedelta(hours=-5)))
    shape, params = shape_and_params(ImageQuery(region="region-1", created_after=after), ImageOrder(), bob.id, 50,
                                     (image.created_at.astimezone(UTC) + timedelta(days=1), "img-zzz"), True,
                                     with_tags=True, with_members=True)
    stmt = page_statement(shape)
    assert stmt is not None
    fast = await db.reads.rows(stmt, params)
    expected = await db.reads.run(lambda connection: connection.execute(stmt, params).all())
    assert [tuple(r) for r in fast] == [tuple(r) for r in expected] and len(fast) >= 1
    from sqlalchemy.exc import StatementError

    with pytest.raises((ValueError, StatementError), match="naive"):  # SQLAlchemy's wraps it
        await db.reads.rows(stmt, {**params, "after_time": after.replace(tzinfo=None)})


async def test_a_bad_argument_is_raised_as_it_is_on_the_same_connection(db: Database) -> None:
    """A statement's own failure is not a dead connection: no retry, the connection stays."""
    if not isinstance(db.reads, GenericPlanReads):
        pytest.skip("PostgreSQL's read pool")
    from sqlalchemy import bindparam, func, select

    from app.db.tables import Account

    pid = select(func.pg_backend_pid())
    [(before,)] = await db.reads.rows(pid, {})
    stmt = select(col(Account.name)).where(col(Account.id) == bindparam("id"))
    executed: list[str] = []

    def record(*args: Any) -> None:
        executed.append(args[2])

    event.listen(db.reads.engine.sync_engine, "before_cursor_execute", record)
    try:
        with pytest.raises(Exception, match="invalid input for query argument"):
            await db.reads.rows(stmt, {"id": 5})
    finally:
        event.remove(db.reads.engine.sync_engine, "before_cursor_execute", record)
    assert len(executed) == 1  # tried once
    [(after,)] = await db.reads.rows(pid, {})
    assert after == before


async def test_rows_retry_once_on_a_dead_pooled_connection(db: Database) -> None:
    if not isinstance(db.reads, GenericPlanReads):
        pytest.skip("PostgreSQL's read pool")
    account, _ = await make_account(db, "rows-survivor")
    from sqlalchemy import select

    from app.db.tables import Account

    stmt = select(col(Account.name)).where(col(Account.id) == account.id)
    assert [tuple(r) for r in await db.reads.rows(stmt, {})] == [("rows-survivor",)]
    async with db.engine.connect() as admin:
        killed = (await admin.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = :app AND datname = current_database()"), {"app": READS_APPLICATION_NAME})).scalar_one()
    assert killed >= 1
    assert [tuple(r) for r in await db.reads.rows(stmt, {})] == [("rows-survivor",)]


async def test_rows_survive_every_pooled_connection_dying_at_once(db: Database) -> None:
    """A restart or failover kills every pooled read connection, not one: the retry must not
    take the next dead one from the pool (the next reads failed, one per dead connection)."""
    if not isinstance(db.reads, GenericPlanReads):
        pytest.skip("PostgreSQL's read pool")
    import asyncio

    from sqlalchemy import func, select

    account, _ = await make_account(db, "rows-restart")
    from app.db.tables import Account

    stmt = select(col(Account.name), func.pg_sleep(0.05)).where(col(Account.id) == account.id)
    await asyncio.gather(*(db.reads.rows(stmt, {}) for _ in range(4)))  # four connections in the pool
    async with db.engine.connect() as admin:
        killed = (await admin.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = :app AND datname = current_database()"), {"app": READS_APPLICATION_NAME})).scalar_one()
    assert killed >= 2
    names = select(col(Account.name)).where(col(Account.id) == account.id)
    for _ in range(4):
        assert [tuple(r) for r in await db.reads.rows(names, {})] == [("rows-restart",)]


async def test_the_catalog_page_names_its_limit(db: Database) -> None:
    """The page size is in the statement's text: PostgreSQL's read pool plans each statement
    once, generically, and with an unknown LIMIT it drove the SHARED arm from every private
    image of the region for a caller with few memberships."""
    from sqlalchemy.dialects import postgresql, sqlite

    from app.db.repositories.catalog_sql import page_statement, shape_and_params

    shape, params = shape_and_params(ImageQuery(region="region-1"), ImageOrder(), "acc-x", 50, None, True)
    stmt = page_statement(shape)
    assert stmt is not None
    for dialect in (postgresql.asyncpg.dialect(), sqlite.dialect()):  # type: ignore[no-untyped-call]
        state = stmt.compile(dialect=dialect).construct_expanded_state(params, escape_names=False)
        # Three arms and the page; SQLite's SHARED arm guards its LIMIT (GuardedLimit).
        plain, guarded = (4, 0) if dialect.name == "postgresql" else (3, 1)
        assert state.statement.count("LIMIT 51") == plain, dialect.name
        assert state.statement.count(" THEN 51 ELSE 0 END") == guarded, dialect.name
        assert "limit" not in state.parameters


def test_the_shared_arm_first_asks_whether_the_caller_has_any_membership() -> None:
    """Most callers have none: the SHARED arm then stops at a one-time check of the
    memberships' (account, status) index instead of walking every private image of the
    region in the page's order (benchmark: page 1 for such a caller 5-8x the viewer's)."""
    from sqlalchemy.dialects import postgresql, sqlite

    from app.db.repositories.catalog_sql import page_statement, shape_and_params

    shape, _ = shape_and_params(ImageQuery(region="region-1"), ImageOrder(), "acc-x", 50, None, True)
    stmt = page_statement(shape)
    assert stmt is not None
    for dialect in (postgresql.asyncpg.dialect(), sqlite.dialect()):  # type: ignore[no-untyped-call]
        sql = str(stmt.compile(dialect=dialect))
        check = sql.index("FROM image_members AS any_membership")
        arm = sql.index("JOIN image_members ON image_members.image_id = images.id")
        # In the arm's WHERE; on SQLite in its LIMIT too, which it computes before the loop
        # (test_catalog_plan checks that the loop is then skipped).
        assert sql.count("any_membership.account_id") == (1 if dialect.name == "postgresql" else 2), dialect.name
        assert check > arm, dialect.name
        assert ("LIMIT CASE WHEN EXISTS (SELECT" in sql) == (dialect.name == "sqlite")
