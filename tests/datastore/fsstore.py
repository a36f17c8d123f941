"""A minimal filesystem `ObjectStore` for tests and benchmarks: one file per object under
`root/<bucket>/<key>`, written to a temporary name and renamed, blocking calls in worker
threads. No fsync: the benchmark measures the chunk store, not the disk."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from app.storage.base import (
    HttpMethod,
    InvalidNameError,
    NoSuchBucketError,
    NoSuchObjectError,
    ObjectInfo,
    ObjectStore,
    ObjectTooLargeError,
)

PIECE = 1024 * 1024


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    async def create_bucket(self, bucket: str) -> bool:
        made = not await self.bucket_exists(bucket)
        await asyncio.to_thread(self._bucket_dir(bucket).mkdir, parents=True, exist_ok=True)
        return made

    async def delete_empty_bucket(self, bucket: str) -> bool:
        try:
            await asyncio.to_thread(self._bucket_dir(bucket).rmdir)
        except OSError:  # missing, or not empty
            return False
        return True

    async def bucket_exists(self, bucket: str) -> bool:
        return await asyncio.to_thread(self._bucket_dir(bucket).is_dir)

    async def put_stream(
        self, bucket: str, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int | None = None,
        sha256: str | None = None,
    ) -> ObjectInfo:
        parts: list[bytes] = []
        size = 0
        async for piece in chunks:
            size += len(piece)
            if max_bytes is not None and size > max_bytes:
                raise ObjectTooLargeError(f"{bucket}/{key} is over {max_bytes} bytes")
            parts.append(piece)
        return await self.put_bytes(bucket, key, b"".join(parts), sha256=sha256)

    async def put_bytes(
        self, bucket: str, key: str, data: bytes | bytearray, *, sha256: str | None = None, durable: bool = True
    ) -> ObjectInfo:
        return await asyncio.to_thread(self._put, bucket, key, data)

    async def sync(self, bucket: str, key: str) -> None:
        return None  # this store never fsyncs (see the module docstring)

    async def get_bytes(self, bucket: str, key: str) -> bytes:
        return await asyncio.to_thread(self._get, bucket, key)

    async def open_stream(
        self, bucket: str, key: str, *, offset: int = 0, length: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        data = await self.get_bytes(bucket, key)
        stop = len(data) if length is None else min(len(data), offset + length)
        for start in range(offset, stop, PIECE):
            yield data[start : min(start + PIECE, stop)]

    async def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        return await asyncio.to_thread(self._stat, bucket, key)

    async def delete(self, bucket: str, key: str) -> None:
        await asyncio.to_thread(self._path(bucket, key).unlink, missing_ok=True)

    async def list_objects(
        self, bucket: str, *, prefix: str = "", start_after: str = "", limit: int = 1000
    ) -> list[ObjectInfo]:
        return await asyncio.to_thread(self._list, bucket, prefix, start_after, limit)

    def presigned_url(self, method: HttpMethod, bucket: str, key: str, expires_in: int) -> str:
        raise NotImplementedError("the test file store serves no URLs")

    # -- blocking parts, run in worker threads ---------------------------------------------

    def _bucket_dir(self, bucket: str) -> Path:
        if not bucket or "/" in bucket or bucket in {".", ".."}:
            raise InvalidNameError(bucket)
        return self.root / bucket

    def _path(self, bucket: str, key: str) -> Path:
        parts = key.split("/")
        if not key or any(part in {"", ".", ".."} or part.startswith(".") for part in parts):
            raise InvalidNameError(key)
        return self._bucket_dir(bucket).joinpath(*parts)

    def _put(self, bucket: str, key: str, data: bytes | bytearray) -> ObjectInfo:
        if not self._bucket_dir(bucket).is_dir():
            raise NoSuchBucketError(bucket)
        path = self._path(bucket, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{id(data)}.tmp")
        with open(temporary, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
        return ObjectInfo(bucket, key, len(data), datetime.now(UTC))

    def _get(self, bucket: str, key: str) -> bytes:
        try:
            return self._path(bucket, key).read_bytes()
        except FileNotFoundError:
            if not self._bucket_dir(bucket).is_dir():
                raise NoSuchBucketError(bucket) from None
            raise NoSuchObjectError(f"{bucket}/{key}") from None

    def _stat(self, bucket: str, key: str) -> ObjectInfo | None:
        try:
            status = self._path(bucket, key).stat()
        except FileNotFoundError:
            if not self._bucket_dir(bucket).is_dir():
                raise NoSuchBucketError(bucket) from None
            return None
        return ObjectInfo(bucket, key, status.st_size, datetime.fromtimestamp(status.st_mtime, UTC))

    def _list(self, bucket: str, prefix: str, start_after: str, limit: int) -> list[ObjectInfo]:
        base = self._bucket_dir(bucket)
        if not base.is_dir():
            raise NoSuchBucketError(bucket)
        keys = sorted(
            key
            for path in base.rglob("*")
            if path.is_file() and not path.name.startswith(".")
            for key in [path.relative_to(base).as_posix()]
            if key.startswith(prefix) and key > start_after
        )
        infos = (self._stat(bucket, key) for key in keys[:limit])
        return [info for info in infos if info is not None]


def _conforms(store: FileStore) -> ObjectStore:
    return store  # mypy checks that FileStore implements the port
