"""Exporting an image into a bucket of its owner as QCOW2, VMDK, VHD or RAW (DESIGN §1 "export").

`export` checks every rule, then in one transaction (holding the image row, so two exports
of one image cannot both pass the one-at-a-time check) takes a reference to the image's
manifest for the job and enqueues EXPORT_IMAGE. That reference keeps the data readable while
the job runs, even if the image is deleted meanwhile; it is let go in the transaction that
ends the job, SUCCESS or FAIL (`app.jobs.handlers.export_image`).

The rules, in the order they are checked (the first that fails answers):

    key, format                         ValidationError INVALID_OBJECT_KEY
    image not visible                   NotFoundError IMAGE_NOT_FOUND
    shared with the caller, or public   ForbiddenError NOT_OWNER (only the owner exports)
      and not the caller's
    the caller's public image           NotSupportedError EXPORT_NOT_SUPPORTED (private images only)
    FULL_ECS or ISO                     NotSupportedError EXPORT_NOT_SUPPORTED
    encrypted                           NotSupportedError EXPORT_NOT_SUPPORTED (replicate to an
                                        unencrypted copy first)
    licensed public platform in the     NotSupportedError EXPORT_NOT_SUPPORTED
      image's origin chain
    not ACTIVE                          ConflictError IMAGE_NOT_ACTIVE
    virtual size ≥ 1 TiB                NotSupportedError EXPORT_TOO_LARGE
    bucket not the caller's             NotFoundError BUCKET_NOT_FOUND
    bucket in another region            ValidationError BUCKET_REGION_MISMATCH
    key under an object of the bucket,  ValidationError OBJECT_KEY_COLLISION (no store
      or objects under it                 of files holds both `a` and `a/b`)
    an export of the image running      ConflictError EXPORT_IN_PROGRESS
"""

from __future__ import annotations

from dataclasses import dataclass

from app.compute.provision import licensed_origin
from app.db.repositories.images import VisibleImageRow
from app.db.tables import Image, Job
from app.db.uow import Database
from app.domain.enums import ExportFormat, ImageKind, ImageStatus, ImageVisibility, JobType
from app.domain.images import Caller
from app.errors import Conflict, Forbidden, Invalid, NotFound, NotSupported, register_codes
from app.jobs.service import JobService
from app.services.replication import manifest_ids, virtual_size
from app.services.storage import StorageService

register_codes({
    "EXPORT_NOT_SUPPORTED": "Only private system and data disk images that are not encrypted and have no licensed "
                            "public platform in their origin are exported.",
    "EXPORT_TOO_LARGE": "Images of 1 TiB (virtual size) or more cannot be exported.",
    "EXPORT_IN_PROGRESS": "An export of this image is running; one export per image at a time.",
    "BUCKET_REGION_MISMATCH": "The target bucket must be in the image's region.",
    # Job error codes of EXPORT_IMAGE (Job.error.code).
    "EXPORT_CONVERSION_FAILED": "The image could not be converted to the export format.",
    "EXPORT_SOURCE_GONE": "The image's data could not be read for the export.",
    "EXPORT_WRITE_FAILED": "The exported object could not be written (e.g. the bucket was deleted).",
})

TiB = 1024**4
#: An image's virtual size must be below this to be exported.
EXPORT_MAX_BYTES = 1 * TiB
EXPORT_KINDS = frozenset({ImageKind.SYSTEM_DISK.value, ImageKind.DATA_DISK.value})
#: Statuses of a job that has not ended.
ACTIVE_JOB_STATUSES = ("INIT", "RUNNING")


@dataclass(frozen=True)
class ExportRequest:
    """The fields of `ExportImageInput`."""

    image_id: str
    bucket: str
    key: str
    format: ExportFormat = ExportFormat.QCOW2


class ExportService:
    def __init__(self, db: Database, storage: StorageService, jobs: JobService) -> None:
        self.db = db
        self.storage = storage
        self.jobs = jobs

    async def export(self, caller: Caller, request: ExportRequest) -> Job:
        """Check the rules and enqueue the export; nothing is created when a rule refuses."""
        self.storage.check_key(request.key)
        async with self.db.uow(caller.account_id, write=False) as uow:
            view = await uow.images.get_visible(request.image_id)
        image = self._check_image(view, caller, request.image_id)
        bucket = await self.storage.owned_bucket(caller, request.bucket)
        if bucket.region != image.region:
            raise Invalid("BUCKET_REGION_MISMATCH", f"The image is in {image.region}, the bucket in {bucket.region}.",
                          field="input.bucket")
        await self.storage.check_key_free(bucket, request.key)

        async with self.db.uow(caller.account_id) as uow:
            # Again, holding the image row: it may have changed meanwhile, and a concurrent
            # export of it waits here until this one is enqueued (then sees it running).
            view = await uow.images.get_visible(request.image_id, for_update=True)
            image = self._check_image(view, caller, request.image_id)
            if await uow.jobs.count_for_image(image.id, (JobType.EXPORT_IMAGE.value,), ACTIVE_JOB_STATUSES):
                raise Conflict("EXPORT_IN_PROGRESS")
            stored = manifest_ids(image)
            if len(stored) != 1:
                raise NotSupported("EXPORT_NOT_SUPPORTED", "The image holds no single disk to export.")
            [manifest_id] = stored
            if not await uow.chunks.retain(manifest_id):
                raise RuntimeError(f"manifest {manifest_id} of ACTIVE image {image.id} is missing")
            job = await self.jobs.enqueue(
                uow, caller.account_id, JobType.EXPORT_IMAGE, image_ids=[image.id],
                params={
                    "imageId": image.id, "manifestId": manifest_id, "sourceFormat": image.disk_format,
                    "format": request.format.value, "bucket": bucket.name, "key": request.key,
                    "region": bucket.region, "virtualSize": virtual_size(image),
                },
            )
            await uow.commit()
        return job

    @staticmethod
    def _check_image(view: VisibleImageRow | None, caller: Caller, image_id: str) -> Image:
        if view is None:
            raise NotFound("IMAGE_NOT_FOUND", resource_id=image_id)
        image = view.image
        if image.owner_id != caller.account_id:
            raise Forbidden("NOT_OWNER", "Only the image's owner exports it.")
        if image.visibility != ImageVisibility.PRIVATE.value:
            raise NotSupported("EXPORT_NOT_SUPPORTED", "Only private images are exported.")
        if image.kind not in EXPORT_KINDS:
            raise NotSupported("EXPORT_NOT_SUPPORTED", f"{image.kind} images cannot be exported.")
        if image.kms_key_id is not None:
            raise NotSupported("EXPORT_NOT_SUPPORTED",
                               "Encrypted images cannot be exported: replicate to an unencrypted copy first.")
        platform = licensed_origin(image)
        if platform is not None:
            raise NotSupported("EXPORT_NOT_SUPPORTED",
                               f"The image comes from a licensed public {platform} image, which cannot be exported.")
        if image.status != ImageStatus.ACTIVE.value:
            raise Conflict("IMAGE_NOT_ACTIVE")
        if virtual_size(image) >= EXPORT_MAX_BYTES:
            raise NotSupported("EXPORT_TOO_LARGE")
        return image


__all__ = ["EXPORT_MAX_BYTES", "ExportRequest", "ExportService"]
