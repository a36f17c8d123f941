"""Behaviour specific to the filesystem adapter: confinement, collisions, temp files."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.datastore.chunks import CHUNK_SIZE
from app.storage import direct
from app.storage.base import (
    READ_PIECE_BYTES,
    InvalidNameError,
    NoSuchObjectError,
    ObjectTooLargeError,
    StorageError,
)
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


async def _pieces(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


@pytest.mark.parametrize("link,bucket", [
    ("linked", "linked"),  # a bucket that is a link
    (".tmp", "bucket"),  # the staging directory of uploads: they would be staged outside
])
async def test_a_linked_bucket_or_staging_directory_is_refused(
    fs: FilesystemObjectStore, tmp_path: Path, link: str, bucket: str
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "root" / link).symlink_to(outside, target_is_directory=True)

    with pytest.raises(StorageError):
        await fs.put_bytes(bucket, "k", b"x")
    with pytest.raises(StorageError):
        await fs.put_stream(bucket, "k", _pieces(b"y"))
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "root" / bucket / "k").exists()


async def test_a_root_reached_through_a_link_is_served(tmp_path: Path) -> None:
    """Only links below the root are refused: the operator's root may be one."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    store = FilesystemObjectStore(tmp_path / "link", UrlSigner(b"s" * 32, "http://x"))
    await store.create_bucket("bucket")
    await store.put_bytes("bucket", "a/b", b"data")

    assert (tmp_path / "real" / "bucket" / "a" / "b").read_bytes() == b"data"
    assert await store.get_bytes("bucket", "a/b") == b"data"


def test_puts_racing_deletes_in_one_directory_are_not_collisions(
    fs: FilesystemObjectStore, tmp_path: Path
) -> None:
    """A delete prunes its emptied key directory; a put landing in that directory at that
    moment retries instead of reporting a collision (mkdir's "exists" answer raced the
    prune)."""
    rounds = 400
    failures: list[BaseException] = []

    def churn(name: str) -> None:
        try:
            for number in range(rounds):
                key = f"shared/{name}-{number}"
                fs._put_bytes("bucket", key, b"x", None, False)
                fs._delete("bucket", key)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=churn, args=(name,)) for name in "abcd"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert not (tmp_path / "root" / "bucket" / "shared").exists()
    assert tmp_files(tmp_path / "root") == []


async def test_key_and_prefix_collide(fs: FilesystemObjectStore) -> None:
    await fs.put_bytes("bucket", "a/b", b"x")
    await fs.put_bytes("bucket", "c", b"y")

    with pytest.raises(InvalidNameError):
        await fs.put_bytes("bucket", "a", b"file over a prefix")
    with pytest.raises(InvalidNameError):
        await fs.put_bytes("bucket", "c/d", b"prefix over a file")
    with pytest.raises(InvalidNameError):
        await fs.put_bytes("bucket", "c/d/e", b"deeper prefix over a file")
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



async def test_failed_put_bytes_leaves_no_temp_file(
    fs: FilesystemObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(fd: int, data: memoryview) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(direct, "_write_all", disk_full)

    with pytest.raises(OSError) as raised:
        await fs.put_bytes("bucket", "chunks/a", b"x" * 5000, sha256="ab" * 32)

    assert raised.value.errno == errno.ENOSPC
    assert tmp_files(tmp_path / "root") == []
    assert await fs.list_objects("bucket") == []


async def test_put_not_durable_defers_both_fsyncs_to_sync(
    fs: FilesystemObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsynced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        fsynced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    target = tmp_path / "root" / "bucket" / "chunks" / "a"

    await fs.put_bytes("bucket", "chunks/a", b"bytes", durable=False)
    assert (fsynced, target.read_bytes()) == ([], b"bytes")

    await fs.sync("bucket", "chunks/a")
    assert fsynced == [str(target), str(target.parent)]

    fsynced.clear()
    await fs.put_bytes("bucket", "chunks/b", b"bytes")  # durable: the temp file, then the rename
    assert [Path(fsynced[0]).parent.name, *fsynced[1:]] == [".tmp", str(target.parent)]


async def test_sync_of_a_missing_object_is_an_error(fs: FilesystemObjectStore) -> None:
    with pytest.raises(NoSuchObjectError):
        await fs.sync("bucket", "chunks/missing")


async def test_a_read_cancelled_while_the_file_opens_closes_it(
    fs: FilesystemObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-ahead stopped by a failed verification is cancelled while its thread may still be
    opening the object: the file is closed when it arrives, not left to the garbage collector."""
    await fs.create_bucket("bkt")
    await fs.put_bytes("bkt", "k", b"data")
    opened: list[object] = []
    original = fs._open_for_read

    def slow_open(bucket: str, key: str, offset: int, direct: bool) -> object:
        import time

        time.sleep(0.2)
        file = original(bucket, key, offset, direct)
        opened.append(file)
        return file

    monkeypatch.setattr(fs, "_open_for_read", slow_open)

    async def read() -> bytes:
        return b"".join([p async for p in fs.open_stream("bkt", "k")])

    task = asyncio.create_task(read())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.4)
    [file] = opened
    assert file.closed  # type: ignore[attr-defined]


async def test_streams_are_read_in_whole_chunks(fs: FilesystemObjectStore) -> None:
    """The chunk store's chunk size: an import's pieces are its chunks, cut without a copy."""
    data = os.urandom(2 * CHUNK_SIZE + 5)
    await fs.put_bytes("bucket", "image.raw", data)

    pieces = [p async for p in fs.open_stream("bucket", "image.raw")]
    ranged = [p async for p in fs.open_stream("bucket", "image.raw", offset=3, length=CHUNK_SIZE + 1)]

    assert READ_PIECE_BYTES == CHUNK_SIZE
    assert [len(p) for p in pieces] == [CHUNK_SIZE, CHUNK_SIZE, 5] and b"".join(pieces) == data
    assert [len(p) for p in ranged] == [CHUNK_SIZE, 1] and b"".join(ranged) == data[3 : CHUNK_SIZE + 4]


def test_the_direct_io_setting_reaches_the_filesystem_store(tmp_path: Path) -> None:
    from app.config import Settings
    from app.storage.factory import build_stores

    signer = UrlSigner(b"s" * 32, "http://x")
    on = build_stores(Settings(data_dir=tmp_path), signer)["region-1"]
    off = build_stores(Settings.from_env({"IMS_DATA_DIR": str(tmp_path), "IMS_DIRECT_IO": "0"}), signer)["region-1"]
    assert isinstance(on, FilesystemObjectStore) and isinstance(off, FilesystemObjectStore)
    assert (on.direct_io, off.direct_io) == (True, False)


async def test_a_store_without_direct_io_writes_buffered(tmp_path: Path) -> None:
    store = FilesystemObjectStore(tmp_path / "root", UrlSigner(b"s" * 32, "http://x"), direct_io=False)
    await store.create_bucket("bucket")
    data = os.urandom(CHUNK_SIZE + 3)
    await store.put_bytes("bucket", "k", data)
    assert (await store.get_bytes("bucket", "k"), store.direct_io) == (data, False)


async def test_a_stream_left_early_waits_for_its_read_ahead_and_closes(
    fs: FilesystemObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next piece is being read while the caller has this one: a caller that stops there
    leaves neither a read running on a closed file nor the file open."""
    data = os.urandom(3 * READ_PIECE_BYTES)
    await fs.put_bytes("bucket", "big", data)
    opened: list[object] = []
    original = fs._open_for_read

    def spy(bucket: str, key: str, offset: int, direct: bool) -> object:
        file = original(bucket, key, offset, direct)
        opened.append(file)
        return file

    monkeypatch.setattr(fs, "_open_for_read", spy)
    stream = fs.open_stream("bucket", "big")
    first = await anext(stream)
    await stream.aclose()
    [file] = opened
    assert first == data[:READ_PIECE_BYTES]
    assert file.closed  # type: ignore[attr-defined]
    # Whole, with a range across pieces, the pieces still come in order.
    whole = b"".join([p async for p in fs.open_stream("bucket", "big", offset=5, length=2 * READ_PIECE_BYTES)])
    assert whole == data[5:5 + 2 * READ_PIECE_BYTES]


async def test_a_cancelled_upload_waits_for_its_write_before_cleaning_up(
    fs: FilesystemObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread cannot be stopped: the temporary file is closed and removed (and its staging
    buffer given back) only once the write running in it has finished."""
    import threading
    import time

    from app.storage import filesystem

    events: list[str] = []
    writing = threading.Event()
    real_write, real_discard = filesystem._write_piece, filesystem._discard

    def slow_write(file: object, hasher: object, piece: bytes) -> None:
        writing.set()
        time.sleep(0.3)
        real_write(file, hasher, piece)  # type: ignore[arg-type]
        events.append("written")

    def discard(file: object, tmp: Path) -> None:
        events.append("discarded")
        real_discard(file, tmp)  # type: ignore[arg-type]

    monkeypatch.setattr(filesystem, "_write_piece", slow_write)
    monkeypatch.setattr(filesystem, "_discard", discard)

    async def pieces() -> AsyncIterator[bytes]:
        yield os.urandom(READ_PIECE_BYTES)
        await asyncio.sleep(10)
        yield b"never"

    upload = asyncio.create_task(fs.put_stream("bucket", "cancelled", pieces()))
    await asyncio.to_thread(writing.wait, 10)
    upload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload
    assert events == ["written", "discarded"]
    assert tmp_files(tmp_path / "root") == []
    assert await fs.list_objects("bucket") == []


async def test_a_stream_cancelled_during_its_read_ahead_closes_after_the_read(
    fs: FilesystemObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    data = os.urandom(2 * READ_PIECE_BYTES)
    await fs.put_bytes("bucket", "two", data)
    events: list[str] = []
    reading = threading.Event()
    original = fs._open_for_read

    def spy(bucket: str, key: str, offset: int, direct: bool) -> object:
        file = original(bucket, key, offset, direct)
        real_read, real_close = file.read, file.close

        def slow_read(size: int) -> bytes:
            reading.set()
            time.sleep(0.3)
            events.append("read")
            return real_read(size)

        def close() -> None:
            events.append("closed")
            real_close()

        file.read, file.close = slow_read, close  # type: ignore[method-assign]
        return file

    monkeypatch.setattr(fs, "_open_for_read", spy)

    async def consume() -> bytes:
        return b"".join([p async for p in fs.open_stream("bucket", "two")])

    task = asyncio.create_task(consume())
    await asyncio.to_thread(reading.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert events == ["read", "closed"]
