"""IMPORT_IMAGE: inspect the uploaded file, store it as chunks, make the image ACTIVE.

Idempotent: an image already ACTIVE means an earlier attempt finished; a SAVING image of a
dead attempt is simply written again (plain chunks deduplicate; the unused chunks of the
dead attempt are collected after the grace period).
"""

from __future__ import annotations

import math
import secrets
from typing import Any

from app.datastore.store import ChunkStore, DataKey, PendingManifest
from app.db.types import utcnow
from app.domain.enums import DiskFormat, ImageKind, ImageStatus, JobType
from app.errors import ImsError
from app.jobs.registry import JobContext, JobFailed, JobRegistry, kill_job_images
from app.services.ingest import IngestError, ingest

GiB = 1024**3


async def _image(ctx: JobContext, image_id: str) -> Any:
    async with ctx.services.db.uow(ctx.account_id) as uow:
        view = await uow.images.get_visible(image_id)
    if view is None:
        raise JobFailed("IMAGE_NOT_FOUND", "The image was deleted before it was written.")
    return view.image


async def _set_saving(ctx: JobContext, image: Any) -> None:
    """QUEUED → SAVING, compared with the version read under the row lock: the owner may tag
    or protect the QUEUED image (a new version) after `_image` read it, and a compare-and-set
    with that older version would leave it QUEUED, which `_activate` refuses at the end."""
    if image.status != ImageStatus.QUEUED.value:
        return
    async with ctx.services.db.uow(ctx.account_id) as uow:
        current = await uow.images.get_visible(image.id, for_update=True)
        if current is None:
            raise JobFailed("IMAGE_NOT_FOUND", "The image was deleted before it was written.")
        if current.image.status == ImageStatus.QUEUED.value:
            await uow.images.compare_and_set(
                image.id, current.image.version, {"status": ImageStatus.SAVING.value, "updated_at": utcnow()},
                expected_status=ImageStatus.QUEUED.value,
            )
            await uow.commit()


async def _data_key(ctx: JobContext, kms_key_id: str | None) -> DataKey | None:
    if kms_key_id is None:
        return None
    try:
        plaintext, wrapped = await ctx.services.key_provider.generate_data_key(ctx.account_id, kms_key_id)
    except ImsError as exc:  # e.g. the key was disabled after the request was accepted
        raise JobFailed(exc.code, exc.message) from exc
    return DataKey(kms_key_id, "dk-" + secrets.token_hex(8), plaintext, wrapped)


def _check_kind(image: Any, fmt: DiskFormat, virtual_size: int) -> None:
    if (image.kind == ImageKind.ISO.value) != (fmt is DiskFormat.ISO):
        raise JobFailed("FORMAT_MISMATCH", "ISO images need an ISO file, and ISO files make ISO images.")
    needed = math.ceil(virtual_size / GiB)
    if image.kind == ImageKind.SYSTEM_DISK.value and image.min_disk_gb < needed:
        raise JobFailed("MIN_DISK_TOO_SMALL", f"The disk is {needed} GiB: minDiskGb must be at least that.")


async def handle(ctx: JobContext) -> dict[str, Any] | None:
    [image_id] = ctx.image_ids
    image = await _image(ctx, image_id)
    if image.status == ImageStatus.ACTIVE.value:
        return {"imageId": image_id}
    await _set_saving(ctx, image)
    p = ctx.params
    services = ctx.services
    key = await _data_key(ctx, image.kms_key_id)
    declared = DiskFormat(p["declared"]) if p.get("declared") else None
    try:
        got = await ingest(
            services.storage.store(p["region"]), p["bucket"], p["key"], declared=declared,
            chunks=services.chunks, region=p["region"], data_key=key, progress=ctx.progress,
        )
    except IngestError as exc:
        raise JobFailed(exc.code, exc.message) from exc
    fmt = got.inspection.format
    _check_kind(image, fmt, got.inspection.virtual_size)
    await ctx.progress(0.97, "activating the image")
    await _activate(ctx, image, got.pending, fmt, got.inspection.virtual_size)
    return {"imageId": image_id}


async def _activate(ctx: JobContext, image: Any, pending: PendingManifest, fmt: DiskFormat, virtual_size: int) -> None:
    """SAVING → ACTIVE in the transaction that records the image's manifest: a crash before it
    leaves only unreferenced chunks (garbage collection takes them), never a manifest nobody
    owns."""
    manifest = pending.manifest
    role = "DATA" if image.kind == ImageKind.DATA_DISK.value else "SYSTEM"
    values = {
        "status": ImageStatus.ACTIVE.value, "disk_format": fmt.value, "size_bytes": manifest.size,
        "virtual_size_bytes": virtual_size, "checksum": manifest.checksum,
        "quick_provisioning": fmt is DiskFormat.RAW, "updated_at": utcnow(),
        "disks": [{"role": role, "sizeGb": max(image.min_disk_gb, math.ceil(virtual_size / GiB)),
                   "storedBytes": manifest.stored_bytes, "manifestId": manifest.id}],
    }
    if ctx.params.get("public"):
        values["visibility"] = "PUBLIC"
    async with ctx.services.db.uow(ctx.account_id) as uow:
        current = await uow.images.get_visible(image.id, for_update=True)
        if current is not None and current.image.status == ImageStatus.ACTIVE.value:
            # An earlier attempt whose lease lapsed while it still ran saved it first: that
            # attempt's manifest stays the image's, this one's is never recorded.
            return
        if current is None or not await uow.images.compare_and_set(
            image.id, current.image.version, values, expected_status=ImageStatus.SAVING.value
        ):
            raise JobFailed("IMAGE_NOT_FOUND", "The image was deleted while it was written.")
        await ChunkStore.add_pending(uow, pending)
        await uow.commit()


def register(registry: JobRegistry) -> None:
    registry.register(JobType.IMPORT_IMAGE, handle, on_fail=kill_job_images, saves_images=True)
