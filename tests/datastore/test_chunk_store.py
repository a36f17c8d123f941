"""Writing streams into the chunk store and reading them back."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.datastore import (
    CHUNK_SIZE,
    ChunkIntegrityError,
    ChunkMissingError,
    ChunkRef,
    ChunkWriter,
    Opener,
    Sealer,
    WriteResult,
    chunk_key,
    read_stream,
)
from app.datastore.crypto import SEAL_OVERHEAD
from tests.datastore.conftest import BUCKET
from tests.datastore.factories import MiB, collect, pieces, sha256, stream_bytes
from tests.datastore.memstore import MemoryStore

SIZES = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 13 * MiB + 12345]
PIECE_SIZES = [(CHUNK_SIZE,), (1 * MiB,), (65536, 1, 3 * MiB + 7), (9 * MiB,)]


async def write(
    store: MemoryStore, data: bytes, sealer: Sealer | None = None, **options: int
) -> WriteResult:
    return await ChunkWriter(**options).write_stream(
        pieces(data, (1 * MiB,)), store=store, bucket=BUCKET, seal=sealer
    )


async def read(
    store: MemoryStore,
    result: WriteResult,
    opener: Opener | None = None,
    offset: int = 0,
    length: int | None = None,
) -> bytes:
    return await collect(
        read_stream(
            result.chunks,
            store=store,
            bucket=BUCKET,
            opener=opener,
            total_size=result.size,
            offset=offset,
            length=length,
        )
    )


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("piece_sizes", PIECE_SIZES, ids=str)
@pytest.mark.parametrize("size", SIZES)
async def test_plain_round_trip(store: MemoryStore, size: int, piece_sizes: tuple[int]) -> None:
    data = stream_bytes(size, seed=size)

    result = await ChunkWriter().write_stream(pieces(data, piece_sizes), store=store, bucket=BUCKET)

    chunk_count = -(-size // CHUNK_SIZE)
    assert result.size == size
    assert result.checksum == sha256(data)
    assert [ref.index for ref in result.chunks] == list(range(chunk_count))
    assert [ref.length for ref in result.chunks] == [
        min(CHUNK_SIZE, size - i * CHUNK_SIZE) for i in range(chunk_count)
    ]
    assert result.new_bytes == size == store.stored_bytes(BUCKET)
    assert store.keys(BUCKET) == sorted(chunk_key(ref.digest or "") for ref in result.chunks)
    for ref in result.chunks:
        assert ref.digest is not None
        stored = store.read(BUCKET, chunk_key(ref.digest))
        assert hashlib.sha256(stored).hexdigest() == ref.digest
        assert stored == data[ref.index * CHUNK_SIZE :][: ref.length]
    assert await read(store, result) == data


@pytest.mark.parametrize("size", SIZES)
async def test_sealed_round_trip(
    store: MemoryStore, sealer: Sealer, opener: Opener, size: int
) -> None:
    data = stream_bytes(size, seed=size)

    result = await write(store, data, sealer)

    assert result.checksum == sha256(data)
    assert result.new_bytes == size + len(result.chunks) * SEAL_OVERHEAD
    for ref in result.chunks:
        assert ref.digest is not None
        stored = store.read(BUCKET, chunk_key(ref.digest))
        assert hashlib.sha256(stored).hexdigest() == ref.digest
        if ref.length >= 16:  # a 1-byte ciphertext equals its plaintext once in 256 runs
            assert stored[12:-16] != data[ref.index * CHUNK_SIZE :][: ref.length]
    assert await read(store, result, opener) == data


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    size=st.integers(min_value=0, max_value=3 * CHUNK_SIZE + 100),
    piece_sizes=st.lists(st.integers(min_value=1, max_value=6 * MiB), min_size=1, max_size=5),
    sealed=st.booleans(),
)
def test_round_trip_any_cut(
    sealer: Sealer, opener: Opener, size: int, piece_sizes: list[int], sealed: bool
) -> None:
    data = stream_bytes(size, seed=size ^ len(piece_sizes))

    async def run() -> tuple[WriteResult, bytes]:
        store = MemoryStore()
        await store.create_bucket(BUCKET)
        result = await ChunkWriter(max_in_flight=2).write_stream(
            pieces(data, piece_sizes), store=store, bucket=BUCKET, seal=sealer if sealed else None
        )
        return result, await read(store, result, opener if sealed else None)

    result, back = asyncio.run(run())

    assert back == data
    assert result.checksum == sha256(data)
    assert all(ref.length == CHUNK_SIZE for ref in result.chunks[:-1])


# -- dedup and zero chunks -----------------------------------------------------------------


async def test_same_stream_twice_stores_nothing_new(store: MemoryStore) -> None:
    data = stream_bytes(3 * CHUNK_SIZE + 10, seed=1)
    first = await write(store, data)
    puts = store.calls["put"]

    second = await write(store, data)

    assert second == WriteResult(first.chunks, first.size, first.checksum, new_bytes=0)
    assert store.calls["put"] == puts
    assert store.stored_bytes(BUCKET) == len(data)


async def test_shared_chunks_are_stored_once(store: MemoryStore) -> None:
    base = stream_bytes(3 * CHUNK_SIZE, seed=2)
    await write(store, base)
    changed = base[:CHUNK_SIZE] + stream_bytes(CHUNK_SIZE, seed=3) + base[2 * CHUNK_SIZE :]

    result = await write(store, changed)

    assert result.new_bytes == CHUNK_SIZE
    assert len(store.keys(BUCKET)) == 4
    assert await read(store, result) == changed


async def test_repeated_chunk_within_a_stream_is_uploaded_once(store: MemoryStore) -> None:
    chunk = stream_bytes(CHUNK_SIZE, seed=4)

    result = await write(store, chunk * 5)

    assert result.new_bytes == CHUNK_SIZE
    assert store.calls["put"] == 1
    assert len({ref.digest for ref in result.chunks}) == 1
    assert await read(store, result) == chunk * 5


async def test_sealed_chunks_are_not_deduplicated(store: MemoryStore, sealer: Sealer) -> None:
    data = stream_bytes(2 * CHUNK_SIZE, seed=5)
    first = await write(store, data, sealer)

    second = await write(store, data, sealer)

    assert second.new_bytes == first.new_bytes == 2 * (CHUNK_SIZE + SEAL_OVERHEAD)
    assert {ref.digest for ref in first.chunks}.isdisjoint(ref.digest for ref in second.chunks)
    assert store.calls["stat"] == 0


@pytest.mark.parametrize("sealed", [False, True])
async def test_zero_chunks_are_not_stored(
    store: MemoryStore, sealer: Sealer, opener: Opener, sealed: bool
) -> None:
    size = 5 * CHUNK_SIZE + 100
    data = stream_bytes(size, seed=6, zero_chunks=[0, 2, 3, 5])

    result = await write(store, data, sealer if sealed else None)

    assert [ref.digest is None for ref in result.chunks] == [True, False, True, True, False, True]
    assert [ref.length for ref in result.chunks] == [CHUNK_SIZE] * 5 + [100]
    assert len(store.keys(BUCKET)) == 2
    assert result.new_bytes == 2 * (CHUNK_SIZE + (SEAL_OVERHEAD if sealed else 0))
    assert await read(store, result, opener if sealed else None) == data
    assert store.calls["get"] == 2


async def test_all_zero_stream_stores_nothing(store: MemoryStore) -> None:
    result = await write(store, bytes(2 * CHUNK_SIZE + 1))

    assert [ref.digest for ref in result.chunks] == [None, None, None]
    assert result.new_bytes == 0
    assert store.keys(BUCKET) == []
    assert await read(store, result) == bytes(2 * CHUNK_SIZE + 1)


async def test_a_chunk_with_one_non_zero_byte_is_stored(store: MemoryStore) -> None:
    data = bytearray(CHUNK_SIZE)
    data[-1] = 1

    result = await write(store, bytes(data))

    assert result.chunks[0].digest is not None


# -- existence checks ----------------------------------------------------------------------


async def test_exists_callback_is_asked_in_batches_instead_of_the_store(
    store: MemoryStore,
) -> None:
    data = stream_bytes(6 * CHUNK_SIZE, seed=7)
    known = await write(store, data[: 3 * CHUNK_SIZE])
    known_digests = {ref.digest for ref in known.chunks}
    asked: list[list[str]] = []

    async def exists(digests: list[str]) -> set[str]:
        asked.append(digests)
        await asyncio.sleep(0.01)
        return {digest for digest in digests if digest in known_digests}

    stats = store.calls["stat"]
    result = await ChunkWriter(max_in_flight=6).write_stream(
        pieces(data), store=store, bucket=BUCKET, exists=exists
    )

    assert result.new_bytes == 3 * CHUNK_SIZE
    assert store.calls["stat"] == stats
    assert sorted(digest for batch in asked for digest in batch) == sorted(
        ref.digest or "" for ref in result.chunks
    )
    assert len(asked) < 6


async def test_exists_callback_is_trusted(store: MemoryStore) -> None:
    async def everything_exists(digests: list[str]) -> set[str]:
        return set(digests)

    result = await ChunkWriter().write_stream(
        pieces(stream_bytes(CHUNK_SIZE, seed=8)),
        store=store,
        bucket=BUCKET,
        exists=everything_exists,
    )

    assert result.new_bytes == 0
    assert store.keys(BUCKET) == []


# -- integrity -----------------------------------------------------------------------------


async def read_until_failure(
    store: MemoryStore, result: WriteResult, opener: Opener | None = None, offset: int = 0
) -> bytes:
    received = bytearray()
    stream = read_stream(
        result.chunks,
        store=store,
        bucket=BUCKET,
        opener=opener,
        total_size=result.size,
        offset=offset,
    )
    with pytest.raises(ChunkIntegrityError) as failure:
        async for piece in stream:
            received += piece
    assert "chunk 1" in str(failure.value)
    return bytes(received)


@pytest.mark.parametrize("position", [0, CHUNK_SIZE // 2, CHUNK_SIZE - 1])
async def test_flipped_byte_in_plain_chunk_fails_before_its_first_byte(
    store: MemoryStore, position: int
) -> None:
    data = stream_bytes(3 * CHUNK_SIZE, seed=9)
    result = await write(store, data)
    store.flip_byte(BUCKET, chunk_key(result.chunks[1].digest or ""), position)

    assert await read_until_failure(store, result) == data[:CHUNK_SIZE]
    assert await read_until_failure(store, result, offset=CHUNK_SIZE + 10) == b""


@pytest.mark.parametrize("position", [0, 12, CHUNK_SIZE // 2, CHUNK_SIZE + SEAL_OVERHEAD - 1])
async def test_flipped_byte_in_sealed_chunk_fails_before_its_first_byte(
    store: MemoryStore, sealer: Sealer, opener: Opener, position: int
) -> None:
    data = stream_bytes(3 * CHUNK_SIZE, seed=10)
    result = await write(store, data, sealer)
    key = chunk_key(result.chunks[1].digest or "")
    store.flip_byte(BUCKET, key, position)

    assert await read_until_failure(store, result, opener) == data[:CHUNK_SIZE]


async def test_tampered_sealed_chunk_fails_gcm_even_with_a_matching_digest(
    store: MemoryStore, sealer: Sealer, opener: Opener
) -> None:
    data = stream_bytes(2 * CHUNK_SIZE, seed=11)
    result = await write(store, data, sealer)
    sealed = bytearray(store.read(BUCKET, chunk_key(result.chunks[1].digest or "")))
    sealed[100] ^= 1
    forged = bytes(sealed)
    await store.put_bytes(BUCKET, chunk_key(hashlib.sha256(forged).hexdigest()), forged)
    chunks = [result.chunks[0], ChunkRef(1, hashlib.sha256(forged).hexdigest(), CHUNK_SIZE)]

    forged_result = WriteResult(chunks, result.size, result.checksum, 0)

    assert await read_until_failure(store, forged_result, opener) == data[:CHUNK_SIZE]


async def test_swapped_sealed_chunks_fail_on_their_position(
    store: MemoryStore, sealer: Sealer, opener: Opener
) -> None:
    data = stream_bytes(3 * CHUNK_SIZE, seed=12)
    result = await write(store, data, sealer)
    first, second, third = result.chunks
    swapped = [first, ChunkRef(1, third.digest, CHUNK_SIZE), ChunkRef(2, second.digest, CHUNK_SIZE)]

    got = await read_until_failure(
        store, WriteResult(swapped, result.size, result.checksum, 0), opener
    )

    assert got == data[:CHUNK_SIZE]


async def test_swapped_object_contents_fail_on_digest(store: MemoryStore) -> None:
    data = stream_bytes(3 * CHUNK_SIZE, seed=13)
    result = await write(store, data)
    key_1, key_2 = (chunk_key(ref.digest or "") for ref in result.chunks[1:])
    content_1, content_2 = store.read(BUCKET, key_1), store.read(BUCKET, key_2)
    store.overwrite(BUCKET, key_1, content_2)
    store.overwrite(BUCKET, key_2, content_1)

    assert await read_until_failure(store, result) == data[:CHUNK_SIZE]


async def test_sealed_chunks_do_not_open_with_another_key(
    store: MemoryStore, sealer: Sealer
) -> None:
    result = await write(store, stream_bytes(CHUNK_SIZE, seed=14), sealer)

    with pytest.raises(ChunkIntegrityError, match="chunk 0 failed authentication"):
        await read(store, result, Opener(bytes(32), sealer.key_id))


async def test_sealed_chunks_read_as_plain_fail_on_length(
    store: MemoryStore, sealer: Sealer
) -> None:
    result = await write(store, stream_bytes(CHUNK_SIZE, seed=15), sealer)

    with pytest.raises(ChunkIntegrityError, match="its manifest says"):
        await read(store, result)


async def test_missing_chunk_is_reported(store: MemoryStore) -> None:
    data = stream_bytes(2 * CHUNK_SIZE, seed=16)
    result = await write(store, data)
    await store.delete(BUCKET, chunk_key(result.chunks[1].digest or ""))

    with pytest.raises(ChunkMissingError, match="chunk 1"):
        await read(store, result)


# -- ranges --------------------------------------------------------------------------------

RANGE_DATA_SIZE = 3 * CHUNK_SIZE + 1000


@pytest.fixture
async def stored_range_stream(store: MemoryStore, sealer: Sealer) -> WriteResult:
    data = stream_bytes(RANGE_DATA_SIZE, seed=17, zero_chunks=[1])
    return await write(store, data, sealer)


@pytest.mark.parametrize(
    ("offset", "length"),
    [
        (0, None),
        (0, 0),
        (5, 10),
        (CHUNK_SIZE - 3, 6),
        (CHUNK_SIZE, CHUNK_SIZE),
        (CHUNK_SIZE + 7, 2 * CHUNK_SIZE),
        (RANGE_DATA_SIZE - 1, None),
        (RANGE_DATA_SIZE - 10, 1000),
        (RANGE_DATA_SIZE, None),
    ],
)
async def test_range_reads(
    store: MemoryStore,
    opener: Opener,
    stored_range_stream: WriteResult,
    offset: int,
    length: int | None,
) -> None:
    data = stream_bytes(RANGE_DATA_SIZE, seed=17, zero_chunks=[1])
    end = None if length is None else offset + length

    got = await read(store, stored_range_stream, opener, offset, length)

    assert got == data[offset:end]


async def test_range_read_fetches_only_the_chunks_it_needs(
    store: MemoryStore, opener: Opener, stored_range_stream: WriteResult
) -> None:
    gets = store.calls["get"]

    await read(store, stored_range_stream, opener, 2 * CHUNK_SIZE + 5, 10)

    assert store.calls["get"] == gets + 1


@pytest.mark.parametrize(
    ("offset", "length", "total", "message"),
    [
        (-1, None, CHUNK_SIZE, "offset"),
        (CHUNK_SIZE + 1, None, CHUNK_SIZE, "offset"),
        (0, -1, CHUNK_SIZE, "length"),
        (0, None, CHUNK_SIZE + 1, "manifest holds"),
    ],
)
def test_bad_ranges_are_refused_at_once(
    store: MemoryStore, offset: int, length: int | None, total: int, message: str
) -> None:
    chunks = [ChunkRef(0, None, CHUNK_SIZE)]

    with pytest.raises(ValueError, match=message):
        read_stream(
            chunks,
            store=store,
            bucket=BUCKET,
            opener=None,
            total_size=total,
            offset=offset,
            length=length,
        )


@pytest.mark.parametrize(
    "chunks",
    [
        [ChunkRef(1, None, CHUNK_SIZE)],
        [ChunkRef(0, None, 0)],
        [ChunkRef(0, None, CHUNK_SIZE + 1)],
    ],
)
def test_malformed_manifests_are_refused(store: MemoryStore, chunks: list[ChunkRef]) -> None:
    with pytest.raises(ValueError, match="chunk"):
        read_stream(
            chunks,
            store=store,
            bucket=BUCKET,
            opener=None,
            total_size=sum(ref.length for ref in chunks),
        )
