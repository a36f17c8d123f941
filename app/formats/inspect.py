"""Detect a disk image's real format and refuse unsafe files, from the stream's bytes.

Built on oslo.utils' format inspector, the parser OpenStack hardened after the qcow2 and
VMDK CVEs. It parses bytes only: nothing here opens a file named inside an image
(backing file, data file, VMDK extent), and nothing runs qemu-img on an unchecked file.

Errors (one class, told apart by `FormatError.code`):

    FormatError
    ├── UNSUPPORTED_FORMAT   compressed archive, or a format outside DiskFormat; see `hint`
    ├── INVALID_IMAGE_FILE   empty, or a header that claims a format but does not parse
    ├── UNSAFE_IMAGE_FILE    backing/data/extent files, unknown qcow2 features, truncated
    │                        header, several formats at once, virtual size over the limit
    └── FORMAT_MISMATCH      the content is not the declared format (raw = none of the others)
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Final

from oslo_utils.imageutils import format_inspector as fi

from app.formats import _rules
from app.formats.types import DiskFormat, FormatError, FormatErrorCode, Inspection, KiB, MiB, TiB

__all__ = [
    "DEFAULT_HEAD_LIMIT",
    "DEFAULT_MAX_VIRTUAL_SIZE",
    "DiskFormat",
    "FormatError",
    "FormatErrorCode",
    "Inspection",
    "StreamInspector",
    "inspect_file",
    "inspect_file_async",
]


# The largest disk the service accepts (DATA_DISK minDiskGb <= 2048).
DEFAULT_MAX_VIRTUAL_SIZE: Final = 2 * TiB
# How far into the stream header structures may lie. Only VHDX's metadata region can sit
# past the first MiB; memory does not grow with this, only the bytes read before a verdict.
DEFAULT_HEAD_LIMIT: Final = 32 * MiB

# oslo's inspectors give different answers for the same bytes cut differently: VMDK fills
# its text-descriptor window from whatever the first chunk holds (min_length=4), and VHDX
# misses its virtual-size item when the chunk holding it also completed an earlier region.
# Re-cutting the head into fixed blocks makes the verdict independent of the caller's
# chunking: the first block covers oslo's whole 1 MiB descriptor window, and 64 KiB blocks
# (VHDX's metadata table size) keep each VHDX structure out of the chunk that locates it.
_FIRST_BLOCK: Final = 1 * MiB
_BLOCK: Final = 64 * KiB
_READ_SIZE: Final = 1 * MiB


# oslo inspector name -> our format; "gpt" is a raw disk that carries a partition table.
_FROM_OSLO: Final[dict[str, DiskFormat]] = {
    "raw": DiskFormat.RAW,
    "gpt": DiskFormat.RAW,
    "qcow2": DiskFormat.QCOW2,
    "vmdk": DiskFormat.VMDK,
    "vhd": DiskFormat.VHD,
    "vhdx": DiskFormat.VHDX,
    "iso": DiskFormat.ISO,
}


def _waits_on_head(inspector: fi.FileInspector) -> bool:
    # EndCaptureRegions (VMDK footer) complete only at end of stream.
    regions = (inspector.region(name) for name in inspector.context_info)
    return any(not r.complete and not isinstance(r, fi.EndCaptureRegion) for r in regions)


def _waits_on_tail(inspector: fi.FileInspector) -> bool:
    regions = (inspector.region(name) for name in inspector.context_info)
    return any(isinstance(r, fi.EndCaptureRegion) for r in regions)


def _matches(inspector: fi.FileInspector) -> bool:
    try:
        return bool(inspector.format_match)
    except Exception:  # noqa: BLE001 - a parser tripping over hostile bytes is "no match"
        return False


class StreamInspector:
    """Incremental format detection and safety check over a stream.

    Feed the stream's bytes as they arrive, in any chunk sizes; once `needs_more` is
    False (or the stream ended and `finish()` was called), `result()` gives the verdict.
    Memory stays bounded: the head is re-cut into blocks and handed to oslo's inspectors,
    which keep only the regions they parse (at most ~1 MiB each); after the head only a
    VMDK with its header in a footer keeps receiving bytes, and keeps its last 1.5 KiB.

    Usage::

        inspector = StreamInspector(max_virtual_size=limit)
        async for chunk in stream:
            inspector.feed(chunk)
            ...  # checking result() once needs_more is False rejects early
        inspector.finish()
        inspection = inspector.result(declared)
    """

    def __init__(
        self,
        *,
        max_virtual_size: int = DEFAULT_MAX_VIRTUAL_SIZE,
        total_size: int | None = None,
        head_limit: int = DEFAULT_HEAD_LIMIT,
    ) -> None:
        """`total_size`, when known up front, is the stream length (raw virtual size)."""
        self._max_virtual_size = max_virtual_size
        self._total_size = total_size
        self._head_limit = head_limit
        # Raw is the fallback ("none of the others"), not a candidate.
        self._inspectors: dict[str, fi.FileInspector] = {
            name: cls() for name, cls in fi.ALL_FORMATS.items() if name != "raw"
        }
        self._broken: dict[str, str] = {}  # inspector name -> why its parser gave up
        self._lead = bytearray()
        self._pending = bytearray()
        self._received = 0
        self._parsed = 0
        self._head_done = False
        self._tail: list[str] = []
        self._finished = False

    @property
    def needs_more(self) -> bool:
        """True while the verdict still depends on bytes not yet fed."""
        return not self._finished and (not self._head_done or bool(self._tail))

    @property
    def bytes_received(self) -> int:
        return self._received

    def feed(self, data: bytes) -> None:
        """Present the next bytes of the stream."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        if not data:
            return
        self._received += len(data)
        if len(self._lead) < _rules.LEAD_SIZE:
            self._lead += data[: _rules.LEAD_SIZE - len(self._lead)]
            if not self._head_done and _rules.archive_kind(bytes(self._lead[:6])):
                # An archive is refused whatever follows: stop parsing right away.
                self._head_done = True
                self._pending.clear()
        if not self._head_done:
            self._pending += data
            self._drain()
        elif self._tail:
            self._eat(self._tail, bytes(data))

    def finish(self, total_size: int | None = None) -> None:
        """Mark the end of the stream.

        `total_size` is the stream's full length when the caller stopped feeding early,
        which is allowed once `needs_more` is False.
        """
        if self._finished:
            return
        size = total_size if total_size is not None else self._total_size
        if size is None:
            size = self._received
        if size < self._received:
            raise ValueError(f"total_size {size} < {self._received} bytes already fed")
        if size > self._received and self.needs_more:
            raise ValueError("stream ended before the inspector had the bytes it needs")
        self._total_size = size
        if not self._head_done:
            # The last, short block: whatever is left of a small file.
            self._parse(bytes(self._pending))
            self._pending.clear()
            self._head_done = True
        for name, inspector in self._inspectors.items():
            if name not in self._broken:
                inspector.finish()
        self._finished = True

    def result(
        self, declared: DiskFormat | None = None, *, allow_unsafe: bool = False
    ) -> Inspection:
        """The verdict; raises FormatError (see the module docstring for the codes).

        With `allow_unsafe`, an unsafe but otherwise acceptable image is returned with
        `safe=False` and its reasons instead of raising UNSAFE_IMAGE_FILE (for reports).
        """
        if self.needs_more:
            raise RuntimeError("result() needs more bytes: keep feeding or call finish()")
        name, inspector = self._detect()
        detected = _FROM_OSLO[name]
        reasons = self._unsafe_reasons(name, inspector)
        virtual_size = self._virtual_size(detected, inspector)
        if virtual_size <= 0 and not reasons:
            raise FormatError(
                "INVALID_IMAGE_FILE",
                f"{detected.value} header gives no virtual size",
                detected=detected,
            )
        if virtual_size > self._max_virtual_size:
            reasons.append(f"virtual size {virtual_size} exceeds {self._max_virtual_size}")
        if reasons and not allow_unsafe:
            raise FormatError(
                "UNSAFE_IMAGE_FILE",
                f"unsafe {detected.value} image: " + "; ".join(reasons),
                reasons=tuple(reasons),
                detected=detected,
            )
        hint = _rules.unsupported_hint(inspector) if inspector is not None else None
        if hint is not None:
            raise FormatError(
                "UNSUPPORTED_FORMAT", f"unsupported {detected.value} image", hint=hint
            )
        if declared is not None and declared != detected:
            raise FormatError(
                "FORMAT_MISMATCH",
                f"declared {declared.value} but the file is {detected.value}",
                detected=detected,
            )
        return Inspection(detected, virtual_size, not reasons, tuple(reasons))

    # -- feeding -------------------------------------------------------------------------

    def _drain(self) -> None:
        if len(self._pending) < (_FIRST_BLOCK if self._parsed == 0 else _BLOCK):
            return
        view = memoryview(self._pending)
        offset = 0
        while not self._head_done:
            size = _FIRST_BLOCK if self._parsed == 0 else _BLOCK
            if len(view) - offset < size:
                break
            self._parse(bytes(view[offset : offset + size]))
            offset += size
        rest = bytes(view[offset:]) if self._head_done else b""
        view.release()
        del self._pending[:offset]
        if self._head_done:
            self._pending.clear()
            if self._tail and rest:
                self._eat(self._tail, rest)

    def _parse(self, block: bytes) -> None:
        self._parsed += len(block)
        alive = [n for n in self._inspectors if n not in self._broken]
        if block:
            self._eat(alive, block)
        alive = [n for n in alive if n not in self._broken]
        waiting = [n for n in alive if _waits_on_head(self._inspectors[n])]
        if not waiting or self._parsed >= self._head_limit:
            self._head_done = True
            self._tail = [
                n
                for n in alive
                if n not in waiting
                and _waits_on_tail(self._inspectors[n])
                and _matches(self._inspectors[n])
            ]

    def _eat(self, names: list[str], chunk: bytes) -> None:
        for name in names:
            try:
                self._inspectors[name].eat_chunk(chunk)
            except Exception as exc:  # noqa: BLE001 - hostile bytes may break any parser
                self._broken[name] = str(exc) or type(exc).__name__
        self._tail = [n for n in self._tail if n not in self._broken]

    # -- verdict -------------------------------------------------------------------------

    def _detect(self) -> tuple[str, fi.FileInspector | None]:
        lead = bytes(self._lead)
        if not lead:
            raise FormatError("INVALID_IMAGE_FILE", "the file is empty")
        archive = _rules.archive_kind(lead)
        if archive is not None:
            raise FormatError(
                "UNSUPPORTED_FORMAT",
                f"compressed archive ({archive}), not a disk image",
                hint=f"decompress the file first ({archive} detected)",
            )
        claimed = _rules.claimed_format(lead)
        if claimed is not None and claimed in self._broken:
            raise FormatError(
                "INVALID_IMAGE_FILE",
                f"malformed {claimed} header: {self._broken[claimed]}",
            )
        matches = [n for n, i in self._inspectors.items() if n not in self._broken and _matches(i)]
        if claimed is not None and claimed not in matches:
            detected = _FROM_OSLO.get(claimed)
            raise FormatError(
                "UNSAFE_IMAGE_FILE",
                f"truncated {claimed} header",
                reasons=("truncated header",),
                detected=detected,
            )
        if sorted(matches) == ["gpt", "iso"]:
            # Hybrid bootable ISOs carry an MBR/GPT so they also boot from USB sticks.
            matches = ["iso"]
        if len(matches) > 1:
            # One header hidden in another: whichever reader wins, the check did not apply.
            raise FormatError(
                "UNSAFE_IMAGE_FILE",
                "content matches several formats: " + ", ".join(sorted(matches)),
                reasons=("several formats",),
            )
        if not matches:
            return "raw", None
        name = matches[0]
        if name not in _FROM_OSLO:
            raise FormatError(
                "UNSUPPORTED_FORMAT",
                f"unsupported image format ({name})",
                hint=_rules.UNSUPPORTED_HINTS.get(
                    name, f"convert the image to QCOW2 or RAW first ({name} detected)"
                ),
            )
        return name, self._inspectors[name]

    def _unsafe_reasons(self, name: str, inspector: fi.FileInspector | None) -> list[str]:
        if inspector is None:
            return []
        if not inspector.complete:
            where = f"past the first {self._head_limit} bytes"
            return [f"incomplete {name} header: truncated, or structures {where}"]
        try:
            inspector.safety_check()
        except fi.SafetyCheckFailed as exc:
            reasons = [f"{check}: {failure}" for check, failure in exc.failures.items()]
        except fi.ImageFormatError as exc:
            raise FormatError("INVALID_IMAGE_FILE", f"malformed {name} header: {exc}") from exc
        else:
            reasons = []
        return reasons + _rules.extra_unsafe_reasons(name, inspector)

    def _virtual_size(self, detected: DiskFormat, inspector: fi.FileInspector | None) -> int:
        if detected in (DiskFormat.RAW, DiskFormat.ISO):
            # Both are read as plain bytes; an ISO's volume descriptor is only advisory.
            if self._total_size is None:
                raise RuntimeError("raw virtual size needs total_size or finish()")
            return self._total_size
        if inspector is None:
            return 0
        qemus = _rules.virtual_size(inspector)
        if qemus is not None:
            return qemus
        try:
            return int(inspector.virtual_size)
        except Exception:  # noqa: BLE001 - treated as "unknown", refused by the caller
            return 0


def inspect_file(
    path: Path | str,
    declared: DiskFormat | None = None,
    max_virtual_size: int = DEFAULT_MAX_VIRTUAL_SIZE,
) -> Inspection:
    """Inspect a local file (blocking: call `inspect_file_async` from async code).

    Reads only the head, except for a VMDK whose header lives in a footer.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        inspector = StreamInspector(max_virtual_size=max_virtual_size, total_size=size)
        while inspector.needs_more:
            chunk = f.read(_READ_SIZE)
            if not chunk:
                break
            inspector.feed(chunk)
    inspector.finish(size)
    return inspector.result(declared)


async def inspect_file_async(
    path: Path | str,
    declared: DiskFormat | None = None,
    max_virtual_size: int = DEFAULT_MAX_VIRTUAL_SIZE,
) -> Inspection:
    """`inspect_file` in a worker thread."""
    return await asyncio.to_thread(inspect_file, path, declared, max_virtual_size)
