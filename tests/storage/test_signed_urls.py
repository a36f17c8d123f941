"""Signed `/objects/…` URLs: `UrlSigner` and the routes of `app.storage.http`."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.types import ASGIApp

from app.storage.base import ObjectInfo
from app.storage.filesystem import FilesystemObjectStore
from app.storage.http import object_routes
from app.storage.signing import UrlSigner
from tests.storage.asgi import raw_asgi
from tests.storage.conftest import FilesystemServer

BASE_URL = "http://testserver"
MAX_UPLOAD = 10_000
DATA = bytes(range(256)) * 10  # 2560 bytes


@dataclass
class Env:
    root: Path
    signer: UrlSigner
    store: FilesystemObjectStore
    app: ASGIApp
    client: httpx.AsyncClient
    uploads: list[tuple[str, str, ObjectInfo]] = field(default_factory=list)

    def url(self, method: str, bucket: str, key: str, expires_in: int = 300) -> str:
        assert method in ("GET", "PUT")
        return self.signer.sign("GET" if method == "GET" else "PUT", bucket, key, expires_in)

    def tmp_files(self) -> list[Path]:
        tmp = self.root / ".tmp"
        return sorted(tmp.iterdir()) if tmp.exists() else []


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    root = tmp_path / "objects"
    signer = UrlSigner(b"signed-url-tests-secret-0123456789", BASE_URL)
    store = FilesystemObjectStore(root, signer)
    uploads: list[tuple[str, str, ObjectInfo]] = []

    async def on_put(bucket: str, key: str, info: ObjectInfo) -> None:
        uploads.append((bucket, key, info))

    app = Starlette(routes=object_routes(store, signer, MAX_UPLOAD, on_put=on_put))
    for bucket in ("bucket-a", "bucket-b"):
        await store.create_bucket(bucket)
        await store.put_bytes(bucket, "dir/obj", DATA)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BASE_URL) as client:
        yield Env(root, signer, store, app, client, uploads)


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    query.update(changes)
    return f"{parts.scheme}://{parts.netloc}{parts.path}?" + "&".join(
        f"{name}={value}" for name, value in query.items()
    )


def with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{path}?{parts.query}"


# -- GET -----------------------------------------------------------------------------------


async def test_valid_get_and_head(env: Env) -> None:
    response = await env.client.get(env.url("GET", "bucket-a", "dir/obj"))
    head = await env.client.head(env.url("GET", "bucket-a", "dir/obj"))

    assert response.status_code == 200
    assert response.content == DATA
    assert response.headers["content-length"] == str(len(DATA))
    assert response.headers["accept-ranges"] == "bytes"
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(DATA))


class ReplacedAfterStat(FilesystemObjectStore):
    """A PUT replacing the object lands right after each of the first `replacements` stats:
    a race between a download and an upload, forced."""

    def __init__(self, *args: object, contents: list[bytes], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.contents = contents

    async def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        info = await super().stat(bucket, key)
        if self.contents:
            await self.put_bytes(bucket, key, self.contents.pop(0))
        return info


@pytest.mark.parametrize("replacements", [1, 2, 6])
async def test_a_download_never_mixes_an_object_and_its_replacement(tmp_path: Path, replacements: int) -> None:
    """The headers come from a stat and the bytes from an open: an object replaced between
    them is downloaded again, whole and with its own length (a 200 carried the new object's
    bytes cut to the old one's length); replaced on every attempt, the answer is 503."""
    signer = UrlSigner(b"signed-url-tests-secret-0123456789", BASE_URL)
    old, new, newer = b"o" * 100, b"N" * 300, b"n" * 200
    store = ReplacedAfterStat(tmp_path / "objects", signer, contents=[])
    await store.create_bucket("bucket-a")
    await store.put_bytes("bucket-a", "obj", old)
    store.contents = [new, newer] * 3
    del store.contents[replacements:]
    app = Starlette(routes=object_routes(store, signer, MAX_UPLOAD))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BASE_URL) as client:
        response = await client.get(signer.sign("GET", "bucket-a", "obj", 60))
    if replacements == 6:
        assert (response.status_code, response.text, response.headers["retry-after"]) == (
            503, "the object is being replaced: try again", "1")
        return
    expected = new if replacements == 1 else newer
    assert (response.status_code, response.content) == (200, expected)
    assert response.headers["content-length"] == str(len(expected))


async def test_expired_url(env: Env) -> None:
    url = env.signer.sign("GET", "bucket-a", "dir/obj", 60, now=time.time() - 61)

    response = await env.client.get(url)

    assert (response.status_code, response.text) == (403, "signature refused: expired")


async def test_tampered_signature(env: Env) -> None:
    url = env.url("GET", "bucket-a", "dir/obj")
    sig = parse_qs(urlsplit(url).query)["sig"][0]
    flipped = sig[:-1] + ("0" if sig[-1] != "0" else "1")

    response = await env.client.get(with_query(url, sig=flipped))
    unsigned = await env.client.get(url.split("?")[0])

    assert (response.status_code, response.text) == (403, "signature refused: invalid")
    assert (unsigned.status_code, unsigned.text) == (403, "missing signature")


async def test_tampered_expires(env: Env) -> None:
    url = env.url("GET", "bucket-a", "dir/obj")
    expires = int(parse_qs(urlsplit(url).query)["expires"][0])

    later = await env.client.get(with_query(url, expires=str(expires + 3600)))
    garbage = await env.client.get(with_query(url, expires="soon"))

    assert (later.status_code, later.text) == (403, "signature refused: invalid")
    assert (garbage.status_code, garbage.text) == (403, "signature refused: malformed")


async def test_url_for_other_bucket_or_key(env: Env) -> None:
    url = env.url("GET", "bucket-a", "dir/obj")
    await env.store.put_bytes("bucket-a", "dir/other", b"secret")

    other_bucket = await env.client.get(with_path(url, "/objects/bucket-b/dir/obj"))
    other_key = await env.client.get(with_path(url, "/objects/bucket-a/dir/other"))

    assert other_bucket.status_code == 403
    assert other_key.status_code == 403


async def test_get_url_cannot_put_and_put_url_cannot_get(env: Env) -> None:
    put_with_get_url = await env.client.put(env.url("GET", "bucket-a", "dir/obj"), content=b"evil")
    get_with_put_url = await env.client.get(env.url("PUT", "bucket-a", "dir/obj"))

    assert put_with_get_url.status_code == 403
    assert get_with_put_url.status_code == 403
    assert await env.store.get_bytes("bucket-a", "dir/obj") == DATA
    assert env.uploads == []


async def test_missing_object_and_bucket(env: Env) -> None:
    missing_key = await env.client.get(env.url("GET", "bucket-a", "dir/absent"))
    missing_bucket = await env.client.get(env.url("GET", "bucket-zz", "dir/obj"))
    put_missing_bucket = await env.client.put(env.url("PUT", "bucket-zz", "k"), content=b"x")

    assert missing_key.status_code == 404
    assert missing_bucket.status_code == 404
    assert put_missing_bucket.status_code == 404


async def test_other_methods_not_allowed(env: Env) -> None:
    response = await env.client.delete(env.url("GET", "bucket-a", "dir/obj"))
    assert response.status_code == 405
    assert await env.store.get_bytes("bucket-a", "dir/obj") == DATA


# -- traversal -----------------------------------------------------------------------------


@pytest.fixture
def secret_outside(env: Env) -> Path:
    secret = env.root.parent / "secret.txt"
    secret.write_text("top secret")
    return secret


@pytest.mark.parametrize(
    "path",
    [
        "/objects/bucket-a/../secret.txt",
        "/objects/bucket-a/dir/../../../secret.txt",
        "/objects/bucket-a//etc/passwd",
        "/objects/bucket-a/./dir/obj",
        "/objects/../bucket-a/dir/obj",
        "/objects/bucket-a/dir\\..\\..\\secret.txt",
    ],
)
async def test_literal_traversal_is_refused(env: Env, secret_outside: Path, path: str) -> None:
    for method in ("GET", "PUT"):
        status, body = await raw_asgi(env.app, method, path, "expires=9999999999&sig=" + "0" * 64)
        assert status == 400
        assert b"top secret" not in body
    assert secret_outside.read_text() == "top secret"


@pytest.mark.parametrize(
    "encoded",
    [
        "%2e%2e%2fsecret.txt",
        "..%2Fsecret.txt",
        "dir/%2e%2e/%2e%2e/%2e%2e/secret.txt",
        "%2Fetc%2Fpasswd",
        "%2e%2e%5csecret.txt",
        "dir/%00",
    ],
)
async def test_encoded_traversal_is_refused(env: Env, secret_outside: Path, encoded: str) -> None:
    url = f"{BASE_URL}/objects/bucket-a/{encoded}?expires=9999999999&sig={'0' * 64}"

    get = await env.client.get(url)
    put = await env.client.put(url, content=b"overwritten")

    assert get.status_code == 400
    assert put.status_code == 400
    assert secret_outside.read_text() == "top secret"
    assert sorted(p.name for p in env.root.parent.iterdir()) == ["objects", "secret.txt"]


async def test_invalid_bucket_name_is_400(env: Env) -> None:
    response = await env.client.get(f"{BASE_URL}/objects/Bucket_A/dir/obj?expires=1&sig=00")
    assert response.status_code == 400


async def test_traversal_through_real_http_server(fs_server: FilesystemServer) -> None:
    """Over a socket, so nothing between the client and uvicorn cleans the path."""
    port = urlsplit(fs_server.signer.base_url).port
    assert port is not None
    request = (
        b"GET /objects/bucket-a/../../../../etc/passwd?expires=9999999999&sig="
        + b"0" * 64
        + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )

    def exchange() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(request)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    reply = await asyncio.to_thread(exchange)
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert b"root:" not in reply


# -- PUT -----------------------------------------------------------------------------------


async def test_put_stores_object_and_reports_it(env: Env) -> None:
    body = b"uploaded bytes" * 100

    response = await env.client.put(env.url("PUT", "bucket-a", "new/obj.raw"), content=body)

    digest = hashlib.sha256(body).hexdigest()
    assert response.status_code == 200
    assert response.headers["etag"] == f'"{digest}"'
    assert await env.store.get_bytes("bucket-a", "new/obj.raw") == body
    assert [(b, k, i.size, i.checksum) for b, k, i in env.uploads] == [
        ("bucket-a", "new/obj.raw", len(body), f"sha256:{digest}")
    ]


async def test_put_exactly_at_limit(env: Env) -> None:
    response = await env.client.put(env.url("PUT", "bucket-a", "max"), content=b"m" * MAX_UPLOAD)
    assert response.status_code == 200
    stat = await env.store.stat("bucket-a", "max")
    assert stat is not None and stat.size == MAX_UPLOAD


async def test_oversize_upload_with_content_length(env: Env) -> None:
    response = await env.client.put(
        env.url("PUT", "bucket-a", "big"), content=b"b" * (MAX_UPLOAD + 1)
    )

    assert response.status_code == 413
    assert await env.store.stat("bucket-a", "big") is None
    assert env.uploads == []
    assert env.tmp_files() == []


async def test_oversize_chunked_upload(env: Env) -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(11):
            yield b"c" * 1000

    overwrite = await env.client.put(env.url("PUT", "bucket-a", "dir/obj"), content=body())
    fresh = await env.client.put(env.url("PUT", "bucket-a", "chunked"), content=body())

    assert overwrite.status_code == 413
    assert fresh.status_code == 413
    assert "content-length" not in overwrite.request.headers  # the stream limit did it
    assert await env.store.get_bytes("bucket-a", "dir/obj") == DATA
    assert await env.store.stat("bucket-a", "chunked") is None
    assert env.uploads == []
    assert env.tmp_files() == []


async def test_malformed_content_length(env: Env) -> None:
    url = env.url("PUT", "bucket-a", "k")
    parts = urlsplit(url)
    status, _ = await raw_asgi(
        env.app, "PUT", parts.path, parts.query, body=b"abc", headers={"content-length": "12abc"}
    )
    assert status == 400
    assert await env.store.stat("bucket-a", "k") is None


async def test_a_content_length_of_any_length_is_a_number(env: Env) -> None:
    """One over int()'s 4300 digits was a 500 (ValueError): it is too large, like any other."""
    parts = urlsplit(env.url("PUT", "bucket-a", "k"))

    huge = await raw_asgi(env.app, "PUT", parts.path, parts.query, body=b"abc", headers={"content-length": "9" * 5000})
    padded, _ = await raw_asgi(env.app, "PUT", parts.path, parts.query, body=b"abc",
                               headers={"content-length": "0" * 5000 + "3"})

    assert huge == (413, b"upload too large")
    assert padded == 200
    assert await env.store.get_bytes("bucket-a", "k") == b"abc"


# -- Range ---------------------------------------------------------------------------------

SIZE = len(DATA)
#: A position past int()'s 4300-digit limit: past the end of any object.
HUGE = "9" * 5000


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, SIZE - 1),
        ("bytes=-10", SIZE - 10, SIZE - 1),
        ("bytes=-99999", 0, SIZE - 1),
        (f"bytes={SIZE - 5}-{SIZE + 500}", SIZE - 5, SIZE - 1),
        (f"bytes={SIZE - 1}-{SIZE - 1}", SIZE - 1, SIZE - 1),
        (f"bytes=0-{HUGE}", 0, SIZE - 1),
        (f"bytes=-{HUGE}", 0, SIZE - 1),
        (f"bytes={'0' * 5000}5-{'0' * 5000}9", 5, 9),
        ("Bytes=0-3", 0, 3),  # the range unit is case-insensitive (RFC 9110 §14.1)
        ("BYTES=-10", SIZE - 10, SIZE - 1),
    ],
)
async def test_range_206(env: Env, header: str, start: int, end: int) -> None:
    url = env.url("GET", "bucket-a", "dir/obj")

    response = await env.client.get(url, headers={"Range": header})
    head = await env.client.head(url, headers={"Range": header})

    assert response.status_code == 206
    assert response.content == DATA[start : end + 1]
    assert response.headers["content-range"] == f"bytes {start}-{end}/{SIZE}"
    assert response.headers["content-length"] == str(end - start + 1)
    assert (head.status_code, head.content) == (206, b"")
    assert head.headers["content-range"] == f"bytes {start}-{end}/{SIZE}"


@pytest.mark.parametrize(
    "header",
    [
        f"bytes={SIZE}-",
        f"bytes={SIZE + 10}-{SIZE + 20}",
        "bytes=-0",
        f"bytes={HUGE}-",
        f"bytes={HUGE}-{HUGE}",
        f"bytes=-{'0' * 5000}",
    ],
)
async def test_range_416(env: Env, header: str) -> None:
    response = await env.client.get(
        env.url("GET", "bucket-a", "dir/obj"), headers={"Range": header}
    )

    assert (response.status_code, response.text) == (416, "range not satisfiable")
    assert response.headers["content-range"] == f"bytes */{SIZE}"


async def test_range_on_empty_object_is_416(env: Env) -> None:
    await env.store.put_bytes("bucket-a", "empty", b"")
    url = env.url("GET", "bucket-a", "empty")

    ranged = await env.client.get(url, headers={"Range": "bytes=0-"})
    whole = await env.client.get(url)

    assert (ranged.status_code, ranged.headers["content-range"]) == (416, "bytes */0")
    assert (whole.status_code, whole.content) == (200, b"")


async def test_range_positions_past_int_limit_through_real_http_server(
    fs_server: FilesystemServer,
) -> None:
    """Positions of any length are numbers (int() of one over 4300 digits failed the request)."""
    store = FilesystemObjectStore(fs_server.root, fs_server.signer)
    await store.create_bucket("huge-ranges")
    await store.put_bytes("huge-ranges", "obj", DATA)
    url = fs_server.signer.sign("GET", "huge-ranges", "obj", 300)

    async with httpx.AsyncClient() as client:
        whole = await client.get(url, headers={"Range": f"bytes=0-{HUGE}"})
        past_end = await client.get(url, headers={"Range": f"bytes={HUGE}-"})

    assert (whole.status_code, whole.content) == (206, DATA)
    assert whole.headers["content-range"] == f"bytes 0-{SIZE - 1}/{SIZE}"
    assert (past_end.status_code, past_end.text) == (416, "range not satisfiable")
    assert past_end.headers["content-range"] == f"bytes */{SIZE}"


@pytest.mark.parametrize(
    "header",
    ["bytes=5-2", "bytes=0-1,5-6", "items=0-5", "bytes=x-y", "bytes=-", f"bytes={HUGE}-{HUGE[1:]}",
     f"bytes={HUGE}-5"],
)
async def test_unsupported_or_invalid_range_sends_everything(env: Env, header: str) -> None:
    response = await env.client.get(
        env.url("GET", "bucket-a", "dir/obj"), headers={"Range": header}
    )

    assert response.status_code == 200
    assert response.content == DATA
    assert "content-range" not in response.headers


# -- validators ----------------------------------------------------------------------------


async def test_if_range_resumes_only_the_same_object(env: Env) -> None:
    """A resumed download (`If-Range` with the validator of the part already held) gets the
    rest only from that very object: replaced since, even by one of the same size within the
    same second, it is sent whole (a 206 of the new object spliced onto the old one's first
    part was a corrupt file)."""
    url = env.url("GET", "bucket-a", "dir/obj")
    first = await env.client.get(url, headers={"Range": "bytes=0-99"})
    etag, last_modified = first.headers["etag"], first.headers["last-modified"]

    resumed = await env.client.get(url, headers={"Range": "bytes=100-", "If-Range": etag})
    replacement = bytes(reversed(DATA))
    await env.store.put_bytes("bucket-a", "dir/obj", replacement)
    stale = await env.client.get(url, headers={"Range": "bytes=100-", "If-Range": etag})
    by_date = await env.client.get(url, headers={"Range": "bytes=100-", "If-Range": last_modified})
    weak = await env.client.get(url, headers={"Range": "bytes=100-", "If-Range": f"W/{stale.headers['etag']}"})
    past_end = await env.client.get(url, headers={"Range": f"bytes={SIZE}-", "If-Range": etag})

    assert (first.status_code, resumed.status_code) == (206, 206)
    assert first.content + resumed.content == DATA
    assert resumed.headers["etag"] == etag
    assert (stale.status_code, stale.content) == (200, replacement)
    assert "content-range" not in stale.headers
    assert stale.headers["etag"] != etag
    # A date cannot tell two versions of one second apart, and a weak tag is never enough.
    assert (by_date.status_code, by_date.content) == (200, replacement)
    assert (weak.status_code, weak.content) == (200, replacement)
    # A range of another version is ignored, not refused.
    assert (past_end.status_code, past_end.content) == (200, replacement)


async def test_the_entity_tag_of_a_download_is_the_one_of_the_bytes_sent(tmp_path: Path) -> None:
    """The object replaced by one of the same size and time between the stat and the open:
    the download starts over, so its ETag is the replacement's (it kept the first stat's)."""
    signer = UrlSigner(b"signed-url-tests-secret-0123456789", BASE_URL)
    store = SameStatReplacement(tmp_path / "objects", signer)
    await store.create_bucket("bucket-a")
    await store.put_bytes("bucket-a", "obj", b"o" * 100)
    app = Starlette(routes=object_routes(store, signer, MAX_UPLOAD))
    url = signer.sign("GET", "bucket-a", "obj", 60)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BASE_URL) as client:
        store.replace_with = b"N" * 100
        response = await client.get(url)
        again = await client.get(url)

    assert (response.status_code, response.content) == (200, b"N" * 100)
    assert response.headers["etag"] == again.headers["etag"]


class SameStatReplacement(FilesystemObjectStore):
    """Replaces the object right after the next stat by one of the same size, its mtime set
    back to the old one's: only the file's identity tells the two apart."""

    replace_with: bytes | None = None

    async def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        info = await super().stat(bucket, key)
        if info is not None and self.replace_with is not None:
            data, self.replace_with = self.replace_with, None
            path = self._real_root() / bucket / key
            old_mtime_ns = path.stat().st_mtime_ns
            await self.put_bytes(bucket, key, data)
            os.utime(path, ns=(old_mtime_ns, old_mtime_ns))
        return info


async def test_if_none_match_and_if_match_are_evaluated_against_the_entity_tag(env: Env) -> None:
    """A cache revalidating its copy gets 304 without the bytes while the object is the same;
    a client pinning the version (`If-Match`, e.g. for parallel ranges) gets 412 once it was
    replaced, not bytes of another version."""
    url = env.url("GET", "bucket-a", "dir/obj")
    etag = (await env.client.head(url)).headers["etag"]

    cached = await env.client.get(url, headers={"If-None-Match": f'"other", W/{etag}'})
    cached_head = await env.client.head(url, headers={"If-None-Match": "*"})
    pinned = await env.client.get(url, headers={"If-Match": etag, "Range": "bytes=0-9"})
    await env.store.put_bytes("bucket-a", "dir/obj", b"replaced")
    revalidated = await env.client.get(url, headers={"If-None-Match": etag})
    moved = await env.client.get(url, headers={"If-Match": etag, "Range": "bytes=0-9"})
    weak_pin = await env.client.get(url, headers={"If-Match": f"W/{revalidated.headers['etag']}"})

    assert (cached.status_code, cached.content, cached.headers["etag"]) == (304, b"", etag)
    assert "content-length" not in cached.headers or cached.headers["content-length"] == "0"
    assert (cached_head.status_code, cached_head.headers["etag"]) == (304, etag)
    assert (pinned.status_code, pinned.content) == (206, DATA[:10])
    assert (revalidated.status_code, revalidated.content) == (200, b"replaced")
    assert revalidated.headers["etag"] != etag
    assert (moved.status_code, moved.text) == (412, "precondition failed: the object has changed")
    assert weak_pin.status_code == 412  # If-Match compares strongly
    assert (await env.client.get(env.url("GET", "bucket-a", "dir/absent"), headers={"If-None-Match": "*"})
            ).status_code == 404
