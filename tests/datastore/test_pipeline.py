from __future__ import annotations

import asyncio
import hashlib
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.datastore._pipeline import ExistsBatcher, SequentialHasher, recut
from tests.datastore.factories import agen


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(st.binary(max_size=40), max_size=30),
    size=st.integers(min_value=1, max_value=16),
)
def test_recut_gives_exact_sizes_and_keeps_the_bytes(pieces: list[bytes], size: int) -> None:
    async def run() -> list[bytes]:
        return [chunk async for chunk in recut(agen(pieces), size)]

    chunks = asyncio.run(run())

    assert b"".join(chunks) == b"".join(pieces)
    assert all(len(chunk) == size for chunk in chunks[:-1])
    assert all(0 < len(chunk) <= size for chunk in chunks)
    assert all(type(chunk) is bytes for chunk in chunks)


async def test_recut_passes_aligned_pieces_without_copying() -> None:
    pieces = [b"a" * 8, b"b" * 8]

    chunks = [chunk async for chunk in recut(agen(pieces), 8)]

    assert chunks[0] is pieces[0]
    assert chunks[1] is pieces[1]


async def test_sequential_hasher_hashes_in_feeding_order() -> None:
    hasher = SequentialHasher()
    parts = [bytes([n]) * (n * 1000 + 1) for n in range(50)]

    for part in parts:
        hasher.feed(part)

    assert await hasher.hexdigest() == hashlib.sha256(b"".join(parts)).hexdigest()


def _hashing_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ims-sha256"]


async def test_sequential_hasher_thread_ends_with_the_digest() -> None:
    hasher = SequentialHasher()
    done = hasher.feed(b"abc")
    [thread] = _hashing_threads()

    assert await hasher.hexdigest() == hashlib.sha256(b"abc").hexdigest()
    assert done.done() and done.exception() is None
    await asyncio.to_thread(thread.join, 10)
    assert not thread.is_alive()


async def test_sequential_hasher_close_drops_queued_pieces() -> None:
    hasher = SequentialHasher()
    piece = bytes(4 * 1024 * 1024)
    futures = [hasher.feed(piece) for _ in range(100)]  # 400 MiB: far from hashed at once
    [thread] = _hashing_threads()

    await hasher.aclose()
    await asyncio.to_thread(thread.join, 10)
    await asyncio.sleep(0)  # the thread's last settlements run on the loop

    assert not thread.is_alive()
    assert all(f.done() for f in futures)
    assert futures[-1].cancelled()  # the last piece was never hashed
    with pytest.raises(RuntimeError, match="closed"):
        hasher.feed(b"late")


async def test_exists_batcher_coalesces_concurrent_questions() -> None:
    batches: list[list[str]] = []

    async def check(digests: list[str]) -> set[str]:
        batches.append(digests)
        await asyncio.sleep(0.01)
        return {digest for digest in digests if digest.startswith("x")}

    batcher = ExistsBatcher(check)
    answers = await asyncio.gather(*(batcher.exists(d) for d in ["x1", "y1", "x2", "x1"]))
    later = await asyncio.gather(*(batcher.exists(d) for d in ["y2", "x3"]))

    assert answers == [True, False, True, True]
    assert later == [False, True]
    assert batches == [["x1", "y1", "x2"], ["y2", "x3"]]


async def test_exists_batcher_hands_failures_to_every_waiter() -> None:
    async def check(digests: list[str]) -> set[str]:
        raise OSError("database down")

    batcher = ExistsBatcher(check)
    results = await asyncio.gather(batcher.exists("a"), batcher.exists("b"), return_exceptions=True)

    assert [str(result) for result in results] == ["database down", "database down"]
    with pytest.raises(OSError, match="database down"):
        await batcher.exists("c")


async def test_exists_batcher_close_cancels_waiters() -> None:
    async def check(digests: list[str]) -> set[str]:
        await asyncio.sleep(10)
        return set()

    batcher = ExistsBatcher(check)
    waiter = asyncio.ensure_future(batcher.exists("a"))
    await asyncio.sleep(0)

    await batcher.aclose()

    with pytest.raises(asyncio.CancelledError):
        await waiter
