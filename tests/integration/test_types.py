"""Datetimes come back timezone-aware in UTC, to the microsecond, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import insert, select
from sqlmodel import col

from app.db.tables import Account
from app.db.uow import Database


async def test_datetimes_read_back_aware_in_utc(db: Database) -> None:
    moments = {
        "acc-utc": datetime(2026, 11, 26, 21, 12, 48, 123456, tzinfo=UTC),
        "acc-east": datetime(2026, 1, 1, 3, 0, 0, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        "acc-whole": datetime(2026, 6, 30, 0, 0, tzinfo=UTC),
    }
    async with db.uow() as uow:
        await uow.session.execute(insert(Account), [
            {"id": k, "name": k, "role": "USER", "created_at": v} for k, v in moments.items()])
        await uow.commit()
    async with db.uow(write=False) as uow:
        rows: dict[str, datetime] = dict((await uow.session.execute(
            select(col(Account.id), col(Account.created_at)).where(col(Account.id).in_(moments)))).all())
    assert rows == moments
    assert all(v.tzinfo is UTC for v in rows.values())
    assert rows["acc-east"].hour == 21 and rows["acc-east"].day == 31  # 03:00 +05:30 is 21:30 UTC the day before


async def test_datetimes_read_on_the_read_pool_are_aware_in_utc(db: Database) -> None:
    """The read pool's sessions (PostgreSQL: asyncpg, whose values are taken as they come)."""
    at = datetime(2026, 2, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=-8)))
    async with db.uow() as uow:
        await uow.session.execute(insert(Account), [{"id": "acc-pool", "name": "pool", "role": "USER",
                                                     "created_at": at}])
        await uow.commit()
    stmt = select(col(Account.created_at)).where(col(Account.id) == "acc-pool")
    got = await db.reads.run(lambda connection: connection.execute(stmt).scalar_one())
    assert got == at and got.tzinfo is UTC and got.hour == 12
