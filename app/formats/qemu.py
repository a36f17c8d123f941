"""qemu-img as a subprocess: convert, info and create, never on an uninspected file.

Every call names the format explicitly (`-f`/`-O`, never probing), opens the source with
backing files disabled (`"backing": null`, a second line of defence behind inspection),
and runs under CPU-time and address-space limits. Cancelling a call kills qemu-img.

Errors:

    QemuImgError        qemu-img failed or was killed; `returncode`, `stderr_tail`,
    │                   `out_of_space` (a full disk, not a bad file)
    └── ConversionError convert failed; the partial destination has been removed

The stderr tail of a conversion names its files "source" and "target", not by their paths
under the data directory: it reaches the job's error message, which the image's owner reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Final

from app.formats.types import DiskFormat, FormatError, GiB
from app.scratch import private_dir

__all__ = [
    "ConversionError",
    "QemuImgError",
    "confirm",
    "convert",
    "create",
    "free_bytes",
    "info",
    "measure",
    "qemu_format",
    "raw_pieces",
    "temporary_workfile",
]

# qemu's driver names. An ISO is plain bytes, so it is read with the raw driver.
_DRIVERS: Final[dict[DiskFormat, str]] = {
    DiskFormat.RAW: "raw",
    DiskFormat.QCOW2: "qcow2",
    DiskFormat.VMDK: "vmdk",
    DiskFormat.VHD: "vpc",
    DiskFormat.VHDX: "vhdx",
    DiskFormat.ISO: "raw",
}

# Output options per format. VHD: without force_size qemu rounds the size to a CHS
# geometry and the exported disk would not be the image's size. VMDK: streamOptimized is
# the single-file, compressed variant cloud platforms and VMware import.
_CREATE_OPTIONS: Final[dict[DiskFormat, tuple[str, ...]]] = {
    DiskFormat.VHD: ("-o", "force_size=on"),
    DiskFormat.VMDK: ("-o", "subformat=streamOptimized"),
}

_STDERR_TAIL: Final = 2000
# qemu-img reports errno as strerror, in English under LC_ALL=C.
_NO_SPACE: Final = ("No space left on device", "Disk quota exceeded")
# A failed convert whose target's filesystem has less than this left ran out of space, even
# when qemu-img does not say so (VHD: "Unable to create or write VHD header"; VMDK aborts on
# an assertion).
_FULL_BELOW: Final = 1024 * 1024
_INFO_CPU_SECONDS: Final = 30
#: Bytes of raw disk `raw_pieces` has qemu-img convert at a time: a conversion to raw takes
#: two of these of scratch space, whatever the disk's size.
RAW_WINDOW: Final = 256 * 1024 * 1024

# Applies the limits, then becomes qemu-img. An exec'd interpreter rather than a
# preexec_fn, which is not safe in a process that runs threads (asyncio.to_thread does).
_LIMITS_SHIM: Final = (
    "import os, resource, sys\n"
    "cpu, mem = int(sys.argv[1]), int(sys.argv[2])\n"
    "resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))\n"
    "resource.setrlimit(resource.RLIMIT_AS, (mem, mem))\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


class QemuImgError(Exception):
    """qemu-img exited with an error (or was killed by a resource limit)."""

    def __init__(self, message: str, *, returncode: int | None, stderr_tail: str, out_of_space: bool = False) -> None:
        super().__init__(f"{message}: {stderr_tail}" if stderr_tail else message)
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        self.out_of_space = out_of_space or any(text in stderr_tail for text in _NO_SPACE)


class ConversionError(QemuImgError):
    """`qemu-img convert` failed; the partial destination file has been removed."""


def qemu_format(fmt: DiskFormat) -> str:
    """qemu's driver name for a format (VHD is `vpc`)."""
    return _DRIVERS[fmt]


def _source(path: Path) -> str:
    # A json: filename is the only way to pass `"backing": null` alongside -f.
    spec = {"backing": None, "file": {"driver": "file", "filename": str(path.resolve())}}
    return "json:" + json.dumps(spec)


def _target(path: Path) -> str:
    # qemu reads "proto:..." in a relative name as a protocol (nbd:, ssh:, ...); an
    # absolute path starts with '/' and is always a plain file.
    return str(path.absolute())


def _qemu_img() -> str:
    found = shutil.which("qemu-img")
    if found is None:
        raise QemuImgError("qemu-img not found on PATH", returncode=None, stderr_tail="")
    return found


async def _run(args: Sequence[str], *, cpu_seconds: int, memory_bytes: int, what: str) -> bytes:
    """Run qemu-img under limits; return its stdout or raise QemuImgError."""
    argv = [
        sys.executable, "-I", "-S", "-c", _LIMITS_SHIM,
        str(cpu_seconds), str(memory_bytes), _qemu_img(), *args,
    ]  # fmt: skip
    # Few malloc arenas: qemu-img's worker threads would otherwise each reserve 64 MiB of
    # address space and trip RLIMIT_AS long before using real memory.
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "LC_ALL": "C"}
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        stdout, stderr = await proc.communicate()
    except BaseException:
        # Cancelled (or anything else): do not leave qemu-img running.
        if proc.returncode is None:
            proc.kill()
            await asyncio.shield(proc.wait())
        raise
    if proc.returncode != 0:
        tail = stderr.decode("utf-8", "replace").strip()[-_STDERR_TAIL:]
        raise QemuImgError(f"qemu-img {what} failed", returncode=proc.returncode, stderr_tail=tail)
    return stdout


async def _unlink(path: Path) -> None:
    # Deleting a large file can take a while on some filesystems; the thread finishes
    # the job even if this await is cancelled.
    await asyncio.to_thread(path.unlink, missing_ok=True)


async def convert(
    src: Path,
    src_format: DiskFormat,
    dst: Path,
    dst_format: DiskFormat,
    *,
    cpu_seconds: int = 3600,
    memory_bytes: int = 1 * GiB,
) -> None:
    """Convert `src` (already inspected and found safe) into `dst` in `dst_format`.

    Raises ConversionError with qemu-img's stderr tail; `dst` is then removed, also when
    the call is cancelled.
    """
    if dst_format is DiskFormat.ISO:
        raise ValueError("cannot convert to ISO")
    # writeback: flushed once at the end, and works on tmpfs (O_DIRECT, `none`, not).
    await _convert(src, _source(src), qemu_format(src_format), dst, dst_format, target_cache="writeback",
                   cpu_seconds=cpu_seconds, memory_bytes=memory_bytes)


async def _convert(
    src: Path, spec: str, driver: str, dst: Path, dst_format: DiskFormat, *, target_cache: str,
    cpu_seconds: int = 3600, memory_bytes: int = 1 * GiB,
) -> None:
    """`qemu-img convert` of the source `spec` (a json: filename of `src`, read by `driver`)."""
    args = [
        "convert",
        "-f", driver,
        "-O", qemu_format(dst_format),
        *_CREATE_OPTIONS.get(dst_format, ()),
        "-t", target_cache,
        "-T", "writeback",
        spec,
        _target(dst),
    ]  # fmt: skip
    try:
        await _run(args, cpu_seconds=cpu_seconds, memory_bytes=memory_bytes, what="convert")
    except QemuImgError as exc:
        full = await asyncio.to_thread(_nearly_full, dst.parent)
        await _unlink(dst)
        tail = exc.stderr_tail
        for named, as_ in ((args[-2], "source"), (args[-1], "target"), (str(src), "source")):
            tail = tail.replace(named, as_)
        raise ConversionError(
            "qemu-img convert failed", returncode=exc.returncode, stderr_tail=tail, out_of_space=full
        ) from exc
    except BaseException:
        await asyncio.shield(_unlink(dst))
        raise


def _window(path: Path, fmt: DiskFormat, offset: int, size: int) -> str:
    """The json: filename of the raw bytes `[offset, offset + size)` of the disk `path` holds
    in `fmt` (qemu's raw driver over the format's, backing files disabled as `_source` does)."""
    spec = {
        "driver": "raw", "offset": offset, "size": size,
        "file": {"driver": qemu_format(fmt), "backing": None,
                 "file": {"driver": "file", "filename": str(path.resolve())}},
    }  # fmt: skip
    return "json:" + json.dumps(spec)


async def raw_pieces(
    src: Path, src_format: DiskFormat, virtual_size: int, work_dir: Path, *, piece_size: int,
    window: int | None = None,
) -> AsyncGenerator[bytes, None]:
    """The raw disk of `src`, a `src_format` file inspected and confirmed (`confirm`, whose
    answer `virtual_size` is), in `piece_size` pieces, the last one shorter.

    qemu-img converts the disk one window of `window` bytes (`RAW_WINDOW`) at a time into a
    private work file under `work_dir`, the next window while this one's pieces are consumed:
    the scratch space a conversion takes is two windows, whatever the disk's size and however
    densely its data expands (a compressed cluster of a few bytes, clusters sharing one
    offset), where converting the whole disk first would take the whole raw disk. Ranges the
    work file holds as holes are not read (`SEEK_DATA`): they come as zeros.

    Raises ConversionError as `convert` does (the work files are removed, also when the
    consumer stops early or is cancelled: qemu-img is killed)."""
    window = window or RAW_WINDOW
    if piece_size <= 0 or piece_size % 512 or window % piece_size:
        raise ValueError("pieces must be whole sectors and windows whole pieces")
    if virtual_size % 512:
        raise ValueError(f"a disk of {virtual_size} bytes is not whole sectors")
    zero = bytes(piece_size)
    async with temporary_workfile(work_dir, ".raw") as first, temporary_workfile(work_dir, ".raw") as second:
        files = (first, second)

        def start(number: int) -> asyncio.Task[None] | None:
            offset = number * window
            if offset >= virtual_size:
                return None
            size = min(window, virtual_size - offset)
            return asyncio.ensure_future(_convert(
                src, _window(src, src_format, offset, size), "raw", files[number % 2], DiskFormat.RAW,
                target_cache="unsafe"))  # read at once and removed: nothing to flush

        ahead = start(0)
        number = 0
        try:
            while ahead is not None:
                await ahead
                size = min(window, virtual_size - number * window)
                path = files[number % 2]
                number += 1
                ahead = start(number)  # the next window converts while this one is read
                async for piece in _window_pieces(path, size, piece_size, zero):
                    yield piece
                await asyncio.to_thread(os.truncate, path, 0)  # its space back before the next
        finally:
            if ahead is not None:
                ahead.cancel()
                await asyncio.wait([ahead])  # qemu-img killed and its output removed
                if not ahead.cancelled():
                    ahead.exception()


async def _window_pieces(path: Path, size: int, piece_size: int, zero: bytes) -> AsyncGenerator[bytes, None]:
    fd = await asyncio.to_thread(os.open, path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        written = (await asyncio.to_thread(os.fstat, fd)).st_size
        if written != size:
            raise ConversionError("qemu-img convert wrote another size", returncode=0,
                                  stderr_tail=f"{written} bytes for a window of {size}")
        for offset in range(0, size, piece_size):
            length = min(piece_size, size - offset)
            piece = await asyncio.to_thread(_read_piece, fd, offset, length)
            yield (zero if length == piece_size else zero[:length]) if piece is None else piece
    finally:
        await asyncio.to_thread(os.close, fd)


def _read_piece(fd: int, offset: int, length: int) -> bytes | None:
    """The `length` bytes at `offset`, None when they all lie in a hole."""
    try:
        data = os.lseek(fd, offset, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno != errno.ENXIO:  # ENXIO: no data from `offset` to the end
            raise
        return None
    if data >= offset + length:
        return None
    parts: list[bytes] = []
    while length:
        part = os.pread(fd, length, offset)
        if not part:
            raise ConversionError("qemu-img convert wrote a short file", returncode=0, stderr_tail="")
        parts.append(part)
        offset += len(part)
        length -= len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _nearly_full(directory: Path) -> bool:
    try:
        found = os.statvfs(directory)
    except OSError:
        return False
    return found.f_bavail * found.f_frsize < _FULL_BELOW


async def info(
    path: Path,
    fmt: DiskFormat,
    *,
    cpu_seconds: int = _INFO_CPU_SECONDS,
    memory_bytes: int = 1 * GiB,
) -> dict[str, Any]:
    """`qemu-img info --output=json` of an inspected file, with its format given."""
    out = await _run(
        ["info", "--output=json", "-f", qemu_format(fmt), _source(path)],
        cpu_seconds=cpu_seconds,
        memory_bytes=memory_bytes,
        what="info",
    )
    parsed = json.loads(out)
    if not isinstance(parsed, dict):
        raise QemuImgError("qemu-img info returned no object", returncode=0, stderr_tail="")
    return parsed


def _unreadable(what: str, path: Path, exc: QemuImgError) -> ConversionError:
    """A file qemu-img cannot read, asked about before converting it: what its conversion would
    have failed with, the file named "source"."""
    tail = exc.stderr_tail
    for named in (_source(path), str(path.resolve()), str(path)):
        tail = tail.replace(named, "source")
    return ConversionError(f"qemu-img {what} failed", returncode=exc.returncode, stderr_tail=tail,
                           out_of_space=exc.out_of_space)


async def confirm(path: Path, fmt: DiskFormat, virtual_size: int) -> int:
    """qemu-img's own reading of a file inspection accepted, right before it converts it: it
    must name no backing file, no external data file and no extent in another file, and read
    a virtual size no larger than `virtual_size` (inspection's, which the limits were checked
    against). A second line of defence behind inspection, as OpenStack added after
    OSSA-2024-001: where the two disagree (a VMDK's footer and a VHD's sizes once did),
    FormatError UNSAFE_IMAGE_FILE before qemu-img writes anything; ConversionError when
    qemu-img cannot read it at all. Raw files (and ISOs, read as raw) name nothing and are as
    large as they are: nothing to ask. Returns the virtual size qemu-img reads (the size of
    the raw disk its conversion writes)."""
    if qemu_format(fmt) == "raw":
        return virtual_size
    try:
        described = await info(path, fmt)
    except QemuImgError as exc:
        raise _unreadable("info", path, exc) from exc
    reasons: list[str] = []
    if described.get("backing-filename") or described.get("full-backing-filename"):
        reasons.append("a backing file")
    specific = described.get("format-specific")
    data = specific.get("data") if isinstance(specific, dict) else None
    data = data if isinstance(data, dict) else {}
    if data.get("data-file"):
        reasons.append("an external data file")
    own = str(path.resolve())
    extents = data.get("extents") or []
    if not isinstance(extents, list) or any(not isinstance(e, dict) or e.get("filename") != own for e in extents):
        reasons.append("an extent in another file")
    size = described.get("virtual-size")
    if not isinstance(size, int) or size > virtual_size:
        reasons.append(f"a virtual size of {size} bytes where inspection read {virtual_size}")
    if reasons:
        raise FormatError("UNSAFE_IMAGE_FILE", "qemu-img reads the file otherwise than inspection did: it finds "
                          + ", ".join(reasons) + ".", reasons=tuple(reasons))
    assert isinstance(size, int)
    return size


async def measure(path: Path, fmt: DiskFormat) -> int:
    """Bytes a conversion of the inspected `path` takes on disk, as `qemu-img measure` reckons
    a qcow2 of it (its data, expanded, and metadata: about what a VHD, VHDX or VMDK of it takes
    too, a compressed VMDK less), without writing anything. ConversionError when qemu-img
    cannot read the file, as its conversion would fail."""
    try:
        out = await _run(["measure", "--output=json", "-f", qemu_format(fmt), "-O", "qcow2", _source(path)],
                         cpu_seconds=_INFO_CPU_SECONDS, memory_bytes=1 * GiB, what="measure")
    except QemuImgError as exc:
        raise _unreadable("measure", path, exc) from exc
    required = json.loads(out).get("required") if out.strip().startswith(b"{") else None
    if not isinstance(required, int):
        raise ConversionError("qemu-img measure gave no size", returncode=0, stderr_tail="")
    return required


def free_bytes(directory: Path) -> int:
    """Bytes an unprivileged process may still write on `directory`'s filesystem."""
    found = os.statvfs(directory)
    return found.f_bavail * found.f_frsize


async def create(path: Path, fmt: DiskFormat, size: int) -> None:
    """Create an empty image of `size` bytes (tests, demo data)."""
    if fmt is DiskFormat.ISO:
        raise ValueError("cannot create an ISO")
    # Only force_size applies to an empty image; streamOptimized VMDKs are not writable.
    options = _CREATE_OPTIONS[fmt] if fmt is DiskFormat.VHD else ()
    args = ["create", "-q", "-f", qemu_format(fmt), *options, _target(path), str(size)]
    await _run(args, cpu_seconds=_INFO_CPU_SECONDS, memory_bytes=1 * GiB, what="create")


def _mkstemp(dir: Path, suffix: str) -> tuple[int, str]:
    return tempfile.mkstemp(suffix=suffix, dir=private_dir(dir))


@contextlib.asynccontextmanager
async def temporary_workfile(dir: Path, suffix: str = "") -> AsyncIterator[Path]:
    """A fresh, private (0600) file under `dir`, deleted on exit, error or cancellation, and
    by the next user of `dir` when its process is killed (it lies in the process's
    `private_dir`)."""
    fd, name = await asyncio.to_thread(_mkstemp, dir, suffix)
    os.close(fd)
    path = Path(name)
    try:
        yield path
    finally:
        await asyncio.shield(_unlink(path))
