"""An in-memory `ObjectStore` for tests, instrumented: it counts calls, tracks the
concurrency of puts and gets, and can tamper with what it holds."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from app.storage.base import (
    HttpMethod,
    NoSuchBucketError,
    NoSuchObjectError,
    ObjectInfo,
    ObjectStore,
    ObjectTooLargeError,
)

PIECE = 64 * 1024


@dataclass
class _Gauge:
    current: int = 0
    peak: int = 0

    def __enter__(self) -> None:
        self.current += 1
        self.peak = max(self.peak, self.current)

    def __exit__(self, *_: object) -> None:
        self.current -= 1


@dataclass
class MemoryStore:
    #: Seconds each put and get waits, so that concurrency shows.
    latency: float = 0.0
    objects: dict[tuple[str, str], tuple[bytes, ObjectInfo]] = field(default_factory=dict)
    buckets: set[str] = field(default_factory=set)
    calls: Counter[str] = field(default_factory=Counter)
    puts: _Gauge = field(default_factory=_Gauge)
    gets: _Gauge = field(default_factory=_Gauge)

    # -- the port --------------------------------------------------------------------------

    async def create_bucket(self, bucket: str) -> bool:
        made = bucket not in self.buckets
        self.buckets.add(bucket)
        return made

    async def delete_empty_bucket(self, bucket: str) -> bool:
        if bucket not in self.buckets or any(b == bucket for b, _ in self.objects):
            return False
        self.buckets.discard(bucket)
        return True

    async def bucket_exists(self, bucket: str) -> bool:
        return bucket in self.buckets

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
        self.calls["put"] += 1
        self._bucket(bucket)
        with self.puts:
            await asyncio.sleep(self.latency)
        info = ObjectInfo(
            bucket=bucket,
            key=key,
            size=len(data),
            last_modified=datetime.now(UTC),
            checksum=None if sha256 is None else f"sha256:{sha256}",
        )
        self.objects[bucket, key] = (bytes(data), info)
        return info

    async def sync(self, bucket: str, key: str) -> None:
        self.calls["sync"] += 1
        self._object(bucket, key)  # a sync of a missing object is a caller's bug here

    async def get_bytes(self, bucket: str, key: str) -> bytes:
        self.calls["get"] += 1
        with self.gets:
            await asyncio.sleep(self.latency)
        return self._object(bucket, key)[0]

    async def open_stream(
        self, bucket: str, key: str, *, offset: int = 0, length: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        data = self._object(bucket, key)[0]
        stop = len(data) if length is None else min(len(data), offset + length)
        for start in range(offset, stop, PIECE):
            yield data[start : min(start + PIECE, stop)]

    async def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        self.calls["stat"] += 1
        self._bucket(bucket)
        entry = self.objects.get((bucket, key))
        return None if entry is None else entry[1]

    async def delete(self, bucket: str, key: str) -> None:
        self.objects.pop((bucket, key), None)

    async def list_objects(
        self, bucket: str, *, prefix: str = "", start_after: str = "", limit: int = 1000
    ) -> list[ObjectInfo]:
        self._bucket(bucket)
        keys = sorted(
            key
            for b, key in self.objects
            if b == bucket and key.startswith(prefix) and key > start_after
        )
        return [self.objects[bucket, key][1] for key in keys[:limit]]

    def presigned_url(self, method: HttpMethod, bucket: str, key: str, expires_in: int) -> str:
        return f"memory://{bucket}/{key}?method={method}&expires_in={expires_in}"

    # -- test helpers ----------------------------------------------------------------------

    def keys(self, bucket: str) -> list[str]:
        return sorted(key for b, key in self.objects if b == bucket)

    def stored_bytes(self, bucket: str) -> int:
        return sum(len(data) for (b, _), (data, _) in self.objects.items() if b == bucket)

    def read(self, bucket: str, key: str) -> bytes:
        return self._object(bucket, key)[0]

    def overwrite(self, bucket: str, key: str, data: bytes) -> None:
        """Replace an object's bytes behind the store's back (as bit rot or an attacker)."""
        info = self._object(bucket, key)[1]
        self.objects[bucket, key] = (data, info)

    def flip_byte(self, bucket: str, key: str, position: int) -> None:
        data = bytearray(self.read(bucket, key))
        data[position] ^= 0x01
        self.overwrite(bucket, key, bytes(data))

    def _bucket(self, bucket: str) -> None:
        if bucket not in self.buckets:
            raise NoSuchBucketError(bucket)

    def _object(self, bucket: str, key: str) -> tuple[bytes, ObjectInfo]:
        self._bucket(bucket)
        try:
            return self.objects[bucket, key]
        except KeyError:
            raise NoSuchObjectError(f"{bucket}/{key}") from None


def _conforms(store: MemoryStore) -> ObjectStore:
    return store  # mypy checks that MemoryStore implements the port
