"""Reading a stream (or a byte range of it) back from the chunk store."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Iterator, Sequence
from typing import NamedTuple

from app.datastore._pipeline import cancel_all
from app.datastore.chunks import CHUNK_SIZE, ChunkRef, chunk_key, open_stored, zeros
from app.datastore.crypto import Opener
from app.datastore.errors import ChunkMissingError
from app.storage.base import NoSuchObjectError, ObjectStore

__all__ = ["DEFAULT_READ_AHEAD", "read_stream"]

#: Chunks fetched and verified ahead of the consumer.
DEFAULT_READ_AHEAD = 4


class _Slice(NamedTuple):
    ref: ChunkRef
    start: int  # within the chunk's plaintext
    stop: int


def read_stream(
    chunks: Sequence[ChunkRef],
    *,
    store: ObjectStore,
    bucket: str,
    opener: Opener | None,
    total_size: int,
    offset: int = 0,
    length: int | None = None,
    read_ahead: int = DEFAULT_READ_AHEAD,
) -> AsyncGenerator[bytes, None]:
    """Yield the plaintext of the stream `chunks` describes, or of its range
    `[offset, offset + length)` (cut at the end of the stream), in order.

    Up to `read_ahead` chunks are fetched and verified concurrently. A chunk is verified
    whole (digest; for sealed chunks GCM authentication at its position; length) before
    any of its bytes is yielded; a chunk that fails raises ChunkIntegrityError (or
    ChunkMissingError) when the consumer reaches it. Zero chunks are not fetched.

    The manifest and the range are checked at once: ValueError when the refs are not
    positions 0..n-1 of plausible lengths summing to `total_size`, or the range is outside.
    """
    _check_manifest(chunks, total_size)
    if offset < 0 or offset > total_size:
        raise ValueError(f"offset {offset} outside a stream of {total_size} bytes")
    if length is not None and length < 0:
        raise ValueError(f"negative length: {length}")
    if read_ahead < 1:
        raise ValueError("read_ahead must be at least 1")
    stop = total_size if length is None else min(total_size, offset + length)
    return _read(_slices(chunks, offset, stop), store, bucket, opener, read_ahead)


def _check_manifest(chunks: Sequence[ChunkRef], total_size: int) -> None:
    total = 0
    for position, ref in enumerate(chunks):
        if ref.index != position:
            raise ValueError(f"manifest position {position} holds chunk index {ref.index}")
        if not 0 < ref.length <= CHUNK_SIZE:
            raise ValueError(f"chunk {ref.index} has an impossible length {ref.length}")
        total += ref.length
    if total != total_size:
        raise ValueError(f"manifest holds {total} bytes, the stream {total_size}")


def _slices(chunks: Sequence[ChunkRef], start: int, stop: int) -> Iterator[_Slice]:
    position = 0
    for ref in chunks:
        end = position + ref.length
        if end > start and position < stop:
            yield _Slice(ref, max(start - position, 0), min(stop, end) - position)
        if end >= stop:
            return
        position = end


async def _read(
    slices: Iterator[_Slice],
    store: ObjectStore,
    bucket: str,
    opener: Opener | None,
    read_ahead: int,
) -> AsyncGenerator[bytes, None]:
    window: deque[tuple[_Slice, asyncio.Task[bytes] | None]] = deque()

    def fill() -> None:
        while len(window) < read_ahead:
            part = next(slices, None)
            if part is None:
                return
            fetch = None
            if part.ref.digest is not None:
                fetch = asyncio.create_task(_fetch(part.ref, store, bucket, opener))
            window.append((part, fetch))

    try:
        fill()
        while window:
            part, fetch = window.popleft()
            if fetch is None:
                fill()
                yield zeros(part.stop - part.start)
                continue
            plaintext = await fetch
            fill()
            if part.start == 0 and part.stop == len(plaintext):
                yield plaintext
            else:
                yield plaintext[part.start : part.stop]
            del plaintext
    finally:
        await cancel_all([fetch for _, fetch in window if fetch is not None])


async def _fetch(ref: ChunkRef, store: ObjectStore, bucket: str, opener: Opener | None) -> bytes:
    assert ref.digest is not None
    try:
        stored = await store.get_bytes(bucket, chunk_key(ref.digest))
    except NoSuchObjectError:
        raise ChunkMissingError(f"chunk {ref.index} ({ref.digest}) is missing") from None
    return await asyncio.to_thread(open_stored, ref, stored, opener)
