"""A long stream goes through the chunk store in bounded memory."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.datastore import ChunkWriter, Opener, Sealer, read_stream
from tests.datastore.factories import MiB, agen, generated_chunks
from tests.datastore.fsstore import FileStore

STREAM = 256 * MiB
PEAK_LIMIT = 64 * MiB


@pytest.fixture
def traced() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
async def test_256_mib_stream_in_bounded_memory(tmp_path: Path, traced: None, sealed: bool) -> None:
    store = FileStore(tmp_path)
    await store.create_bucket("b")
    key = bytes(range(32))
    expected = hashlib.sha256()
    for piece in generated_chunks(STREAM, seed=3, piece=3 * MiB + 1):
        expected.update(piece)
    tracemalloc.reset_peak()

    result = await ChunkWriter().write_stream(
        agen(generated_chunks(STREAM, seed=3, piece=3 * MiB + 1)),
        store=store,
        bucket="b",
        seal=Sealer(key, "k") if sealed else None,
    )
    write_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    back = hashlib.sha256()
    size = 0
    async for piece in read_stream(
        result.chunks,
        store=store,
        bucket="b",
        opener=Opener(key, "k") if sealed else None,
        total_size=result.size,
    ):
        back.update(piece)
        size += len(piece)
    read_peak = tracemalloc.get_traced_memory()[1]

    assert result.size == size == STREAM
    assert result.checksum == "sha256:" + expected.hexdigest() == "sha256:" + back.hexdigest()
    assert write_peak < PEAK_LIMIT, f"write peak {write_peak / MiB:.1f} MiB"
    assert read_peak < PEAK_LIMIT, f"read peak {read_peak / MiB:.1f} MiB"
