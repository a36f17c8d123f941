"""Byte-level rules the inspector applies on top of oslo.utils' format inspectors.

oslo decides *which* format a header is and runs its own safety checks; the rules here
cover what it leaves to the caller (compressed archives, formats we do not accept,
telling a truncated header from plain raw data) and the gaps found while building this
module (a VMDK parent named by ``parentFileNameHint``, a VMDK descriptor longer than the
part oslo captured, a VMDK footer giving another capacity than its header, an encrypted
qcow2, none of which oslo 10.2 refuses), and the virtual size of a VHD, which oslo reads
from a field qemu never uses.
"""

from __future__ import annotations

import struct
from typing import Final

from oslo_utils.imageutils import format_inspector as fi

# Magic numbers of compressed archives, with the tool named in the hint.
ARCHIVE_MAGICS: Final[tuple[tuple[bytes, str], ...]] = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),  # an empty zip archive has only its end-of-directory record
)

# Formats whose magic number sits at a fixed offset: finding the magic without a
# complete, matching inspector means the header was cut short, not that the file is raw.
# ISO is absent on purpose: a file too short to reach offset 32769 is raw.
CLAIMING_MAGICS: Final[tuple[tuple[str, int, bytes], ...]] = (
    ("qcow2", 0, b"QFI\xfb"),
    ("vmdk", 0, b"KDMV"),
    ("vhd", 0, b"conectix"),
    ("vhdx", 0, b"vhdxfile"),
    ("qed", 0, b"QED\x00"),
    ("luks", 0, b"LUKS\xba\xbe"),
    ("vdi", 0x40, b"\x7f\x10\xda\xbe"),
)

# Bytes of the stream kept verbatim: enough for every magic above.
LEAD_SIZE: Final = 512

# oslo formats we recognise but refuse, with what the uploader should do instead.
UNSUPPORTED_HINTS: Final[dict[str, str]] = {
    "vdi": "convert the image to QCOW2 or RAW first (VirtualBox VDI detected)",
    "qed": "convert the image to QCOW2 or RAW first (QED detected)",
    "luks": "decrypt the image first (LUKS detected)",
}

_QCOW2_CRYPT_METHOD: Final = struct.Struct(">I")
_QCOW2_CRYPT_OFFSET: Final = 32
# A VMDK sparse header's capacity (sectors) follows its magic, version and flags. In oslo's
# footer region the footer's copy of the header follows a 512-byte footer marker.
_VMDK_CAPACITY: Final = struct.Struct("<Q")
_VMDK_CAPACITY_OFFSET: Final = 12
_VMDK_FOOTER_HEADER_OFFSET: Final = 512
# A VHD footer's creator application, then its current size and its geometry (cylinders,
# heads, sectors per track), big-endian. oslo reads the original size (offset 40), which
# qemu ignores: it reads the current size or the geometry, depending on the creator.
_VHD_CREATOR: Final = slice(28, 32)
_VHD_SIZE_AND_GEOMETRY: Final = struct.Struct(">QHBB")
_VHD_SIZE_OFFSET: Final = 48
_VHD_SECTOR: Final = 512
# The largest geometry: qemu then always reads the current size (qemu-img writes it so).
_VHD_MAX_GEOMETRY: Final = 65535 * 16 * 255
# Creators whose disks every qemu release sizes by geometry, and by current size. Releases
# disagree about any other creator (older ones: geometry; newer ones: current size).
_VHD_BY_GEOMETRY: Final = (b"vpc ", b"qemu")
_VHD_BY_CURRENT_SIZE: Final = (b"win ", b"qem2", b"d2v ", b"CTXS", b"tap\x00")


def archive_kind(lead: bytes) -> str | None:
    """Name of the compressed-archive format the stream starts with, if any."""
    for magic, name in ARCHIVE_MAGICS:
        if lead.startswith(magic):
            return name
    return None


def claimed_format(lead: bytes) -> str | None:
    """oslo name of the format whose magic number the stream carries, if any."""
    for name, offset, magic in CLAIMING_MAGICS:
        if lead[offset : offset + len(magic)] == magic:
            return name
    return None


def unsupported_hint(inspector: fi.FileInspector) -> str | None:
    """Why a safe image of an accepted format still cannot be taken, as a hint."""
    if isinstance(inspector, fi.QcowInspector) and inspector.complete:
        header = inspector.region("header").data
        (crypt_method,) = _QCOW2_CRYPT_METHOD.unpack_from(header, _QCOW2_CRYPT_OFFSET)
        if crypt_method != 0:
            # Converting it needs the passphrase; we have no way to take one.
            return "decrypt the image first (encrypted qcow2 detected)"
    return None


def extra_unsafe_reasons(name: str, inspector: fi.FileInspector) -> list[str]:
    """Safety problems oslo's own checks let through, for a complete inspector."""
    if not isinstance(inspector, fi.VMDKInspector):
        return []
    if not inspector.has_region("header"):
        # A text descriptor is never a whole disk: its extents are other files by
        # definition, even when named without a '/' (qemu resolves them next to the image).
        return ["VMDK descriptor file: its extents are separate files"]
    reasons = []
    if b"\x00" not in inspector.region("descriptor").data:
        # qemu reads the embedded descriptor up to its first NUL, which may lie past the
        # sectors the header declares and oslo captured: text there would go unchecked.
        reasons.append("VMDK descriptor runs past its declared size")
    if inspector.desc_text is not None and "parentfilenamehint" in inspector.desc_text:
        # qemu opens parentFileNameHint as a backing file; oslo accepts the line as an
        # ordinary header field.
        reasons.append("VMDK names a parent image (parentFileNameHint)")
    if inspector.has_region("footer") and _vmdk_capacity(inspector, "footer") != _vmdk_capacity(inspector, "header"):
        # qemu takes the whole header from the footer, capacity included, while oslo's
        # virtual size is the first header's: every size limit would be checked against a
        # disk other than the one qemu-img converts (a few KiB claiming 2 MiB, read as 100 TiB).
        reasons.append("VMDK footer gives another capacity than its header")
    return reasons


def virtual_size(inspector: fi.FileInspector) -> int | None:
    """The virtual size qemu-img reads, where oslo's differs (None: oslo's is qemu's).

    Limits (minDiskGb, export, replication, the disk asked for) are checked against this
    size before qemu-img converts the file: it must be the size of the disk it writes.
    """
    if not isinstance(inspector, fi.VHDInspector) or not inspector.complete:
        return None
    header = inspector.region("header").data
    fields: tuple[int, int, int, int] = _VHD_SIZE_AND_GEOMETRY.unpack_from(header, _VHD_SIZE_OFFSET)
    current, cylinders, heads, sectors = fields
    current -= current % _VHD_SECTOR  # qemu counts whole sectors
    geometry = cylinders * heads * sectors * _VHD_SECTOR
    creator = bytes(header[_VHD_CREATOR])
    if cylinders * heads * sectors == _VHD_MAX_GEOMETRY or creator in _VHD_BY_CURRENT_SIZE:
        return current
    if creator in _VHD_BY_GEOMETRY:
        return geometry
    # Whichever this qemu-img picks, the limits must hold for it.
    return max(current, geometry)


def _vmdk_capacity(inspector: fi.VMDKInspector, region: str) -> int:
    offset = _VMDK_CAPACITY_OFFSET + (_VMDK_FOOTER_HEADER_OFFSET if region == "footer" else 0)
    (sectors,) = _VMDK_CAPACITY.unpack_from(inspector.region(region).data, offset)
    return int(sectors)
