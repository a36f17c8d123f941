"""Format detection and safety checks on real images (see tests/hostile_files.py)."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import subprocess
import tracemalloc
from pathlib import Path

import pytest

from app.formats import (
    DiskFormat,
    FormatError,
    Inspection,
    StreamInspector,
    inspect_file,
    inspect_file_async,
)
from tests.hostile_files import (
    HOSTILE_CASE_NAMES,
    IMAGE_SIZE,
    VALID_IMAGE_NAMES,
    HostileCase,
    ValidImage,
    qemu_img,
    vmdk_descriptor,
    write_vhd,
)

MiB = 1024 * 1024
Verdict = Inspection | tuple[str, str]


def whole_verdict(path: Path, declared: DiskFormat | None) -> Verdict:
    data = path.read_bytes()
    inspector = StreamInspector()
    inspector.feed(data)
    inspector.finish()
    try:
        return inspector.result(declared)
    except FormatError as exc:
        return (exc.code, str(exc))


def piecewise_verdict(path: Path, declared: DiskFormat | None, piece: int) -> Verdict:
    """Feed `piece`-sized chunks while the inspector asks for more, then stop early."""
    data = path.read_bytes()
    inspector = StreamInspector(total_size=len(data))
    offset = 0
    while offset < len(data) and inspector.needs_more:
        inspector.feed(data[offset : offset + piece])
        offset += piece
    inspector.finish()
    try:
        return inspector.result(declared)
    except FormatError as exc:
        return (exc.code, str(exc))


@pytest.mark.parametrize("name", VALID_IMAGE_NAMES)
def test_valid_image_is_detected_with_its_virtual_size(
    valid_images: dict[str, ValidImage], name: str
) -> None:
    path, fmt = valid_images[name]
    expected_size = 64 * 1024 if fmt is DiskFormat.ISO else IMAGE_SIZE

    assert inspect_file(path, fmt) == Inspection(fmt, expected_size, True, ())
    assert inspect_file(path) == Inspection(fmt, expected_size, True, ())


@pytest.mark.parametrize("name", HOSTILE_CASE_NAMES)
def test_hostile_file_is_refused_with_its_code(
    hostile_corpus: dict[str, HostileCase], name: str
) -> None:
    path, code, declared = hostile_corpus[name]

    with pytest.raises(FormatError) as caught:
        inspect_file(path, declared)

    assert caught.value.code == code


@pytest.mark.parametrize(
    ("name", "tool"),
    [
        ("archive_gzip", "gzip"),
        ("archive_xz", "xz"),
        ("archive_bzip2", "bzip2"),
        ("archive_zstd", "zstd"),
        ("archive_zip", "zip"),
    ],
)
def test_archive_hint_names_the_compression(
    hostile_corpus: dict[str, HostileCase], name: str, tool: str
) -> None:
    with pytest.raises(FormatError) as caught:
        inspect_file(hostile_corpus[name].path)

    assert caught.value.hint == f"decompress the file first ({tool} detected)"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("qcow2_backing_host_file", "backing_file: Image has a backing file"),
        ("qcow2_external_data_file", "data_file: Image has data_file set"),
        ("qcow2_unknown_incompatible_feature", "unknown_features: Unknown QCOW2 features found"),
        ("vmdk_parent_file", "VMDK names a parent image (parentFileNameHint)"),
        ("vmdk_descriptor_overflow", "VMDK descriptor runs past its declared size"),
        ("vmdk_footer_capacity", "VMDK footer gives another capacity than its header"),
        (
            "vmdk_sparse_descriptor_relative_extent",
            "VMDK descriptor file: its extents are separate files",
        ),
        ("qcow2_absurd_virtual_size", f"virtual size {1 << 60} exceeds {2 << 40}"),
    ],
)
def test_unsafe_reason_is_reported(
    hostile_corpus: dict[str, HostileCase], name: str, reason: str
) -> None:
    with pytest.raises(FormatError) as caught:
        inspect_file(hostile_corpus[name].path)

    assert reason in caught.value.reasons


def test_allow_unsafe_returns_the_reasons_instead_of_raising(
    hostile_corpus: dict[str, HostileCase],
) -> None:
    data = hostile_corpus["qcow2_backing_host_file"].path.read_bytes()
    inspector = StreamInspector()
    inspector.feed(data)
    inspector.finish()

    result = inspector.result(DiskFormat.QCOW2, allow_unsafe=True)

    assert result == Inspection(
        DiskFormat.QCOW2, 1 * MiB, False, ("backing_file: Image has a backing file",)
    )


@pytest.mark.parametrize("name", ["raw", "qcow2", "vhdx"])
def test_virtual_size_over_the_limit_is_unsafe(
    valid_images: dict[str, ValidImage], name: str
) -> None:
    path, fmt = valid_images[name]

    with pytest.raises(FormatError) as caught:
        inspect_file(path, fmt, max_virtual_size=IMAGE_SIZE - 1)

    assert caught.value.code == "UNSAFE_IMAGE_FILE"
    assert caught.value.reasons == (f"virtual size {IMAGE_SIZE} exceeds {IMAGE_SIZE - 1}",)
    assert inspect_file(path, fmt, max_virtual_size=IMAGE_SIZE).virtual_size == IMAGE_SIZE


@pytest.mark.parametrize("piece", [1, 4095, 64 * 1024])
def test_chunking_does_not_change_the_verdict(
    valid_images: dict[str, ValidImage],
    hostile_corpus: dict[str, HostileCase],
    piece: int,
) -> None:
    cases: list[tuple[Path, DiskFormat | None]] = [(p, f) for p, f in valid_images.values()]
    cases += [(c.path, c.declared) for c in hostile_corpus.values()]

    for path, declared in cases:
        expected = whole_verdict(path, declared)
        assert piecewise_verdict(path, declared, piece) == expected, path.name


def test_stream_verdict_matches_inspect_file(valid_images: dict[str, ValidImage]) -> None:
    for path, fmt in valid_images.values():
        assert whole_verdict(path, fmt) == inspect_file(path, fmt)


def test_verdict_needs_only_the_head_of_a_large_raw_stream() -> None:
    total = 64 * MiB
    inspector = StreamInspector(total_size=total)
    chunk = b"\x01" * (256 * 1024)
    fed = 0
    while inspector.needs_more:
        inspector.feed(chunk)
        fed += len(chunk)

    assert fed == 1 * MiB
    assert inspector.result(DiskFormat.RAW) == Inspection(DiskFormat.RAW, total, True, ())


def test_archive_is_refused_after_its_magic_number() -> None:
    inspector = StreamInspector(total_size=10 * MiB)
    for byte in b"\x1f\x8b\x08\x00":
        inspector.feed(bytes([byte]))

    assert not inspector.needs_more
    with pytest.raises(FormatError) as caught:
        inspector.result(DiskFormat.RAW)
    assert caught.value.code == "UNSUPPORTED_FORMAT"


def test_streamoptimized_footer_needs_the_whole_stream(
    valid_images: dict[str, ValidImage],
) -> None:
    data = valid_images["vmdk_stream_optimized_footer"].path.read_bytes()
    inspector = StreamInspector()
    inspector.feed(data[:-1])

    assert inspector.needs_more
    with pytest.raises(ValueError, match="before the inspector had the bytes"):
        inspector.finish(len(data))


def test_feeding_a_long_stream_keeps_memory_bounded() -> None:
    chunk = bytes(8 * MiB)
    inspector = StreamInspector(max_virtual_size=1 << 40)
    tracemalloc.start()
    try:
        for _ in range(16):
            inspector.feed(chunk)
        inspector.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert inspector.result().virtual_size == 128 * MiB
    # The fed chunk is copied into the head buffer once; the inspectors keep ~1 MiB each.
    assert peak < 24 * MiB


def test_header_structures_past_the_head_limit_are_unsafe(
    valid_images: dict[str, ValidImage],
) -> None:
    # qemu puts the VHDX metadata region at 3 MiB.
    inspector = StreamInspector(head_limit=1 * MiB)
    inspector.feed(valid_images["vhdx"].path.read_bytes())
    inspector.finish()

    with pytest.raises(FormatError) as caught:
        inspector.result(DiskFormat.VHDX)

    assert caught.value.code == "UNSAFE_IMAGE_FILE"
    assert caught.value.reasons[0].startswith("incomplete vhdx header")


def test_result_before_enough_bytes_is_a_programming_error() -> None:
    inspector = StreamInspector()
    inspector.feed(b"QFI\xfb")

    with pytest.raises(RuntimeError, match="needs more bytes"):
        inspector.result()


def _had_reader(fifo: Path) -> bool:
    """Whether anything has `fifo` open for reading; also releases such a reader.

    Opening a FIFO's write end without blocking fails with ENXIO when no reader has it
    open; when one has, closing our end hands it EOF, so a failing test cannot hang.
    """
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError as exc:
        assert exc.errno == errno.ENXIO
        return False
    return True


def _fifo_images(d: Path) -> list[tuple[Path, Path]]:
    """(image, the FIFO it names): each image is made against a plain file, then the
    named file is swapped for a FIFO, on which any open() for reading would block."""
    backing, data, parent, extent = (d / n for n in ("backing", "data", "parent", "extent"))
    backing.write_bytes(bytes(1 * MiB))
    qemu_img("create", "-f", "qcow2", "-b", backing, "-F", "raw", d / "b.qcow2")
    qemu_img("create", "-f", "qcow2", "-o", f"data_file={data}", d / "d.qcow2", "1M")
    qemu_img("create", "-f", "vmdk", parent, "1M")
    qemu_img("create", "-f", "vmdk", "-b", parent, "-F", "vmdk", d / "child.vmdk")
    desc = vmdk_descriptor(d / "desc.vmdk", "monolithicFlat", f'RW 2048 FLAT "{extent}" 0')
    for named in (backing, data, parent, extent):
        named.unlink(missing_ok=True)
        os.mkfifo(named)
    return [(d / "b.qcow2", backing), (d / "d.qcow2", data), (d / "child.vmdk", parent),
            (desc, extent)]  # fmt: skip


async def test_files_named_inside_an_image_are_never_opened(tmp_path: Path) -> None:
    for image, fifo in await asyncio.to_thread(_fifo_images, tmp_path):
        try:
            async with asyncio.timeout(10):
                with pytest.raises(FormatError) as caught:
                    await inspect_file_async(image)
        finally:
            opened = _had_reader(fifo)

        assert not opened, image.name
        assert caught.value.code == "UNSAFE_IMAGE_FILE", image.name


def _qemu_virtual_size(path: Path, driver: str) -> int:
    out = subprocess.run(["qemu-img", "info", "--output=json", "-f", driver, str(path)], check=True,
                         capture_output=True, timeout=60).stdout
    return int(json.loads(out)["virtual-size"])


@pytest.mark.parametrize(
    ("creator", "geometry"),
    [
        (b"win ", (60000, 16, 255)),  # Hyper-V: the current size
        (b"qem2", (65535, 16, 255)),  # qemu-img with force_size: the current size
        (b"d2v ", (1000, 16, 17)),  # Disk2vhd: the current size
        (b"vpc ", (1000, 16, 17)),  # Virtual PC: the geometry
        (b"qemu", (60000, 16, 255)),  # older qemu-img: the geometry
        (b"vpc ", (65535, 16, 255)),  # the largest geometry: the current size, whoever made it
    ],
)
def test_vhd_virtual_size_is_the_one_qemu_img_reads(tmp_path: Path, creator: bytes, geometry: tuple[int, int, int]) -> None:
    """oslo reads a VHD's original size, a field qemu ignores: qemu reads the current size
    or the geometry, by creator. The original size here is 2 MiB, the current size 3 GiB."""
    path = write_vhd(tmp_path / "d.vhd", original=2 * MiB, current=3 << 30, geometry=geometry, creator=creator)

    assert inspect_file(path, DiskFormat.VHD).virtual_size == _qemu_virtual_size(path, "vpc")


@pytest.mark.parametrize("creator", [b"wa\x00\x00", b"zzzz"])
def test_vhd_of_an_unknown_creator_is_the_larger_of_both_sizes(tmp_path: Path, creator: bytes) -> None:
    """qemu releases size other creators' VHDs differently (older: geometry, newer: current
    size): the limits must hold for either."""
    small = write_vhd(tmp_path / "s.vhd", original=2 * MiB, current=3 << 30, geometry=(100, 16, 17), creator=creator)
    large = write_vhd(tmp_path / "l.vhd", original=2 * MiB, current=3 << 30, geometry=(60000, 16, 255), creator=creator)

    assert inspect_file(small, DiskFormat.VHD).virtual_size == 3 << 30
    assert inspect_file(large, DiskFormat.VHD).virtual_size == 60000 * 16 * 255 * 512
    for path in (small, large):
        assert inspect_file(path).virtual_size >= _qemu_virtual_size(path, "vpc")
