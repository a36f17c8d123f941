"""Value types shared by inspection and conversion: formats, verdicts, refusals.

`FormatError.code` is one of (see `app.formats.inspect` for when each is raised):

    UNSUPPORTED_FORMAT   compressed archive, or a format outside DiskFormat; see `hint`
    INVALID_IMAGE_FILE   empty, or a header that claims a format but does not parse
    UNSAFE_IMAGE_FILE    backing/data/extent files, unknown features, truncated header, ...
    FORMAT_MISMATCH      the content is not the declared format
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from app.domain.enums import DiskFormat as _DomainDiskFormat

__all__ = ["DiskFormat", "FormatError", "FormatErrorCode", "GiB", "Inspection", "KiB", "MiB", "TiB"]

KiB: Final = 1024
MiB: Final = 1024 * KiB
GiB: Final = 1024 * MiB
TiB: Final = 1024 * GiB




# One enum of disk formats for the whole service (the GraphQL DiskFormat enum).
DiskFormat = _DomainDiskFormat

FormatErrorCode = Literal[
    "UNSAFE_IMAGE_FILE", "FORMAT_MISMATCH", "UNSUPPORTED_FORMAT", "INVALID_IMAGE_FILE"
]


@dataclass(frozen=True)
class Inspection:
    """What the header says: the detected format and its virtual size in bytes.

    `safe` is False (with `reasons`) only when `result(allow_unsafe=True)` was asked for.
    """

    format: DiskFormat
    virtual_size: int
    safe: bool
    reasons: tuple[str, ...]


class FormatError(Exception):
    """An image refused by inspection; `code` is stable, `hint` tells the user what to do."""

    def __init__(
        self,
        code: FormatErrorCode,
        message: str,
        *,
        hint: str | None = None,
        reasons: tuple[str, ...] = (),
        detected: DiskFormat | None = None,
    ) -> None:
        super().__init__(message)
        self.code: FormatErrorCode = code
        self.hint = hint
        self.reasons = reasons
        self.detected = detected
