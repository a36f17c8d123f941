"""Copying a stream's chunks to another key, bucket or store."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing

from app.datastore._pipeline import ExistsCheck
from app.datastore.chunks import ChunkRef, WriteResult
from app.datastore.crypto import Opener, Sealer
from app.datastore.reader import DEFAULT_READ_AHEAD, read_stream
from app.datastore.writer import ChunkWriter
from app.storage.base import ObjectStore

__all__ = ["Progress", "reseal"]

#: Called with the plaintext bytes read so far, after each piece (job progress reports).
Progress = Callable[[int], Awaitable[None]]


async def _counted(source: AsyncGenerator[bytes, None], progress: Progress) -> AsyncGenerator[bytes, None]:
    done = 0
    async with aclosing(source) as pieces:
        async for piece in pieces:
            done += len(piece)
            await progress(done)
            yield piece


async def reseal(
    chunks: Sequence[ChunkRef],
    src_opener: Opener | None,
    dst_sealer: Sealer | None,
    *,
    src_store: ObjectStore,
    src_bucket: str,
    total_size: int,
    checksum: str | None = None,
    dst_store: ObjectStore | None = None,
    dst_bucket: str | None = None,
    exists: ExistsCheck | None = None,
    writer: ChunkWriter | None = None,
    read_ahead: int = DEFAULT_READ_AHEAD,
    progress: Progress | None = None,
) -> WriteResult:
    """Stream a stored stream through verification into a new one: re-encrypt it under
    another data key, decrypt it, encrypt it, or copy it to another region's store.

    The destination defaults to the source's store and bucket. Every chunk is verified
    before it is written again; zero chunks stay elided and plain chunks the destination
    already holds are not uploaded. Memory stays bounded by the read-ahead plus the
    writer's chunks in flight. The result's checksum is that of the plaintext, so it
    equals the source's: given the source's recorded `checksum`, the copy takes it instead
    of hashing the stream again (every chunk is verified against the source's manifest, so
    the bytes are those the checksum was computed over). `progress`, when given, is told
    how many plaintext bytes have been read after every piece.
    """
    source = read_stream(
        chunks,
        store=src_store,
        bucket=src_bucket,
        opener=src_opener,
        total_size=total_size,
        read_ahead=read_ahead,
    )
    if progress is not None:
        source = _counted(source, progress)
    async with aclosing(source) as plaintext:
        return await (writer or ChunkWriter()).write_stream(
            plaintext,
            store=dst_store or src_store,
            bucket=dst_bucket or src_bucket,
            seal=dst_sealer,
            exists=exists,
            trusted_checksum=checksum,
        )
