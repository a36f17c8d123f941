"""The `ObjectStore` contract, run against every adapter (see the `store` fixture)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from app.storage.base import (
    READ_PIECE_BYTES,
    STREAM_PIECE_BYTES,
    InvalidNameError,
    NoSuchBucketError,
    NoSuchObjectError,
    ObjectStore,
    ObjectTooLargeError,
)
from app.storage.filesystem import FilesystemObjectStore
from app.storage.names import MAX_KEY_BYTES
from app.storage.s3 import PART_BYTES
from tests.storage.conftest import pending_multipart_uploads, raw_minio

MiB = 1024 * 1024


async def chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def read_all(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([piece async for piece in stream])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def assert_recent(moment: datetime) -> None:
    assert moment.tzinfo is not None
    assert abs(datetime.now(UTC) - moment) < timedelta(minutes=1)


def test_adapter_satisfies_the_port(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)


# -- buckets ------------------------------------------------------------------------------


async def test_create_bucket_is_idempotent(store: ObjectStore, bucket: str) -> None:
    assert await store.bucket_exists(bucket) is True
    assert await store.create_bucket(bucket) is False  # there already
    assert await store.bucket_exists(bucket) is True
    assert await store.bucket_exists(bucket + "-missing") is False
    assert await store.create_bucket(bucket + "-new") is True
    assert await store.bucket_exists(bucket + "-new") is True


async def test_delete_empty_bucket_deletes_only_an_empty_one(store: ObjectStore, bucket: str) -> None:
    await store.put_bytes(bucket, "dir/kept.raw", b"kept")
    assert await store.delete_empty_bucket(bucket) is False
    assert await store.get_bytes(bucket, "dir/kept.raw") == b"kept"
    await store.delete(bucket, "dir/kept.raw")
    assert await store.delete_empty_bucket(bucket) is True
    assert await store.bucket_exists(bucket) is False
    assert await store.delete_empty_bucket(bucket) is False  # gone already
    assert await store.create_bucket(bucket) is True  # the name is free again


# -- round trips ----------------------------------------------------------------------------


async def test_put_get_round_trip(store: ObjectStore, bucket: str) -> None:
    data = b"disk image bytes\x00\xff" * 100
    info = await store.put_bytes(bucket, "images/one.raw", data)

    assert (info.bucket, info.key, info.size, info.checksum) == (
        bucket,
        "images/one.raw",
        len(data),
        sha256(data),
    )
    assert_recent(info.last_modified)
    assert await store.get_bytes(bucket, "images/one.raw") == data
    stat = await store.stat(bucket, "images/one.raw")
    assert stat is not None
    assert (stat.bucket, stat.key, stat.size, stat.checksum) == (
        bucket,
        "images/one.raw",
        len(data),
        None,  # the checksum is only known while writing
    )
    assert_recent(stat.last_modified)


#: Sizes around page and multipart boundaries, and a sealed chunk's 4 MiB + 28 bytes.
BIG_SIZES = [4095, 256 * 1024, MiB + 4096, MiB + 5, 4 * MiB + 28]


@pytest.mark.parametrize("size", BIG_SIZES)
@pytest.mark.parametrize("given", [False, True], ids=["hashed", "sha256-given"])
async def test_put_bytes_sizes_and_callers_sha256(
    store: ObjectStore, bucket: str, size: int, given: bool
) -> None:
    data = os.urandom(size)
    digest = hashlib.sha256(data).hexdigest()

    info = await store.put_bytes(bucket, "chunks/x", data, sha256=digest if given else None)

    assert (info.key, info.size, info.checksum) == ("chunks/x", size, f"sha256:{digest}")
    assert await store.get_bytes(bucket, "chunks/x") == data
    assert await read_all(store.open_stream(bucket, "chunks/x", offset=size - 7)) == data[-7:]
    stat = await store.stat(bucket, "chunks/x")
    assert stat is not None and stat.size == size


async def test_put_not_yet_durable_then_sync(store: ObjectStore, bucket: str) -> None:
    data = os.urandom(MiB + 5)

    info = await store.put_bytes(bucket, "chunks/y", data, durable=False)
    # Readers see the whole object at once, durable or not yet.
    assert (info.size, info.checksum) == (len(data), sha256(data))
    assert await store.get_bytes(bucket, "chunks/y") == data
    await store.sync(bucket, "chunks/y")
    await store.sync(bucket, "chunks/y")  # syncing again (or a durable object) is harmless

    assert await store.get_bytes(bucket, "chunks/y") == data
    assert [o.key for o in await store.list_objects(bucket)] == ["chunks/y"]


async def test_callers_sha256_is_taken_as_given(store: ObjectStore, bucket: str) -> None:
    # The adapter does not hash again: the caller vouches for the digest (the chunk store
    # names chunks by it and verifies every read against it).
    vouched = "ab" * 32
    info = await store.put_bytes(bucket, "k", b"bytes", sha256=vouched)

    assert info.checksum == f"sha256:{vouched}"
    assert await store.get_bytes(bucket, "k") == b"bytes"


@pytest.mark.parametrize("bad", ["AB" * 32, "ab" * 31, "sha256:" + "ab" * 32, "g" * 64, ""])
async def test_malformed_sha256_is_refused_keeping_nothing(
    store: ObjectStore, bucket: str, bad: str
) -> None:
    with pytest.raises(ValueError):
        await store.put_bytes(bucket, "k", b"bytes", sha256=bad)
    assert await store.list_objects(bucket) == []


async def test_empty_object(store: ObjectStore, bucket: str) -> None:
    info = await store.put_bytes(bucket, "empty", b"")

    assert (info.size, info.checksum) == (0, sha256(b""))
    assert await store.get_bytes(bucket, "empty") == b""
    stat = await store.stat(bucket, "empty")
    assert stat is not None and stat.size == 0


async def test_overwrite_replaces_content(store: ObjectStore, bucket: str) -> None:
    await store.put_bytes(bucket, "k", b"first version, longer")
    info = await store.put_bytes(bucket, "k", b"second")

    assert info.checksum == sha256(b"second")
    assert await store.get_bytes(bucket, "k") == b"second"
    stat = await store.stat(bucket, "k")
    assert stat is not None and stat.size == len(b"second")
    assert [o.key for o in await store.list_objects(bucket)] == ["k"]


async def test_entity_tag_names_the_version(store: ObjectStore, bucket: str) -> None:
    """Put, stat and list report one entity tag for a version of an object; a replacement of
    the same size, by a put of either kind, has another."""
    first = await store.put_bytes(bucket, "k", b"version one")
    assert first.etag
    stat = await store.stat(bucket, "k")
    [listed] = await store.list_objects(bucket)
    assert stat is not None and (stat.etag, listed.etag) == (first.etag, first.etag)

    second = await store.put_stream(bucket, "k", chunked(b"version two", 4))
    assert second.etag and second.etag != first.etag
    stat = await store.stat(bucket, "k")
    [listed] = await store.list_objects(bucket)
    assert stat is not None and (stat.etag, listed.etag) == (second.etag, second.etag)


async def test_stat_and_get_of_missing_object(store: ObjectStore, bucket: str) -> None:
    assert await store.stat(bucket, "nothing/here") is None
    with pytest.raises(NoSuchObjectError):
        await store.get_bytes(bucket, "nothing/here")
    with pytest.raises(NoSuchObjectError):
        await read_all(store.open_stream(bucket, "nothing/here", offset=3, length=0))


async def test_delete_is_idempotent(store: ObjectStore, bucket: str) -> None:
    await store.put_bytes(bucket, "a/b/c", b"x")
    await store.put_bytes(bucket, "a/keep", b"y")

    await store.delete(bucket, "a/b/c")
    await store.delete(bucket, "a/b/c")
    await store.delete(bucket, "never/existed")

    assert await store.stat(bucket, "a/b/c") is None
    with pytest.raises(NoSuchObjectError):
        await store.get_bytes(bucket, "a/b/c")
    assert [o.key for o in await store.list_objects(bucket)] == ["a/keep"]
    # The freed names can be used again, as a file or as a prefix.
    await store.put_bytes(bucket, "a/b", b"z")
    assert await store.get_bytes(bucket, "a/b") == b"z"


# -- listing -------------------------------------------------------------------------------

LISTED_KEYS = [
    "img/10",
    "img/2",
    "img/1",
    "img-x",
    "img/sub/deep",
    "img/with space",
    "img/\u00e9t\u00e9",
    "other",
    "imh",
    ".hidden",
]


@pytest.fixture
async def listed(store: ObjectStore, bucket: str) -> str:
    for index, key in enumerate(LISTED_KEYS):
        await store.put_bytes(bucket, key, b"x" * index)
    return bucket


async def keys(
    store: ObjectStore, bucket: str, *, prefix: str = "", start_after: str = "", limit: int = 1000
) -> list[str]:
    found = await store.list_objects(bucket, prefix=prefix, start_after=start_after, limit=limit)
    return [info.key for info in found]


async def test_list_in_key_order_with_sizes(store: ObjectStore, listed: str) -> None:
    found = await store.list_objects(listed)

    assert [o.key for o in found] == sorted(LISTED_KEYS)
    assert {o.key: o.size for o in found} == {k: i for i, k in enumerate(LISTED_KEYS)}
    assert all(o.bucket == listed and o.checksum is None for o in found)


async def test_list_prefix_start_after_limit(store: ObjectStore, listed: str) -> None:
    assert await keys(store, listed, prefix="img/") == [
        "img/1",
        "img/10",
        "img/2",
        "img/sub/deep",
        "img/with space",
        "img/\u00e9t\u00e9",
    ]
    assert await keys(store, listed, prefix="img") == [
        "img-x",
        "img/1",
        "img/10",
        "img/2",
        "img/sub/deep",
        "img/with space",
        "img/\u00e9t\u00e9",
    ]
    assert await keys(store, listed, prefix="img/s") == ["img/sub/deep"]
    assert await keys(store, listed, prefix="nope") == []
    assert await keys(store, listed, start_after="img/2") == [
        "img/sub/deep",
        "img/with space",
        "img/\u00e9t\u00e9",
        "imh",
        "other",
    ]
    assert await keys(store, listed, start_after="img/s") == [
        "img/sub/deep",
        "img/with space",
        "img/\u00e9t\u00e9",
        "imh",
        "other",
    ]
    assert await keys(store, listed, prefix="img/", start_after="img/10", limit=2) == [
        "img/2",
        "img/sub/deep",
    ]
    assert await keys(store, listed, limit=3) == sorted(LISTED_KEYS)[:3]
    assert await keys(store, listed, limit=0) == []
    assert await keys(store, listed, start_after="zzz") == []


async def test_list_pages_cover_everything_once(store: ObjectStore, listed: str) -> None:
    pages: list[list[str]] = []
    after = ""
    while page := await keys(store, listed, start_after=after, limit=3):
        pages.append(page)
        after = page[-1]

    assert [len(page) for page in pages] == [3, 3, 3, 1]
    assert [key for page in pages for key in page] == sorted(LISTED_KEYS)


async def test_list_of_empty_bucket(store: ObjectStore, bucket: str) -> None:
    assert await store.list_objects(bucket) == []


async def test_list_bounds_no_key_can_have(store: ObjectStore, listed: str) -> None:
    """A prefix no key can begin with (over MAX_KEY_BYTES, or holding a lone surrogate) lists
    nothing, and a `start_after` of that kind lists the keys after it, on every store. The S3
    adapter sent them as they were: a query string too long for the server (HTTP 414, which
    escaped the port's error tree) or text it could not encode at all."""
    long_tail = "z" * 200_000
    for prefix in ("img/" + long_tail, "i" * (MAX_KEY_BYTES + 1), "img/\ud800"):
        assert await keys(store, listed, prefix=prefix) == [], prefix[:8]
        with pytest.raises(NoSuchBucketError):
            await store.list_objects("no-such-bucket-here", prefix=prefix)
    after_img_2 = ["img/sub/deep", "img/with space", "img/\u00e9t\u00e9", "imh", "other"]
    assert await keys(store, listed, start_after="img/2" + long_tail) == after_img_2
    assert await keys(store, listed, prefix="img/", start_after="img/2" + long_tail, limit=2) == after_img_2[:2]
    assert await keys(store, listed, start_after="img/\ud800") == ["imh", "other"]
    # A key of MAX_KEY_BYTES whose last character stands where a longer `start_after` has a
    # two-byte one, which does not fit: the key sorts before it.
    stem = "img/0/" + ("0" * 250 + "/") * 4 + "0" * 13
    await store.put_bytes(listed, stem + "0", b"")
    assert len((stem + "0").encode()) == MAX_KEY_BYTES
    assert await keys(store, listed, prefix="img/0/") == [stem + "0"]
    assert await keys(store, listed, prefix="img/0/", start_after=stem + "\u00e9" + long_tail) == []


# -- ranges and streaming ------------------------------------------------------------------

RANGE_DATA = bytes(range(256)) * (9 * 1024) + b"tail"  # 2.25 MiB + 4: spans three pieces


@pytest.mark.parametrize(
    ("offset", "length", "expected"),
    [
        (0, None, RANGE_DATA),
        (10, 100, RANGE_DATA[10:110]),
        (STREAM_PIECE_BYTES - 3, 6, RANGE_DATA[STREAM_PIECE_BYTES - 3 : STREAM_PIECE_BYTES + 3]),
        (len(RANGE_DATA) - 4, None, b"tail"),
        (len(RANGE_DATA) - 4, 100, b"tail"),
        (len(RANGE_DATA), None, b""),
        (len(RANGE_DATA) + 10, 5, b""),
        (5, 0, b""),
    ],
)
async def test_open_stream_ranges(
    store: ObjectStore, bucket: str, offset: int, length: int | None, expected: bytes
) -> None:
    await store.put_bytes(bucket, "ranged", RANGE_DATA)

    pieces = [p async for p in store.open_stream(bucket, "ranged", offset=offset, length=length)]

    assert b"".join(pieces) == expected
    assert all(0 < len(p) <= READ_PIECE_BYTES for p in pieces)


async def test_full_stream_comes_in_bounded_pieces(store: ObjectStore, bucket: str) -> None:
    data = RANGE_DATA * 4  # 9 MiB + 16: over two of the largest pieces
    await store.put_bytes(bucket, "ranged", data)

    sizes = [len(p) async for p in store.open_stream(bucket, "ranged")]

    assert sum(sizes) == len(data)
    assert len(sizes) >= 3 and max(sizes) <= READ_PIECE_BYTES


async def test_open_stream_refuses_negative_ranges(store: ObjectStore, bucket: str) -> None:
    await store.put_bytes(bucket, "k", b"data")
    with pytest.raises(ValueError):
        await read_all(store.open_stream(bucket, "k", offset=-1))
    with pytest.raises(ValueError):
        await read_all(store.open_stream(bucket, "k", length=-1))


async def test_abandoned_stream_can_be_closed(store: ObjectStore, bucket: str) -> None:
    await store.put_bytes(bucket, "ranged", RANGE_DATA)
    stream = store.open_stream(bucket, "ranged")
    first = await anext(stream)
    await stream.aclose()
    assert first == RANGE_DATA[: len(first)]


async def test_put_stream_large_many_pieces(
    store: ObjectStore, bucket: str, s3_endpoint_if_s3: str | None
) -> None:
    data = os.urandom(20 * MiB + 12345)  # over one S3 part: a real multipart upload

    info = await store.put_stream(bucket, "big.raw", chunked(data, 300_001))

    assert (info.size, info.checksum) == (len(data), sha256(data))
    assert await store.get_bytes(bucket, "big.raw") == data
    stat = await store.stat(bucket, "big.raw")
    assert stat is not None and stat.size == len(data)
    if s3_endpoint_if_s3 is not None:
        etag = raw_minio(s3_endpoint_if_s3).stat_object(bucket, "big.raw").etag
        parts = -(-len(data) // PART_BYTES)
        assert etag is not None and etag.endswith(f"-{parts}")  # multipart ETag form


@pytest.mark.parametrize("piece", [300_001, 4 * MiB], ids=["small-pieces", "whole-pieces"])
async def test_put_stream_takes_the_callers_sha256(store: ObjectStore, bucket: str, piece: int) -> None:
    # A manifest's checksum, its chunks verified as they are read: the adapter does not hash
    # the stream again (a vouched digest that is not the data's shows it), and stores every byte.
    data = os.urandom(9 * MiB + 7)
    vouched = "cd" * 32

    info = await store.put_stream(bucket, "img.raw", chunked(data, piece), sha256=vouched)

    assert (info.size, info.checksum) == (len(data), f"sha256:{vouched}")
    assert await store.get_bytes(bucket, "img.raw") == data


@pytest.mark.parametrize("bad", ["AB" * 32, "sha256:" + "ab" * 32, ""])
async def test_put_stream_refuses_a_malformed_sha256_keeping_nothing(
    store: ObjectStore, bucket: str, bad: str
) -> None:
    with pytest.raises(ValueError):
        await store.put_stream(bucket, "img.raw", chunked(b"bytes", 2), sha256=bad)
    assert await store.list_objects(bucket) == []


async def test_put_stream_within_max_bytes(store: ObjectStore, bucket: str) -> None:
    data = b"z" * 1000
    info = await store.put_stream(bucket, "exact", chunked(data, 7), max_bytes=1000)
    assert (info.size, info.checksum) == (1000, sha256(data))


@pytest.mark.parametrize("total", [3 * MiB, 20 * MiB], ids=["single-part", "multipart"])
async def test_put_stream_over_max_bytes_keeps_nothing(
    store: ObjectStore, bucket: str, total: int, s3_endpoint_if_s3: str | None
) -> None:
    await store.put_bytes(bucket, "kept", b"old content")

    for key in ("fresh", "kept"):
        with pytest.raises(ObjectTooLargeError):
            await store.put_stream(bucket, key, chunked(b"a" * total, MiB), max_bytes=total - 1)

    assert await store.stat(bucket, "fresh") is None
    assert await store.get_bytes(bucket, "kept") == b"old content"
    assert [o.key for o in await store.list_objects(bucket)] == ["kept"]
    if s3_endpoint_if_s3 is not None:
        assert await pending_multipart_uploads(s3_endpoint_if_s3, bucket) == 0


async def test_failing_source_keeps_nothing(store: ObjectStore, bucket: str) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"a" * MiB
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.put_stream(bucket, "broken", broken())
    assert await store.list_objects(bucket) == []


async def test_cancelled_upload_keeps_nothing(
    store: ObjectStore, bucket: str, s3_endpoint_if_s3: str | None
) -> None:
    sent = 0
    far_enough = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        while True:
            yield b"e" * MiB
            sent += MiB
            if sent > PART_BYTES + 2 * MiB:  # on S3, a multipart upload is under way
                far_enough.set()

    upload = asyncio.create_task(store.put_stream(bucket, "cancelled", endless()))
    await asyncio.wait_for(far_enough.wait(), timeout=20)
    upload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload

    assert await store.list_objects(bucket) == []
    if s3_endpoint_if_s3 is not None:
        # The worker thread aborts the multipart upload after the task has been cancelled.
        for _ in range(100):
            if await pending_multipart_uploads(s3_endpoint_if_s3, bucket) == 0:
                break
            await asyncio.sleep(0.05)
        assert await pending_multipart_uploads(s3_endpoint_if_s3, bucket) == 0
    assert await store.stat(bucket, "cancelled") is None


async def test_in_flight_upload_is_invisible(store: ObjectStore, bucket: str) -> None:
    release = asyncio.Event()
    sent = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"a" * (2 * MiB)
        sent.set()
        await release.wait()
        yield b"b"

    upload = asyncio.create_task(store.put_stream(bucket, "slow", slow()))
    await asyncio.wait_for(sent.wait(), timeout=10)

    assert await store.stat(bucket, "slow") is None
    assert await store.list_objects(bucket) == []

    release.set()
    info = await asyncio.wait_for(upload, timeout=10)
    assert info.size == 2 * MiB + 1
    assert [o.key for o in await store.list_objects(bucket)] == ["slow"]


# -- names and buckets ---------------------------------------------------------------------

BAD_BUCKETS = ["ab", "Upper", "under_score", "-lead", "trail-", "a..b", "192.168.1.1", "x" * 64]
BAD_KEYS = ["", "/abs", "a//b", "a/", "../x", "a/../b", "./a", "a\\b", "a\x00b", "a\nb", "é" * 513]

Call = Callable[[ObjectStore, str, str], Awaitable[object]]
CALLS: dict[str, Call] = {
    "put_bytes": lambda s, b, k: s.put_bytes(b, k, b"x"),
    "put_stream": lambda s, b, k: s.put_stream(b, k, chunked(b"x", 1)),
    "get_bytes": lambda s, b, k: s.get_bytes(b, k),
    "open_stream": lambda s, b, k: read_all(s.open_stream(b, k)),
    "stat": lambda s, b, k: s.stat(b, k),
    "delete": lambda s, b, k: s.delete(b, k),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
async def test_invalid_keys_are_refused(store: ObjectStore, bucket: str, call: Call) -> None:
    for key in BAD_KEYS:
        with pytest.raises(InvalidNameError):
            await call(store, bucket, key)
        with pytest.raises(InvalidNameError):
            store.presigned_url("GET", bucket, key, 60)
    assert await store.list_objects(bucket) == []


async def test_a_key_segment_over_255_bytes(store: ObjectStore, bucket: str) -> None:
    """No file can have such a name: the filesystem store refuses the key on every call. S3
    holds such objects (put there from outside the service): they stay readable, listable,
    signable and deletable."""
    key = "d/" + "x" * 256
    if isinstance(store, FilesystemObjectStore):
        for name, call in CALLS.items():
            if name == "stat":
                assert await call(store, bucket, key) is None  # there is no such object
                continue
            with pytest.raises(InvalidNameError, match="has a segment over 255 bytes"):
                await call(store, bucket, key)
        assert await store.list_objects(bucket) == []
        return
    await store.put_bytes(bucket, key, b"old")
    assert [i.key for i in await store.list_objects(bucket)] == [key]
    assert await store.get_bytes(bucket, key) == b"old"
    info = await store.stat(bucket, key)
    assert info is not None and info.size == 3
    assert store.presigned_url("GET", bucket, key, 60).startswith("http")
    await store.delete(bucket, key)
    assert await store.list_objects(bucket) == []


async def test_invalid_bucket_names_are_refused(store: ObjectStore) -> None:
    for name in BAD_BUCKETS:
        with pytest.raises(InvalidNameError):
            await store.create_bucket(name)
        with pytest.raises(InvalidNameError):
            await store.bucket_exists(name)
        with pytest.raises(InvalidNameError):
            await store.delete_empty_bucket(name)
        with pytest.raises(InvalidNameError):
            await store.list_objects(name)
        for call in CALLS.values():
            with pytest.raises(InvalidNameError):
                await call(store, name, "key")


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
async def test_missing_bucket(store: ObjectStore, call: Call) -> None:
    with pytest.raises(NoSuchBucketError):
        await call(store, "no-such-bucket-here", "key")
    with pytest.raises(NoSuchBucketError):
        await store.list_objects("no-such-bucket-here")


# -- presigned URLs ------------------------------------------------------------------------


async def test_presigned_get_url_downloads(store: ObjectStore, bucket: str) -> None:
    data = os.urandom(3 * MiB)
    await store.put_bytes(bucket, "dir/file name.raw", data)
    url = store.presigned_url("GET", bucket, "dir/file name.raw", expires_in=300)

    async with httpx.AsyncClient() as client:
        response = await client.get(url)
        missing = await client.get(store.presigned_url("GET", bucket, "absent", expires_in=300))

    assert response.status_code == 200
    assert response.content == data
    assert missing.status_code == 404


async def test_presigned_put_url_uploads(store: ObjectStore, bucket: str) -> None:
    data = os.urandom(2 * MiB + 1)
    url = store.presigned_url("PUT", bucket, "up/loaded.bin", expires_in=300)

    async with httpx.AsyncClient() as client:
        response = await client.put(url, content=data)

    assert response.status_code == 200
    assert await store.get_bytes(bucket, "up/loaded.bin") == data
    stat = await store.stat(bucket, "up/loaded.bin")
    assert stat is not None and stat.size == len(data)


async def test_presigned_url_refuses_bad_lifetimes(store: ObjectStore, bucket: str) -> None:
    for expires_in in (0, -5, 7 * 24 * 3600 + 1):
        with pytest.raises(ValueError):
            store.presigned_url("GET", bucket, "k", expires_in)
