"""Checksums the storage service reports for objects put straight into a store (not through
the service, so none was recorded at upload): computed once and recorded, then computed again
whenever the object is replaced, also by one of the same size with the same modification time
(S3 dates have one-second resolution, a file's mtime ticks every few milliseconds). Run on
every store adapter and database backend."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncGenerator
from dataclasses import replace
from pathlib import Path

import pytest

from app.db.tables import Bucket, ObjectChecksum
from app.db.types import utcnow
from app.db.uow import Database
from app.services.storage import CHECKSUM_CONCURRENCY, StorageService, StoredObjectView
from app.storage.base import ObjectStore
from app.storage.filesystem import FilesystemObjectStore
from tests.storage.conftest import FilesystemServer

REGION = "region-1"
KEY = "dir/disk.raw"
#: Writes of one version after another until two land within one second on S3: nearly
#: always the first (a second is long beside a write, a listing and a checksum).
ATTEMPTS = 20


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def service(db: Database, store: ObjectStore) -> StorageService:
    return StorageService(db, {REGION: store}, REGION)


@pytest.fixture
def fs_root(store: ObjectStore, request: pytest.FixtureRequest) -> Path | None:
    """The filesystem store's root directory, when it is the store under test."""
    if isinstance(store, FilesystemObjectStore):
        server: FilesystemServer = request.getfixturevalue("fs_server")
        return server.root
    return None


async def listed(service: StorageService, bucket: str) -> StoredObjectView:
    """The object under KEY as the API sees it: from a listing of its bucket."""
    row = Bucket(name=bucket, account_id="acc-listing", region=REGION, created_at=utcnow())
    [view], _ = await service.list_objects(row, None, None, None)
    assert view.key == KEY
    return view


async def test_a_same_size_replacement_within_the_same_modification_time_gets_its_own_checksum(
    service: StorageService, store: ObjectStore, bucket: str, fs_root: Path | None
) -> None:
    old, new = b"\x01" * 5000, b"\x02" * 5000
    for _ in range(ATTEMPTS):
        await store.put_bytes(bucket, KEY, old)
        before = await listed(service, bucket)
        assert before.checksum is None  # not known from the listing: computed and recorded
        assert await service.checksum(REGION, before) == sha256(old)
        if fs_root is not None:
            old_mtime = os.stat(fs_root / bucket / KEY).st_mtime_ns
        await store.put_bytes(bucket, KEY, new)
        if fs_root is not None:
            # A file's mtime ticks every few milliseconds, less than recording a checksum
            # takes (a database commit): the new file is given the old one's mtime, as a
            # write within the same tick leaves it. The store replaced the file all the same.
            path = fs_root / bucket / KEY
            os.utime(path, ns=(os.stat(path).st_atime_ns, old_mtime))
        after = await listed(service, bucket)
        if after.modified_at == before.modified_at:
            break
    else:
        pytest.fail(f"no two writes within one modification time in {ATTEMPTS} attempts")
    assert (after.size, after.modified_at) == (before.size, before.modified_at)
    assert await service.checksum(REGION, after) == sha256(new)
    # Recorded in turn: asked again, the new checksum holds.
    assert await service.checksum(REGION, await listed(service, bucket)) == sha256(new)


async def test_a_checksum_recorded_before_entity_tags_were_kept_is_computed_again(
    service: StorageService, store: ObjectStore, bucket: str, db: Database
) -> None:
    """A row without an entity tag (recorded before the migration that added them) is not
    trusted once the object has one, even when its size and modification time still match."""
    data = b"\x03" * 4000
    await store.put_bytes(bucket, KEY, data)
    view = await listed(service, bucket)
    assert view.etag is not None
    stale = ObjectChecksum(bucket=bucket, key=KEY, size=view.size, modified_at=view.modified_at,
                           checksum=sha256(b"other bytes"))
    async with db.uow() as uow:
        await uow.storage.record_checksum(stale)
        await uow.commit()

    assert await service.checksum(REGION, view) == sha256(data)
    async with db.uow(write=False) as uow:
        row = await uow.storage.checksum(bucket, KEY)
    assert row is not None and (row.checksum, row.etag) == (sha256(data), view.etag)


async def test_a_checksum_recorded_at_upload_is_trusted_while_the_object_is_unchanged(
    db: Database, fs_server: FilesystemServer
) -> None:
    """What a filesystem put returns (size, mtime, entity tag) is what the store lists after
    it, so the checksum recorded at a signed upload is not computed again. (Only this store's
    uploads pass through the service: S3's go to S3 itself.)"""
    store = FilesystemObjectStore(fs_server.root, fs_server.signer)
    service = StorageService(db, {REGION: store}, REGION)
    bucket = f"test-{uuid.uuid4().hex[:16]}"
    await store.create_bucket(bucket)
    info = await store.put_bytes(bucket, KEY, b"\x04" * 3000)
    # A checksum no computation would give: returned only if the recorded row is trusted.
    marker = "sha256:" + "0" * 64
    await service.record_checksum(bucket, KEY, replace(info, checksum=marker))

    assert await service.checksum(REGION, await listed(service, bucket)) == marker


async def test_a_process_hashes_few_objects_at_once_and_each_once(
    service: StorageService, store: ObjectStore, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listing that asks the checksums of many objects nobody recorded does not read them
    all at once (CHECKSUM_CONCURRENCY), and requests for the same object hash it once."""
    contents = {f"dir/{n}.raw": os.urandom(256 * 1024) for n in range(6)}
    for key, data in contents.items():
        await store.put_bytes(bucket, key, data)
    row = Bucket(name=bucket, account_id="acc-listing", region=REGION, created_at=utcnow())
    views, _ = await service.list_objects(row, "dir/", None, None)
    opened: list[str] = []
    active, most = 0, 0
    original = store.open_stream

    async def counted(bucket_name: str, key: str, *args: object, **kwargs: object) -> AsyncGenerator[bytes, None]:
        nonlocal active, most
        opened.append(key)
        active += 1
        most = max(most, active)
        try:
            async for piece in original(bucket_name, key, *args, **kwargs):  # type: ignore[arg-type]
                await asyncio.sleep(0.01)  # a slow store: the requests overlap
                yield piece
        finally:
            active -= 1

    monkeypatch.setattr(store, "open_stream", counted)
    got = await asyncio.gather(*(service.checksum(REGION, v) for v in [*views, *views]))
    assert got == [sha256(contents[v.key]) for v in [*views, *views]]
    assert most == CHECKSUM_CONCURRENCY
    assert sorted(opened) == sorted(contents)  # each object read once
