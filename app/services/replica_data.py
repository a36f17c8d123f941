"""The data side of a replication: one disk's manifest into the copy's.

Three ways, chosen per disk (`plan`):

    KEEP     same region, plain source, plain copy, source already raw (quick): the copy
             keeps the reference `replicate` took on the source's manifest — O(1).
    RESEAL   another key (plain → sealed, sealed → plain, key A → key B) or another region:
             every chunk is read, verified, decrypted with the source's data key, sealed
             with a fresh data key of the copy's KMS key, and written into the target
             region's store (plain chunks the target already holds are not uploaded).
    CONVERT  the source keeps a non-raw import as it was uploaded (quickProvisioning
             false): the stream goes to a temporary file, is inspected again, converted to
             raw by qemu-img a window at a time (`raw_pieces`: scratch space for two windows,
             whatever the raw disk's size), and the raw stream is stored (sealed when the copy
             is).

A new manifest is returned uncommitted (`NewManifest`): the job inserts it in the same
transaction that activates the copy and drops the source reference, so an attempt that dies
half way leaves only unreferenced chunks, which garbage collection reclaims.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import BinaryIO

from app.datastore.chunks import CHUNK_SIZE, ChunkRef, WriteResult, is_zero, zeros
from app.datastore.crypto import SEAL_OVERHEAD, Opener, Sealer
from app.datastore.reader import read_stream
from app.datastore.reseal import reseal
from app.datastore.store import ChunkStore, DataKey
from app.datastore.tables import Manifest
from app.datastore.writer import ChunkWriter
from app.db.types import new_id, utcnow
from app.domain.enums import DiskFormat
from app.formats import (
    ConversionError,
    FormatError,
    confirm,
    inspect_file_async,
    raw_pieces,
    temporary_workfile,
)
from app.kms.port import KeyProvider
from app.storage.factory import service_bucket

#: `(fraction of this disk done, step in words)`.
DiskProgress = Callable[[float, str], Awaitable[None]]


class Plan(Enum):
    KEEP = "KEEP"
    RESEAL = "RESEAL"
    CONVERT = "CONVERT"


class CopyRefused(Exception):
    """The data cannot be copied the expected way (a job error code and message)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class NewManifest:
    """A written, not yet committed manifest: its row, chunk list and chunk sizes."""

    manifest: Manifest
    refs: list[tuple[int, str | None, int]]
    sizes: dict[str, int]


def plan(source: Manifest, *, region: str, kms_key_id: str | None, quick: bool) -> Plan:
    if not quick:
        return Plan.CONVERT
    if source.region == region and source.kms_key_id is None and kms_key_id is None:
        return Plan.KEEP
    return Plan.RESEAL


#: Zero runs of a temporary file become holes this many bytes at a time (qcow2's cluster).
SPARSE_BLOCK = 64 * 1024


def write_sparse_piece(fh: BinaryIO, piece: bytes) -> None:
    """Write `piece` at the file's position, its zero blocks of `SPARSE_BLOCK` bytes left as
    holes: the temporary file costs what the data does, and `qemu-img measure`, which counts
    every allocated byte of a file as data, reckons a conversion of it as qemu-img writes it (a
    chunk with a few bytes among zeros, held whole, was reckoned as 4 MiB of data)."""
    if is_zero(piece):
        fh.seek(len(piece), 1)
        return
    view = memoryview(piece)
    zero = zeros(SPARSE_BLOCK)
    start = 0  # the data not yet written: view[start:offset]
    for offset in range(0, len(piece), SPARSE_BLOCK):
        # A slice of bytes compares with one memcmp (a memoryview's, byte by byte).
        if piece[offset : offset + SPARSE_BLOCK] != zero[: min(SPARSE_BLOCK, len(piece) - offset)]:
            continue
        if start < offset:
            fh.write(view[start:offset])
        fh.seek(min(SPARSE_BLOCK, len(piece) - offset), 1)
        start = offset + SPARSE_BLOCK
    if start < len(piece):
        fh.write(view[start:])


async def write_sparse_file(
    path: Path, pieces: AsyncGenerator[bytes, None], *, size: int = 0,
    progress: Callable[[int], Awaitable[None]] | None = None,
) -> int:
    """Write `pieces` into the work file `path` from its start, zero blocks left as holes
    (`write_sparse_piece`), and extend it (sparsely) to `size` bytes if it is shorter; reports
    the bytes written so far after each piece. Returns the bytes written; closing is `pieces`'s
    too, whatever happens."""
    fh = await asyncio.to_thread(open, path, "r+b")
    try:
        done = 0
        async with aclosing(pieces) as stream:
            async for piece in stream:
                await asyncio.to_thread(write_sparse_piece, fh, piece)
                done += len(piece)
                if progress is not None:
                    await progress(done)
        await asyncio.to_thread(fh.truncate, max(done, size))
    finally:
        await asyncio.to_thread(fh.close)
    return done


async def file_pieces(path: Path, progress: Callable[[int], Awaitable[None]]) -> AsyncIterator[bytes]:
    """The file's bytes in chunk-sized pieces, reporting the bytes read so far."""
    fh = await asyncio.to_thread(open, path, "rb")
    try:
        done = 0
        while True:
            piece = await asyncio.to_thread(fh.read, CHUNK_SIZE)
            if not piece:
                return
            done += len(piece)
            await progress(done)
            yield piece
    finally:
        await asyncio.to_thread(fh.close)


async def counted(
    source: AsyncGenerator[bytes, None], progress: Callable[[int], Awaitable[None]]
) -> AsyncGenerator[bytes, None]:
    """`source`'s pieces, reporting the bytes passed on so far; closing it closes `source`."""
    async with aclosing(source) as pieces:
        done = 0
        async for piece in pieces:
            done += len(piece)
            await progress(done)
            yield piece


class DiskCopier:
    """Copies disks for one account (whose KMS rights decide what it may decrypt and seal)."""

    def __init__(self, chunks: ChunkStore, kms: KeyProvider, account_id: str, workdir: Path) -> None:
        self.chunks = chunks
        self.kms = kms
        self.account_id = account_id
        self.workdir = workdir

    async def copy(
        self, manifest_id: str, *, region: str, kms_key_id: str | None, source_format: DiskFormat, quick: bool,
        progress: DiskProgress, max_virtual_size: int,
    ) -> NewManifest | None:
        """The copy's manifest for the disk `manifest_id`; None when the copy keeps the source's.
        Raises KmsKeyProblem when a key cannot be used, CopyRefused when conversion fails or
        the file to convert is a disk larger than `max_virtual_size` (the replication limit)."""
        source = await self.manifest(manifest_id)
        how = plan(source, region=region, kms_key_id=kms_key_id, quick=quick)
        if how is Plan.KEEP:
            await progress(1.0, "sharing the source's data")
            return None
        _, refs = await self.chunks.load(manifest_id)
        opener = await self._opener(source)
        key = await self._data_key(kms_key_id)
        sealer = Sealer(key.plaintext, key.data_key_id) if key else None
        if how is Plan.RESEAL:
            result = await self._reseal(source, refs, opener, sealer, region, progress)
        else:
            result = await self._convert(source, refs, opener, sealer, region, source_format, progress,
                                         max_virtual_size)
        return self._manifest(result, region, key)

    async def manifest(self, manifest_id: str) -> Manifest:
        """The manifest's row alone (its chunk list is only read when the data is copied)."""
        async with self.chunks.db.uow(write=False) as uow:
            found = await uow.chunks.manifest(manifest_id)
        if found is None:
            raise KeyError(manifest_id)
        return found

    async def _opener(self, source: Manifest) -> Opener | None:
        if source.kms_key_id is None:
            return None
        assert source.wrapped_key is not None and source.data_key_id is not None
        plaintext = await self.kms.decrypt_data_key(self.account_id, source.kms_key_id, source.wrapped_key)
        return Opener(plaintext, source.data_key_id)

    async def _data_key(self, kms_key_id: str | None) -> DataKey | None:
        if kms_key_id is None:
            return None
        plaintext, wrapped = await self.kms.generate_data_key(self.account_id, kms_key_id)
        return DataKey(kms_key_id, new_id("dk"), plaintext, wrapped)

    async def _reseal(
        self, source: Manifest, refs: list[ChunkRef], opener: Opener | None, sealer: Sealer | None, region: str,
        progress: DiskProgress,
    ) -> WriteResult:
        step = "copying to " + region if region != source.region else (
            "re-encrypting" if opener and sealer else "encrypting" if sealer else "decrypting")
        total = max(1, source.size)

        async def report(done: int) -> None:
            await progress(done / total, step)

        await progress(0.0, step)
        return await reseal(
            refs, opener, sealer,
            src_store=self.chunks.stores[source.region], src_bucket=service_bucket(source.region),
            total_size=source.size, checksum=source.checksum,
            dst_store=self.chunks.stores[region], dst_bucket=service_bucket(region),
            exists=self.chunks.claimer(region), progress=report,
        )

    async def _convert(
        self, source: Manifest, refs: list[ChunkRef], opener: Opener | None, sealer: Sealer | None, region: str,
        source_format: DiskFormat, progress: DiskProgress, max_virtual_size: int,
    ) -> WriteResult:
        await asyncio.to_thread(self.workdir.mkdir, parents=True, exist_ok=True)
        total = max(1, source.size)
        async with temporary_workfile(self.workdir, ".src") as src:
            await progress(0.0, "reading the image")
            plaintext = read_stream(
                refs, store=self.chunks.stores[source.region], bucket=service_bucket(source.region), opener=opener,
                total_size=source.size,
            )

            async def read(done: int) -> None:
                await progress(0.4 * done / total, "reading the image")

            await write_sparse_file(src, plaintext, size=source.size, progress=read)
            await progress(0.4, "converting to raw")
            try:
                # Inspected at import already; checked again before qemu-img touches it, and its
                # size with it: the image's recorded size may predate how inspection reads it now.
                inspected = await inspect_file_async(src, source_format)
                if inspected.virtual_size > max_virtual_size:
                    raise CopyRefused("REPLICATE_TOO_LARGE", f"The image's disk is {inspected.virtual_size} bytes: "
                                      f"over {max_virtual_size} bytes, it cannot be replicated.")
                raw_size = await confirm(src, source_format, inspected.virtual_size)

                async def report(done: int) -> None:
                    await progress(0.4 + 0.6 * done / max(1, raw_size), "converting to raw and storing it")

                # A window at a time (`raw_pieces`): scratch space for two, whatever the disk's size.
                pieces = counted(raw_pieces(src, source_format, raw_size, self.workdir, piece_size=CHUNK_SIZE), report)
                async with aclosing(pieces):
                    return await ChunkWriter().write_stream(
                        pieces, store=self.chunks.stores[region], bucket=service_bucket(region),
                        seal=sealer, exists=self.chunks.claimer(region),
                    )
            except (FormatError, ConversionError) as exc:
                if isinstance(exc, ConversionError) and exc.out_of_space:
                    raise  # the disk is full, not the image at fault (the job says so)
                raise CopyRefused("REPLICATE_CONVERSION_FAILED", f"Converting the image to raw failed: {exc}") from exc

    @staticmethod
    def _manifest(result: WriteResult, region: str, key: DataKey | None) -> NewManifest:
        overhead = SEAL_OVERHEAD if key else 0
        sizes = {r.digest: r.length + overhead for r in result.chunks if r.digest is not None}
        manifest = Manifest(
            id=new_id("man"), region=region, size=result.size, checksum=result.checksum, new_bytes=result.new_bytes,
            stored_bytes=sum(r.length + overhead for r in result.chunks if r.digest),
            kms_key_id=key.kms_key_id if key else None, data_key_id=key.data_key_id if key else None,
            wrapped_key=key.wrapped if key else None, refcount=1, created_at=utcnow(),
        )
        return NewManifest(manifest, [(r.index, r.digest, r.length) for r in result.chunks], sizes)


__all__ = ["CopyRefused", "DiskCopier", "DiskProgress", "NewManifest", "Plan", "counted", "file_pieces", "plan", "write_sparse_file",
           "write_sparse_piece"]
