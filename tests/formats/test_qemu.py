"""qemu-img wrappers: conversions checked with `qemu-img compare`, limits, cleanup."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
from pathlib import Path

import pytest

from app.formats import (
    ConversionError,
    DiskFormat,
    FormatError,
    QemuImgError,
    confirm,
    convert,
    create,
    info,
    inspect_file,
    measure,
    raw_pieces,
    temporary_workfile,
)
from app.formats.qemu import qemu_format
from tests.hostile_files import IMAGE_SIZE, ValidImage, qemu_img, write_raw

MiB = 1024 * 1024
EXPORT_FORMATS = [
    DiskFormat.QCOW2,
    DiskFormat.VMDK,
    DiskFormat.VHD,
    DiskFormat.RAW,
    DiskFormat.VHDX,
]


def qemu_compare(a: Path, a_fmt: DiskFormat, b: Path, b_fmt: DiskFormat) -> int:
    args: list[str | Path] = [
        "qemu-img",
        "compare",
        "-f",
        qemu_format(a_fmt),
        "-F",
        qemu_format(b_fmt),
        a,
        b,
    ]
    return subprocess.run(args, check=False, capture_output=True, timeout=60).returncode


@pytest.mark.parametrize("fmt", EXPORT_FORMATS, ids=lambda f: f.value)
async def test_convert_from_raw_round_trips(
    valid_images: dict[str, ValidImage], tmp_path: Path, fmt: DiskFormat
) -> None:
    raw = valid_images["raw"].path
    out, back = tmp_path / "out", tmp_path / "back.raw"

    await convert(raw, DiskFormat.RAW, out, fmt)
    await convert(out, fmt, back, DiskFormat.RAW)

    assert qemu_compare(raw, DiskFormat.RAW, out, fmt) == 0
    assert back.read_bytes() == raw.read_bytes()
    assert inspect_file(out, fmt).virtual_size == IMAGE_SIZE


@pytest.mark.parametrize(
    "name", ["qcow2", "vmdk_monolithic_sparse", "vmdk_stream_optimized_footer", "vhd", "vhdx"]
)
async def test_convert_to_raw_keeps_the_content(
    valid_images: dict[str, ValidImage], tmp_path: Path, name: str
) -> None:
    src, fmt = valid_images[name]

    await convert(src, fmt, tmp_path / "out.raw", DiskFormat.RAW)

    assert (tmp_path / "out.raw").read_bytes() == valid_images["raw"].path.read_bytes()


async def test_vhd_export_keeps_an_odd_virtual_size_exactly(tmp_path: Path) -> None:
    size = 10 * MiB + 512
    raw = write_raw(tmp_path / "odd.raw", size)

    await convert(raw, DiskFormat.RAW, tmp_path / "odd.vhd", DiskFormat.VHD)

    details = await info(tmp_path / "odd.vhd", DiskFormat.VHD)
    assert details["virtual-size"] == size
    assert details["format"] == "vpc"
    assert inspect_file(tmp_path / "odd.vhd", DiskFormat.VHD).virtual_size == size
    assert qemu_compare(raw, DiskFormat.RAW, tmp_path / "odd.vhd", DiskFormat.VHD) == 0


async def test_vmdk_export_is_stream_optimized(
    tmp_path: Path, valid_images: dict[str, ValidImage]
) -> None:
    await convert(valid_images["raw"].path, DiskFormat.RAW, tmp_path / "x.vmdk", DiskFormat.VMDK)

    details = await info(tmp_path / "x.vmdk", DiskFormat.VMDK)
    assert details["format-specific"]["data"]["create-type"] == "streamOptimized"


async def test_convert_failure_raises_and_removes_the_partial_file(tmp_path: Path) -> None:
    src = tmp_path / "garbage"
    src.write_bytes(os.urandom(64 * 1024))
    dst = tmp_path / "dst.raw"
    dst.write_bytes(b"left over")

    with pytest.raises(ConversionError) as caught:
        await convert(src, DiskFormat.QCOW2, dst, DiskFormat.RAW)

    assert "qcow2" in caught.value.stderr_tail.lower()
    assert caught.value.returncode == 1
    assert not dst.exists()


async def test_convert_errors_name_no_path_of_the_host(tmp_path: Path) -> None:
    """The stderr tail reaches job messages the image's owner reads: the files are "source"
    and "target" there, not paths under the data directory."""
    src = tmp_path / "garbage"
    src.write_bytes(os.urandom(64 * 1024))

    with pytest.raises(ConversionError) as caught:
        await convert(src, DiskFormat.QCOW2, tmp_path / "dst.raw", DiskFormat.RAW)
    assert "source" in caught.value.stderr_tail and str(tmp_path) not in str(caught.value)
    assert not caught.value.out_of_space

    with pytest.raises(ConversionError) as caught:  # the target cannot even be created
        await convert(src, DiskFormat.RAW, tmp_path / "missing" / "dst.qcow2", DiskFormat.QCOW2)
    assert "target" in caught.value.stderr_tail and str(tmp_path) not in str(caught.value)


async def test_convert_runs_under_the_memory_limit(
    valid_images: dict[str, ValidImage], tmp_path: Path
) -> None:
    # 16 MiB of address space is not enough for qemu-img to even load.
    with pytest.raises(ConversionError):
        await convert(
            valid_images["raw"].path,
            DiskFormat.RAW,
            tmp_path / "x.qcow2",
            DiskFormat.QCOW2,
            memory_bytes=16 * MiB,
        )

    assert not (tmp_path / "x.qcow2").exists()


async def test_cancelled_convert_kills_qemu_img_and_removes_dst(tmp_path: Path) -> None:
    # qemu-img blocks opening a FIFO with no writer: a conversion that never ends.
    fifo = tmp_path / "never"
    os.mkfifo(fifo)
    dst = tmp_path / "dst.qcow2"
    dst.write_bytes(b"partial")
    task = asyncio.create_task(convert(fifo, DiskFormat.RAW, dst, DiskFormat.QCOW2))
    await asyncio.sleep(0.5)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=10)

    assert not dst.exists()
    # The killed qemu-img no longer holds the FIFO's read end.
    with pytest.raises(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


async def test_convert_never_opens_a_backing_file(tmp_path: Path) -> None:
    backing = tmp_path / "backing.raw"
    backing.write_bytes(b"\xaa" * MiB)
    image = tmp_path / "child.qcow2"
    await asyncio.to_thread(qemu_img, "create", "-f", "qcow2", "-b", backing, "-F", "raw", image)

    await convert(image, DiskFormat.QCOW2, tmp_path / "out.raw", DiskFormat.RAW)

    assert (tmp_path / "out.raw").read_bytes() == bytes(MiB)


@pytest.mark.parametrize("fmt", [f for f in EXPORT_FORMATS if f is not DiskFormat.RAW], ids=lambda f: f.value)
async def test_confirm_accepts_what_qemu_img_reads_as_inspection_did(tmp_path: Path, fmt: DiskFormat) -> None:
    path = tmp_path / f"x.{fmt.value.lower()}"
    await create(path, fmt, 5 * MiB + 512)
    await confirm(path, fmt, inspect_file(path, fmt).virtual_size)


async def test_confirm_refuses_a_disk_qemu_img_reads_larger_than_inspection_did(tmp_path: Path) -> None:
    # What an inspection that misread a header (or an image recorded before a fix of it)
    # would let through: qemu-img would write the larger disk.
    await create(tmp_path / "x.qcow2", DiskFormat.QCOW2, 8 * MiB)

    with pytest.raises(FormatError) as caught:
        await confirm(tmp_path / "x.qcow2", DiskFormat.QCOW2, 4 * MiB)

    assert caught.value.code == "UNSAFE_IMAGE_FILE"
    assert caught.value.reasons == (f"a virtual size of {8 * MiB} bytes where inspection read {4 * MiB}",)


async def test_confirm_refuses_what_names_another_file(tmp_path: Path) -> None:
    backing = tmp_path / "backing.raw"
    backing.write_bytes(bytes(MiB))
    child = tmp_path / "child.qcow2"
    await asyncio.to_thread(qemu_img, "create", "-f", "qcow2", "-b", backing, "-F", "raw", child)
    flat = tmp_path / "flat.vmdk"  # a descriptor whose extent is another file
    await asyncio.to_thread(qemu_img, "create", "-f", "vmdk", "-o", "subformat=monolithicFlat", flat, "1M")

    for path, fmt, reason in ((child, DiskFormat.QCOW2, "a backing file"),
                              (flat, DiskFormat.VMDK, "an extent in another file")):
        with pytest.raises(FormatError) as caught:
            await confirm(path, fmt, MiB)
        assert (caught.value.code, caught.value.reasons) == ("UNSAFE_IMAGE_FILE", (reason,)), path


async def test_confirm_of_a_file_qemu_img_cannot_read_is_a_conversion_error(tmp_path: Path) -> None:
    (tmp_path / "x.vhdx").write_bytes(bytes(4096))

    with pytest.raises(ConversionError) as caught:
        await confirm(tmp_path / "x.vhdx", DiskFormat.VHDX, MiB)

    assert caught.value.stderr_tail and str(tmp_path) not in caught.value.stderr_tail


async def test_info_reports_the_given_format(tmp_path: Path) -> None:
    await create(tmp_path / "x.qcow2", DiskFormat.QCOW2, 3 * MiB)

    details = await info(tmp_path / "x.qcow2", DiskFormat.QCOW2)

    assert (details["format"], details["virtual-size"]) == ("qcow2", 3 * MiB)


async def test_info_failure_raises(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(bytes(4096))

    with pytest.raises(QemuImgError) as caught:
        await info(tmp_path / "x", DiskFormat.VHDX)

    assert caught.value.returncode == 1
    assert caught.value.stderr_tail


async def test_create_makes_images_inspection_accepts(tmp_path: Path) -> None:
    for fmt in EXPORT_FORMATS:
        path = tmp_path / f"x.{fmt.value.lower()}"
        await create(path, fmt, 5 * MiB + 512)

        assert inspect_file(path, fmt).virtual_size == 5 * MiB + 512, fmt


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.name != ".lock"]


async def test_workfile_is_private_and_removed(tmp_path: Path) -> None:
    async with temporary_workfile(tmp_path, ".qcow2") as path:
        assert path.parent.parent == tmp_path  # in this process's private_dir
        assert path.suffix == ".qcow2"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    assert not path.exists()


async def test_workfile_is_removed_on_error(tmp_path: Path) -> None:
    with pytest.raises(KeyError):
        async with temporary_workfile(tmp_path) as path:
            path.write_bytes(b"data")
            raise KeyError

    assert _files(tmp_path) == []


async def test_workfile_is_removed_on_cancellation(tmp_path: Path) -> None:
    entered = asyncio.Event()

    async def work() -> None:
        async with temporary_workfile(tmp_path) as path:
            path.write_bytes(b"data")
            entered.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(work())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert _files(tmp_path) == []


# ---------------------------------------------------------------- raw_pieces: a window at a time

NON_RAW = [f for f in EXPORT_FORMATS if f is not DiskFormat.RAW]


def _pattern(size: int, seed: int) -> bytes:
    return (seed.to_bytes(1, "big") + bytes(range(255))) * (size // 256)


async def _disk(tmp_path: Path, fmt: DiskFormat, size: int) -> tuple[Path, bytes]:
    """A `fmt` file of `size` bytes of virtual disk with data across window boundaries, and the
    raw disk qemu-img makes of it in one conversion."""
    raw = bytearray(size)
    for offset, length, seed in ((0, 4096, 1), (3 * MiB - 64 * 1024, 2 * MiB, 2), (8 * MiB - 512, 1024, 3),
                                 (size - 3 * 512, 3 * 512, 4)):
        raw[offset : offset + length] = _pattern(length + 256, seed)[:length]
    (tmp_path / "disk.raw").write_bytes(raw)
    path = tmp_path / f"disk.{fmt.value.lower()}"
    await asyncio.to_thread(qemu_img, "convert", "-f", "raw", "-O", qemu_format(fmt),
                            *(["-o", "subformat=streamOptimized"] if fmt is DiskFormat.VMDK else []),
                            tmp_path / "disk.raw", path)
    await convert(path, fmt, tmp_path / "whole.raw", DiskFormat.RAW)
    return path, (tmp_path / "whole.raw").read_bytes()


def _scratch_bytes(work: Path) -> int:
    """Disk space the files under `work` take (allocated blocks: holes cost nothing)."""
    return sum(p.stat().st_blocks * 512 for p in work.rglob("*") if p.is_file())


@pytest.mark.parametrize("fmt", NON_RAW, ids=lambda f: f.value)
async def test_raw_pieces_are_the_raw_disk_a_whole_conversion_makes(tmp_path: Path, fmt: DiskFormat) -> None:
    size = 10 * MiB + 3 * 512  # windows of 4 MiB: two whole ones and a short last one
    path, whole = await _disk(tmp_path, fmt, size)
    work = tmp_path / "work"
    virtual = await confirm(path, fmt, inspect_file(path, fmt).virtual_size)
    assert virtual == len(whole)

    pieces = [p async for p in raw_pieces(path, fmt, virtual, work, piece_size=MiB, window=4 * MiB)]

    assert b"".join(pieces) == whole
    # A VHD made without force_size holds the disk rounded up to a CHS geometry.
    assert [len(p) for p in pieces] == [MiB] * (virtual // MiB) + [virtual % MiB]
    assert virtual % MiB
    assert [p for p in work.rglob("*") if p.is_file() and p.name != ".lock"] == []


async def test_raw_pieces_of_a_disk_that_expands_take_two_windows_of_scratch(tmp_path: Path) -> None:
    """A compressed qcow2 of a few KiB whose disk is 24 MiB of data: converted whole, it would
    take the 24 MiB; a window at a time, at most two windows at any moment."""
    raw = b"".join(_pattern(MiB, n) for n in range(24))
    (tmp_path / "dense.raw").write_bytes(raw)
    path = tmp_path / "dense.qcow2"
    await asyncio.to_thread(qemu_img, "convert", "-c", "-f", "raw", "-O", "qcow2", tmp_path / "dense.raw", path)
    assert path.stat().st_size < MiB
    work = tmp_path / "work"
    most = 0
    joined = bytearray()
    async for piece in raw_pieces(path, DiskFormat.QCOW2, len(raw), work, piece_size=MiB, window=2 * MiB):
        most = max(most, _scratch_bytes(work))
        joined += piece
    assert joined == raw
    assert 0 < most <= 2 * 2 * MiB


async def test_raw_pieces_leave_holes_unread_and_yield_zeros(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "sparse.qcow2"
    await create(path, DiskFormat.QCOW2, 64 * MiB)
    reads: list[int] = []
    real_pread = os.pread

    def counting_pread(fd: int, length: int, offset: int) -> bytes:
        reads.append(offset)
        return real_pread(fd, length, offset)

    monkeypatch.setattr(os, "pread", counting_pread)
    pieces = [p async for p in raw_pieces(path, DiskFormat.QCOW2, 64 * MiB, tmp_path / "work",
                                          piece_size=4 * MiB, window=16 * MiB)]
    monkeypatch.undo()

    # qemu-img allocates the first block of a raw file it creates (to probe its alignment):
    # of each window's four pieces, only the first one is read.
    assert reads == [0, 0, 0, 0]
    assert [len(p) for p in pieces] == [4 * MiB] * 16 and not any(any(p) for p in pieces)


async def test_raw_pieces_closed_early_kill_qemu_img_and_leave_no_file(tmp_path: Path) -> None:
    path, _ = await _disk(tmp_path, DiskFormat.QCOW2, 12 * MiB)
    work = tmp_path / "work"
    pieces = raw_pieces(path, DiskFormat.QCOW2, 12 * MiB, work, piece_size=MiB, window=4 * MiB)
    first = await anext(pieces)  # the second window is converting meanwhile
    await pieces.aclose()
    assert len(first) == MiB
    assert [p for p in work.rglob("*") if p.is_file() and p.name != ".lock"] == []


async def test_raw_pieces_of_an_unreadable_body_raise_a_conversion_error_and_leave_no_file(tmp_path: Path) -> None:
    path, _ = await _disk(tmp_path, DiskFormat.QCOW2, 12 * MiB)
    data = bytearray(path.read_bytes())
    l1 = int.from_bytes(data[40:48], "big")  # the L1 table: an unaligned L2 table offset
    data[l1 : l1 + 8] = ((1 << 63) | 0x10200).to_bytes(8, "big")
    path.write_bytes(data)
    work = tmp_path / "work"

    with pytest.raises(ConversionError) as caught:
        async for _ in raw_pieces(path, DiskFormat.QCOW2, 12 * MiB, work, piece_size=MiB, window=4 * MiB):
            pass

    assert "unaligned" in caught.value.stderr_tail and str(tmp_path) not in caught.value.stderr_tail
    assert [p for p in work.rglob("*") if p.is_file() and p.name != ".lock"] == []


async def test_raw_pieces_refuse_windows_that_are_not_whole_pieces(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        await anext(raw_pieces(tmp_path / "x", DiskFormat.QCOW2, MiB, tmp_path, piece_size=MiB, window=MiB + 512))
    with pytest.raises(ValueError):
        await anext(raw_pieces(tmp_path / "x", DiskFormat.QCOW2, MiB + 1, tmp_path, piece_size=MiB))


async def test_measure_reckons_the_expanded_data_without_writing(tmp_path: Path) -> None:
    raw = b"".join(_pattern(MiB, n) for n in range(1, 17))
    (tmp_path / "dense.raw").write_bytes(raw)
    dense = tmp_path / "dense.qcow2"
    await asyncio.to_thread(qemu_img, "convert", "-c", "-f", "raw", "-O", "qcow2", tmp_path / "dense.raw", dense)
    empty = tmp_path / "empty.qcow2"
    await create(empty, DiskFormat.QCOW2, 100 * 1024 * MiB)

    assert 16 * MiB <= await measure(dense, DiskFormat.QCOW2) < 17 * MiB  # the data and a little metadata
    assert await measure(empty, DiskFormat.QCOW2) < 32 * MiB  # metadata only, for 100 GiB of disk
    assert 16 * MiB <= await measure(tmp_path / "dense.raw", DiskFormat.RAW) < 17 * MiB
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dense.qcow2", "dense.raw", "empty.qcow2"]


async def test_measure_of_a_file_qemu_img_cannot_read_is_a_conversion_error(tmp_path: Path) -> None:
    (tmp_path / "x.vhdx").write_bytes(bytes(4096))

    with pytest.raises(ConversionError) as caught:
        await measure(tmp_path / "x.vhdx", DiskFormat.VHDX)

    assert caught.value.stderr_tail and str(tmp_path) not in caught.value.stderr_tail
