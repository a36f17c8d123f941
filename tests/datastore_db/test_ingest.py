"""Ingesting real image files (made with qemu-img) into the chunk store: safe files are
stored byte for byte, hostile ones refused with their code and nothing kept."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.datastore.chunks import CHUNK_PREFIX
from app.datastore.store import ChunkStore
from app.datastore.tables import Manifest
from app.db.uow import Database
from app.formats import DiskFormat
from app.db.types import utcnow
from app.services.ingest import IngestError, ingest
from app.storage.factory import service_bucket
from app.storage.filesystem import FilesystemObjectStore
from app.storage.signing import UrlSigner
from tests.hostile_files import build_hostile_corpus, build_valid_images

REGION = "region-1"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("corpus")


async def _setup(tmp_path: Path, db: Database) -> tuple[FilesystemObjectStore, ChunkStore]:
    store = FilesystemObjectStore(tmp_path / "objects", UrlSigner(b"k" * 32, "http://127.0.0.1"))
    await store.create_bucket(service_bucket(REGION))
    await store.create_bucket("uploads")
    return store, ChunkStore(db, {REGION: store}, grace=timedelta(hours=1))


async def _noop(_f: float, _s: str) -> None:
    return None


async def _manifest_count(db: Database) -> int:
    async with db.uow(write=False) as uow:
        return int((await uow.session.execute(select(func.count()).select_from(Manifest))).scalar_one())


async def test_valid_images_are_stored_as_uploaded(tmp_path: Path, db: Database, corpus: Path) -> None:
    store, chunks = await _setup(tmp_path, db)
    images = build_valid_images(corpus / "valid")
    for name, image in images.items():
        data = image.path.read_bytes()
        await store.put_bytes("uploads", name, data)
        got = await ingest(store, "uploads", name, declared=image.format, chunks=chunks, region=REGION,
                           data_key=None, progress=_noop)
        assert got.inspection.format is image.format, name
        assert got.manifest.checksum == "sha256:" + hashlib.sha256(data).hexdigest(), name
        # Unrecorded until its owner takes it: nothing refers to the chunks yet.
        assert await _manifest_count(db) == 0, name
        async with db.uow() as uow:
            await chunks.add_pending(uow, got.pending)
            await uow.commit()
        assert b"".join([p async for p in chunks.read(got.manifest.id)]) == data, name
        async with db.uow() as uow:
            await uow.chunks.release(got.manifest.id, utcnow())
            await uow.commit()


async def test_hostile_files_are_refused_and_nothing_is_kept(tmp_path: Path, db: Database, corpus: Path) -> None:
    store, chunks = await _setup(tmp_path, db)
    cases = build_hostile_corpus(corpus / "hostile")
    assert len(cases) >= 12
    for name, case in cases.items():
        await store.put_bytes("uploads", name, case.path.read_bytes())
        with pytest.raises(IngestError) as info:
            await ingest(store, "uploads", name, declared=case.declared, chunks=chunks, region=REGION,
                         data_key=None, progress=_noop)
        assert info.value.code == case.code, name
    assert await _manifest_count(db) == 0
    assert await store.list_objects(service_bucket(REGION), prefix=CHUNK_PREFIX) == []


async def test_declared_format_must_match(tmp_path: Path, db: Database, corpus: Path) -> None:
    store, chunks = await _setup(tmp_path, db)
    qcow2 = next(i for i in build_valid_images(corpus / "valid2").values() if i.format is DiskFormat.QCOW2)
    await store.put_bytes("uploads", "disk", qcow2.path.read_bytes())
    with pytest.raises(IngestError) as info:
        await ingest(store, "uploads", "disk", declared=DiskFormat.RAW, chunks=chunks, region=REGION,
                     data_key=None, progress=_noop)
    assert info.value.code == "FORMAT_MISMATCH"
    assert await _manifest_count(db) == 0
