"""EXPORT_IMAGE: write an image's data into its owner's bucket in the asked format.

`ExportService.export` took a reference to the image's manifest for the job; the data stays
readable while the job runs (even if the image is deleted meanwhile), and `release_source`
lets go of it in the transaction that ends the job.

Two ways:

    STREAM   the stored bytes already are the asked format (a quick image exported as RAW,
             a QCOW2 import exported as QCOW2, …): the verified chunks stream straight into
             the object store, with no temporary copy and bounded memory.
    CONVERT  the stored bytes go to a sparse temporary file, are inspected again (unless
             raw: read as raw, they name no other file), and qemu-img converts them (VHD with force_size, VMDK streamOptimized); the result
             is uploaded and the temporary files are removed whatever happens.

A raw disk is as large as the image's virtual size, also where its manifest holds less (a
disk of a server or volume stores what was written, the rest reads as zeros): the exported
RAW file is padded with zeros to that size, and a raw source converted to another format is
first extended to it (sparsely), so the converted disk has the image's size too.

The object store writes atomically (a reader never sees half an object), so a re-run after a
crash simply writes the object again. The result names the object, its size and SHA-256.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path
from typing import Any

from app.datastore.chunks import CHUNK_SIZE
from app.datastore.errors import DatastoreError
from app.datastore.store import ChunkStore
from app.datastore.tables import Manifest
from app.db.types import utcnow
from app.db.uow import UnitOfWork
from app.domain.enums import DiskFormat, JobType
from app.formats import (
    ConversionError,
    FormatError,
    confirm,
    convert,
    free_bytes,
    inspect_file_async,
    measure,
    raw_pieces,
    temporary_workfile,
)
from app.jobs.registry import JobContext, JobFailed, JobRegistry
from app.services.exports import EXPORT_MAX_BYTES
from app.services.replica_data import counted, file_pieces, write_sparse_file
from app.storage.base import ObjectStore, StorageError

#: Temporary files of conversions, under the data directory.
WORKDIR = "work"
#: Shares of the progress bar when converting: reading, converting, uploading.
READ_SHARE, CONVERT_SHARE = 0.4, 0.2


async def export_image(ctx: JobContext) -> dict[str, Any]:
    params = ctx.params
    chunks: ChunkStore = ctx.services.chunks
    manifest_id = str(params["manifestId"])
    source, target = DiskFormat(params["sourceFormat"]), DiskFormat(params["format"])
    bucket, key, region = str(params["bucket"]), str(params["key"]), str(params["region"])
    store: ObjectStore = ctx.services.storage.store(region)
    try:
        manifest = await chunks.head(manifest_id)
    except KeyError:
        raise JobFailed("EXPORT_SOURCE_GONE", "The image's data is gone.") from None
    if manifest.kms_key_id is not None:  # refused by the mutation; never decrypted here
        raise JobFailed("EXPORT_NOT_SUPPORTED", "Encrypted images cannot be exported.")
    total = max(1, manifest.size)
    # The raw disk's size: the image's virtual size (recorded when the export was asked for).
    disk_size = max(manifest.size, int(params.get("virtualSize") or 0)) if source is DiskFormat.RAW else 0
    try:
        if source is target:
            info = await _stream(ctx, chunks, manifest, store, bucket, key, target, disk_size)
        else:
            info = await _convert(ctx, chunks, manifest_id, total, store, bucket, key, source, target, disk_size)
    except DatastoreError as exc:
        ctx.log.error("job %s: reading image data failed: %s", ctx.job_id, exc)
        raise JobFailed("EXPORT_SOURCE_GONE", "The image's data could not be read back intact.") from exc
    except StorageError as exc:
        raise JobFailed("EXPORT_WRITE_FAILED", f"Writing {bucket}/{key} failed: {exc}") from exc
    return {"bucket": bucket, "key": key, "region": region, "size": info.size, "checksum": info.checksum,
            "format": target.value}


async def _stream(
    ctx: JobContext, chunks: ChunkStore, manifest: Manifest, store: ObjectStore, bucket: str, key: str,
    target: DiskFormat, disk_size: int = 0,
) -> Any:
    """The stored bytes as they are, then zeros up to `disk_size` (a raw disk's size). Each
    chunk is checked against its SHA-256 as it is read, and the manifest's checksum was taken
    over those very chunks when it was written: without padding the object's checksum is the
    manifest's, not a second pass over every byte."""
    step = f"writing {target.value}"
    await ctx.progress(0.0, step)
    padding = max(0, disk_size - manifest.size)
    total = max(1, manifest.size + padding)

    async def pieces() -> AsyncGenerator[bytes, None]:
        done = 0
        async with aclosing(chunks.read(manifest.id)) as stream:
            async for piece in stream:
                yield piece
                done += len(piece)
                await ctx.progress(done / total, step)
        if done != manifest.size:
            raise DatastoreError(f"manifest {manifest.id} read back {done} bytes of {manifest.size}")
        zeros = bytes(min(CHUNK_SIZE, padding))
        while done < total:
            piece = zeros[: min(len(zeros), total - done)]
            yield piece
            done += len(piece)
            await ctx.progress(done / total, step)

    known = None if padding else manifest.checksum.removeprefix("sha256:")
    return await store.put_stream(bucket, key, pieces(), sha256=known)


async def _convert(
    ctx: JobContext, chunks: ChunkStore, manifest_id: str, total: int, store: ObjectStore, bucket: str, key: str,
    source: DiskFormat, target: DiskFormat, disk_size: int = 0,
) -> Any:
    workdir = Path(ctx.services.settings.data_dir) / WORKDIR
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    async with temporary_workfile(workdir, ".src") as src, temporary_workfile(workdir, "." + target.value.lower()) as dst:
        await ctx.progress(0.0, "reading the image")

        async def read(done: int) -> None:
            await ctx.progress(READ_SHARE * done / total, "reading the image")

        # A raw disk's zeros up to its size: sparse.
        await write_sparse_file(src, chunks.read(manifest_id), size=disk_size, progress=read)
        await ctx.progress(READ_SHARE, f"converting to {target.value}")
        try:
            # Inspected at import already; checked again before qemu-img touches it, and its size
            # with it (the image's recorded size may predate how inspection reads it now). Not a
            # raw disk: qemu-img reads it as raw (`-f raw`) whatever it holds, and a guest's disk
            # may well hold an ISO 9660 filesystem or a qcow2 file, which the inspector would name.
            if source is not DiskFormat.RAW:
                inspected = await inspect_file_async(src, source)
                if inspected.virtual_size >= EXPORT_MAX_BYTES:
                    raise JobFailed("EXPORT_TOO_LARGE", f"The image's disk is {inspected.virtual_size} bytes: "
                                    f"images of {EXPORT_MAX_BYTES} bytes or more cannot be exported.")
                if target is DiskFormat.RAW:
                    raw_size = await confirm(src, source, inspected.virtual_size)
                    return await _upload_raw(ctx, src, source, raw_size, workdir, store, bucket, key)
                await confirm(src, source, inspected.virtual_size)
            # The converted file is written whole before its upload: a disk whose data expands
            # past the scratch space left (a compressed qcow2 of a few KiB can hold gigabytes)
            # is refused before qemu-img fills the service's disk with it. qemu's VHDX driver
            # reports no holes (measure would reckon every VHDX at its whole virtual size): its
            # conversions are left to the out-of-space handling below.
            required = 0 if source is DiskFormat.VHDX else await measure(src, source)
            if required > await asyncio.to_thread(free_bytes, workdir):
                raise JobFailed("INSUFFICIENT_STORAGE", f"Converting the image to {target.value} takes about "
                                f"{required} bytes of scratch space, more than the service has free now; "
                                "nothing was kept. Try again later.")
            await convert(src, source, dst, target)
        except (FormatError, ConversionError) as exc:
            if isinstance(exc, ConversionError) and exc.out_of_space:
                raise  # the disk is full, not the image at fault: INSUFFICIENT_STORAGE
            raise JobFailed("EXPORT_CONVERSION_FAILED", f"Converting the image to {target.value} failed: {exc}") from exc
        size = max(1, (await asyncio.to_thread(dst.stat)).st_size)
        base = READ_SHARE + CONVERT_SHARE
        step = f"uploading {target.value}"

        async def report(uploaded: int) -> None:
            await ctx.progress(base + (1 - base) * uploaded / size, step)

        await ctx.progress(base, step)
        return await store.put_stream(bucket, key, file_pieces(dst, report))


async def _upload_raw(
    ctx: JobContext, src: Path, source: DiskFormat, raw_size: int, workdir: Path, store: ObjectStore, bucket: str,
    key: str,
) -> Any:
    """A non-raw image exported as RAW: converted a window at a time (`raw_pieces`) straight
    into the object store, so the scratch space taken is two windows', not the raw disk's."""
    base = READ_SHARE
    step = "converting to RAW and uploading it"

    async def report(done: int) -> None:
        await ctx.progress(base + (1 - base) * done / max(1, raw_size), step)

    await ctx.progress(base, step)
    pieces = counted(raw_pieces(src, source, raw_size, workdir, piece_size=CHUNK_SIZE), report)
    async with aclosing(pieces):
        return await store.put_stream(bucket, key, pieces)


async def release_source(ctx: JobContext, uow: UnitOfWork) -> None:
    """In the transaction that ends the job: the export no longer needs the image's data."""
    manifest_id = ctx.params.get("manifestId")
    if manifest_id:  # every job exportImage enqueues names it
        await uow.chunks.release(str(manifest_id), utcnow())


def register(registry: JobRegistry) -> None:
    # No image is created: nothing to kill on failure, only the reference to let go of.
    registry.register(JobType.EXPORT_IMAGE, export_image, on_fail=None, on_finish=release_source)
