"""Bounds on memory and concurrency, failures and cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from app.datastore import CHUNK_SIZE, ChunkWriter, Sealer, WriteResult, read_stream
from app.storage.base import ObjectInfo
from tests.datastore.conftest import BUCKET
from tests.datastore.factories import agen, collect, generated_chunks, pieces, stream_bytes
from tests.datastore.memstore import MemoryStore


def other_tasks() -> set[asyncio.Task[object]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


class CountingSource:
    def __init__(self, chunk_count: int) -> None:
        self.chunk_count = chunk_count
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in generated_chunks(self.chunk_count * CHUNK_SIZE, piece=CHUNK_SIZE):
            self.pulled += 1
            yield piece


class WatchingStore(MemoryStore):
    """Records how many chunks the source had given when each put started."""

    source: CountingSource
    ahead: list[int]

    async def put_bytes(
        self, bucket: str, key: str, data: bytes | bytearray, *, sha256: str | None = None, durable: bool = True
    ) -> ObjectInfo:
        self.ahead.append(self.source.pulled - self.calls["put"])
        return await super().put_bytes(bucket, key, data, sha256=sha256, durable=durable)


async def test_writer_bounds_chunks_in_flight_and_uploads() -> None:
    store = WatchingStore(latency=0.02)
    await store.create_bucket(BUCKET)
    store.source = CountingSource(12)
    store.ahead = []

    result = await ChunkWriter(max_in_flight=3, upload_concurrency=2).write_stream(
        aiter(store.source), store=store, bucket=BUCKET
    )

    assert result.size == 12 * CHUNK_SIZE
    assert store.puts.peak == 2
    # Chunks taken from the source and not yet stored are the chunks in flight.
    assert max(store.ahead) == 3


async def test_reader_reads_ahead_a_bounded_number_of_chunks(store: MemoryStore) -> None:
    data = stream_bytes(8 * CHUNK_SIZE, seed=1)
    result = await ChunkWriter().write_stream(pieces(data), store=store, bucket=BUCKET)
    store.latency = 0.01
    chunks = read_stream(
        result.chunks, store=store, bucket=BUCKET, opener=None, total_size=result.size, read_ahead=3
    )

    received = b""
    async for piece in chunks:
        received += piece
        await asyncio.sleep(0.02)

    assert received == data
    assert store.gets.peak == 3


class FailingStore(MemoryStore):
    async def put_bytes(
        self, bucket: str, key: str, data: bytes | bytearray, *, sha256: str | None = None, durable: bool = True
    ) -> ObjectInfo:
        if self.calls["put"] == 2:
            raise OSError("disk full")
        return await super().put_bytes(bucket, key, data, sha256=sha256, durable=durable)


async def test_a_failed_upload_fails_the_write_with_its_own_error() -> None:
    store = FailingStore(latency=0.01)
    await store.create_bucket(BUCKET)

    with pytest.raises(OSError, match="disk full"):
        await ChunkWriter().write_stream(
            agen(generated_chunks(10 * CHUNK_SIZE)), store=store, bucket=BUCKET
        )

    assert other_tasks() == set()


async def test_a_failing_source_fails_the_write(store: MemoryStore) -> None:
    async def source() -> AsyncIterator[bytes]:
        yield stream_bytes(CHUNK_SIZE + 5)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError, match="client went away"):
        await ChunkWriter().write_stream(source(), store=store, bucket=BUCKET)

    assert other_tasks() == set()


async def test_a_cancelled_write_leaves_no_task_behind() -> None:
    store = MemoryStore(latency=0.05)
    await store.create_bucket(BUCKET)
    write = asyncio.create_task(
        ChunkWriter().write_stream(
            agen(generated_chunks(10 * CHUNK_SIZE)), store=store, bucket=BUCKET
        )
    )
    await asyncio.sleep(0.03)

    write.cancel()

    with pytest.raises(asyncio.CancelledError):
        await write
    assert other_tasks() == set()


async def test_a_failing_exists_callback_fails_the_write(store: MemoryStore) -> None:
    async def exists(digests: list[str]) -> set[str]:
        raise TimeoutError("database")

    with pytest.raises(TimeoutError, match="database"):
        await ChunkWriter().write_stream(
            agen(generated_chunks(3 * CHUNK_SIZE)), store=store, bucket=BUCKET, exists=exists
        )
    assert other_tasks() == set()


async def test_closing_a_read_early_cancels_its_fetches(store: MemoryStore) -> None:
    result: WriteResult = await ChunkWriter().write_stream(
        agen(generated_chunks(8 * CHUNK_SIZE)), store=store, bucket=BUCKET
    )
    store.latency = 0.05
    chunks = read_stream(
        result.chunks, store=store, bucket=BUCKET, opener=None, total_size=result.size
    )

    first = await anext(chunks)
    await chunks.aclose()

    assert len(first) == CHUNK_SIZE
    assert other_tasks() == set()
    assert store.calls["get"] <= 1 + 4  # the chunk read and those read ahead


async def test_empty_stream(store: MemoryStore) -> None:
    result = await ChunkWriter().write_stream(agen([b"", b""]), store=store, bucket=BUCKET)

    assert result == WriteResult(
        [], 0, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", 0
    )
    chunks = read_stream([], store=store, bucket=BUCKET, opener=None, total_size=0)
    assert await collect(chunks) == b""


@pytest.mark.parametrize("value", [0, -1])
def test_writer_limits_must_be_positive(value: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ChunkWriter(max_in_flight=value)
    with pytest.raises(ValueError, match="at least 1"):
        ChunkWriter(upload_concurrency=value)


class SyncRecordingStore(MemoryStore):
    """Records, for every put, whether it asked for durability, and the order of syncs;
    `fail_sync` makes the n-th sync fail."""

    def __init__(self, fail_sync: int = 0) -> None:
        super().__init__(latency=0.005)
        self.durable_puts: list[bool] = []
        self.synced: list[str] = []
        self.fail_sync = fail_sync

    async def put_bytes(
        self, bucket: str, key: str, data: bytes | bytearray, *, sha256: str | None = None, durable: bool = True
    ) -> ObjectInfo:
        self.durable_puts.append(durable)
        return await super().put_bytes(bucket, key, data, sha256=sha256, durable=durable)

    async def sync(self, bucket: str, key: str) -> None:
        await asyncio.sleep(0.01)
        if len(self.synced) + 1 == self.fail_sync:
            raise OSError("I/O error while syncing")
        await super().sync(bucket, key)
        self.synced.append(key)


@pytest.mark.parametrize("sealed", [False, True])
async def test_a_write_returns_only_once_every_upload_is_durable(sealed: bool) -> None:
    store = SyncRecordingStore()
    await store.create_bucket(BUCKET)
    sealer = Sealer(b"k" * 32, "dk-1") if sealed else None

    result = await ChunkWriter().write_stream(
        agen(generated_chunks(6 * CHUNK_SIZE)), store=store, bucket=BUCKET, seal=sealer
    )

    keys = [ref.key for ref in result.chunks if ref.key is not None]
    # Uploads do not wait for the device; the write waits for every sync before returning.
    assert store.durable_puts == [False] * 6
    assert sorted(store.synced) == sorted(keys)
    assert other_tasks() == set()


async def test_a_failed_sync_fails_the_write_with_its_own_error() -> None:
    store = SyncRecordingStore(fail_sync=3)
    await store.create_bucket(BUCKET)

    with pytest.raises(OSError, match="I/O error while syncing"):
        await ChunkWriter().write_stream(
            agen(generated_chunks(6 * CHUNK_SIZE)), store=store, bucket=BUCKET
        )

    assert other_tasks() == set()
