"""Writing a stream into the chunk store."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import aclosing

from app.datastore._pipeline import (
    ExistsBatcher,
    ExistsCheck,
    SequentialHasher,
    cancel_all,
    raise_first,
    recut,
)
from app.datastore.chunks import CHUNK_SIZE, ChunkRef, WriteResult, chunk_key, prepare_chunk
from app.datastore.crypto import Sealer
from app.storage.base import ObjectStore

__all__ = ["DEFAULT_IN_FLIGHT", "DEFAULT_SYNC_CONCURRENCY", "ChunkWriter"]

_CHECKSUM = re.compile(r"sha256:[0-9a-f]{64}")

#: Chunks a write holds at once: its memory is about this many times CHUNK_SIZE (twice
#: that when sealing), whatever the stream's size.
DEFAULT_IN_FLIGHT = 4
#: Uploaded chunks being made durable at once (they hold no memory of the write's).
DEFAULT_SYNC_CONCURRENCY = 8


class ChunkWriter:
    """Cuts streams into chunks and stores the chunks no object holds yet.

    Per chunk, in worker threads: zero detection (zero chunks are not stored), sealing,
    SHA-256; in order, in a worker thread too: the whole stream's SHA-256. At most
    `max_in_flight` chunks are between the source and the store at once, and at most
    `upload_concurrency` uploads run at once.

    A plain chunk whose object already exists is not uploaded again; `exists`, when given,
    answers that for batches of digests (from the manifests' reference counts, say),
    otherwise the store is asked with `stat`. Callers make sure garbage collection cannot
    delete an object between that answer and the manifest that references it.

    `WriteResult.new_bytes` counts the bytes this write uploaded; two concurrent writes of
    the same new plain chunk may both upload it (the same bytes under the same name) and
    both count it.

    Uploads are not durable when they return (`put_bytes(durable=False)`): each chunk's
    slot is free once the store has its bytes, and its `sync` runs beside the next chunks'
    hashing (up to `DEFAULT_SYNC_CONCURRENCY` at once). `write_stream` returns only after
    every upload's sync has: a manifest committed after it references durable chunks only.
    """

    def __init__(
        self, *, max_in_flight: int = DEFAULT_IN_FLIGHT, upload_concurrency: int | None = None
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if upload_concurrency is not None and upload_concurrency < 1:
            raise ValueError("upload_concurrency must be at least 1")
        self.max_in_flight = max_in_flight
        self.upload_concurrency = upload_concurrency or max_in_flight

    async def write_stream(
        self,
        source: AsyncIterator[bytes],
        *,
        store: ObjectStore,
        bucket: str,
        seal: Sealer | None = None,
        exists: ExistsCheck | None = None,
        trusted_checksum: str | None = None,
    ) -> WriteResult:
        """Store the stream's chunks and return its manifest, size and checksum.

        `trusted_checksum` skips hashing the whole stream: the caller vouches that it is the
        stream's `sha256:<hex>`, as `reseal` does for a copy whose every chunk it verified
        against the source's manifest.

        On failure nothing is returned and the objects already uploaded stay (they are
        unreferenced, so garbage collection reclaims them).
        """
        if trusted_checksum is not None and not _CHECKSUM.fullmatch(trusted_checksum):
            raise ValueError(f"not a sha256:<hex> checksum: {trusted_checksum!r}")
        run = _WriteRun(self, store, bucket, seal, exists, trusted_checksum)
        try:
            async with asyncio.TaskGroup() as group:
                await run.feed(source, group)
        except BaseExceptionGroup as failures:
            run.failed = True
            raise_first(failures)
        except BaseException:
            run.failed = True
            raise
        finally:
            await run.aclose()
        return await run.result()


class _WriteRun:
    """The state of one `write_stream` call."""

    def __init__(
        self,
        writer: ChunkWriter,
        store: ObjectStore,
        bucket: str,
        sealer: Sealer | None,
        exists: ExistsCheck | None,
        trusted_checksum: str | None,
    ) -> None:
        self.store = store
        self.bucket = bucket
        self.sealer = sealer
        self.batcher = None if exists is None else ExistsBatcher(exists)
        self.slots = asyncio.Semaphore(writer.max_in_flight)
        self.uploads = asyncio.Semaphore(writer.upload_concurrency)
        self.sync_slots = asyncio.Semaphore(DEFAULT_SYNC_CONCURRENCY)
        self.syncs: list[asyncio.Task[None]] = []
        self.hasher = None if trusted_checksum is not None else SequentialHasher()
        self.trusted_checksum = trusted_checksum
        self.failed = False
        self.refs: dict[int, ChunkRef] = {}
        self.claimed: set[str] = set()
        self.size = 0
        self.count = 0
        self.new_bytes = 0

    async def feed(self, source: AsyncIterator[bytes], group: asyncio.TaskGroup) -> None:
        async with aclosing(recut(source, CHUNK_SIZE)) as chunks:
            while True:
                # A slot first, then the chunk: the source is not read ahead of the slots.
                await self.slots.acquire()
                chunk = await anext(chunks, None)
                if chunk is None:
                    self.slots.release()
                    return
                hashed = None if self.hasher is None else self.hasher.feed(chunk)
                group.create_task(self.process(self.count, chunk, hashed))
                self.count += 1
                self.size += len(chunk)

    async def process(self, index: int, chunk: bytes, hashed: asyncio.Future[None] | None) -> None:
        try:
            prepared = await asyncio.to_thread(prepare_chunk, index, chunk, self.sealer)
            self.refs[index] = ChunkRef(index=index, digest=prepared.digest, length=len(chunk))
            if prepared.digest is not None and prepared.stored is not None:
                await self.store_chunk(prepared.digest, prepared.stored)
            del prepared
            if hashed is not None:
                await hashed
        finally:
            self.slots.release()

    async def store_chunk(self, digest: str, stored: bytes | bytearray) -> None:
        key = chunk_key(digest)
        if self.sealer is None:
            # Sealed chunks have unique names (random nonces); only plain ones can exist.
            if digest in self.claimed:
                return
            self.claimed.add(digest)
            if await self.object_exists(digest, key):
                return
        async with self.uploads:
            # The name is the digest of the stored bytes: the store need not hash them again.
            await self.store.put_bytes(self.bucket, key, stored, sha256=digest, durable=False)
        self.new_bytes += len(stored)
        # Runs beside the next chunks; `result` waits for every sync, `aclose` cancels them.
        self.syncs.append(asyncio.create_task(self.sync(key)))

    async def sync(self, key: str) -> None:
        async with self.sync_slots:
            await self.store.sync(self.bucket, key)

    async def object_exists(self, digest: str, key: str) -> bool:
        if self.batcher is not None:
            return await self.batcher.exists(digest)
        return await self.store.stat(self.bucket, key) is not None

    async def result(self) -> WriteResult:
        try:
            await asyncio.gather(*self.syncs)
        except BaseException:
            await cancel_all(self.syncs)
            raise
        if self.hasher is None:
            assert self.trusted_checksum is not None
            checksum = self.trusted_checksum
        else:
            checksum = "sha256:" + await self.hasher.hexdigest()
        return WriteResult(
            chunks=[self.refs[index] for index in range(self.count)],
            size=self.size,
            checksum=checksum,
            new_bytes=self.new_bytes,
        )

    async def aclose(self) -> None:
        """Stop what a failed write left running (after a success there is nothing left)."""
        if self.failed:
            await cancel_all(self.syncs)
        if self.hasher is not None:
            await self.hasher.aclose()
        if self.batcher is not None:
            await self.batcher.aclose()
