"""Process-wide tuning for the data plane, applied by the processes that move image data.

The chunk store allocates and frees 4 MiB buffers at a high rate (a chunk read, its
plaintext, its sealed copy). With glibc's defaults such buffers come from fresh `mmap`s or
from heap memory that `free` soon hands back to the kernel, so every chunk's pages are
faulted in and zeroed anew: about 0.3–1 CPU s/GiB on the VMs this project runs on (minor
page faults per GiB moved, measured with `getrusage`: 80,000–460,000 by default, none once
tuned). Serving them from heap memory that is kept for reuse costs nothing per chunk.

The bound on kept memory is `_TRIM_BYTES` per arena and `_ARENAS` arenas; a process's peak
RSS during a 4 GiB transfer stays under 200 MB (DESIGN §4). One arena, shared by every
thread: each further arena kept its own free chunks for reuse (peak RSS of the chunk store's
1 GiB phases 171–191 MiB with two, 158–166 MiB with one), and the threads' few allocations per
4 MiB chunk do not contend for it (the same rates and CPU seconds per GiB, four interleaved
pairs of the chunk store's phases and three of the re-encrypting replication).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["freeze_startup_objects", "gc_paused", "tune_allocator"]

MiB = 1024 * 1024
# mallopt(3) parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
#: Buffers up to this size come from the heap (a sealed chunk is 4 MiB + 28 bytes).
_MMAP_BYTES = 8 * MiB
#: Free memory a heap keeps before giving it back.
_TRIM_BYTES = 32 * MiB
#: Arenas: worker threads share this one instead of one heap each.
_ARENAS = 1


def tune_allocator() -> bool:
    """Keep chunk-sized buffers on reused heap memory (glibc only; call it early, before
    worker threads start). Returns whether the settings took effect."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = ((_M_MMAP_THRESHOLD, _MMAP_BYTES), (_M_TRIM_THRESHOLD, _TRIM_BYTES), (_M_ARENA_MAX, _ARENAS))
    return all(mallopt(param, value) == 1 for param, value in settings)


def freeze_startup_objects() -> int:
    """Move everything alive now (the schema, SQLAlchemy's metadata and compiled statements,
    imported modules) out of the cyclic garbage collector's reach; returns how many objects.

    Called once a process has started. Without it every full collection walks those
    hundreds of thousands of long-lived objects again: with a request or job allocating row
    objects at a high rate, collections of about 90 ms recur (measured on the image-list CSV:
    27k rows/s, 42k once frozen). Objects made later are collected as usual."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while the block runs, for a block that makes many
    container objects which stay alive until it ends and form no cycles (a page of rows
    decoded from JSON: tens of thousands of lists). With it on, a collection ran every 700 of
    them and walked them all again to free nothing (reference counting frees them after the
    block); on the image-list CSV's 5,000-row pages that took 2-4 times the decoding itself.

    Process-wide, as the collector is: the other threads allocate without collections for
    that time, and garbage with cycles made meanwhile waits for the next collection after it.
    Nested and concurrent blocks keep it off until the last ends; a collector that was off
    before stays off."""
    global _gc_pausers, _gc_was_enabled
    with _gc_lock:
        if _gc_pausers == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_was_enabled:
                gc.enable()
