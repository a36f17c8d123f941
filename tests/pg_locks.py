"""Waiting, in a test, until PostgreSQL shows transactions queued on a lock: a race is then
set up by what the server says, not by a sleep (a bound on tries, not a timing)."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from app.db.uow import Database

#: A transaction waiting for a row waits for its holder's transaction id, or, queued behind
#: another waiter, for the row's tuple lock.
ROW_LOCK_WAITERS = "SELECT count(DISTINCT pid) FROM pg_locks WHERE locktype IN ('transactionid', 'tuple') AND NOT granted"
ADVISORY_WAITERS = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"


async def lock_waiters(db: Database, count: int, query: str = ROW_LOCK_WAITERS, what: str = "a row lock") -> None:
    """Until `query` counts `count` waiting transactions."""
    for _ in range(2000):
        async with db.engine.connect() as conn:
            if (await conn.execute(text(query))).scalar_one() == count:
                return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never {count} waiters on {what}")
