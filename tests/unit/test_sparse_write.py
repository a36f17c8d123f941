"""`write_sparse_piece`: the temporary copy of an image holds the stream's bytes, its zero
blocks of 64 KiB left as holes (what `qemu-img measure` then reckons as no data)."""

from __future__ import annotations

import os
from pathlib import Path

from app.services.replica_data import SPARSE_BLOCK, write_sparse_piece

MiB = 1024 * 1024


def test_pieces_keep_their_bytes_and_zero_blocks_become_holes(tmp_path: Path) -> None:
    first = bytearray(4 * MiB)
    first[5] = first[3 * MiB + SPARSE_BLOCK - 1] = 1  # two blocks of data
    second = bytes(2 * MiB)  # all zero
    third = bytes(SPARSE_BLOCK) + b"\x07" * 1000 + bytes(SPARSE_BLOCK + 3)  # short, not whole blocks
    path = tmp_path / "disk"
    with open(path, "wb") as fh:
        for piece in (bytes(first), second, third):
            write_sparse_piece(fh, piece)
        fh.truncate()
    assert path.read_bytes() == first + second + third
    fd = os.open(path, os.O_RDONLY)
    try:
        data = []
        offset = 0
        while True:
            try:
                offset = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, offset, os.SEEK_HOLE)
            data.append((offset, end))
            offset = end
    finally:
        os.close(fd)
    start = 6 * MiB + SPARSE_BLOCK
    assert data == [(0, SPARSE_BLOCK), (3 * MiB, 3 * MiB + SPARSE_BLOCK), (start, start + SPARSE_BLOCK)]
