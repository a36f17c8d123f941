"""Ingest an uploaded image file into the chunk store, inspecting it before anything else.

The file's head (at most `DEFAULT_HEAD_LIMIT` bytes) goes to the format inspector first:
compressed archives, unsafe qcow2/VMDK files, mismatched declarations and absurd sizes are
refused before a single chunk is written. Formats that keep their header in a footer are
inspected while streaming, and refused at the end with their chunks released. Memory stays
bounded by the chunk writer's pipeline whatever the file size.

The head is read twice: once for the inspector, once as the start of the stored stream. The
object can be replaced in between (its owner holds an upload URL), so the stored stream's
head must hash to what was inspected, or nothing is kept: a verdict only ever covers the
bytes that are stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass

from app.datastore.store import ChunkStore, DataKey, PendingManifest
from app.datastore.tables import Manifest
from app.formats import DiskFormat, FormatError, Inspection, StreamInspector
from app.formats.inspect import DEFAULT_HEAD_LIMIT
from app.storage.base import NoSuchBucketError, NoSuchObjectError, ObjectStore

GiB = 1024**3
#: Largest importable file (DESIGN §1: file ≤ 128 GiB).
MAX_IMPORT_BYTES = 128 * GiB
#: Largest virtual disk an imported file may describe.
MAX_VIRTUAL_BYTES = 2048 * GiB

Progress = Callable[[float, str], Awaitable[None]]


class IngestError(Exception):
    """A refused file: `code` is a stable job error code, nothing was kept."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Ingested:
    #: Not yet recorded: the job inserts it in the transaction that activates the image.
    pending: PendingManifest
    inspection: Inspection

    @property
    def manifest(self) -> Manifest:
        return self.pending.manifest


def _refusal(exc: FormatError) -> IngestError:
    message = str(exc) + (f" Hint: {exc.hint}" if exc.hint else "")
    return IngestError(exc.code, message)


def _changed() -> IngestError:
    return IngestError("INVALID_IMAGE_FILE", "The file changed while it was being imported.")


def _gone(bucket: str, key: str) -> IngestError:
    return IngestError("OBJECT_NOT_FOUND",
                       f"Object {key!r} of bucket {bucket!r} was deleted while it was being imported.")


async def _inspect_head(source: ObjectStore, bucket: str, key: str, size: int,
                        declared: DiskFormat | None) -> tuple[StreamInspector, Inspection | None, int, bytes]:
    """The inspector after the file's head, its verdict (None: it needs the rest of the
    stream), how many bytes it read and their SHA-256."""
    inspector = StreamInspector(max_virtual_size=MAX_VIRTUAL_BYTES, total_size=size)
    digest = hashlib.sha256()
    read = 0
    # Closed here, also when the inspector has enough before the end: its file goes at once.
    try:
        async with aclosing(source.open_stream(bucket, key, length=min(size, DEFAULT_HEAD_LIMIT))) as head:
            async for piece in head:
                inspector.feed(piece)
                digest.update(piece)
                read += len(piece)
                if not inspector.needs_more:
                    break
    except (NoSuchObjectError, NoSuchBucketError) as exc:  # gone since its stat
        raise _gone(bucket, key) from exc
    if inspector.needs_more and read >= size:
        inspector.finish(size)
    try:
        verdict = None if inspector.needs_more else inspector.result(declared)
    except FormatError as exc:
        raise _refusal(exc) from exc
    return inspector, verdict, read, digest.digest()


async def ingest(
    source: ObjectStore, bucket: str, key: str, *, declared: DiskFormat | None, chunks: ChunkStore,
    region: str, data_key: DataKey | None, progress: Progress,
) -> Ingested:
    """Inspect and store the object `bucket/key`; raises IngestError keeping nothing. The
    manifest comes back unrecorded (`ChunkStore.add_pending`): until its owner records it,
    nothing refers to the chunks, and a refusal or a crash leaves them to garbage collection."""
    info = await source.stat(bucket, key)
    if info is None:
        raise IngestError("OBJECT_NOT_FOUND", f"No object {key!r} in bucket {bucket!r}.")
    size = info.size
    if size > MAX_IMPORT_BYTES:
        raise IngestError("FILE_TOO_LARGE", "Image files are at most 128 GiB.")
    if size == 0:
        raise IngestError("INVALID_IMAGE_FILE", "The file is empty.")
    await progress(0.0, "inspecting the file")
    inspector, verdict, inspected, head_digest = await _inspect_head(source, bucket, key, size, declared)

    async def body() -> AsyncGenerator[bytes, None]:
        done = 0
        reported = 0.0
        head = hashlib.sha256()
        try:
            async with aclosing(source.open_stream(bucket, key)) as stream:
                async for piece in stream:
                    if done < inspected:
                        head.update(piece[: inspected - done])
                        if done + len(piece) >= inspected and head.digest() != head_digest:
                            raise _changed()  # not the bytes the inspector saw: store none of them
                    if verdict is None and done + len(piece) > inspected:
                        inspector.feed(piece[max(0, inspected - done):])
                    done += len(piece)
                    if done / size - reported >= 0.01:
                        reported = done / size
                        await progress(0.05 + 0.9 * reported, "storing the image data")
                    yield piece
        except (NoSuchObjectError, NoSuchBucketError) as exc:  # gone since its head was read
            raise _gone(bucket, key) from exc

    await progress(0.05, "storing the image data")
    # Closed whatever happens to the write: the object's file or connection goes at once.
    async with aclosing(body()) as pieces:
        pending = await chunks.write_pending(region, pieces, key=data_key)
    if pending.manifest.size != size:
        raise _changed()
    if verdict is None:
        inspector.finish(size)
        try:
            verdict = inspector.result(declared)
        except FormatError as exc:
            raise _refusal(exc) from exc
    return Ingested(pending, verdict)
