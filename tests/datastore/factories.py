"""Streams for the chunk-store tests: built from a seed, so a test can rebuild the bytes it
wrote instead of holding them."""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from itertools import cycle

from app.datastore import CHUNK_SIZE

MiB = 1024 * 1024


def stream_bytes(size: int, *, seed: int = 0, zero_chunks: Iterable[int] = ()) -> bytes:
    """`size` pseudo-random bytes whose chunks at the given indexes are all zero."""
    data = bytearray(random.Random(seed).randbytes(size))
    for index in zero_chunks:
        start = index * CHUNK_SIZE
        stop = min(start + CHUNK_SIZE, size)
        data[start:stop] = bytes(stop - start)
    return bytes(data)


async def pieces(data: bytes, sizes: Sequence[int] = (CHUNK_SIZE,)) -> AsyncIterator[bytes]:
    """Yield `data` in pieces whose sizes cycle through `sizes`."""
    position = 0
    for size in cycle(sizes):
        if position >= len(data):
            return
        yield data[position : position + size]
        position += size


def generated_chunks(total: int, *, seed: int = 0, piece: int = MiB) -> Iterator[bytes]:
    """A long stream, never materialized: every piece is a distinct slice of a 1 MiB pool
    prefixed with its number, so that no two chunks are equal."""
    rng = random.Random(seed)
    pool = rng.randbytes(MiB + piece)
    produced = 0
    number = 0
    while produced < total:
        size = min(piece, total - produced)
        start = rng.randrange(MiB)
        yield (number.to_bytes(8, "big") + pool[start : start + size])[:size]
        produced += size
        number += 1


async def agen(pieces: Iterable[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([piece async for piece in stream])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
