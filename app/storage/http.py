"""The `/objects/{bucket}/{key}` routes that serve signed URLs over any `ObjectStore`.

Checks run in an order that leaks nothing: names first (400, says nothing about what
exists), then the signature (403), and only then whether the object exists (404).
"""

from __future__ import annotations

import errno
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import format_datetime

from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from app.storage.base import (
    InvalidNameError,
    NoSuchBucketError,
    NoSuchObjectError,
    ObjectInfo,
    ObjectStore,
    ObjectTooLargeError,
)
from app.storage.names import validate_bucket_name, validate_key
from app.storage.signing import SignatureError, UrlSigner

__all__ = ["OnPut", "decimal_over", "object_routes"]

log = logging.getLogger(__name__)

#: Called after a successful signed upload, e.g. to record it in the database.
OnPut = Callable[[str, str, ObjectInfo], Awaitable[None]]

#: One byte range; the unit is case-insensitive (RFC 9110 §14.1), the digits ASCII.
_SINGLE_RANGE_RE = re.compile(r"bytes=([0-9]*)-([0-9]*)", re.IGNORECASE)
#: Positions of more significant digits than this lie past the end of every object (sizes
#: are 64-bit), and int() refuses strings over 4300 digits: such a position is taken as
#: `_BEYOND_ANY_OBJECT`, which every rule below treats exactly as the number itself.
_MAX_POSITION_DIGITS = 19
_BEYOND_ANY_OBJECT = 10**_MAX_POSITION_DIGITS
_OCTETS = "application/octet-stream"
_ENTITY_TAG_RE = re.compile(r'(W/)?("[\x21\x23-\x7e\x80-\xff]*")')


class _RangeNotSatisfiable(Exception):
    pass


def object_routes(
    store: ObjectStore,
    signer: UrlSigner,
    max_upload_bytes: int,
    on_put: OnPut | None = None,
) -> list[BaseRoute]:
    """Routes for GET/HEAD (with single byte ranges, an `ETag`, `If-Range`, `If-Match` and
    `If-None-Match`) and PUT of signed object URLs."""

    async def endpoint(request: Request) -> Response:
        bucket = request.path_params["bucket"]
        key = request.path_params["key"]
        try:
            validate_bucket_name(bucket)
            validate_key(key)
        except InvalidNameError as exc:
            return PlainTextResponse(str(exc), status_code=400)
        # A GET URL also allows HEAD, as on S3.
        signed_method = "PUT" if request.method == "PUT" else "GET"
        expires = request.query_params.get("expires")
        sig = request.query_params.get("sig")
        if expires is None or sig is None:
            return PlainTextResponse("missing signature", status_code=403)
        try:
            signer.verify(signed_method, bucket, key, expires, sig)
        except SignatureError as exc:
            return PlainTextResponse(f"signature refused: {exc.reason}", status_code=403)
        if request.method == "PUT":
            return await _put(store, request, bucket, key, max_upload_bytes, on_put)
        return await _get(store, request, bucket, key)

    return [Route("/objects/{bucket}/{key:path}", endpoint, methods=["GET", "HEAD", "PUT"])]


#: Times a download starts over when the object was replaced between its stat and its open.
_GET_ATTEMPTS = 3


async def _stat(store: ObjectStore, bucket: str, key: str) -> ObjectInfo | None:
    try:
        return await store.stat(bucket, key)
    except NoSuchBucketError:
        return None


async def _get(store: ObjectStore, request: Request, bucket: str, key: str) -> Response:
    """The object, or the asked range of it. Its headers come from a stat and its bytes from
    an open: a PUT replacing the object between the two would send the new object's bytes
    under the old one's length. So the object is stat'ed again once open, and the download
    starts over when it changed (the open file is one object, whole: PUTs replace by rename)."""
    for _ in range(_GET_ATTEMPTS):
        info = await _stat(store, bucket, key)
        if info is None:
            return PlainTextResponse("no such object", status_code=404)
        answer = await _answer(store, request, bucket, key, info)
        if answer is not None:
            return answer
    return PlainTextResponse("the object is being replaced: try again", status_code=503,
                             headers={"Retry-After": "1"})


async def _answer(store: ObjectStore, request: Request, bucket: str, key: str,
                  info: ObjectInfo) -> Response | None:
    """The response for the object `info` describes; None when it was replaced meanwhile."""
    etag = _entity_tag(info)
    validators = {"Last-Modified": format_datetime(info.last_modified, usegmt=True)}
    if etag is not None:
        validators["ETag"] = etag
    if not _if_match_holds(request.headers.get("if-match"), etag):
        return PlainTextResponse("precondition failed: the object has changed", status_code=412)
    if _if_none_match_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=validators)
    try:
        # A range of another version of the object than the one the client holds part of
        # would be spliced onto that part: `If-Range` names the version the range is of.
        wanted = request.headers.get("range") if _if_range_holds(request.headers.get("if-range"), etag) else None
        byte_range = _parse_range(wanted, info.size)
    except _RangeNotSatisfiable:
        return PlainTextResponse(
            "range not satisfiable",
            status_code=416,
            headers={"Content-Range": f"bytes */{info.size}"},
        )
    headers = {"Accept-Ranges": "bytes", **validators}
    if byte_range is None:
        status, offset, length = 200, 0, info.size
    else:
        start, end = byte_range
        status, offset, length = 206, start, end - start + 1
        headers["Content-Range"] = f"bytes {start}-{end}/{info.size}"
    headers["Content-Length"] = str(length)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=_OCTETS)
    stream = store.open_stream(bucket, key, offset=offset, length=length)
    # Read the first piece before answering, so a vanished object is still a clean 404.
    try:
        first = await anext(stream)
    except StopAsyncIteration:
        first = b""
    except (NoSuchObjectError, NoSuchBucketError):
        return PlainTextResponse("no such object", status_code=404)
    now = await _stat(store, bucket, key)
    if now is None or (now.size, now.last_modified, now.etag) != (info.size, info.last_modified, info.etag):
        await stream.aclose()
        return None
    if len(first) >= length:
        # The whole answer is read (small objects, e.g. image lists): its file or connection is
        # let go now rather than when a response that may never run its body ends.
        await stream.aclose()
        return Response(first, status_code=status, headers=headers, media_type=_OCTETS)
    return StreamingResponse(
        _body(first, stream), status_code=status, headers=headers, media_type=_OCTETS
    )


async def _body(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        async for piece in rest:
            yield piece
    finally:
        # A client that disconnects mid-download releases the file or connection now,
        # not whenever the store's generator is collected.
        aclose: Callable[[], Awaitable[None]] | None = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()


async def _put(
    store: ObjectStore,
    request: Request,
    bucket: str,
    key: str,
    max_upload_bytes: int,
    on_put: OnPut | None,
) -> Response:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            return PlainTextResponse("malformed Content-Length", status_code=400)
        if decimal_over(declared, max_upload_bytes):
            # Refuse before reading a byte; the stream limit below covers chunked bodies.
            return PlainTextResponse("upload too large", status_code=413)
    try:
        info = await store.put_stream(bucket, key, request.stream(), max_bytes=max_upload_bytes)
    except ObjectTooLargeError:
        return PlainTextResponse("upload too large", status_code=413)
    except NoSuchBucketError:
        return PlainTextResponse("no such bucket", status_code=404)
    except InvalidNameError as exc:  # e.g. a key colliding with a key prefix on disk
        return PlainTextResponse(str(exc), status_code=400)
    except ClientDisconnect:
        return PlainTextResponse("upload interrupted", status_code=400)
    except OSError as exc:
        # The service's disk, not the upload: the client may try again later (nothing was kept).
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            log.error("upload to %s/%s: the object store's filesystem is full (%s)", bucket, key, exc.strerror)
            return PlainTextResponse("insufficient storage: the object was not stored", status_code=507)
        if exc.errno == errno.EROFS:
            log.error("upload to %s/%s: the object store's filesystem is read-only", bucket, key)
            return PlainTextResponse("storage unavailable: the object was not stored, try again later",
                                     status_code=503, headers={"Retry-After": "60"})
        raise
    if on_put is not None:
        await on_put(bucket, key, info)
    digest = (info.checksum or "").removeprefix("sha256:")
    return Response(status_code=200, headers={"ETag": f'"{digest}"'})


def _entity_tag(info: ObjectInfo) -> str | None:
    """The strong entity tag of this version of the object: the store's version tag (the
    file's identity on the filesystem store), which changes with every replacement."""
    if not info.etag:
        return None
    return '"' + info.etag.strip('"') + '"'


def _entity_tags(header: str) -> list[tuple[bool, str]]:
    """The entity tags of an `If-Match`/`If-None-Match` list: (weak, `"opaque-tag"`)."""
    return [(bool(weak), tag) for weak, tag in _ENTITY_TAG_RE.findall(header)]


def _if_match_holds(header: str | None, etag: str | None) -> bool:
    """`If-Match` (RFC 9110 §13.1.1): `*` or a tag equal to the object's, compared strongly."""
    if header is None or header.strip() == "*":
        return True
    return etag is not None and any(not weak and tag == etag for weak, tag in _entity_tags(header))


def _if_none_match_matches(header: str | None, etag: str | None) -> bool:
    """Whether `If-None-Match` (§13.1.2) names this version: `*`, or a tag equal to the
    object's, compared weakly. The answer is then 304: the client's copy is current."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return etag is not None and any(tag == etag for _, tag in _entity_tags(header))


def _if_range_holds(header: str | None, etag: str | None) -> bool:
    """Whether the `Range` header is to be honoured under `If-Range` (RFC 9110 §13.1.5).

    Only a strong entity tag equal to the object's holds. A date never does: HTTP dates
    have a resolution of one second, and an object replaced within the second its
    `Last-Modified` names has the same one, so a date cannot prove the client's part is of
    this very object (a strong validator is required; the answer is then the whole object).
    """
    if header is None:
        return True
    return etag is not None and header.strip() == etag


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range a `Range` header asks for, or None to send everything.

    Only one `bytes` range is supported; any other form is ignored, which RFC 9110 §14.2
    allows. Raises _RangeNotSatisfiable when the range lies outside the object.
    """
    if header is None:
        return None
    match = _SINGLE_RANGE_RE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = (_significant(digits) for digits in match.groups())
    if not first and not last:
        return None
    if not first:  # suffix range: the last n bytes
        suffix = _position(last)
        if suffix == 0 or size == 0:
            raise _RangeNotSatisfiable
        return max(0, size - suffix), size - 1
    # Compared as digit strings (without leading zeros): exact however long they are.
    if last and (len(last), last) < (len(first), first):
        return None  # an invalid range-spec is ignored, not refused
    start = _position(first)
    if start >= size:
        raise _RangeNotSatisfiable
    end = min(_position(last), size - 1) if last else size - 1
    return start, end


def decimal_over(digits: str, limit: int) -> bool:
    """Whether the decimal `digits` name a number over `limit`, however many there are
    (int() refuses strings over 4300 digits)."""
    significant = _significant(digits)
    return len(significant) > len(str(limit)) or int(significant) > limit


def _significant(digits: str) -> str:
    """`digits` without leading zeros: `0` for zeros only, the empty string for none."""
    return digits.lstrip("0") or digits[:1]


def _position(digits: str) -> int:
    return int(digits) if len(digits) <= _MAX_POSITION_DIGITS else _BEYOND_ANY_OBJECT
