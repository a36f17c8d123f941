"""createBucket calls the store outside any write transaction (on every store adapter and
database backend), and a creation refused after the store made its bucket — a race for the
name or for the account's last place — removes that bucket only when it made it, it is
empty and no row names it."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest
from sqlalchemy import text

from app.db.uow import Database
from app.domain.images import Caller
from app.errors import Conflict
from app.services.storage import StorageService
from app.storage.base import ObjectStore, StorageUnavailableError
from tests.factories import make_account

REGION = "region-1"
LIMIT = 2
Hook = Callable[[], Awaitable[None]]


class Interleaved:
    """A real store, with a concurrent request's step run once at a chosen moment: before or
    after its next `create_bucket`, or before its next `delete_empty_bucket`."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.before_create: Hook | None = None
        self.after_create: Hook | None = None
        self.before_delete: Hook | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def create_bucket(self, bucket: str) -> bool:
        await self._run("before_create")
        made = await self.inner.create_bucket(bucket)
        await self._run("after_create")
        return made

    async def delete_empty_bucket(self, bucket: str) -> bool:
        await self._run("before_delete")
        return await self.inner.delete_empty_bucket(bucket)

    async def _run(self, moment: str) -> None:
        hook: Hook | None = getattr(self, moment)
        setattr(self, moment, None)  # once: the hook's own creation does not run it again
        if hook is not None:
            await hook()


@pytest.fixture
def hooked(store: ObjectStore) -> Interleaved:
    return Interleaved(store)


@pytest.fixture
def service(db: Database, hooked: Interleaved) -> StorageService:
    return StorageService(db, {REGION: cast(ObjectStore, hooked)}, REGION, buckets_per_account=LIMIT)


async def _caller(db: Database) -> Caller:
    account, _ = await make_account(db)
    return Caller(account.id, account.name, account.role)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"  # the S3 server lives for the whole session


async def writer_free(db: Database, account_id: str) -> bool:
    """Whether a write of the account could start now without waiting: on SQLite the one
    writer lock (BEGIN IMMEDIATE on a connection of its own, with no busy timeout), on
    PostgreSQL the account's lock (`lock_account`)."""
    if db.dialect == "sqlite":
        path = db.engine.url.database
        assert path is not None

        def probe() -> bool:
            conn = sqlite3.connect(path, timeout=0, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                assert "locked" in str(exc), exc
                return False
            finally:
                conn.close()  # rolls back the probe's empty transaction
            return True

        return await asyncio.to_thread(probe)
    async with db.engine.connect() as conn, conn.begin():
        got = await conn.execute(text("SELECT pg_try_advisory_xact_lock(hashtext(:k))"), {"k": account_id})
        return bool(got.scalar_one())


def creation(db: Database, service: StorageService, caller: Caller, name: str) -> Hook:
    """Another request's createBucket, run at a hook's moment. Were a write transaction open
    then, it would wait for it (on SQLite, 30 s, then fail): said at once instead."""
    async def create() -> None:
        assert await writer_free(db, caller.account_id)
        await service.create_bucket(caller, name, None)

    return create


async def nothing() -> None:
    """A hook whose only effect is to be used up (`Interleaved` forgets a hook once run)."""


async def owners(db: Database, name: str) -> list[str]:
    async with db.engine.connect() as conn:
        found = await conn.execute(text("SELECT account_id FROM buckets WHERE name = :n"), {"n": name})
        return list(found.scalars())


@pytest.mark.parametrize("fails", [False, True], ids=["store-answers", "store-fails"])
async def test_the_store_makes_the_bucket_outside_any_write_transaction(
    db: Database, store: ObjectStore, hooked: Interleaved, service: StorageService, fails: bool
) -> None:
    """A creation on S3 may take tens of seconds: no write of the account (on SQLite: no write
    at all) waits for it. A store that fails leaves no row."""
    me, name = await _caller(db), _name("probed")
    seen: list[bool] = []

    async def probe() -> None:
        seen.append(await writer_free(db, me.account_id))
        if fails:
            raise StorageUnavailableError("S3 endpoint unreachable or failing (ConnectTimeoutError)")

    hooked.before_create = probe
    if fails:
        with pytest.raises(StorageUnavailableError):
            await service.create_bucket(me, name, None)
    else:
        await service.create_bucket(me, name, None)
    assert seen == [True]
    assert await owners(db, name) == ([] if fails else [me.account_id])
    assert await store.bucket_exists(name) is not fails


async def test_a_creation_refused_for_the_last_place_removes_the_bucket_it_made(
    db: Database, store: ObjectStore, hooked: Interleaved, service: StorageService
) -> None:
    me = await _caller(db)
    kept, raced, lost = _name("kept"), _name("raced"), _name("lost")
    await service.create_bucket(me, kept, None)
    hooked.after_create = creation(db, service, me, raced)  # the account's last place
    with pytest.raises(Conflict) as refused:
        await service.create_bucket(me, lost, None)
    assert (refused.value.code, refused.value.message) == (
        "BUCKET_LIMIT", f"An account may have at most {LIMIT} buckets, in all regions together; this one has {LIMIT}.")
    assert not await store.bucket_exists(lost)
    assert [b.name for b in await service.buckets(me)] == sorted([kept, raced])
    assert await store.bucket_exists(raced)


async def test_a_creation_refused_for_a_name_committed_meanwhile_leaves_the_bucket(
    db: Database, store: ObjectStore, hooked: Interleaved, service: StorageService
) -> None:
    """Another account's creation of the name found this one's bucket, adopted it and
    committed first: the loser made the bucket, but removing it would leave the winner's row
    without one."""
    me, other, name = await _caller(db), await _caller(db), _name("contested")
    hooked.after_create = creation(db, service, other, name)  # adopts this one's bucket, commits
    hooked.before_delete = nothing
    with pytest.raises(Conflict) as refused:
        await service.create_bucket(me, name, None)
    assert refused.value.code == "BUCKET_EXISTS"
    assert hooked.before_delete is not None  # no removal tried: a row names the bucket
    assert await owners(db, name) == [other.account_id]
    assert await store.bucket_exists(name)


async def test_a_refused_creation_leaves_a_bucket_it_adopted(
    db: Database, store: ObjectStore, hooked: Interleaved, service: StorageService
) -> None:
    """An empty bucket without a row (a crash's, or an operator's) that a refused creation
    found is not its to remove."""
    me = await _caller(db)
    kept, raced, found = _name("kept"), _name("raced"), _name("found")
    await service.create_bucket(me, kept, None)
    await store.create_bucket(found)
    hooked.after_create = creation(db, service, me, raced)  # the account's last place
    with pytest.raises(Conflict) as refused:
        await service.create_bucket(me, found, None)
    assert refused.value.code == "BUCKET_LIMIT"
    assert await owners(db, found) == []
    assert await store.bucket_exists(found)


async def test_a_bucket_removed_as_another_creation_commits_its_row_is_made_again(
    db: Database, store: ObjectStore, hooked: Interleaved, service: StorageService
) -> None:
    """The maker, refused for its account's last place, found no row and is removing the
    bucket, as another account's creation that adopted it commits: the maker's second look
    finds that row and makes the bucket again."""
    me, other = await _caller(db), await _caller(db)
    kept, raced, name = _name("kept"), _name("raced"), _name("shared")
    await service.create_bucket(me, kept, None)
    hooked.after_create = creation(db, service, me, raced)  # the account's last place
    hooked.before_delete = creation(db, service, other, name)  # adopts the bucket, commits
    with pytest.raises(Conflict) as refused:
        await service.create_bucket(me, name, None)
    assert refused.value.code == "BUCKET_LIMIT"
    assert hooked.before_delete is None  # the maker did try to remove it
    assert await owners(db, name) == [other.account_id]
    assert await store.bucket_exists(name)


async def test_a_bucket_removed_before_the_adopter_commits_is_made_again(
    db: Database, store: ObjectStore, hooked: Interleaved, service: StorageService
) -> None:
    """The adopter found the bucket; its maker, refused, removed it before the adopter's row
    committed (and looked for a row before that commit): the adopter makes it again."""
    me, name = await _caller(db), _name("adopted")
    await store.create_bucket(name)

    async def the_maker_removes_it() -> None:
        assert await store.delete_empty_bucket(name)

    hooked.after_create = the_maker_removes_it
    bucket = await service.create_bucket(me, name, None)
    assert (bucket.name, bucket.account_id) == (name, me.account_id)
    assert await store.bucket_exists(name)
