"""`ObjectStore` on S3 or MinIO through the blocking `minio` client.

Every client call runs in a worker thread. Uploads of unknown length stream through a
pipe that the worker thread pulls from the caller's async iterator, so memory stays
bounded by one multipart part whatever the object's size.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import io
import itertools
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError
from urllib3.exceptions import HTTPError as Urllib3Error

from app.storage.base import (
    READ_PIECE_BYTES,
    STREAM_PIECE_BYTES,
    HttpMethod,
    InvalidNameError,
    NoSuchBucketError,
    NoSuchObjectError,
    ObjectInfo,
    ObjectTooLargeError,
    StorageError,
    StorageUnavailableError,
)
from app.storage.names import key_head, validate_bucket_name, validate_key, validate_sha256
from app.storage.signing import MAX_EXPIRES_IN

__all__ = ["PART_BYTES", "S3ObjectStore"]

#: Multipart part size. An upload holds a few copies of one part at most (minio slices it).
PART_BYTES = 16 * 1024 * 1024
#: S3's and MinIO's default region; assumed when none is given (see S3ObjectStore).
DEFAULT_REGION = "us-east-1"
#: How long a connection may take, and a response may stay silent, before a call is tried
#: again (at most RETRIES more times) and then fails StorageUnavailableError. minio's defaults
#: (300 s each, 5 retries; urllib3 retries reads of GET/PUT/HEAD/DELETE too) held a call to a
#: silent endpoint for half an hour, its job's lease renewed all along.
CONNECT_TIMEOUT_SECONDS = 10.0
READ_TIMEOUT_SECONDS = 60.0
RETRIES = 3


class S3ObjectStore:
    """Objects in S3 or MinIO; presigned URLs are the server's own (SigV4).

    `region=None` means us-east-1 (the MinIO default). Set it for AWS buckets elsewhere:
    discovering it would take a blocking request inside the synchronous `presigned_url`.
    Call `close()` on shutdown to drop pooled connections.
    """

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        secure: bool,
        region: str | None = None,
        *,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        read_timeout: float = READ_TIMEOUT_SECONDS,
        retries: int = RETRIES,
    ) -> None:
        # Our own pool (minio's default settings, bounded timeouts) so that close() can release it.
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            maxsize=10,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
            retries=urllib3.Retry(
                total=retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
            ),
        )
        self._client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region or DEFAULT_REGION,
            http_client=self._http,
        )

    async def close(self) -> None:
        await asyncio.to_thread(self._http.clear)

    # -- buckets ------------------------------------------------------------------------

    async def create_bucket(self, bucket: str) -> bool:
        validate_bucket_name(bucket)
        return await asyncio.to_thread(self._create_bucket, bucket)

    async def delete_empty_bucket(self, bucket: str) -> bool:
        validate_bucket_name(bucket)
        return await asyncio.to_thread(self._delete_empty_bucket, bucket)

    async def bucket_exists(self, bucket: str) -> bool:
        validate_bucket_name(bucket)
        return await asyncio.to_thread(self._bucket_exists, bucket)

    # -- writes -------------------------------------------------------------------------

    async def put_stream(
        self, bucket: str, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int | None = None,
        sha256: str | None = None,
    ) -> ObjectInfo:
        validate_bucket_name(bucket)
        validate_key(key)
        validate_sha256(sha256)
        pipe = _ChunkPipe(chunks, asyncio.get_running_loop(), max_bytes, hashed=sha256 is None)
        try:
            etag = await asyncio.to_thread(self._put_pipe, bucket, key, pipe)
        except BaseException:
            pipe.abort()  # unblocks the worker thread so that minio aborts the upload
            raise
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=pipe.size,
            last_modified=datetime.now(UTC),
            checksum=f"sha256:{sha256 or pipe.hexdigest()}",
            etag=etag,
        )

    async def put_bytes(
        self, bucket: str, key: str, data: bytes | bytearray, *, sha256: str | None = None, durable: bool = True
    ) -> ObjectInfo:
        validate_bucket_name(bucket)
        validate_key(key)
        validate_sha256(sha256)
        digest, etag = await asyncio.to_thread(self._put_bytes, bucket, key, data, sha256)
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=len(data),
            last_modified=datetime.now(UTC),
            checksum=f"sha256:{digest}",
            etag=etag,
        )

    async def sync(self, bucket: str, key: str) -> None:
        """A no-op: an S3 PUT is durable when it returns."""
        validate_bucket_name(bucket)
        validate_key(key)

    async def delete(self, bucket: str, key: str) -> None:
        validate_bucket_name(bucket)
        validate_key(key)
        await asyncio.to_thread(self._delete, bucket, key)

    # -- reads --------------------------------------------------------------------------

    async def get_bytes(self, bucket: str, key: str) -> bytes:
        pieces = [piece async for piece in self.open_stream(bucket, key)]
        return b"".join(pieces)

    async def open_stream(
        self, bucket: str, key: str, *, offset: int = 0, length: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        validate_bucket_name(bucket)
        validate_key(key)
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        if length == 0:
            # minio reads length=0 as "to the end"; still report a missing object.
            if await self.stat(bucket, key) is None:
                raise NoSuchObjectError(f"no object {key!r} in bucket {bucket!r}")
            return
        response = await asyncio.to_thread(self._get_object, bucket, key, offset, length)
        if response is None:
            return  # the range starts past the end
        try:
            while piece := await asyncio.to_thread(_read, response, bucket, key):
                yield piece
        finally:
            await asyncio.to_thread(_release, response)

    async def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        validate_bucket_name(bucket)
        validate_key(key)
        return await asyncio.to_thread(self._stat, bucket, key)

    async def list_objects(
        self, bucket: str, *, prefix: str = "", start_after: str = "", limit: int = 1000
    ) -> list[ObjectInfo]:
        validate_bucket_name(bucket)
        if limit < 0:
            raise ValueError("limit must not be negative")
        if limit == 0:
            return []
        return await asyncio.to_thread(self._list, bucket, prefix, start_after, limit)

    def presigned_url(self, method: HttpMethod, bucket: str, key: str, expires_in: int) -> str:
        validate_bucket_name(bucket)
        validate_key(key)
        if not 0 < expires_in <= MAX_EXPIRES_IN:
            raise ValueError(f"expires_in must be between 1 and {MAX_EXPIRES_IN} seconds")
        expires = timedelta(seconds=expires_in)
        # No network call: the region is always known (see the class docstring).
        if method == "GET":
            return self._client.presigned_get_object(bucket, key, expires=expires)
        if method == "PUT":
            return self._client.presigned_put_object(bucket, key, expires=expires)
        raise ValueError(f"unsupported method {method!r}; expected 'GET' or 'PUT'")

    # -- blocking helpers (worker threads only) -----------------------------------------

    def _create_bucket(self, bucket: str) -> bool:
        with _s3_errors(bucket):
            if self._client.bucket_exists(bucket):
                return False
            try:
                self._client.make_bucket(bucket)
            except S3Error as exc:
                if exc.code != "BucketAlreadyOwnedByYou":  # lost a race with ourselves
                    raise
                return False
        return True

    def _delete_empty_bucket(self, bucket: str) -> bool:
        with _s3_errors(bucket):
            try:
                self._client.remove_bucket(bucket)
            except S3Error as exc:
                if exc.code in ("BucketNotEmpty", "NoSuchBucket"):
                    return False
                raise
        return True

    def _bucket_exists(self, bucket: str) -> bool:
        with _s3_errors(bucket):
            return self._client.bucket_exists(bucket)

    def _put_pipe(self, bucket: str, key: str, pipe: _ChunkPipe) -> str | None:
        # The BufferedReader hands minio whole parts from the pipe; one upload at a time
        # keeps a single part in memory (parallel uploads would hold several).
        reader = io.BufferedReader(pipe, buffer_size=STREAM_PIECE_BYTES)
        with _s3_errors(bucket, key):
            result = self._client.put_object(
                bucket, key, reader, length=-1, part_size=PART_BYTES, num_parallel_uploads=1
            )
        return result.etag

    def _put_bytes(
        self, bucket: str, key: str, data: bytes | bytearray, digest: str | None
    ) -> tuple[str, str | None]:
        """The object's sha256 (hex) and its ETag."""
        if digest is None:
            digest = hashlib.sha256(data).hexdigest()
        with _s3_errors(bucket, key):
            result = self._client.put_object(
                bucket,
                key,
                io.BytesIO(data),
                length=len(data),
                part_size=PART_BYTES,
                num_parallel_uploads=1,
            )
        return digest, result.etag

    def _delete(self, bucket: str, key: str) -> None:
        with _s3_errors(bucket, key):
            self._client.remove_object(bucket, key)

    def _get_object(
        self, bucket: str, key: str, offset: int, length: int | None
    ) -> urllib3.BaseHTTPResponse | None:
        with _s3_errors(bucket, key):
            try:
                return self._client.get_object(bucket, key, offset=offset, length=length or 0)
            except S3Error as exc:
                if exc.code == "InvalidRange":
                    return None
                raise

    def _stat(self, bucket: str, key: str) -> ObjectInfo | None:
        with _s3_errors(bucket, key):
            try:
                found = self._client.stat_object(bucket, key)
            except S3Error as exc:
                # A HEAD has no error body: minio reports a missing bucket as NoSuchKey too.
                if exc.code != "NoSuchKey":
                    raise
                if not self._client.bucket_exists(bucket):
                    raise NoSuchBucketError(f"no bucket {bucket!r}") from exc
                return None
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=found.size or 0,
            last_modified=found.last_modified or datetime.now(UTC),
            etag=found.etag or None,
        )

    def _list(self, bucket: str, prefix: str, start_after: str, limit: int) -> list[ObjectInfo]:
        # The server is sent what of `start_after` a key can hold (a query string of any
        # length, or a lone surrogate, it cannot take); the keys between that and the whole
        # (ones it begins) are left out here.
        after = key_head(start_after)
        with _s3_errors(bucket):
            if key_head(prefix) != prefix:  # no key starts with it: only the bucket is asked for
                if not self._client.bucket_exists(bucket):
                    raise NoSuchBucketError(f"no bucket {bucket!r}")
                return []
            listing: Iterator[Any] = self._client.list_objects(
                bucket, prefix=prefix or None, recursive=True, start_after=after or None
            )
            # Objects put from outside under a key no call of the port takes (a console's
            # folder marker `dir/`, `a//b`, a control character) are left out, as the
            # filesystem store leaves out files of such names: every key listed can be read,
            # signed and deleted.
            listing = (item for item in listing if item.object_name > start_after and _addressable(item.object_name))
            # The listing pages lazily; stop requesting pages once `limit` is reached.
            return [
                ObjectInfo(
                    bucket=bucket,
                    key=item.object_name,
                    size=item.size or 0,
                    last_modified=item.last_modified or datetime.now(UTC),
                    etag=item.etag or None,
                )
                for item in itertools.islice(listing, limit)
            ]


class _ChunkPipe(io.RawIOBase):
    """A readable raw stream over an async iterator, read from a worker thread.

    Each read that finds the pipe empty asks the event loop for the next chunk and waits
    for it, so nothing is read ahead; the sha256, the size and the `max_bytes` limit are
    applied as the bytes pass.
    """

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        loop: asyncio.AbstractEventLoop,
        max_bytes: int | None,
        *,
        hashed: bool = True,
    ) -> None:
        super().__init__()
        self._chunks = chunks
        self._loop = loop
        self._max_bytes = max_bytes
        self._hasher = hashlib.sha256() if hashed else None
        self._pending = memoryview(b"")
        self._eof = False
        self._aborted = threading.Event()
        self._waiting: concurrent.futures.Future[bytes | None] | None = None
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            if self._eof:
                return 0
            chunk = self._next_chunk()
            if chunk is None:
                self._eof = True
                return 0
            self._pending = memoryview(chunk)
        target = memoryview(buffer).cast("B")
        count = min(len(target), len(self._pending))
        target[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def hexdigest(self) -> str:
        assert self._hasher is not None
        return self._hasher.hexdigest()

    def abort(self) -> None:
        self._aborted.set()
        waiting = self._waiting
        if waiting is not None:
            waiting.cancel()

    def _next_chunk(self) -> bytes | None:
        if self._aborted.is_set():
            raise StorageError("upload abandoned")
        self._waiting = asyncio.run_coroutine_threadsafe(_next_or_none(self._chunks), self._loop)
        if self._aborted.is_set():  # abort() may have run before the future was visible
            self._waiting.cancel()
        chunk = self._waiting.result()
        self._waiting = None
        if chunk is not None:
            self.size += len(chunk)
            if self._max_bytes is not None and self.size > self._max_bytes:
                raise ObjectTooLargeError(f"object is over its limit of {self._max_bytes} bytes")
            if self._hasher is not None:
                self._hasher.update(chunk)
        return chunk


async def _next_or_none(chunks: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await anext(chunks)
    except StopAsyncIteration:
        return None


@contextmanager
def _s3_errors(bucket: str, key: str | None = None) -> Iterator[None]:
    """Translate client errors into the port's error tree."""
    try:
        yield
    except S3Error as exc:
        if exc.code == "NoSuchBucket":
            raise NoSuchBucketError(f"no bucket {bucket!r}") from exc
        if exc.code == "NoSuchKey":
            raise NoSuchObjectError(f"no object {key!r} in bucket {bucket!r}") from exc
        raise StorageError(f"S3 request failed: {exc.code}: {exc.message}") from exc
    except (InvalidResponseError, ServerError) as exc:
        # An error answer without S3's XML body: a gateway's own page (nginx's 413 for a body
        # over its limit, say). A gateway's 502-504 are retried, then Urllib3Error below.
        status = exc.status_code if isinstance(exc, ServerError) else getattr(exc, "_code", "?")
        raise StorageError(f"S3 request failed: HTTP {status}, not an S3 answer") from exc
    except Urllib3Error as exc:
        # urllib3's own message names the endpoint's host and port: it stays in the chain
        # (logged), out of messages that reach the account (a job's error).
        reason = getattr(exc, "reason", None) or exc
        raise StorageUnavailableError(f"S3 endpoint unreachable or failing ({type(reason).__name__})") from exc


def _addressable(key: str) -> bool:
    try:
        validate_key(key)
    except InvalidNameError:
        return False
    return True


def _read(response: urllib3.BaseHTTPResponse, bucket: str, key: str) -> bytes:
    # The body arrives after get_object returned: a connection broken mid-read fails here.
    with _s3_errors(bucket, key):
        return response.read(READ_PIECE_BYTES)


def _release(response: urllib3.BaseHTTPResponse) -> None:
    response.close()
    response.release_conn()
