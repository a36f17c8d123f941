"""Object files written with O_DIRECT (`app.storage.direct`): exact bytes whatever the
piece sizes, the flag really set on the descriptor, and the buffered fallback when the
kernel refuses a write."""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from pathlib import Path

import pytest

from app.storage import direct
from app.storage.direct import ALIGN, STAGING_BYTES, ObjectFile, ObjectReader


def _kernel_takes_direct(directory: Path) -> bool:
    """Whether this filesystem accepts O_DIRECT writes (probed with the kernel, not assumed)."""
    fd, name = tempfile.mkstemp(dir=directory)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_DIRECT)
        import mmap

        with mmap.mmap(-1, ALIGN) as block:
            os.write(fd, block)
        return True
    except OSError as exc:
        assert exc.errno in (errno.EINVAL, errno.EOPNOTSUPP)
        return False
    finally:
        os.close(fd)
        os.unlink(name)


def _flags(fd: int) -> int:
    for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("flags:"):
            return int(line.split()[1], 8)
    raise AssertionError("no flags line")


def _new_file(directory: Path, **kwargs: object) -> tuple[ObjectFile, Path]:
    fd, name = tempfile.mkstemp(dir=directory)
    return ObjectFile(fd, direct=True, **kwargs), Path(name)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "pieces",
    [
        [],
        [b"x"],
        [b"a" * (ALIGN - 1)],
        [b"b" * ALIGN],
        [b"c" * (ALIGN + 1)],
        [os.urandom(STAGING_BYTES)],
        [os.urandom(STAGING_BYTES + 1)],
        [os.urandom(1000), os.urandom(STAGING_BYTES), os.urandom(3 * ALIGN + 7), b"", os.urandom(STAGING_BYTES - 5)],
    ],
    ids=["empty", "one-byte", "block-less-one", "one-block", "block-plus-one", "staging", "staging-plus-one", "mixed"],
)
def test_the_file_holds_exactly_the_bytes_written(tmp_path: Path, pieces: list[bytes]) -> None:
    file, path = _new_file(tmp_path)
    try:
        assert file.direct == _kernel_takes_direct(tmp_path)
        assert bool(_flags(file.fileno()) & os.O_DIRECT) == file.direct
        for piece in pieces:
            file.write(piece)
        file.flush()
        assert file.size == sum(map(len, pieces))
    finally:
        file.close()
    assert path.read_bytes() == b"".join(pieces)


def test_a_refused_write_goes_on_buffered_from_where_it_stood(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not _kernel_takes_direct(tmp_path):
        pytest.skip("this filesystem refuses O_DIRECT at once: the open-time fallback applies")
    # Alignment 1: the tail goes to the kernel unpadded, which a device wanting 512-byte
    # blocks refuses with EINVAL under O_DIRECT. Some filesystems take it (tmpfs on recent
    # kernels): the refusal is that of such a device, whatever this one does.
    write_all = direct._write_all

    def as_a_512_byte_device(fd: int, view: memoryview) -> None:
        if _flags(fd) & os.O_DIRECT and len(view) % 512:
            raise OSError(errno.EINVAL, "Invalid argument")
        write_all(fd, view)

    monkeypatch.setattr(direct, "_write_all", as_a_512_byte_device)
    file, path = _new_file(tmp_path, align=1)
    head, tail = os.urandom(STAGING_BYTES), os.urandom(10)
    try:
        file.write(head)  # a whole staging buffer: written with O_DIRECT
        assert file.direct and _flags(file.fileno()) & os.O_DIRECT
        file.write(tail)
        file.flush()
        assert not file.direct
        assert not _flags(file.fileno()) & os.O_DIRECT
    finally:
        file.close()
    assert path.read_bytes() == head + tail


def test_buffered_when_not_asked(tmp_path: Path) -> None:
    fd, name = tempfile.mkstemp(dir=tmp_path)
    file = ObjectFile(fd, direct=False)
    try:
        assert not file.direct and not _flags(fd) & os.O_DIRECT
        file.write(b"plain")
        file.flush()
    finally:
        file.close()
    assert Path(name).read_bytes() == b"plain"


def test_staging_buffers_are_reused_and_page_aligned(tmp_path: Path) -> None:
    import ctypes

    first, _ = _new_file(tmp_path)
    first.write(b"x")
    buffer = first._buffer
    assert buffer is not None
    address = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    assert address % ALIGN == 0
    first.flush()
    first.close()
    second, _ = _new_file(tmp_path)
    second.write(b"y")
    assert second._buffer is buffer  # taken back from the pool, its pages already mapped
    second.close()
    assert direct._pool[-1] is buffer


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    data = os.urandom(STAGING_BYTES + 5000)
    path = tmp_path_factory.mktemp("direct") / "object"
    path.write_bytes(data)
    return path, data


@pytest.mark.parametrize("position", [0, 1, ALIGN - 1, ALIGN, STAGING_BYTES - 1, STAGING_BYTES + 4999, STAGING_BYTES + 5000])
@pytest.mark.parametrize("size", [1, ALIGN, STAGING_BYTES, 2 * STAGING_BYTES])
def test_reads_return_exactly_the_range_asked_for(stored: tuple[Path, bytes], position: int, size: int) -> None:
    path, data = stored
    with ObjectReader(os.open(path, os.O_RDONLY), direct=True, position=position) as reader:
        assert reader.direct == _kernel_takes_direct(path.parent)
        assert bool(_flags(reader.fileno()) & os.O_DIRECT) == reader.direct
        first = reader.read(size)
        rest = reader.readall()
        assert reader.position == len(data)
    assert first == data[position:position + size]
    assert first + rest == data[position:]


def test_a_reader_is_closed_once(stored: tuple[Path, bytes]) -> None:
    path, data = stored
    reader = ObjectReader(os.open(path, os.O_RDONLY), direct=False)
    assert (reader.read(10), reader.direct, reader.closed) == (data[:10], False, False)
    fd = reader.fileno()
    reader.close()
    reader.close()
    assert reader.closed
    with pytest.raises(OSError):
        os.fstat(fd)


def test_a_write_refused_mid_stream_keeps_the_bytes_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A filesystem that takes the O_DIRECT flag but refuses the write itself (a block larger
    than a page, some FUSE filesystems): the file goes on buffered, every byte in its place —
    the rest of the piece being written and the pieces after it included."""
    if not _kernel_takes_direct(tmp_path):
        pytest.skip("this filesystem refuses O_DIRECT at once: the open-time fallback applies")
    real = direct._write_all
    refused: list[int] = []

    def refuse_direct_writes(fd: int, view: memoryview) -> None:
        if _flags(fd) & os.O_DIRECT:
            refused.append(len(view))
            raise OSError(errno.EINVAL, "Invalid argument")
        real(fd, view)

    monkeypatch.setattr(direct, "_write_all", refuse_direct_writes)
    file, path = _new_file(tmp_path)
    pieces = [os.urandom(STAGING_BYTES + 100), os.urandom(50), os.urandom(STAGING_BYTES), os.urandom(7)]
    try:
        assert file.direct
        for piece in pieces:
            file.write(piece)
        file.flush()
        assert not file.direct and refused == [STAGING_BYTES]
    finally:
        file.close()
    assert path.read_bytes() == b"".join(pieces)
