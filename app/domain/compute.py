"""The built-in compute inventory's rules: server statuses, disk limits, OS input.

Pure values and validators (they raise `Invalid` with the input path as `field`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from app.domain.enums import ImageKind, OsType
from app.errors import Invalid

GiB = 1024**3

#: A server's system disk, in GiB (the image's minDiskGb is the floor).
SYSTEM_DISK_MAX_GB = 2048
#: A data disk or a stand-alone volume, in GiB (32 TiB, as cloud block storage allows).
DATA_DISK_MAX_GB = 32768
#: Data disks one server may have at creation.
DATA_DISKS_PER_SERVER = 23
#: A SYSTEM_DISK image is made from a system disk of at most this many GiB (1 TiB).
SYSTEM_IMAGE_MAX_GB = 1024
#: A DATA_DISK image is made from a volume of at most this many GiB (the import limit).
DATA_IMAGE_MAX_GB = 2048
OS_PLATFORM_MAX = 64
OS_VERSION_MAX = 128
OS_BITS = frozenset({32, 64})


class ServerStatus(str, Enum):
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"


#: Statuses a server may be imaged in.
IMAGEABLE_STATUSES = frozenset({ServerStatus.RUNNING.value, ServerStatus.STOPPED.value})
#: Kinds an image made from a server may have.
SERVER_IMAGE_KINDS = frozenset({ImageKind.SYSTEM_DISK, ImageKind.FULL_ECS})
#: Kinds an image made from a volume may have.
VOLUME_IMAGE_KINDS = frozenset({ImageKind.SYSTEM_DISK, ImageKind.DATA_DISK})


@dataclass(frozen=True)
class OsSpec:
    """An operating system as images and servers record it."""

    type: OsType
    platform: str
    version: str
    bits: int = 64


def validate_disk_size(size_gb: int, maximum: int, field: str) -> int:
    if not 1 <= size_gb <= maximum:
        raise Invalid("INVALID_DISK_SIZE", f"A disk is 1 to {maximum} GiB.", field=field)
    return size_gb


def validate_os(spec: OsSpec, field: str = "input.os") -> OsSpec:
    platform, version = spec.platform.strip(), spec.version.strip()
    if not 1 <= len(platform) <= OS_PLATFORM_MAX:
        raise Invalid("INVALID_OS", f"OS platform: 1-{OS_PLATFORM_MAX} characters.", field=f"{field}.platform")
    if not 1 <= len(version) <= OS_VERSION_MAX:
        raise Invalid("INVALID_OS", f"OS version: 1-{OS_VERSION_MAX} characters.", field=f"{field}.version")
    if spec.bits not in OS_BITS:
        raise Invalid("INVALID_OS", "OS bits: 32 or 64.", field=f"{field}.bits")
    return OsSpec(spec.type, platform, version, spec.bits)
