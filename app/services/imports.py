"""Importing image files: every rule checked up front, then a durable IMPORT_IMAGE job.

The mutation validates the request (DESIGN §1 "import", "quotas", "encrypt"), then in one
transaction creates the QUEUED image, its tags and the job. The job (app.jobs.handlers.
import_image) inspects and stores the data and makes the image ACTIVE, or KILLED.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from app.db.tables import Image, ImageTag, Job
from app.db.types import new_id, utcnow
from app.db.uow import Database
from app.domain.compute import OsSpec, validate_os
from app.domain.enums import (
    DiskFormat,
    ImageKind,
    ImageStatus,
    JobType,
)
from app.domain.images import Caller
from app.domain.rules import (
    TAGS_PER_IMAGE,
    validate_description,
    validate_name,
    validate_ram,
    validate_tags,
)
from app.errors import (
    Forbidden,
    Invalid,
    KmsKeyProblem,
    LimitExceeded,
    NotFound,
    NotSupported,
    register_codes,
)
from app.jobs.service import JobService
from app.kms.port import KeyProvider
from app.services.ingest import MAX_IMPORT_BYTES
from app.services.quotas import check_creation_quotas
from app.services.storage import StorageService

register_codes({
    "INVALID_MIN_DISK": "minDiskGb: 1-1024 for system disk and ISO images, 1-2048 for data disk images.",
    "IMPORT_KIND_NOT_SUPPORTED": "Only SYSTEM_DISK, DATA_DISK and ISO images are imported from files.",
    "FILE_TOO_LARGE": "Image files are at most 128 GiB.",
    "PUBLIC_NOT_ENCRYPTED": "Public images cannot be encrypted.",
    # Job error codes of IMPORT_IMAGE (Job.error.code).
    "FORMAT_MISMATCH": "The file's real format is not the declared one (or an ISO file for another kind).",
    "UNSAFE_IMAGE_FILE": "The file names other files (backing/data files, VMDK extents), has unknown features, "
                         "is truncated or describes an absurd size; nothing was kept.",
    "UNSUPPORTED_FORMAT": "Not a disk format the service accepts (compressed archives: decompress first).",
    "INVALID_IMAGE_FILE": "The file is empty, damaged, or changed while it was imported.",
    "MIN_DISK_TOO_SMALL": "minDiskGb is smaller than the image's virtual disk.",
})

SYSTEM_MIN_DISK_MAX = 1024
DATA_MIN_DISK_MAX = 2048


@dataclass
class ImportRequest:
    bucket: str
    key: str
    name: str
    min_disk_gb: int
    description: str = ""
    kind: ImageKind = ImageKind.SYSTEM_DISK
    disk_format: DiskFormat | None = None
    os: OsSpec | None = None
    min_ram_mb: int = 0
    max_ram_mb: int | None = None
    boot_mode: str = "BIOS"
    kms_key_id: str | None = None
    encrypt_with_default_key: bool = False
    tags: list[tuple[str, str]] = field(default_factory=list)
    public: bool = False


def _validate(caller: Caller, req: ImportRequest) -> ImportRequest:
    """The request with its name and description as stored (`validate_name`, `validate_description`);
    raises on a broken rule."""
    req = replace(req, name=validate_name(req.name), description=validate_description(req.description))
    validate_ram(req.min_ram_mb, req.max_ram_mb)
    if req.kind not in (ImageKind.SYSTEM_DISK, ImageKind.DATA_DISK, ImageKind.ISO):
        raise NotSupported("IMPORT_KIND_NOT_SUPPORTED")
    if req.kind is not ImageKind.DATA_DISK:
        if req.os is None:
            raise Invalid("OS_REQUIRED", field="input.os")
        req.os = validate_os(req.os)
    upper = DATA_MIN_DISK_MAX if req.kind is ImageKind.DATA_DISK else SYSTEM_MIN_DISK_MAX
    if not 1 <= req.min_disk_gb <= upper:
        raise Invalid("INVALID_MIN_DISK", field="input.minDiskGb")
    if req.disk_format is not None and (req.kind is ImageKind.ISO) != (req.disk_format is DiskFormat.ISO):
        # Known from the request alone, as the job would find it: no image, no job.
        raise Invalid("FORMAT_MISMATCH", "ISO images are imported from ISO files, and ISO files make ISO images.",
                      field="input.diskFormat")
    if len(req.tags) > TAGS_PER_IMAGE:
        raise LimitExceeded("TOO_MANY_TAGS", limit=TAGS_PER_IMAGE)
    req = replace(req, tags=list(validate_tags(req.tags).items()))
    if req.public:
        if not caller.is_admin:
            raise Forbidden("ADMIN_REQUIRED")
        if req.kms_key_id is not None or req.encrypt_with_default_key:
            raise NotSupported("PUBLIC_NOT_ENCRYPTED")
    return req


async def encryption_key(kms: KeyProvider, caller: Caller, kms_key_id: str | None, use_default: bool) -> str | None:
    """The key new data of the caller is sealed with: `kms_key_id` (the caller's own, usable
    key), else the account's default key when asked for, else None (plain). A key the caller
    cannot see is a KmsKeyError, as for every use of a key for data (`app.kms.port`)."""
    if kms_key_id is not None:  # an empty id too: no key, never a silently plain image
        try:
            info = await kms.get_key(caller, kms_key_id)
        except NotFound as exc:
            raise KmsKeyProblem("KMS_KEY_NOT_FOUND", key_id=kms_key_id) from exc
        if info.account_id != caller.account_id:
            raise KmsKeyProblem("KMS_ACCESS_DENIED", "Only the key's owner encrypts with it.", key_id=kms_key_id)
        await kms.require_decrypt(caller.account_id, kms_key_id)
        return kms_key_id
    if use_default:
        return str((await kms.ensure_default_key(caller.account_id)).id)
    return None


class ImportService:
    def __init__(self, db: Database, storage: StorageService, kms: KeyProvider, jobs: JobService) -> None:
        self.db = db
        self.storage = storage
        self.kms = kms
        self.jobs = jobs

    async def import_image(self, caller: Caller, req: ImportRequest) -> tuple[Job, Image]:
        req = _validate(caller, req)
        self.storage.check_key(req.key, new=False)
        bucket = await self.storage.owned_bucket(caller, req.bucket)
        info = await self.storage.store(bucket.region).stat(bucket.name, req.key)
        if info is None:
            raise NotFound("OBJECT_NOT_FOUND", resource_id=f"{req.bucket}:{req.key}")
        if info.size > MAX_IMPORT_BYTES:
            raise LimitExceeded("FILE_TOO_LARGE", limit=MAX_IMPORT_BYTES // 1024**3)
        if info.size == 0:  # no disk at all, as the job would find: no image, no job
            raise Invalid("INVALID_IMAGE_FILE", "The file is empty.", field="input.key")
        new_images = 0 if req.public else 1
        if req.encrypt_with_default_key and req.kms_key_id is None:
            # ims/default is made on first use: a request the quotas refuse anyway must not
            # leave it made (they are checked again, under the account lock, below).
            async with self.db.uow(caller.account_id, write=False) as uow:
                await check_creation_quotas(uow, caller.account_id, bucket.region, new_images, lock=False)
        key_id = await encryption_key(self.kms, caller, req.kms_key_id, req.encrypt_with_default_key)
        now = utcnow()
        image = Image(
            id=new_id("img"), owner_id=caller.account_id, visibility="PRIVATE", region=bucket.region,
            name=req.name, description=req.description, kind=req.kind.value, status=ImageStatus.QUEUED.value,
            disk_format=(req.disk_format or DiskFormat.RAW).value,
            os_type=req.os.type.value if req.os and req.kind is not ImageKind.DATA_DISK else None,
            os_platform=req.os.platform if req.os and req.kind is not ImageKind.DATA_DISK else None,
            os_version=req.os.version if req.os and req.kind is not ImageKind.DATA_DISK else None,
            os_bits=req.os.bits if req.os and req.kind is not ImageKind.DATA_DISK else None,
            min_disk_gb=req.min_disk_gb, min_ram_mb=req.min_ram_mb, max_ram_mb=req.max_ram_mb,
            boot_mode=req.boot_mode, kms_key_id=key_id, origin_type="FILE", origin_ref=f"{req.bucket}:{req.key}",
            disks=[], created_at=now, updated_at=now,
        )
        async with self.db.uow(caller.account_id) as uow:
            await check_creation_quotas(uow, caller.account_id, bucket.region, new_images)
            await uow.images.add(image)
            for k, v in req.tags:
                uow.session.add(ImageTag(image_id=image.id, key=k, value=v))
            job = await self.jobs.enqueue(
                uow, caller.account_id, JobType.IMPORT_IMAGE, image_ids=[image.id],
                params={
                    "bucket": bucket.name, "key": req.key, "region": bucket.region,
                    "declared": req.disk_format.value if req.disk_format else None, "public": req.public,
                },
            )
            await uow.commit()
        return job, image
