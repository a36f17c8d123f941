"""Real disk images, valid and hostile, generated with qemu-img into a directory.

A corpus other suites reuse (import, export, API): `build_valid_images(dir)` gives name ->
`ValidImage(path, format)`; `build_hostile_corpus(dir)` gives name -> `HostileCase(path,
code, declared)`, the FormatError code inspection must raise when the file is uploaded
declared as `declared` (None: not declared).

Nothing here creates a FIFO or names one: it is safe to run any tool over the corpus.
Backing/data files named by hostile images are host files (/etc/passwd) or files inside
`dir`, never anything the test would mind being read.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import random
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path
from typing import NamedTuple

from app.formats import DiskFormat, FormatErrorCode

MiB = 1024 * 1024
IMAGE_SIZE = 2 * MiB + 512  # odd on purpose: VHD must keep it exactly (force_size)


VALID_IMAGE_NAMES = (
    "raw",
    "raw_mbr",
    "qcow2",
    "vmdk_monolithic_sparse",
    "vmdk_stream_optimized",
    "vmdk_stream_optimized_footer",
    "vhd",
    "vhdx",
    "iso",
)

HOSTILE_CASE_NAMES = (
    "qcow2_backing_host_file",
    "qcow2_external_data_file",
    "qcow2_unknown_incompatible_feature",
    "qcow2_unknown_high_feature",
    "qcow2_absurd_virtual_size",
    "qcow2_truncated",
    "qcow2_encrypted",
    "qcow2_declared_raw",
    "qcow2_declared_vmdk",
    "vmdk_descriptor_names_etc_shadow",
    "vmdk_monolithic_flat",
    "vmdk_sparse_descriptor_relative_extent",
    "vmdk_parent_file",
    "vmdk_descriptor_overflow",
    "vmdk_bad_footer",
    "vmdk_bad_descriptor_offset",
    "vmdk_footer_capacity",
    "archive_gzip",
    "archive_xz",
    "archive_bzip2",
    "archive_zstd",
    "archive_zip",
    "random_declared_qcow2",
    "raw_declared_iso",
    "vhd_declared_vhdx",
    "empty_file",
    "vdi",
    "qed",
    "iso_qcow2_polyglot",
    "vhdx_bad_region_table",
)


class ValidImage(NamedTuple):
    path: Path
    format: DiskFormat


class HostileCase(NamedTuple):
    path: Path
    code: FormatErrorCode
    declared: DiskFormat | None


def qemu_img(*args: str | Path) -> None:
    subprocess.run(["qemu-img", *map(str, args)], check=True, capture_output=True, timeout=60)


def patch(path: Path, offset: int, data: bytes) -> Path:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)
    return path


def copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


def write_raw(path: Path, size: int = IMAGE_SIZE, seed: int = 1) -> Path:
    """Raw disk with data in a few places (so conversions have something to carry)."""
    rng = random.Random(seed)
    with path.open("wb") as f:
        f.truncate(size)
        for offset in (4096, size // 2, size - 8192):
            f.seek(offset)
            f.write(rng.randbytes(4096))
    return path


def write_iso(path: Path) -> Path:
    """Minimal ISO 9660: a primary volume descriptor at 32 KiB in a 64 KiB file."""
    blocks = 32
    pvd = bytearray(2048)
    pvd[0:7] = b"\x01CD001\x01"
    pvd[80:88] = struct.pack("<I", blocks) + struct.pack(">I", blocks)
    pvd[128:132] = struct.pack("<H", 2048) + struct.pack(">H", 2048)
    with path.open("wb") as f:
        f.truncate(blocks * 2048)
        f.seek(16 * 2048)
        f.write(pvd)
    return path


def write_mbr_disk(path: Path) -> Path:
    """Raw disk with one MBR partition (oslo calls it "gpt"; it is still RAW)."""
    write_raw(path)
    entry = struct.pack("<B3BB3BII", 0x80, 0, 2, 0, 0x83, 0xFE, 0xFF, 0xFF, 2048, 2048)
    patch(path, 446, entry)
    return patch(path, 510, b"\x55\xaa")


def add_vmdk_footer(src: Path, dst: Path) -> Path:
    """VMware-style streamOptimized: header says "grain directory at end", footer has it."""
    data = bytearray(src.read_bytes())
    header = bytes(data[:512])
    struct.pack_into("<Q", data, 56, 0xFFFFFFFFFFFFFFFF)
    footer_marker = struct.pack("<QII", 1, 0, 3) + bytes(496)
    dst.write_bytes(bytes(data) + footer_marker + header + bytes(512))  # + end-of-stream
    return dst


def set_vmdk_footer_capacity(path: Path, capacity: int) -> Path:
    """Patch the capacity (bytes) in the footer's copy of the header of a file made by
    `add_vmdk_footer`: qemu reads the footer's, oslo's virtual size is the first header's."""
    footer_header = path.stat().st_size - 1024  # before the end-of-stream marker
    return patch(path, footer_header + 12, struct.pack("<Q", capacity // 512))


def _vhd_checksum(data: bytes | bytearray) -> int:
    return ~sum(data) & 0xFFFFFFFF


def write_vhd(
    path: Path,
    *,
    original: int,
    current: int,
    geometry: tuple[int, int, int] = (65535, 16, 255),
    creator: bytes = b"qem2",
    block: int = 2 * MiB,
    first_block: bytes = b"",
) -> Path:
    """A dynamic VHD with the footer fields given: oslo reads `original`, qemu the current
    size or the geometry (cylinders, heads, sectors) depending on `creator`. Its block table
    covers the larger of the two, as qemu requires; the file stays small (4 bytes of table per
    `block`). Every block reads as zeros but the first, which holds `first_block` if given."""
    cylinders, heads, sectors = geometry
    entries = -(-max(current, cylinders * heads * sectors * 512) // block)
    footer = bytearray(512)
    struct.pack_into(
        ">8sIIQI4sIIQQHBBI", footer, 0, b"conectix", 2, 0x10000, 512, 0, creator, 0x50003,
        0x5769326B, original, current, cylinders, heads, sectors, 3,
    )  # fmt: skip
    struct.pack_into(">I", footer, 64, _vhd_checksum(footer))
    dynamic = bytearray(1024)
    struct.pack_into(">8sQQIII", dynamic, 0, b"cxsparse", 2**64 - 1, 1536, 0x10000, entries, block)
    struct.pack_into(">I", dynamic, 36, _vhd_checksum(dynamic))
    table = bytearray(b"\xff" * (-(-entries * 4 // 512) * 512))  # unallocated blocks
    data = b""
    if first_block:
        bitmap = -(-block // 512 // 8 // 512) * 512  # one bit per sector, whole sectors
        struct.pack_into(">I", table, 0, (1536 + len(table)) // 512)
        data = b"\xff" * bitmap + first_block.ljust(block, b"\0")
    path.write_bytes(bytes(footer) + bytes(dynamic) + bytes(table) + data + bytes(footer))
    return path


def vmdk_descriptor(path: Path, create_type: str, extent: str) -> Path:
    path.write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        f'createType="{create_type}"\n\n# Extent description\n{extent}\n'
    )
    return path


def build_valid_images(directory: Path) -> dict[str, ValidImage]:
    """One image per accepted format/variant, all of virtual size IMAGE_SIZE except ISO."""
    d = directory
    d.mkdir(parents=True, exist_ok=True)
    raw = write_raw(d / "disk.raw")

    def conv(name: str, fmt: str, *options: str) -> Path:
        qemu_img("convert", "-f", "raw", "-O", fmt, *options, raw, d / name)
        return d / name

    stream = conv("stream.vmdk", "vmdk", "-o", "subformat=streamOptimized")
    images = {
        "raw": ValidImage(raw, DiskFormat.RAW),
        "raw_mbr": ValidImage(write_mbr_disk(d / "mbr.raw"), DiskFormat.RAW),
        "qcow2": ValidImage(conv("disk.qcow2", "qcow2"), DiskFormat.QCOW2),
        "vmdk_monolithic_sparse": ValidImage(conv("sparse.vmdk", "vmdk"), DiskFormat.VMDK),
        "vmdk_stream_optimized": ValidImage(stream, DiskFormat.VMDK),
        "vmdk_stream_optimized_footer": ValidImage(
            add_vmdk_footer(stream, d / "footer.vmdk"), DiskFormat.VMDK
        ),
        "vhd": ValidImage(conv("disk.vhd", "vpc", "-o", "force_size=on"), DiskFormat.VHD),
        "vhdx": ValidImage(conv("disk.vhdx", "vhdx"), DiskFormat.VHDX),
        "iso": ValidImage(write_iso(d / "disk.iso"), DiskFormat.ISO),
    }
    assert tuple(images) == VALID_IMAGE_NAMES
    return images


def _qcow2_cases(d: Path, good: Path) -> dict[str, HostileCase]:
    unsafe: FormatErrorCode = "UNSAFE_IMAGE_FILE"
    q = DiskFormat.QCOW2
    qemu_img("create", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", d / "backing.qcow2", "1M")
    data_file = d / "qcow2-data.raw"
    qemu_img("create", "-f", "qcow2", "-o", f"data_file={data_file}", d / "datafile.qcow2", "1M")
    truncated = d / "truncated.qcow2"
    truncated.write_bytes(good.read_bytes()[:100])
    return {
        "qcow2_backing_host_file": HostileCase(d / "backing.qcow2", unsafe, q),
        "qcow2_external_data_file": HostileCase(d / "datafile.qcow2", unsafe, q),
        # Incompatible-features bitfield at 72 (big-endian): bit 7 is not defined by qemu.
        "qcow2_unknown_incompatible_feature": HostileCase(
            patch(copy(good, d / "feature.qcow2"), 72 + 7, b"\x80"), unsafe, q
        ),
        "qcow2_unknown_high_feature": HostileCase(
            patch(copy(good, d / "feature-hi.qcow2"), 72, b"\x01"), unsafe, q
        ),
        "qcow2_absurd_virtual_size": HostileCase(
            patch(copy(good, d / "huge.qcow2"), 24, struct.pack(">Q", 1 << 60)), unsafe, q
        ),
        "qcow2_truncated": HostileCase(truncated, unsafe, q),
        # crypt_method at 32: 1 = legacy AES (qemu-img's LUKS path is slow and flaky).
        "qcow2_encrypted": HostileCase(
            patch(copy(good, d / "encrypted.qcow2"), 32, struct.pack(">I", 1)),
            "UNSUPPORTED_FORMAT",
            q,
        ),
        "qcow2_declared_raw": HostileCase(good, "FORMAT_MISMATCH", DiskFormat.RAW),
        "qcow2_declared_vmdk": HostileCase(good, "FORMAT_MISMATCH", DiskFormat.VMDK),
    }


def _vmdk_cases(d: Path, sparse: Path, stream: Path) -> dict[str, HostileCase]:
    unsafe: FormatErrorCode = "UNSAFE_IMAGE_FILE"
    v = DiskFormat.VMDK
    qemu_img("create", "-f", "vmdk", "-o", "subformat=monolithicFlat", d / "flat.vmdk", "1M")
    qemu_img("create", "-f", "vmdk", d / "parent.vmdk", "1M")
    qemu_img("create", "-f", "vmdk", "-b", d / "parent.vmdk", "-F", "vmdk", d / "child.vmdk")
    # Descriptor declared 1 sector long, text (and a parent) running on past it.
    overflow = copy(sparse, d / "overflow.vmdk")
    patch(overflow, 36, struct.pack("<Q", 1))
    text = b'# Disk DescriptorFile\ncreateType="monolithicSparse"\nRW 4096 SPARSE "x.vmdk"\n'
    text += b"#" * (512 - len(text) - 1) + b'\nparentFileNameHint="/etc/passwd"\n\x00'
    patch(overflow, 512, text)
    footer = add_vmdk_footer(stream, d / "badfooter.vmdk")
    footer.write_bytes(footer.read_bytes()[:-512] + b"\xff" * 512)  # no end-of-stream marker
    return {
        "vmdk_descriptor_names_etc_shadow": HostileCase(
            vmdk_descriptor(d / "shadow.vmdk", "monolithicFlat", 'RW 2048 FLAT "/etc/shadow" 0'),
            unsafe,
            v,
        ),
        "vmdk_monolithic_flat": HostileCase(d / "flat.vmdk", unsafe, v),
        # oslo accepts this one: extent names without '/' pass its check.
        "vmdk_sparse_descriptor_relative_extent": HostileCase(
            vmdk_descriptor(d / "rel.vmdk", "monolithicSparse", 'RW 2048 SPARSE "disk.vmdk"'),
            unsafe,
            v,
        ),
        # oslo accepts this one: parentFileNameHint passes as a header field.
        "vmdk_parent_file": HostileCase(d / "child.vmdk", unsafe, v),
        "vmdk_descriptor_overflow": HostileCase(overflow, unsafe, v),
        "vmdk_bad_footer": HostileCase(footer, unsafe, v),
        "vmdk_bad_descriptor_offset": HostileCase(
            patch(copy(sparse, d / "badoffset.vmdk"), 28, struct.pack("<Q", 7)),
            "INVALID_IMAGE_FILE",
            v,
        ),
        # The header says IMAGE_SIZE, the footer (which qemu reads) 4 TiB: past every limit.
        "vmdk_footer_capacity": HostileCase(
            set_vmdk_footer_capacity(add_vmdk_footer(stream, d / "bigfooter.vmdk"), 4 << 40),
            unsafe,
            v,
        ),
    }


def _archive_cases(d: Path, raw: Path) -> dict[str, HostileCase]:
    payload = raw.read_bytes()
    (d / "disk.raw.gz").write_bytes(gzip.compress(payload, compresslevel=1))
    (d / "disk.raw.xz").write_bytes(lzma.compress(payload[: 64 * 1024]))
    (d / "disk.raw.bz2").write_bytes(bz2.compress(payload[: 64 * 1024]))
    (d / "disk.raw.zst").write_bytes(b"\x28\xb5\x2f\xfd" + bytes(4096))
    with zipfile.ZipFile(d / "disk.zip", "w") as z:
        z.writestr("disk.raw", payload[: 64 * 1024])
    code: FormatErrorCode = "UNSUPPORTED_FORMAT"
    return {
        f"archive_{kind}": HostileCase(d / name, code, declared)
        for kind, name, declared in (
            ("gzip", "disk.raw.gz", DiskFormat.RAW),
            ("xz", "disk.raw.xz", DiskFormat.QCOW2),
            ("bzip2", "disk.raw.bz2", None),
            ("zstd", "disk.raw.zst", DiskFormat.RAW),
            ("zip", "disk.zip", DiskFormat.VMDK),
        )
    }


def _other_cases(d: Path, valid: dict[str, ValidImage]) -> dict[str, HostileCase]:
    (d / "random.bin").write_bytes(random.Random(7).randbytes(3 * MiB))
    (d / "empty.img").write_bytes(b"")
    qemu_img("create", "-f", "vdi", d / "disk.vdi", "1M")
    qemu_img("create", "-f", "qed", d / "disk.qed", "1M")
    # An ISO whose free system area starts with a qcow2 header: two readers, two disks.
    polyglot = copy(valid["iso"].path, d / "polyglot.iso")
    patch(polyglot, 0, valid["qcow2"].path.read_bytes()[:512])
    vhdx = copy(valid["vhdx"].path, d / "badregion.vhdx")
    patch(vhdx, 192 * 1024, b"nope")
    return {
        "random_declared_qcow2": HostileCase(d / "random.bin", "FORMAT_MISMATCH", DiskFormat.QCOW2),
        "raw_declared_iso": HostileCase(valid["raw"].path, "FORMAT_MISMATCH", DiskFormat.ISO),
        "vhd_declared_vhdx": HostileCase(valid["vhd"].path, "FORMAT_MISMATCH", DiskFormat.VHDX),
        "empty_file": HostileCase(d / "empty.img", "INVALID_IMAGE_FILE", DiskFormat.RAW),
        "vdi": HostileCase(d / "disk.vdi", "UNSUPPORTED_FORMAT", None),
        "qed": HostileCase(d / "disk.qed", "UNSUPPORTED_FORMAT", DiskFormat.QCOW2),
        "iso_qcow2_polyglot": HostileCase(polyglot, "UNSAFE_IMAGE_FILE", DiskFormat.ISO),
        "vhdx_bad_region_table": HostileCase(vhdx, "INVALID_IMAGE_FILE", DiskFormat.VHDX),
    }


def build_hostile_corpus(directory: Path) -> dict[str, HostileCase]:
    """Every file inspection must refuse, with the code it must refuse it with."""
    directory.mkdir(parents=True, exist_ok=True)
    valid = build_valid_images(directory / "valid")
    d = directory
    cases = {
        **_qcow2_cases(d, valid["qcow2"].path),
        **_vmdk_cases(d, valid["vmdk_monolithic_sparse"].path, valid["vmdk_stream_optimized"].path),
        **_archive_cases(d, valid["raw"].path),
        **_other_cases(d, valid),
    }
    assert tuple(cases) == HOSTILE_CASE_NAMES
    return cases
