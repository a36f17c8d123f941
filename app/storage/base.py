"""The `ObjectStore` port.

Every adapter stores immutable objects in buckets and never blocks the event loop
(blocking file or network calls run in worker threads). Keys are `/`-separated
paths; bucket and key names are validated by `validate_bucket_name` /
`validate_key` before any adapter touches them.

Errors raised by adapters (all subclasses of `StorageError`):

    StorageError
    ├── InvalidNameError      bucket or key name refused (traversal, bad chars, length)
    ├── NoSuchBucketError
    ├── NoSuchObjectError
    ├── ObjectTooLargeError   a streamed put went over its `max_bytes`
    └── StorageUnavailableError  the store's endpoint could not be reached or broke off
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

#: Size of the pieces adapters read and yield when streaming an object: big enough to keep
#: per-piece overhead (thread hops, HTTP frames) small, small enough to bound memory.
STREAM_PIECE_BYTES = 1024 * 1024
#: Pieces the stores read a stream in (at most): the chunk store's chunk size, so that an
#: object read into the chunk store (an import) is cut into chunks without a copy, with a
#: quarter of the thread hand-overs (import RAW 64 MiB, three interleaved runs: 0.17–0.25× →
#: 0.25–0.35× SHA-256).
READ_PIECE_BYTES = 4 * 1024 * 1024


class StorageError(Exception):
    """Base of every object-storage failure."""


class InvalidNameError(StorageError):
    pass


class NoSuchBucketError(StorageError):
    pass


class NoSuchObjectError(StorageError):
    pass


class ObjectTooLargeError(StorageError):
    pass


class StorageUnavailableError(StorageError):
    """The store did not answer (refused, timed out, broke off): worth trying again later."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int
    last_modified: datetime
    #: `sha256:<hex>` when the adapter computed it while writing, else None.
    checksum: str | None = None
    #: What the store says identifies this version of the object (S3's ETag, the filesystem
    #: store's file identity): two versions with different bytes never share one, even when
    #: their size and `last_modified` are equal (S3 dates have one-second resolution, a file's
    #: mtime a clock tick). None when the store tells nothing.
    etag: str | None = None


HttpMethod = Literal["GET", "PUT"]


@runtime_checkable
class ObjectStore(Protocol):
    """A region's object storage."""

    async def create_bucket(self, bucket: str) -> bool:
        """Create the bucket; no error when it already exists. True when this call made it,
        False when it was there already — as far as the store tells: S3 in us-east-1 answers
        the creation of a bucket its credentials own already as a success, so two calls
        racing there may both be told True."""

    async def delete_empty_bucket(self, bucket: str) -> bool:
        """Delete the bucket only if it is empty, the store checking and deleting in one step
        (S3's DeleteBucket refuses a bucket with objects, a directory is removed only when
        empty): True when this call deleted it, False when it is missing or not empty (on
        the filesystem store, anything in its directory)."""

    async def bucket_exists(self, bucket: str) -> bool: ...

    async def put_stream(
        self, bucket: str, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int | None = None,
        sha256: str | None = None,
    ) -> ObjectInfo:
        """Store the stream atomically (readers never see a partial object); returns its
        size and sha256 checksum. Raises ObjectTooLargeError past `max_bytes`, keeping nothing.

        `sha256`, when given, is the hex SHA-256 the whole stream has, known to the caller (a
        manifest's checksum, its chunks verified as they are read): returned as the checksum
        instead of hashing every byte again. ValueError when it is not 64 lowercase hex digits."""

    async def put_bytes(
        self, bucket: str, key: str, data: bytes | bytearray, *, sha256: str | None = None, durable: bool = True
    ) -> ObjectInfo:
        """Store `data` atomically and durably; returns its size and sha256 checksum.

        `sha256`, when given, is the hex SHA-256 of `data` that the caller already computed
        (a content-addressed name, say): the adapter returns it as the checksum instead of
        hashing the bytes again. ValueError when it is not 64 lowercase hex digits.

        `durable=False` returns as soon as readers see the whole object; it survives a crash
        only once `sync(bucket, key)` has returned (a crash before may leave the key empty or
        torn, never a partial object visible before it). Adapters whose writes are always
        durable ignore it."""

    async def sync(self, bucket: str, key: str) -> None:
        """Make an object written with `durable=False` durable, its bytes and its name. A
        no-op on adapters whose writes are durable when `put_bytes` returns."""

    async def get_bytes(self, bucket: str, key: str) -> bytes: ...

    def open_stream(
        self, bucket: str, key: str, *, offset: int = 0, length: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """Yield the object's bytes (or the range) in pieces of at most READ_PIECE_BYTES."""

    async def stat(self, bucket: str, key: str) -> ObjectInfo | None: ...

    async def delete(self, bucket: str, key: str) -> None:
        """Delete the object; no error when it is missing."""

    async def list_objects(
        self, bucket: str, *, prefix: str = "", start_after: str = "", limit: int = 1000
    ) -> list[ObjectInfo]:
        """Objects whose key starts with `prefix`, in key order, after `start_after`."""

    def presigned_url(self, method: HttpMethod, bucket: str, key: str, expires_in: int) -> str:
        """A time-limited URL that lets its holder GET or PUT the object without credentials."""
