"""`ObjectStore` on a local directory: the embedded default (no services needed).

Layout: `root/<bucket>/<key>`, each key segment a directory level; uploads are written
under `root/.tmp/` (a name no bucket can take) and renamed into place, so readers and
listings never see a partial object.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import stat as stat_mode
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

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
)
from app.storage.direct import ObjectFile, ObjectReader
from app.storage.names import validate_bucket_name, validate_key, validate_new_key, validate_sha256
from app.storage.signing import UrlSigner

__all__ = ["FilesystemObjectStore"]

T = TypeVar("T")

_TMP_DIR = ".tmp"
#: A concurrent delete may prune the directory a rename is about to land in; retry that.
_RENAME_ATTEMPTS = 10


class FilesystemObjectStore:
    """Objects as files under `root`; presigned URLs are HMAC-signed `/objects/…` URLs
    that `app.storage.http.object_routes` serves.

    Every file operation runs in a worker thread. Paths are confined to `root`: a key whose
    path would pass through a symbolic link inside the store is refused, so neither names
    nor links planted in the tree can reach files outside it. (The check precedes the open
    or rename, so it does not stop someone racing it with write access to the tree itself.)
    The root itself may be a link; it is resolved once, when first used (re-pointing it
    takes a restart).

    A filesystem cannot hold both an object `a` and an object `a/b`; the second write raises
    InvalidNameError (S3 accepts both).
    """

    def __init__(self, root: Path, url_signer: UrlSigner, *, direct_io: bool = True) -> None:
        self._root = Path(os.path.abspath(root))
        self._resolved_root: Path | None = None
        self._signer = url_signer
        #: Objects are written with O_DIRECT (`app.storage.direct`) until the filesystem
        #: refuses it once; from then on, buffered.
        self.direct_io = direct_io

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
        opening = asyncio.ensure_future(asyncio.to_thread(self._begin_put, bucket, key))
        try:
            file, tmp_path = await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_discard_begun)  # the thread may still create the file
            raise
        hasher = hashlib.sha256() if sha256 is None else None
        size = 0
        pending = bytearray()
        try:
            async for chunk in chunks:
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise ObjectTooLargeError(f"object is over its limit of {max_bytes} bytes")
                if not pending and len(chunk) >= STREAM_PIECE_BYTES:  # a whole piece already: no join
                    await _in_thread(_write_piece, file, hasher, chunk)
                    continue
                pending += chunk
                # Batch small chunks so there is one thread hop per piece, not per chunk.
                if len(pending) >= STREAM_PIECE_BYTES:
                    piece, pending = pending, bytearray()
                    await _in_thread(_write_piece, file, hasher, piece)
            await _in_thread(_write_piece, file, hasher, pending)
            digest = sha256 if hasher is None else hasher.hexdigest()
            return await _in_thread(self._finish_put, file, tmp_path, bucket, key, size, digest)
        except BaseException:
            # No thread uses the file any more (`_in_thread`); this one finishes the cleanup
            # even if this task is cancelled again.
            await asyncio.to_thread(_discard, file, tmp_path)
            raise

    async def put_bytes(
        self, bucket: str, key: str, data: bytes | bytearray, *, sha256: str | None = None, durable: bool = True
    ) -> ObjectInfo:
        validate_bucket_name(bucket)
        validate_key(key)
        validate_sha256(sha256)
        # One thread hop for the whole object.
        return await asyncio.to_thread(self._put_bytes, bucket, key, data, sha256, durable)

    async def sync(self, bucket: str, key: str) -> None:
        """fsync the object's file and its directory; NoSuchObjectError when it is gone."""
        validate_bucket_name(bucket)
        validate_key(key)
        await asyncio.to_thread(self._sync, bucket, key)

    async def delete(self, bucket: str, key: str) -> None:
        validate_bucket_name(bucket)
        validate_key(key)
        await asyncio.to_thread(self._delete, bucket, key)

    # -- reads --------------------------------------------------------------------------

    async def get_bytes(self, bucket: str, key: str) -> bytes:
        validate_bucket_name(bucket)
        validate_key(key)
        # One read into one bytes object: no pieces to join.
        return await asyncio.to_thread(self._get_bytes, bucket, key)

    async def open_stream(
        self, bucket: str, key: str, *, offset: int = 0, length: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        validate_bucket_name(bucket)
        validate_key(key)
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        # A stream is read once, front to back (an import's upload, a download): with
        # O_DIRECT, past the page cache. Chunks (`get_bytes`) are shared and read again:
        # through it.
        file = await _opened(asyncio.to_thread(self._open_for_read, bucket, key, offset, self.direct_io))
        # One piece read ahead: the disk reads the next piece while the caller handles this one.
        ahead: asyncio.Future[bytes] | None = None
        try:
            remaining = length

            def read_next() -> asyncio.Future[bytes] | None:
                if remaining is not None and remaining <= 0:
                    return None
                wanted = READ_PIECE_BYTES if remaining is None else min(remaining, READ_PIECE_BYTES)
                return asyncio.ensure_future(asyncio.to_thread(file.read, wanted))

            ahead = read_next()
            while ahead is not None:
                piece = await asyncio.shield(ahead)  # cancelled, the read itself goes on
                ahead = None
                if not piece:
                    break
                if remaining is not None:
                    remaining -= len(piece)
                ahead = read_next()
                yield piece
        finally:
            if ahead is not None:
                # A thread cannot be stopped: let its read finish before the file closes.
                try:
                    await asyncio.wait([ahead])
                except asyncio.CancelledError:
                    ahead.add_done_callback(lambda done: _close_after(done, file))
                    raise
                ahead.exception()  # retrieved: a failed read-ahead nobody awaits
            await asyncio.to_thread(file.close)

    async def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        validate_bucket_name(bucket)
        validate_key(key)
        try:
            validate_new_key(key)
        except InvalidNameError:
            return None  # a segment over NAME_MAX: no file has that name
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
        return self._signer.sign(method, bucket, key, expires_in)

    # -- blocking helpers (worker threads only) -----------------------------------------

    def _real_root(self) -> Path:
        if self._resolved_root is None:
            # Resolved once: the operator's root may itself be a link; below it none may be.
            self._resolved_root = Path(os.path.realpath(self._root))
        return self._resolved_root

    def _confined(self, *parts: str) -> Path:
        """`root/parts…`, refused when any existing component below the root is a symbolic
        link: one `lstat` per component (`os.path.realpath` did the same walk in Python,
        root included, and cost ~35 µs a path, several paths per object)."""
        root = self._real_root()
        path = str(root)
        for part in parts:
            path = f"{path}/{part}"
            try:
                mode = os.lstat(path).st_mode
            except (FileNotFoundError, NotADirectoryError):
                break  # nothing exists below a missing component
            if stat_mode.S_ISLNK(mode):
                raise StorageError(f"refusing {'/'.join(parts)!r}: its path leaves the store root")
        return root.joinpath(*parts)

    def _bucket_dir(self, bucket: str) -> Path:
        path = self._confined(bucket)
        if not path.is_dir():
            raise NoSuchBucketError(f"no bucket {bucket!r}")
        return path

    def _object_path(self, bucket: str, key: str) -> Path:
        validate_new_key(key)  # no segment over NAME_MAX (255 bytes): no file could have its name
        segments = key.split("/")
        path = self._confined(bucket, *segments)
        if not path.parents[len(segments) - 1].is_dir():
            raise NoSuchBucketError(f"no bucket {bucket!r}")
        return path

    def _create_bucket(self, bucket: str) -> bool:
        path = self._confined(bucket)
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            if not path.is_dir():
                raise
            return False
        return True

    def _delete_empty_bucket(self, bucket: str) -> bool:
        # rmdir removes only an empty directory: the check and the removal are one step.
        try:
            self._confined(bucket).rmdir()
        except FileNotFoundError:
            return False
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return False
            raise
        return True

    def _bucket_exists(self, bucket: str) -> bool:
        try:
            self._bucket_dir(bucket)
        except NoSuchBucketError:
            return False
        return True

    def _begin_put(self, bucket: str, key: str) -> tuple[ObjectFile, Path]:
        self._object_path(bucket, key)  # fail before reading the stream
        tmp_dir = self._confined(_TMP_DIR)  # a link planted as .tmp is refused too
        tmp_dir.mkdir(exist_ok=True)
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="put-")
        try:
            file = ObjectFile(fd, direct=self.direct_io)
        except BaseException:
            os.close(fd)
            os.unlink(name)
            raise
        if not file.direct:
            self.direct_io = False
        return file, Path(name)

    def _put_bytes(
        self, bucket: str, key: str, data: bytes | bytearray, digest: str | None, durable: bool
    ) -> ObjectInfo:
        file, tmp_path = self._begin_put(bucket, key)
        try:
            if digest is None:
                digest = hashlib.sha256(data).hexdigest()
            file.write(data)
            return self._finish_put(file, tmp_path, bucket, key, len(data), digest, durable=durable)
        except BaseException:
            _discard(file, tmp_path)
            raise

    def _finish_put(
        self, file: ObjectFile, tmp_path: Path, bucket: str, key: str, size: int, digest: str,
        *, durable: bool = True,
    ) -> ObjectInfo:
        file.flush()
        if not file.direct:
            self.direct_io = False
        if durable:
            os.fsync(file.fileno())
        # The rename keeps the file's inode, mtime and size: what `stat` will report.
        st = os.fstat(file.fileno())
        file.close()
        self._publish(tmp_path, bucket, key, durable=durable)
        return _info(bucket, key, st, checksum=f"sha256:{digest}")

    def _publish(self, tmp_path: Path, bucket: str, key: str, *, durable: bool) -> None:
        """Rename a complete temporary file into place (durably: the file was fsynced, the
        directory is too)."""
        target = self._object_path(bucket, key)
        for attempt in range(_RENAME_ATTEMPTS):
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp_path, target)
                break
            except FileNotFoundError:
                if attempt == _RENAME_ATTEMPTS - 1:
                    raise
            except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
                # `mkdir(exist_ok=True)` raises FileExistsError too when a concurrent delete
                # prunes the directory between its attempt and its check: only a file or a
                # directory really standing in the way is a collision.
                if attempt == _RENAME_ATTEMPTS - 1 or _in_the_way(target, len(key.split("/"))):
                    raise InvalidNameError(
                        f"object key {key!r} collides with an object or key prefix on this store"
                    ) from exc
        if durable:
            _fsync_dir(target.parent)  # make the rename itself durable

    def _sync(self, bucket: str, key: str) -> None:
        path = self._object_path(bucket, key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise NoSuchObjectError(f"no object {key!r} in bucket {bucket!r}") from exc
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(path.parent)

    def _delete(self, bucket: str, key: str) -> None:
        bucket_dir = self._bucket_dir(bucket)
        path = self._object_path(bucket, key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        # Prune emptied key directories so listings stay cheap and the names become free.
        for parent in path.parents:
            if parent == bucket_dir:
                break
            try:
                parent.rmdir()
            except OSError:
                break

    def _open_for_read(self, bucket: str, key: str, offset: int, direct: bool = False) -> ObjectReader:
        path = self._object_path(bucket, key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise NoSuchObjectError(f"no object {key!r} in bucket {bucket!r}") from exc
        try:
            if not stat_mode.S_ISREG(os.fstat(fd).st_mode):
                raise NoSuchObjectError(f"no object {key!r} in bucket {bucket!r}")
            return ObjectReader(fd, direct=direct, position=offset)
        except BaseException:
            os.close(fd)
            raise

    def _get_bytes(self, bucket: str, key: str) -> bytes:
        with self._open_for_read(bucket, key, 0) as file:
            return file.readall()

    def _stat(self, bucket: str, key: str) -> ObjectInfo | None:
        path = self._object_path(bucket, key)
        try:
            st = os.stat(path, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat_mode.S_ISREG(st.st_mode):
            return None
        return _info(bucket, key, st)

    def _list(self, bucket: str, prefix: str, start_after: str, limit: int) -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        self._walk(bucket, self._bucket_dir(bucket), "", prefix, start_after, limit, found)
        return found

    def _walk(
        self,
        bucket: str,
        directory: Path,
        key_prefix: str,
        prefix: str,
        start_after: str,
        limit: int,
        found: list[ObjectInfo],
    ) -> None:
        """Append objects to `found` in key order, descending only into directories that
        can hold keys matching `prefix` after `start_after`, and stopping at `limit`."""
        entries: list[tuple[str, os.DirEntry[str], bool]] = []
        try:
            with os.scandir(directory) as it:
                for entry in it:
                    # Symbolic links and special files are never objects.
                    if entry.is_dir(follow_symlinks=False):
                        entries.append((f"{key_prefix}{entry.name}/", entry, True))
                    elif entry.is_file(follow_symlinks=False):
                        entries.append((key_prefix + entry.name, entry, False))
        except (FileNotFoundError, NotADirectoryError):
            return  # pruned by a concurrent delete
        # Sorting directories as "name/" yields global key order: every key below a
        # directory compares with its siblings exactly as "name/" does.
        entries.sort(key=lambda item: item[0])
        for name, entry, is_dir in entries:
            if len(found) >= limit:
                return
            if is_dir:
                could_match = name.startswith(prefix) or prefix.startswith(name)
                all_before = name < start_after and not start_after.startswith(name)
                if could_match and not all_before:
                    self._walk(bucket, Path(entry.path), name, prefix, start_after, limit, found)
            elif name.startswith(prefix) and name > start_after:
                try:
                    validate_key(name)
                    st = entry.stat(follow_symlinks=False)
                except (InvalidNameError, FileNotFoundError):
                    continue  # a stray file, or deleted while listing
                found.append(_info(bucket, name, st))


def _info(bucket: str, key: str, st: os.stat_result, checksum: str | None = None) -> ObjectInfo:
    # No checksum when reading: it is only known while writing and this store keeps no metadata.
    return ObjectInfo(
        bucket=bucket,
        key=key,
        size=st.st_size,
        last_modified=datetime.fromtimestamp(st.st_mtime, UTC),
        checksum=checksum,
        etag=_etag(st),
    )


def _etag(st: os.stat_result) -> str:
    """The file's identity. The mtime alone cannot tell versions apart: it ticks coarsely (a
    few milliseconds on Linux), and a same-size replacement within one tick keeps size and
    mtime. The inode can: every write is a new file renamed over the old one, which still
    exists when the new file is created, so the two never share an inode."""
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


def _write_piece(file: ObjectFile, hasher: hashlib._Hash | None, piece: bytes | bytearray) -> None:
    if piece:
        file.write(piece)
        if hasher is not None:
            hasher.update(piece)


def _in_the_way(target: Path, depth: int) -> bool:
    """Whether `target` is a directory or one of its `depth - 1` parents below the bucket
    is not one (an object `a` stands in the way of `a/b`, a prefix `a/` in that of `a`)."""
    for level, path in enumerate([target, *target.parents[: depth - 1]]):
        try:
            is_dir = stat_mode.S_ISDIR(os.lstat(path).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if is_dir == (level == 0):
            return True
    return False


def _discard(file: ObjectFile, tmp_path: Path) -> None:
    file.close()
    tmp_path.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a worker thread. If the caller is cancelled meanwhile, it still waits
    for the thread to finish before going on (to its cleanup): a thread cannot be stopped,
    and the file it writes must not be closed or its staging buffer reused under it."""
    future = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # retrieved: the caller goes on with its cancellation
        raise


def _discard_begun(future: asyncio.Future[tuple[ObjectFile, Path]]) -> None:
    if not future.cancelled() and future.exception() is None:
        _discard(*future.result())


def _close_after(read: asyncio.Future[bytes], file: ObjectReader) -> None:
    if not read.cancelled():
        read.exception()
    file.close()


async def _opened(opening: Awaitable[ObjectReader]) -> ObjectReader:
    """The file a thread opens. If the caller is cancelled meanwhile (e.g. a read-ahead that
    a failed verification stops), the thread still finishes opening it: the file is then
    closed as soon as it is there, instead of being left to the garbage collector."""
    future = asyncio.ensure_future(opening)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        future.add_done_callback(_close_opened)
        raise


def _close_opened(future: asyncio.Future[ObjectReader]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()
