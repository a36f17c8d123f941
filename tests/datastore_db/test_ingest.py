"""Ingesting real image files (made with qemu-img) into the chunk store: safe files are
stored byte for byte, hostile ones refused with their code and nothing kept."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.compute.provision import Provisioner
from app.datastore.chunks import CHUNK_PREFIX
from app.datastore.store import ChunkStore
from app.datastore.tables import Manifest
from app.db.types import utcnow
from app.db.uow import Database
from app.formats import DiskFormat, FormatError
from app.services import ingest as ingest_module
from app.services.ingest import IngestError, ingest
from app.storage.factory import service_bucket
from app.storage.filesystem import FilesystemObjectStore
from app.storage.signing import UrlSigner
from tests.hostile_files import build_hostile_corpus, build_valid_images, qemu_img

REGION = "region-1"
MiB = 1024 * 1024


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


def _same_size_qcow2_pair(d: Path) -> tuple[bytes, bytes]:
    """A safe qcow2 and one of the same size whose data lives in a host file (`secret.raw`)."""
    d.mkdir(parents=True, exist_ok=True)
    secret = d / "secret.raw"
    secret.write_bytes(b"HOST-SECRET".ljust(MiB, b"\0"))
    qemu_img("create", "-q", "-f", "qcow2", d / "safe.qcow2", "1M")
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={secret},data_file_raw=on,preallocation=metadata",
             d / "evil.qcow2", "1M")
    evil = (d / "evil.qcow2").read_bytes()
    safe = (d / "safe.qcow2").read_bytes().ljust(len(evil), b"\0")  # the same size: the size check passes
    assert len(safe) == len(evil) and safe != evil
    return safe, evil


async def test_a_file_replaced_after_its_inspection_is_refused(tmp_path: Path, db: Database) -> None:
    """The owner overwrites the object between the inspected read of its head and the read
    that is stored: the stored bytes are not what the inspector passed, so nothing is kept."""
    store, chunks = await _setup(tmp_path, db)
    safe, evil = _same_size_qcow2_pair(tmp_path / "files")
    with pytest.raises(IngestError) as refused:
        await ingest(store, "uploads", "missing", declared=None, chunks=chunks, region=REGION,
                     data_key=None, progress=_noop)
    assert refused.value.code == "OBJECT_NOT_FOUND"
    await store.put_bytes("uploads", "disk.qcow2", safe)
    swaps: list[float] = []

    async def overwrite_once_inspected(fraction: float, step: str) -> None:
        if step == "storing the image data" and not swaps:
            swaps.append(fraction)
            await store.put_bytes("uploads", "disk.qcow2", evil)

    with pytest.raises(IngestError) as info:
        await ingest(store, "uploads", "disk.qcow2", declared=DiskFormat.QCOW2, chunks=chunks, region=REGION,
                     data_key=None, progress=overwrite_once_inspected)
    assert (info.value.code, str(info.value)) == ("INVALID_IMAGE_FILE", "The file changed while it was being imported.")
    assert swaps == [0.05]
    assert await _manifest_count(db) == 0
    # Uploaded as it is, the same file is refused by the inspector itself.
    with pytest.raises(IngestError) as direct:
        await ingest(store, "uploads", "disk.qcow2", declared=DiskFormat.QCOW2, chunks=chunks, region=REGION,
                     data_key=None, progress=_noop)
    assert direct.value.code == "UNSAFE_IMAGE_FILE"


@pytest.mark.parametrize("step", ["inspecting the file", "storing the image data"])
async def test_a_file_deleted_during_its_import_is_not_found(tmp_path: Path, db: Database, step: str) -> None:
    """The object goes after the job's stat, before its head is read or before the stored
    read opens it: the job ends OBJECT_NOT_FOUND, as for an object gone before it began (an
    internal error before), and nothing is kept."""
    store, chunks = await _setup(tmp_path, db)
    await store.put_bytes("uploads", "disk.raw", b"\x01" * MiB)
    deleted: list[str] = []

    async def delete_at_step(_fraction: float, at: str) -> None:
        if at == step and not deleted:
            deleted.append(at)
            await store.delete("uploads", "disk.raw")

    with pytest.raises(IngestError) as info:
        await ingest(store, "uploads", "disk.raw", declared=None, chunks=chunks, region=REGION,
                     data_key=None, progress=delete_at_step)
    assert (info.value.code, str(info.value)) == (
        "OBJECT_NOT_FOUND", "Object 'disk.raw' of bucket 'uploads' was deleted while it was being imported.")
    assert deleted == [step]
    assert await _manifest_count(db) == 0
    assert await store.list_objects(service_bucket(REGION), prefix=CHUNK_PREFIX) == []


async def test_conversion_for_a_disk_inspects_the_stored_file_again(tmp_path: Path, db: Database) -> None:
    """A qcow2 whose stored bytes name a host file (stored before imports checked what they
    store) is refused before qemu-img opens it: no disk is made, none holds the host's bytes."""
    _, chunks = await _setup(tmp_path, db)
    _, evil = _same_size_qcow2_pair(tmp_path / "files")

    async def pieces() -> AsyncIterator[bytes]:
        yield evil

    stored = await chunks.write(REGION, pieces())
    provisioner = Provisioner(chunks, None, tmp_path / "work")  # type: ignore[arg-type]  # no KMS: plain data
    with pytest.raises(FormatError) as info:
        await provisioner.convert_to_raw(stored.id, DiskFormat.QCOW2, None, None)
    assert (info.value.code, str(info.value)) == ("UNSAFE_IMAGE_FILE", "unsafe QCOW2 image: data_file: Image has data_file set")
    assert await _manifest_count(db) == 1  # only the stored file's own
    assert [p.name for p in (tmp_path / "work").rglob("*") if p.suffix in (".src", ".raw")] == []


async def test_file_over_the_import_limit_is_refused_and_nothing_is_kept(
    tmp_path: Path, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's own check of DESIGN's "file ≤ 128 GiB": an object that grew past the limit
    after importImage accepted it is refused, and nothing is kept."""
    monkeypatch.setattr(ingest_module, "MAX_IMPORT_BYTES", MiB)
    store, chunks = await _setup(tmp_path, db)
    await store.put_bytes("uploads", "over", b"\x06" * (MiB + 1))
    with pytest.raises(IngestError) as info:
        await ingest(store, "uploads", "over", declared=None, chunks=chunks, region=REGION,
                     data_key=None, progress=_noop)
    assert info.value.code == "FILE_TOO_LARGE"
    assert await _manifest_count(db) == 0
    assert await store.list_objects(service_bucket(REGION), prefix=CHUNK_PREFIX) == []
    await store.put_bytes("uploads", "limit", b"\x06" * MiB)
    got = await ingest(store, "uploads", "limit", declared=None, chunks=chunks, region=REGION,
                       data_key=None, progress=_noop)
    assert (got.inspection.format, got.manifest.size) == (DiskFormat.RAW, MiB)
