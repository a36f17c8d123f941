"""Disk-image formats: inspection (oslo.utils' format inspector) and conversion (qemu-img).

`inspect` decides what a stream really is and whether it is safe, from its bytes alone;
`qemu` runs qemu-img, only ever on files inspection accepted.
"""

from app.formats.inspect import (
    DEFAULT_MAX_VIRTUAL_SIZE,
    DiskFormat,
    FormatError,
    FormatErrorCode,
    Inspection,
    StreamInspector,
    inspect_file,
    inspect_file_async,
)
from app.formats.qemu import (
    ConversionError,
    QemuImgError,
    confirm,
    convert,
    create,
    free_bytes,
    info,
    measure,
    raw_pieces,
    temporary_workfile,
)

__all__ = [
    "DEFAULT_MAX_VIRTUAL_SIZE",
    "ConversionError",
    "DiskFormat",
    "FormatError",
    "FormatErrorCode",
    "Inspection",
    "QemuImgError",
    "StreamInspector",
    "confirm",
    "convert",
    "create",
    "free_bytes",
    "info",
    "inspect_file",
    "inspect_file_async",
    "measure",
    "raw_pieces",
    "temporary_workfile",
]
