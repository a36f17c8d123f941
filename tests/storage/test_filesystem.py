"""Behaviour specific to the filesystem adapter: confinement, collisions, temp files."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.storage import _direct
from app.storage.base import InvalidNameError, ObjectTooLargeError, StorageError
from app.storage.filesystem import FilesystemObjectStore
from app.storage.signing import UrlSigner


@pytest.fixture
async def fs(tmp_path: Path) -> FilesystemObjectStore:
    store = FilesystemObjectStore(tmp_path / "root", UrlSigner(b"s" * 32, "http://x"))
    await store.create_bucket("bucket")
    return store


def tmp_files(store_root: Path) -> list[str]:
    tmp = store_root / ".tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


async def test_objects_live_at_root_bucket_key(fs: FilesystemObjectStore, tmp_path: Path) -> None:
    await fs.put_bytes("bucket", "a/b/c", b"data")
    assert (tmp_path / "root" / "bucket" / "a" / "b" / "c").read_bytes() == b"data"
    assert tmp_files(tmp_path / "root") == []


async def test_symlink_inside_the_store_is_not_followed(
    fs: FilesystemObjectStore, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (tmp_path / "root" / "bucket" / "link").symlink_to(outside, target_is_directory=True)
    (tmp_path / "root" / "bucket" / "file-link").symlink_to(outside / "secret")

    with pytest.raises(StorageError):
        await fs.get_bytes("bucket", "link/secret")
    with pytest.raises(StorageError):
        await fs.put_bytes("bucket", "link/planted", b"x")
    with pytest.raises(StorageError):
        await fs.stat("bucket", "file-link")
    with pytest.raises(StorageError):
        await fs.delete("bucket", "file-link")

    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_bytes() == b"secret"
    assert await fs.list_objects("bucket") == []  # links are never listed


async def test_symlinked_bucket_is_refused(fs: FilesystemObjectStore, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "root" / "linked").symlink_to(outside, target_is_directory=True)

    with pytest.raises(StorageError):
        await fs.put_bytes("linked", "k", b"x")
    assert list(outside.iterdir()) == []


async def test_key_and_prefix_collide(fs: FilesystemObjectStore) -> None:
    await fs.put_bytes("bucket", "a/b", b"x")
    await fs.put_bytes("bucket", "c", b"y")

    with pytest.raises(InvalidNameError):
        await fs.put_bytes("bucket", "a", b"file over a prefix")
    with pytest.raises(InvalidNameError):
        await fs.put_bytes("bucket", "c/d", b"prefix over a file")
    assert await fs.stat("bucket", "a") is None
    assert [o.key for o in await fs.list_objects("bucket")] == ["a/b", "c"]


async def test_overlong_segment_is_refused(fs: FilesystemObjectStore) -> None:
    with pytest.raises(InvalidNameError):
        await fs.put_bytes("bucket", "d/" + "x" * 256, b"x")


async def test_failed_and_cancelled_uploads_leave_no_temp_file(
    fs: FilesystemObjectStore, tmp_path: Path
) -> None:
    started = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"x" * 4096
            started.set()
            await asyncio.sleep(0)

    with pytest.raises(ObjectTooLargeError):
        await fs.put_stream("bucket", "too-big", endless(), max_bytes=100_000)
    upload = asyncio.create_task(fs.put_stream("bucket", "cancelled", endless()))
    await started.wait()
    upload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload

    assert tmp_files(tmp_path / "root") == []
    assert await fs.list_objects("bucket") == []


async def test_stray_files_are_not_objects(fs: FilesystemObjectStore, tmp_path: Path) -> None:
    bucket_dir = tmp_path / "root" / "bucket"
    (bucket_dir / "empty-dir").mkdir()
    (bucket_dir / "back\\slash").write_bytes(b"not a valid key")
    await fs.put_bytes("bucket", "real", b"r")

    assert [o.key for o in await fs.list_objects("bucket")] == ["real"]
    assert await fs.stat("bucket", "empty-dir") is None


# -- direct I/O ---------------------------------------------------------------------------

BIG = 2 * _direct._STAGING_BYTES + 4096 + 28  # 2 staged pieces, an aligned remainder, a tail


def _einval(*_args: object) -> None:
    raise OSError(errno.EINVAL, "Invalid argument")


async def test_filesystem_refusing_direct_io_gets_buffered_writes(
    fs: FilesystemObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_direct, "_set_direct", _einval)
    data = os.urandom(BIG)

    info = await fs.put_bytes("bucket", "chunks/a", data)

    assert (info.size, info.checksum) == (BIG, "sha256:" + hashlib.sha256(data).hexdigest())
    assert (tmp_path / "root" / "bucket" / "chunks" / "a").read_bytes() == data
    assert fs.direct_io is False  # not tried again on this store
    assert tmp_files(tmp_path / "root") == []


class FakeDirectIO:
    """Stands in for O_DIRECT (tmp_path may be a filesystem without it): remembers which
    descriptors are "direct" and refuses the `refuse_at`-th direct write with EINVAL."""

    def __init__(self, refuse_at: int) -> None:
        self.direct: set[int] = set()
        self.direct_writes = 0
        self.refuse_at = refuse_at
        self.real_write = os.write

    def set_direct(self, fd: int, on: bool) -> None:
        (self.direct.add if on else self.direct.discard)(fd)

    def write(self, fd: int, data: memoryview) -> int:
        if fd in self.direct:
            self.direct_writes += 1
            if self.direct_writes == self.refuse_at:
                raise OSError(errno.EINVAL, "Invalid argument")
            assert len(data) % _direct.DIRECT_ALIGN == 0
        return self.real_write(fd, data)


@pytest.mark.parametrize("refuse_at", [1, 2, 99])
def test_direct_write_refused_midway_finishes_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refuse_at: int
) -> None:
    fake = FakeDirectIO(refuse_at)
    monkeypatch.setattr(_direct, "_set_direct", fake.set_direct)
    monkeypatch.setattr(_direct, "_write", fake.write)
    data = os.urandom(BIG)
    path = tmp_path / "file"

    with open(path, "wb") as file:
        still_direct = _direct.write_all(file.fileno(), data, direct=True)

    assert path.read_bytes() == data
    # Two whole staged pieces and the aligned remainder, then a buffered tail.
    assert fake.direct_writes == min(refuse_at, 3)
    assert still_direct is (refuse_at > 3)
    assert fake.direct == set()


def test_small_objects_and_direct_io_off_stay_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeDirectIO(refuse_at=99)
    monkeypatch.setattr(_direct, "_set_direct", fake.set_direct)
    monkeypatch.setattr(_direct, "_write", fake.write)
    small = os.urandom(_direct.DIRECT_MIN_BYTES - 1)
    with open(tmp_path / "small", "wb") as file:
        assert _direct.write_all(file.fileno(), small, direct=True) is True
    with open(tmp_path / "off", "wb") as file:
        assert _direct.write_all(file.fileno(), os.urandom(BIG), direct=False) is False

    assert fake.direct_writes == 0
    assert (tmp_path / "small").read_bytes() == small


async def test_failed_direct_write_leaves_no_temp_file(
    fs: FilesystemObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(fd: int, data: memoryview) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_direct, "_write", disk_full)

    with pytest.raises(OSError) as raised:
        await fs.put_bytes("bucket", "chunks/a", os.urandom(BIG))

    assert raised.value.errno == errno.ENOSPC
    assert tmp_files(tmp_path / "root") == []
    assert await fs.list_objects("bucket") == []


def _einval_read(*_args: object) -> int:
    raise OSError(errno.EINVAL, "Invalid argument")


@pytest.mark.parametrize(
    ("size", "direct_read"),
    [(_direct.DIRECT_MIN_BYTES - 1, False), (4 * 1024 * 1024 + 28, True), (BIG, False)],
    ids=["small", "sealed-chunk", "over-a-staging-buffer"],
)
def test_reads_go_direct_for_chunk_sized_objects_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, direct_read: bool
) -> None:
    fake = FakeDirectIO(refuse_at=99)
    monkeypatch.setattr(_direct, "_set_direct", fake.set_direct)
    reads: list[bool] = []
    real_preadv = os.preadv

    def preadv(fd: int, buffers: list[memoryview], offset: int) -> int:
        reads.append(fd in fake.direct)
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(_direct, "_preadv", preadv)
    data = os.urandom(size)
    (tmp_path / "object").write_bytes(data)

    with open(tmp_path / "object", "rb") as file:
        got, still_direct = _direct.read_all(file.fileno(), size, direct=True)

    assert got == data
    assert reads == ([True] if direct_read else [])
    assert still_direct is True and fake.direct == set()


async def test_filesystem_refusing_direct_reads_gets_buffered_reads(
    fs: FilesystemObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(4 * 1024 * 1024 + 28)
    await fs.put_bytes("bucket", "chunks/a", data)
    monkeypatch.setattr(_direct, "_preadv", _einval_read)

    assert await fs.get_bytes("bucket", "chunks/a") == data
    assert fs.direct_io is False
