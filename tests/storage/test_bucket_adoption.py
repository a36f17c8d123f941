"""createBucket and buckets the store already holds without a row (on every store adapter and
database backend): an empty one, what a crash between the store and the row leaves, is adopted;
one holding objects, made outside the service, is refused and left alone."""

from __future__ import annotations

import uuid

import pytest

from app.db.uow import Database
from app.domain.images import Caller
from app.errors import Conflict
from app.services.storage import StorageService
from app.storage.base import ObjectStore
from tests.factories import make_account

REGION = "region-1"


@pytest.fixture
def service(db: Database, store: ObjectStore) -> StorageService:
    return StorageService(db, {REGION: store}, REGION)


async def _caller(db: Database) -> Caller:
    account, _ = await make_account(db)
    return Caller(account.id, account.name, account.role)


async def test_a_bucket_holding_objects_outside_the_service_is_not_taken_over(
    db: Database, store: ObjectStore, service: StorageService
) -> None:
    name = f"ops-{uuid.uuid4().hex[:12]}"
    await store.create_bucket(name)
    await store.put_bytes(name, "backups/db.dump", b"operator data")
    me = await _caller(db)
    with pytest.raises(Conflict) as refused:
        await service.create_bucket(me, name, None)
    assert refused.value.code == "BUCKET_EXISTS"
    assert await service.buckets(me) == []
    assert await store.get_bytes(name, "backups/db.dump") == b"operator data"


async def test_an_empty_bucket_without_a_row_is_adopted(
    db: Database, store: ObjectStore, service: StorageService
) -> None:
    name = f"left-{uuid.uuid4().hex[:12]}"
    await store.create_bucket(name)  # as a crash after the store's bucket, before the row, leaves it
    me = await _caller(db)
    bucket = await service.create_bucket(me, name, None)
    assert (bucket.name, bucket.account_id) == (name, me.account_id)
    assert [b.name for b in await service.buckets(me)] == [name]
