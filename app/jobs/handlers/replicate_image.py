"""REPLICATE_IMAGE: fill the QUEUED copy that `ReplicationService.replicate` created.

The copy starts out holding references to the source's manifests. Per disk the data is
kept (O(1)), re-sealed/moved, or converted to raw (`app.services.replica_data`); then one
transaction inserts the new manifests, releases the source references they replace and
compare-and-sets the copy SAVING → ACTIVE. Idempotent: an attempt that died before that
transaction left nothing referenced, and one that died after it finds the copy ACTIVE.
When the job fails, the copy becomes KILLED and lets go of what it held (`abort`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from app.datastore.errors import DatastoreError
from app.datastore.store import ChunkStore
from app.db.tables import Image
from app.db.uow import UnitOfWork
from app.domain.enums import DiskFormat, ImageKind, ImageStatus, JobType
from app.errors import KmsKeyProblem
from app.jobs.registry import JobContext, JobFailed, JobRegistry
from app.services.replica_data import CopyRefused, DiskCopier, NewManifest
from app.services.replication import REPLICATE_MAX_GIB, GiB, ReplicationService

#: Temporary files of conversions, under the data directory.
WORKDIR = "work"


def _result(image_id: str) -> dict[str, Any]:
    return {"imageId": image_id}


async def replicate_image(ctx: JobContext) -> dict[str, Any]:
    service: ReplicationService = ctx.services.replication
    chunks: ChunkStore = ctx.services.chunks
    image_id = str(ctx.params["imageId"])
    copy = await service.start(ctx.account_id, image_id)
    if copy is None or copy.status not in (ImageStatus.SAVING.value, ImageStatus.ACTIVE.value):
        raise JobFailed("IMAGE_NOT_FOUND", "The copy no longer exists.")
    if copy.status == ImageStatus.ACTIVE.value:
        return _result(image_id)  # an earlier attempt finished it

    copier = DiskCopier(chunks, ctx.services.key_provider, ctx.account_id,
                        Path(ctx.services.settings.data_dir) / WORKDIR)
    disks = [dict(d) for d in copy.disks]
    sizes = {i: (await copier.manifest(str(d["manifestId"]))).size for i, d in enumerate(disks) if d.get("manifestId")}
    total = max(1, sum(sizes.values()))
    done = 0
    replaced: list[tuple[str, NewManifest]] = []
    written: dict[int, NewManifest] = {}
    for index, size in sizes.items():
        old_id = str(disks[index]["manifestId"])
        label = f"disk {index + 1} of {len(disks)}: " if len(disks) > 1 else ""

        async def report(fraction: float, step: str, base: int = done, size: int = size, label: str = label) -> None:
            await ctx.progress((base + fraction * size) / total, label + step)

        try:
            new = await copier.copy(
                old_id, region=copy.region, kms_key_id=ctx.params.get("kmsKeyId"),
                source_format=DiskFormat(ctx.params["sourceDiskFormat"]), quick=bool(ctx.params["sourceQuick"]),
                progress=report, max_virtual_size=REPLICATE_MAX_GIB * GiB,
            )
        except KmsKeyProblem as exc:
            raise JobFailed(exc.code, exc.message) from exc
        except CopyRefused as exc:
            raise JobFailed(exc.code, exc.message) from exc
        except DatastoreError as exc:
            # A chunk of the source missing or failing its digest or tag: its data is damaged,
            # which no retry mends (the export says EXPORT_SOURCE_GONE).
            raise JobFailed("REPLICATE_SOURCE_INVALID",
                            f"The source image's stored data failed verification ({exc}).") from exc
        if new is not None:
            replaced.append((old_id, new))
            written[index] = new
            disks[index].update(manifestId=new.manifest.id, storedBytes=new.manifest.stored_bytes)
            if not ctx.params.get("sourceQuick"):
                # The conversion read the disk's real size, which the source's record may
                # understate (recorded before inspection read its format as qemu-img does).
                disks[index]["sizeGb"] = max(int(disks[index].get("sizeGb", 0)), _gib(new.manifest.size))
        done += size

    await ctx.progress(1.0, "activating the copy")
    if not await service.complete(ctx.account_id, image_id, disks, replaced, _final_values(ctx, copy, sizes, written)):
        copy = await service.start(ctx.account_id, image_id)
        if copy is None or copy.status != ImageStatus.ACTIVE.value:
            raise JobFailed("IMAGE_NOT_FOUND", "The copy no longer exists.")
    return _result(image_id)


def _gib(size: int) -> int:
    return math.ceil(size / GiB)


def _final_values(ctx: JobContext, copy: Image, sizes: dict[int, int], written: dict[int, NewManifest]
                  ) -> dict[str, Any]:
    """Size and checksum of the copy: a converted disk has new ones, and its virtual size is
    the raw disk's (a system disk's minDiskGb at least that, as an import requires); otherwise
    the plaintext is the source's, byte for byte."""
    values: dict[str, Any] = {"size_bytes": ctx.params.get("sourceSizeBytes"),
                              "checksum": ctx.params.get("sourceChecksum")}
    if len(sizes) == 1:
        [index] = sizes
        if index in written:
            manifest = written[index].manifest
            values.update(size_bytes=manifest.size, checksum=manifest.checksum)
            if not ctx.params.get("sourceQuick"):
                values["virtual_size_bytes"] = manifest.size
                if copy.kind == ImageKind.SYSTEM_DISK.value:
                    values["min_disk_gb"] = max(copy.min_disk_gb, _gib(manifest.size))
    return values


async def abort_copy(ctx: JobContext, uow: UnitOfWork) -> None:
    await ReplicationService.abort(uow, ctx.account_id, str(ctx.params["imageId"]))


def register(registry: JobRegistry) -> None:
    registry.register(JobType.REPLICATE_IMAGE, replicate_image, on_fail=abort_copy, saves_images=True)
