"""Writing a whole object's bytes to a file, bypassing the page cache where the filesystem can.

Objects are written once, fsynced, and seldom read back soon (a chunk is read when an image
is exported or copied). Through the page cache each byte costs a copy into freshly allocated
cache pages and, at fsync, the writeback of those pages; with `O_DIRECT` the device reads the
bytes from a small staging buffer instead, and fsync only has metadata left to flush. On the
2-vCPU VMs this project runs on that is ~0.1 CPU s/GiB instead of 1.2–2.5 (README,
"Performance").

`O_DIRECT` needs the buffer, the file offset and the length aligned to the device's logical
block size. The bytes are staged through a page-aligned buffer of one chunk (a whole 4 MiB
chunk is one device request: with 1 MiB requests four writers got 270–440 MiB/s from this
VM's disk, with 4 MiB ones 420–800), the aligned prefix written directly and the short tail
(under one block) through the page cache, which the fsync that follows flushes. At most
`_KEPT_BUFFERS` staging buffers are kept for reuse. Filesystems that refuse `O_DIRECT` (tmpfs on older kernels,
some FUSE or network filesystems) get buffered writes: the first refusal switches direct I/O
off for the store.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import threading

__all__ = ["DIRECT_ALIGN", "DIRECT_MIN_BYTES", "read_all", "write_all"]

#: Alignment of offsets and lengths; one page covers every common logical block size.
DIRECT_ALIGN = 4096
#: Objects smaller than this stay on the page cache: a synchronous device write would cost
#: them more than the copy it saves.
DIRECT_MIN_BYTES = 256 * 1024
#: A staging buffer: one chunk (app.datastore.chunks.CHUNK_SIZE) per device request, and
#: room to read a sealed chunk (4 MiB + 28 bytes) rounded up to a whole block in one.
_STAGING_BYTES = 4 * 1024 * 1024
_READ_STAGING_BYTES = _STAGING_BYTES + DIRECT_ALIGN
#: Staging buffers kept between writes (more writers at once allocate and drop their own).
_KEPT_BUFFERS = 4

_O_DIRECT: int = getattr(os, "O_DIRECT", 0)
#: `os.write`, through a name of this module so that tests can fake refusals.
_write = os.write
_preadv = os.preadv


_kept: list[mmap.mmap] = []
_kept_lock = threading.Lock()


def _borrow() -> mmap.mmap:
    with _kept_lock:
        if _kept:
            return _kept.pop()
    # Anonymous mappings are page-aligned.
    return mmap.mmap(-1, _READ_STAGING_BYTES)


def _give_back(buffer: mmap.mmap) -> None:
    with _kept_lock:
        if len(_kept) < _KEPT_BUFFERS:
            _kept.append(buffer)
            return
    buffer.close()


def _set_direct(fd: int, on: bool) -> None:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | _O_DIRECT if on else flags & ~_O_DIRECT)


def write_all(fd: int, data: bytes | memoryview, *, direct: bool) -> bool:
    """Write `data` at the start of the empty file `fd` (opened for writing, not appending).

    With `direct`, the aligned prefix of an object of at least DIRECT_MIN_BYTES goes through
    O_DIRECT. Returns whether direct I/O is still worth trying on this filesystem (False
    once it refused it). The caller fsyncs.
    """
    view = memoryview(data).cast("B")
    done = 0
    aligned = len(view) - len(view) % DIRECT_ALIGN
    if direct and _O_DIRECT and len(view) >= DIRECT_MIN_BYTES:
        try:
            _set_direct(fd, True)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            direct = False
        else:
            try:
                done = _write_direct(fd, view, aligned)
            finally:
                _set_direct(fd, False)
            direct = done == aligned
    while done < len(view):
        done += _write(fd, view[done:])
    return direct


def _write_direct(fd: int, view: memoryview, aligned: int) -> int:
    """Write `view[:aligned]` through O_DIRECT; returns the bytes written, fewer when the
    filesystem refused an aligned write (EINVAL) and the rest must be written buffered."""
    staging = _borrow()
    try:
        return _stage_and_write(fd, view, aligned, staging)
    finally:
        _give_back(staging)


def _stage_and_write(fd: int, view: memoryview, aligned: int, staging: mmap.mmap) -> int:
    done = 0
    target = memoryview(staging)
    try:
        while done < aligned:
            size = min(_STAGING_BYTES, aligned - done)
            piece = target[:size]
            piece[:] = view[done : done + size]
            try:
                written = _write(fd, piece)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                return done
            finally:
                piece.release()
            done += written
            if written % DIRECT_ALIGN:
                # A short write left the offset unaligned: finish through the page cache.
                return done
        return done
    finally:
        target.release()


def read_all(fd: int, size: int, *, direct: bool) -> tuple[bytes, bool]:
    """The `size` bytes of the file `fd` (an object: it does not change), and whether direct
    I/O is still worth trying on this filesystem.

    With `direct`, an object of DIRECT_MIN_BYTES up to one staging buffer (a chunk, sealed or
    not) is read with O_DIRECT in one device request into a staging buffer, then copied once
    into the result: objects written with O_DIRECT are not in the page cache, and filling it
    costs more than the copy (four readers of such chunks on this VM: 390-450 MiB/s through
    the page cache, 630-900 MiB/s direct). Anything else is read through the page cache.
    """
    if direct and _O_DIRECT and DIRECT_MIN_BYTES <= size and _aligned_up(size) <= _READ_STAGING_BYTES:
        try:
            _set_direct(fd, True)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            direct = False
        else:
            try:
                data = _read_direct(fd, size)
            finally:
                _set_direct(fd, False)
            if data is not None:
                return data, True
            direct = False
    return _read_buffered(fd, size), direct


def _read_direct(fd: int, size: int) -> bytes | None:
    """None when the filesystem refused the aligned read (EINVAL)."""
    staging = _borrow()
    try:
        with memoryview(staging) as target:
            with target[: _aligned_up(size)] as piece:
                try:
                    got = _preadv(fd, [piece], 0)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    return None
            if got != size:
                return None  # an unexpected short read: read it again the ordinary way
            with target[:size] as read:
                return bytes(read)
    finally:
        _give_back(staging)


def _aligned_up(size: int) -> int:
    return -(-size // DIRECT_ALIGN) * DIRECT_ALIGN


def _read_buffered(fd: int, size: int) -> bytes:
    pieces = []
    offset = 0
    while True:
        piece = os.pread(fd, max(size - offset, 1024 * 1024), offset)
        if not piece:
            break
        pieces.append(piece)
        offset += len(piece)
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)
