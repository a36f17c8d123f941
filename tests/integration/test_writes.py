"""`Database.writes.run(fn)`: a short write transaction run whole — on SQLite in a thread of
its own pool (BEGIN IMMEDIATE), on PostgreSQL in one `run_sync` — committed when `fn` returns,
rolled back when it raises."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import text

from app.db.repositories.chunks import claim_chunks
from app.db.types import utcnow
from app.db.uow import Database, SyncWrites
from tests.factories import make_account


async def name_of(db: Database, account_id: str) -> str:
    async with db.uow(write=False) as uow:
        account = await uow.accounts.get(account_id)
    assert account is not None
    return account.name


async def test_a_write_commits_when_it_returns(db: Database) -> None:
    account, _ = await make_account(db, "before")
    threads: list[str] = []

    def rename(connection: Any) -> int:
        threads.append(threading.current_thread().name)
        return int(connection.execute(text("UPDATE accounts SET name = 'after' WHERE id = :id"),
                                      {"id": account.id}).rowcount)

    assert await db.writes.run(rename) == 1
    assert await name_of(db, account.id) == "after"
    if isinstance(db.writes, SyncWrites):
        assert threads[0].startswith("ims-write")  # off the event loop, in one hand-over


async def test_a_write_that_raises_changes_nothing(db: Database) -> None:
    account, _ = await make_account(db, "kept")

    def rename_then_fail(connection: Any) -> None:
        connection.execute(text("UPDATE accounts SET name = 'lost' WHERE id = :id"), {"id": account.id})
        raise RuntimeError("half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        await db.writes.run(rename_then_fail)
    assert await name_of(db, account.id) == "kept"


async def test_claims_create_touch_and_report_referenced_chunks(db: Database) -> None:
    first = utcnow()
    assert await db.writes.run(lambda c: claim_chunks(c, "region-1", ["b" * 64, "a" * 64, "a" * 64], first)) == set()
    async with db.uow() as uow:
        await uow.session.execute(text("UPDATE chunks SET refcount = 1 WHERE digest = :d"), {"d": "a" * 64})
        await uow.commit()
    later = utcnow()
    assert await db.writes.run(lambda c: claim_chunks(c, "region-1", ["a" * 64, "b" * 64, "c" * 64], later)) \
        == {"a" * 64}
    async with db.uow(write=False) as uow:
        rows = (await uow.session.execute(text(
            "SELECT digest, refcount, touched_at FROM chunks WHERE region = 'region-1' ORDER BY digest"))).all()
    assert [(d[0], r) for d, r, _ in rows] == [("a", 1), ("b", 0), ("c", 0)]
    assert len({str(t) for _, _, t in rows}) == 1  # every row touched by the last claim
