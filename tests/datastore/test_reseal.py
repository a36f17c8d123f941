from __future__ import annotations

import os

import pytest

from app.datastore import (
    CHUNK_SIZE,
    ChunkIntegrityError,
    ChunkWriter,
    Opener,
    Sealer,
    WriteResult,
    chunk_key,
    read_stream,
    reseal,
)
from app.datastore.crypto import SEAL_OVERHEAD
from tests.datastore.conftest import BUCKET
from tests.datastore.factories import collect, pieces, sha256, stream_bytes
from tests.datastore.memstore import MemoryStore

DATA = stream_bytes(4 * CHUNK_SIZE + 77, seed=21, zero_chunks=[1])
STORED_CHUNKS = 4  # one of the five is all zero


async def write(store: MemoryStore, sealer: Sealer | None = None) -> WriteResult:
    return await ChunkWriter().write_stream(pieces(DATA), store=store, bucket=BUCKET, seal=sealer)


async def read(
    store: MemoryStore, result: WriteResult, opener: Opener | None, bucket: str = BUCKET
) -> bytes:
    return await collect(
        read_stream(
            result.chunks, store=store, bucket=bucket, opener=opener, total_size=result.size
        )
    )


def other_key(key_id: str) -> tuple[Sealer, Opener]:
    key = os.urandom(32)
    return Sealer(key, key_id), Opener(key, key_id)


async def test_reseal_under_another_key(store: MemoryStore, sealer: Sealer, opener: Opener) -> None:
    source = await write(store, sealer)
    new_sealer, new_opener = other_key("key-2")

    copy = await reseal(
        source.chunks, opener, new_sealer, src_store=store, src_bucket=BUCKET, total_size=len(DATA)
    )

    assert copy.checksum == source.checksum == sha256(DATA)
    assert [ref.digest is None for ref in copy.chunks] == [
        ref.digest is None for ref in source.chunks
    ]
    assert {ref.digest for ref in copy.chunks if ref.digest} & {
        ref.digest for ref in source.chunks
    } == set()
    assert copy.new_bytes == len(DATA) - CHUNK_SIZE + STORED_CHUNKS * SEAL_OVERHEAD
    assert await read(store, copy, new_opener) == DATA
    with pytest.raises(ChunkIntegrityError):
        await read(store, copy, opener)


async def test_encrypt_a_plain_stream(store: MemoryStore, sealer: Sealer, opener: Opener) -> None:
    source = await write(store)

    copy = await reseal(
        source.chunks, None, sealer, src_store=store, src_bucket=BUCKET, total_size=len(DATA)
    )

    assert await read(store, copy, opener) == DATA
    assert copy.checksum == source.checksum


async def test_decrypting_to_plain_reuses_existing_plain_chunks(
    store: MemoryStore, sealer: Sealer, opener: Opener
) -> None:
    plain = await write(store)
    sealed = await write(store, sealer)

    copy = await reseal(
        sealed.chunks, opener, None, src_store=store, src_bucket=BUCKET, total_size=len(DATA)
    )

    assert copy.chunks == plain.chunks
    assert copy.new_bytes == 0


async def test_copy_to_another_store(store: MemoryStore) -> None:
    source = await write(store)
    remote = MemoryStore()
    await remote.create_bucket("region-2-service")

    copy = await reseal(
        source.chunks,
        None,
        None,
        src_store=store,
        src_bucket=BUCKET,
        total_size=len(DATA),
        dst_store=remote,
        dst_bucket="region-2-service",
    )

    assert copy.chunks == source.chunks
    assert copy.new_bytes == len(DATA) - CHUNK_SIZE
    assert remote.keys("region-2-service") == store.keys(BUCKET)
    assert await read(remote, copy, None, "region-2-service") == DATA


async def test_a_tampered_source_chunk_fails_the_copy(
    store: MemoryStore, sealer: Sealer, opener: Opener
) -> None:
    source = await write(store, sealer)
    store.flip_byte(BUCKET, chunk_key(source.chunks[2].digest or ""), 40)
    new_sealer, _ = other_key("key-2")

    with pytest.raises(ChunkIntegrityError, match="chunk 2"):
        await reseal(
            source.chunks,
            opener,
            new_sealer,
            src_store=store,
            src_bucket=BUCKET,
            total_size=len(DATA),
        )


async def test_reseal_takes_the_source_checksum_instead_of_hashing(
    store: MemoryStore, sealer: Sealer, opener: Opener
) -> None:
    source = await write(store, sealer)
    new_sealer, new_opener = other_key("key-2")

    copy = await reseal(
        source.chunks,
        opener,
        new_sealer,
        src_store=store,
        src_bucket=BUCKET,
        total_size=len(DATA),
        checksum=source.checksum,
    )

    assert copy.checksum == source.checksum
    assert await read(store, copy, new_opener) == DATA


async def test_trusted_checksum_is_returned_as_given(store: MemoryStore) -> None:
    vouched = "sha256:" + "ab" * 32

    result = await ChunkWriter().write_stream(
        pieces(DATA), store=store, bucket=BUCKET, trusted_checksum=vouched
    )

    assert result.checksum == vouched
    assert result.size == len(DATA)


@pytest.mark.parametrize("checksum", ["", "ab" * 32, "sha256:" + "AB" * 32, "md5:" + "ab" * 16])
async def test_trusted_checksum_must_be_a_sha256_checksum(
    store: MemoryStore, checksum: str
) -> None:
    with pytest.raises(ValueError, match="checksum"):
        await ChunkWriter().write_stream(
            pieces(DATA), store=store, bucket=BUCKET, trusted_checksum=checksum
        )
