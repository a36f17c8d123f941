"""Writing and reading object files with O_DIRECT: the bytes go between a page-aligned buffer
and the device, not through the page cache.

A buffered write copies every byte into page-cache pages, which the kernel must allocate and
later write back; for objects that are written once and made durable at once (chunks,
uploads, exports) that is pure cost. Measured on the benchmark VM, 512 MiB in 4 MiB files,
each fsynced: buffered 0.7–1.4 s of system CPU at 300–520 MiB/s; O_DIRECT 0.05 s of system
CPU plus a 0.07 s copy into the aligned buffer, at 1,300–1,460 MiB/s.

O_DIRECT needs the buffer's address, the file offset and the length aligned to the device's
logical block. Data passes through a pooled page-aligned staging buffer; the last block is
written padded with zeros and the file then truncated to its size. Where the filesystem
refuses O_DIRECT (tmpfs on older kernels, some FUSE filesystems, or a device whose block
is larger than a page), the file falls back to plain buffered writes, as before.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import threading
from typing import Self

__all__ = ["ALIGN", "STAGING_BYTES", "ObjectFile", "ObjectReader"]

#: Alignment of memory, offsets and lengths: the page size covers every common device.
ALIGN = 4096
#: Size of one staging buffer (the chunk size: a chunk is one write).
STAGING_BYTES = 4 * 1024 * 1024
#: Staging buffers kept for reuse once released: reused pages are already mapped, so a
#: write does not pay page faults for fresh memory.
_POOL_MAX = 8
_O_DIRECT: int = getattr(os, "O_DIRECT", 0)

_pool: list[mmap.mmap] = []
_pool_lock = threading.Lock()


def _take_buffer() -> mmap.mmap:
    with _pool_lock:
        if _pool:
            return _pool.pop()
    return mmap.mmap(-1, STAGING_BYTES)  # anonymous mappings are page-aligned


def _give_buffer(buffer: mmap.mmap) -> None:
    with _pool_lock:
        if len(_pool) < _POOL_MAX:
            _pool.append(buffer)
            return
    buffer.close()


def _is_refusal(exc: OSError) -> bool:
    return exc.errno in (errno.EINVAL, errno.EOPNOTSUPP)


def _ask_direct(fd: int) -> bool:
    """Set O_DIRECT on `fd`; False where the platform or the filesystem refuses it."""
    if not _O_DIRECT:
        return False
    try:
        _set_flags(fd, _fcntl_flags(fd) | _O_DIRECT)
    except OSError as exc:
        if not _is_refusal(exc):
            raise
        return False
    return True


class ObjectFile:
    """A new file being written front to back (blocking: worker threads only).

    `direct=True` asks for O_DIRECT; whether it is used is `self.direct` (False where the
    filesystem refuses it). `align` is the padding of the last block (tests make it 1 to
    have the kernel refuse a write and see the fallback). `write` takes pieces of any size;
    `flush` writes what is staged, after which the file holds exactly the bytes written. Not
    thread-safe: one writer at a time (the store's awaits keep a stream's writes in order).
    """

    def __init__(self, fd: int, *, direct: bool, align: int = ALIGN) -> None:
        self._fd = fd
        self._align = align
        self.size = 0
        self._offset = 0  # where the staged bytes start in the file
        self._buffer: mmap.mmap | None = None
        self._staged = 0
        self.direct = direct and _ask_direct(fd)

    def fileno(self) -> int:
        return self._fd

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        self.size += len(view)
        if self._buffer is None and self.direct:
            self._buffer = _take_buffer()
        while view and self.direct:
            take = min(STAGING_BYTES - self._staged, len(view))
            self._buffer[self._staged:self._staged + take] = view[:take]  # type: ignore[index]
            self._staged += take
            view = view[take:]
            if self._staged == STAGING_BYTES:
                self._write_staged(STAGING_BYTES)  # may fall back to buffered writes
        if view:
            _write_all(self._fd, view)  # buffered (from the start, or after a fallback)

    def flush(self) -> None:
        """Write what is staged: the last block padded with zeros, then the file truncated
        to the bytes written."""
        if not self._staged:
            return
        assert self._buffer is not None
        padded = -(-self._staged // self._align) * self._align
        self._buffer[self._staged:padded] = bytes(padded - self._staged)
        self._write_staged(padded)
        os.ftruncate(self._fd, self.size)

    def close(self) -> None:
        """Close the file and give the staging buffer back. Callers make sure no other thread
        is still writing (the store waits for a cancelled write's thread first)."""
        try:
            if self._buffer is not None:
                buffer, self._buffer = self._buffer, None
                _give_buffer(buffer)
        finally:
            if self._fd >= 0:
                fd, self._fd = self._fd, -1
                os.close(fd)

    def _write_staged(self, length: int) -> None:
        assert self._buffer is not None
        staged = memoryview(self._buffer)[:length]
        try:
            try:
                _write_all(self._fd, staged)
            except OSError as exc:
                if not _is_refusal(exc):
                    raise
                # The device wants a larger alignment: go on buffered, rewriting the piece
                # from its start (a refused write may follow a short one).
                _set_flags(self._fd, _fcntl_flags(self._fd) & ~_O_DIRECT)
                self.direct = False
                os.lseek(self._fd, self._offset, os.SEEK_SET)
                _write_all(self._fd, staged)
        finally:
            staged.release()
        self._offset += length
        self._staged = 0


class ObjectReader:
    """An object file read front to back from `position` (blocking: worker threads only).

    With `direct=True` (and a filesystem that takes it), reads bypass the page cache: whole
    aligned blocks go from the device into a pooled page-aligned buffer, and the bytes asked
    for are copied out of it; a read is one copy, as through the page cache, without the
    page-cache pages to allocate and reclaim. Objects are read once per stream (a chunk's
    verification, an export, a download), so there is nothing to cache. Otherwise, or once
    the kernel refuses an O_DIRECT read, plain reads.
    """

    def __init__(self, fd: int, *, direct: bool, position: int = 0) -> None:
        self._fd = fd
        self.position = position
        self.direct = direct and _ask_direct(fd)

    def fileno(self) -> int:
        return self._fd

    def read(self, size: int) -> bytes:
        """Up to `size` bytes from the current position (fewer only at the end)."""
        parts: list[bytes] = []
        wanted = size
        while wanted > 0:
            part = self._read_some(wanted)
            if not part:
                break
            parts.append(part)
            self.position += len(part)
            wanted -= len(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def readall(self) -> bytes:
        return self.read(max(os.fstat(self._fd).st_size - self.position, 0))

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_some(self, wanted: int) -> bytes:
        if not self.direct:
            return os.pread(self._fd, wanted, self.position)
        start = self.position - self.position % ALIGN
        skip = self.position - start
        span = min(-(-(skip + wanted) // ALIGN) * ALIGN, STAGING_BYTES)
        buffer = _take_buffer()
        try:
            with memoryview(buffer) as view:
                try:
                    got = os.preadv(self._fd, [view[:span]], start)
                except OSError as exc:
                    if not _is_refusal(exc):
                        raise
                    # The device wants a larger alignment: read through the page cache.
                    _set_flags(self._fd, _fcntl_flags(self._fd) & ~_O_DIRECT)
                    self.direct = False
                    return os.pread(self._fd, wanted, self.position)
                return bytes(view[skip:min(got, skip + wanted)]) if got > skip else b""
        finally:
            _give_buffer(buffer)


def _write_all(fd: int, view: memoryview) -> None:
    done = 0
    while done < len(view):
        done += os.write(fd, view[done:])


def _fcntl_flags(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_GETFL)


def _set_flags(fd: int, flags: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETFL, flags)
