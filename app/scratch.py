"""Scratch directories that do not outlive their process.

A temporary file is deleted when the code that made it exits, errors or is cancelled — but
not when its process is killed (kill -9, OOM killer, power loss), and a conversion's files are
as big as the image. So each process puts its temporary files in a subdirectory of its own,
on which it holds an exclusive `flock` for as long as it lives; the kernel drops the lock when
the process dies, however it dies. Every process sharing the root (the API server's workers,
`ims worker` processes) removes, each time it asks for its directory, the subdirectories whose
lock it can take: those of dead processes. A lock on the root itself serialises these sweeps
with the creation of a new subdirectory, which is locked before anyone can see it unlocked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

_LOCK = ".lock"
#: This process's directory under each root, with the descriptor holding its lock open.
_mine: dict[Path, tuple[Path, int]] = {}
_guard = threading.Lock()


@contextlib.contextmanager
def _exclusive(path: Path, *, wait: bool) -> Iterator[int | None]:
    """Hold an exclusive flock on `path` (created if missing); None when `wait` is False and
    another process holds it."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield None
            return
        yield fd
    finally:
        os.close(fd)


def _sweep(root: Path, keep: Path | None) -> None:
    for entry in root.iterdir():
        if entry == keep or not entry.is_dir() or entry.is_symlink():
            continue
        with _exclusive(entry / _LOCK, wait=False) as free:
            if free is not None:  # its process is gone
                shutil.rmtree(entry, ignore_errors=True)


def private_dir(root: Path) -> Path:
    """This process's own subdirectory of `root` (mode 0700), after removing those of dead
    processes. Blocking (file locks, directory walks): call it in a thread."""
    with _guard:
        root.mkdir(parents=True, exist_ok=True)
        with _exclusive(root / _LOCK, wait=True):
            found = _mine.get(root)
            if found is not None and not found[0].is_dir():  # removed under us: start afresh
                os.close(found[1])
                found = None
            _sweep(root, found[0] if found else None)
            if found is None:
                path = Path(tempfile.mkdtemp(prefix=f"p{os.getpid()}-", dir=root))
                fd = os.open(path / _LOCK, os.O_CREAT | os.O_RDWR, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                found = _mine[root] = (path, fd)
            return found[0]
