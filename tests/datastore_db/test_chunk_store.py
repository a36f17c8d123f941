"""The chunk store with its database: manifests, reference counts, GC (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlmodel import col

from app.datastore.chunks import CHUNK_PREFIX, CHUNK_SIZE
from app.datastore.errors import ChunkIntegrityError
from app.datastore.store import ChunkStore, DataKey
from app.datastore.tables import Chunk
from app.db.repositories.chunks import claim_chunks
from app.db.tables import Job
from app.db.types import new_id, utcnow
from app.db.uow import Database
from app.storage.factory import service_bucket
from app.storage.filesystem import FilesystemObjectStore
from app.storage.signing import UrlSigner
from tests.factories import make_account

REGION = "region-1"


@pytest.fixture
async def fs_store(tmp_path: Path) -> FilesystemObjectStore:
    store = FilesystemObjectStore(tmp_path / "objects", UrlSigner(b"k" * 32, "http://127.0.0.1"))
    await store.create_bucket(service_bucket(REGION))
    return store


def chunk_store(db: Database, store: FilesystemObjectStore, grace: timedelta = timedelta(hours=1)) -> ChunkStore:
    return ChunkStore(db, {REGION: store}, grace=grace)


async def stream(data: bytes, piece: int = 1 << 20) -> AsyncIterator[bytes]:
    for i in range(0, len(data), piece):
        yield data[i : i + piece]


async def read_all(cs: ChunkStore, manifest_id: str, key: bytes | None = None) -> bytes:
    return b"".join([p async for p in cs.read(manifest_id, data_key=key)])


async def refcounts(db: Database) -> dict[str, int]:
    async with db.uow(write=False) as uow:
        rows = await uow.session.execute(select(col(Chunk.digest), col(Chunk.refcount)))
        return {d: n for d, n in rows}


async def test_round_trip_dedup_and_zero_elision(db: Database, fs_store: FilesystemObjectStore) -> None:
    cs = chunk_store(db, fs_store)
    data = secrets.token_bytes(CHUNK_SIZE) + bytes(CHUNK_SIZE) + secrets.token_bytes(CHUNK_SIZE // 2)
    first = await cs.write(REGION, stream(data))
    assert first.size == len(data)
    assert first.checksum == "sha256:" + hashlib.sha256(data).hexdigest()
    assert first.new_bytes == CHUNK_SIZE + CHUNK_SIZE // 2  # the zero chunk is not stored
    second = await cs.write(REGION, stream(data, piece=12345))
    assert second.new_bytes == 0
    assert await read_all(cs, second.id) == data
    counts = await refcounts(db)
    assert sorted(counts.values()) == [2, 2]
    objects = await fs_store.list_objects(service_bucket(REGION), prefix=CHUNK_PREFIX)
    assert len(objects) == 2


async def test_release_then_gc_reclaims_only_after_grace(db: Database, fs_store: FilesystemObjectStore) -> None:
    data = secrets.token_bytes(CHUNK_SIZE + 10)
    patient = chunk_store(db, fs_store, grace=timedelta(hours=1))
    m1 = await patient.write(REGION, stream(data))
    m2 = await patient.write(REGION, stream(data))
    await patient.release(m1.id)
    assert (await patient.collect(REGION)).chunks_deleted == 0  # m2 still references them
    assert await read_all(patient, m2.id) == data
    await patient.release(m2.id)
    assert set((await refcounts(db)).values()) == {0}
    assert (await patient.collect(REGION)).chunks_deleted == 0  # inside the grace period
    eager = chunk_store(db, fs_store, grace=timedelta(0))
    await asyncio.sleep(0.01)
    assert (await eager.collect(REGION)).chunks_deleted == 2
    assert await fs_store.list_objects(service_bucket(REGION), prefix=CHUNK_PREFIX) == []
    assert await refcounts(db) == {}


async def test_a_claimed_chunk_survives_gc(db: Database, fs_store: FilesystemObjectStore) -> None:
    data = secrets.token_bytes(1000)
    cs = chunk_store(db, fs_store, grace=timedelta(seconds=0.5))
    m = await cs.write(REGION, stream(data))
    await cs.release(m.id)
    await asyncio.sleep(0.6)
    # A writer claims the same chunk (as it does before referencing it) just before GC runs.
    digest = hashlib.sha256(data).hexdigest()
    assert await db.writes.run(lambda c: claim_chunks(c, REGION, [digest], utcnow())) == set()
    assert (await cs.collect(REGION)).chunks_deleted == 0
    again = await cs.write(REGION, stream(data))
    assert await read_all(cs, again.id) == data


async def test_concurrent_writers_and_gc_lose_nothing(db: Database, fs_store: FilesystemObjectStore) -> None:
    """Writers re-using chunks that were released long ago (already collectable) race the
    GC: a writer's claim restarts the grace period, so every manifest reads back."""
    blocks = [secrets.token_bytes(64 * 1024) for _ in range(6)]
    cs = chunk_store(db, fs_store, grace=timedelta(seconds=1))
    for b in blocks:
        await cs.release((await cs.write(REGION, stream(b))).id)
    await asyncio.sleep(1.1)

    async def writer(i: int) -> tuple[str, bytes]:
        data = blocks[i % len(blocks)]
        return (await cs.write(REGION, stream(data))).id, data

    async def collector() -> None:
        for _ in range(5):
            await cs.collect(REGION)
            await asyncio.sleep(0)

    results = await asyncio.gather(*(writer(i) for i in range(12)), collector())
    for manifest_id, data in results[:-1]:  # type: ignore[misc]
        assert await read_all(cs, manifest_id) == data


async def test_sealed_manifest_round_trip_and_tamper(db: Database, fs_store: FilesystemObjectStore) -> None:
    cs = chunk_store(db, fs_store)
    key = DataKey("key-test", "dk-test", secrets.token_bytes(32), b"wrapped")
    data = secrets.token_bytes(CHUNK_SIZE + 5)
    m = await cs.write(REGION, stream(data), key=key)
    assert m.kms_key_id == "key-test" and m.wrapped_key == b"wrapped"
    assert await read_all(cs, m.id, key.plaintext) == data
    assert "plaintext" not in repr(key) and key.plaintext.hex() not in repr(key)
    [obj, *_] = await fs_store.list_objects(service_bucket(REGION), prefix=CHUNK_PREFIX)
    path = fs_store._root / service_bucket(REGION) / obj.key
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(ChunkIntegrityError):
        await read_all(cs, m.id, key.plaintext)


async def test_orphan_objects_are_adopted_then_collected(db: Database, fs_store: FilesystemObjectStore) -> None:
    bucket = service_bucket(REGION)
    await fs_store.put_bytes(bucket, CHUNK_PREFIX + "ab" * 32, b"left by a crashed writer")
    path = fs_store._root / bucket / CHUNK_PREFIX / ("ab" * 32)
    old = path.stat().st_mtime - 7200
    os.utime(path, (old, old))
    cs = chunk_store(db, fs_store, grace=timedelta(hours=1))
    assert (await cs.collect(REGION)).orphans_adopted == 1
    assert (await cs.collect(REGION)).chunks_deleted == 1
    assert await fs_store.list_objects(bucket, prefix=CHUNK_PREFIX) == []


async def test_a_running_job_holds_back_the_collection_of_chunks_claimed_since_it_started(
    db: Database, fs_store: FilesystemObjectStore
) -> None:
    """A long import's first chunks stay unreferenced until its manifest is recorded at its
    end: the grace period must not run out under it, however long it runs."""
    account, _ = await make_account(db)
    now = utcnow()
    job = Job(id=new_id("job"), account_id=account.id, type="IMPORT_IMAGE", status="RUNNING", attempts=1,
              lease_owner="w", lease_expires_at=now + timedelta(minutes=1), created_at=now, started_at=now,
              updated_at=now)
    async with db.uow() as uow:
        await uow.jobs.add(job)
        await uow.commit()
    pending = await chunk_store(db, fs_store).write_pending(REGION, stream(secrets.token_bytes(CHUNK_SIZE + 10)))
    assert pending.manifest.new_bytes > 0
    eager = chunk_store(db, fs_store, grace=timedelta(0))
    await asyncio.sleep(0.01)
    assert (await eager.collect(REGION)).chunks_deleted == 0
    assert len(await fs_store.list_objects(service_bucket(REGION), prefix=CHUNK_PREFIX)) == 2
    # A job whose worker stopped renewing its lease holds nothing back (it is taken over, and
    # its next attempt claims what it writes again).
    async with db.uow() as uow:
        await uow.session.execute(update(Job).where(col(Job.id) == job.id).values(lease_expires_at=utcnow()))
        await uow.commit()
    assert (await eager.collect(REGION)).chunks_deleted == 2
    assert await fs_store.list_objects(service_bucket(REGION), prefix=CHUNK_PREFIX) == []
