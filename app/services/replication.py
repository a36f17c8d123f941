"""Replicating an image into a new private image of the caller (DESIGN §1 "replicate").

`replicate` checks every rule, then in one transaction (under the caller's account lock, so
concurrent requests cannot both take the last quota slot) creates the QUEUED copy, takes a
reference to each of the source's manifests for it, and enqueues the REPLICATE_IMAGE job.
Those references are the copy's from the start: deleting the source while the job runs
cannot take its data away (no shared fate, not even for a moment). The job
(`app.jobs.handlers.replicate_image`) then either keeps them (a plain copy in the same
region: O(1)) or swaps them for new manifests it wrote.

The rules, in the order they are checked (the first that fails answers):

    name, description, region          ValidationError INVALID_NAME / INVALID_DESCRIPTION / INVALID_REGION
    source not visible, or shared      NotFoundError IMAGE_NOT_FOUND
      with the caller PENDING/REJECTED
    public or ISO image                NotSupportedError REPLICATE_NOT_SUPPORTED
    a shared full-ECS image            ForbiddenError NOT_OWNER (members replicate system and data disks only)
    source not ACTIVE                  ConflictError IMAGE_NOT_ACTIVE
    region given = the image's own     ValidationError SAME_REGION
    full-ECS within its region         NotSupportedError FULL_ECS_CROSS_REGION_ONLY
    cross-region and encrypted         NotSupportedError REPLICATE_ENCRYPTED_CROSS_REGION
      (the source, or the copy asked to be)
    virtual size > 128 GiB             LimitExceededError REPLICATE_TOO_LARGE (limit in GiB)
    copy key = source key              ValidationError SAME_KEY
    copy key not usable by the caller  KmsKeyError (KMS_KEY_NOT_FOUND, KMS_ACCESS_DENIED, KMS_KEY_DISABLED, …)
    source key not decryptable         KmsKeyError (the same codes)
    running replications ≥ quota       LimitExceededError QUOTA_CONCURRENT_REPLICATIONS
    private images in target ≥ quota   LimitExceededError QUOTA_PRIVATE_IMAGES

With `encryptWithDefaultKey` (and no `kmsKeyId`) the source key and the quotas are asked
before the copy key: the account's default key is made on first use, and a request refused
anyway must not leave it made.

The copy inherits kind, OS, minimum disk and RAM, boot mode, NIC/SR-IOV flags and the
licensed-platform mark (the export rule follows the origin chain); it gets origin
{IMAGE, source id}. Tags, memberships and protection are not copied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.db.repositories.images import ImageRepository, VisibleImage, VisibleImageRow
from app.db.tables import Image, Job
from app.db.types import new_id, utcnow
from app.db.uow import Database, UnitOfWork
from app.domain.enums import (
    DiskFormat,
    ImageKind,
    ImageStatus,
    ImageVisibility,
    JobType,
    MemberStatus,
    OriginType,
    QuotaResource,
)
from app.domain.images import Caller
from app.domain.rules import DEFAULT_QUOTAS, validate_description, validate_name
from app.errors import (
    Conflict,
    Forbidden,
    Invalid,
    LimitExceeded,
    NotFound,
    NotSupported,
    register_codes,
)
from app.jobs.service import JobService
from app.kms.port import KeyProvider
from app.services.access import relation
from app.services.replica_data import NewManifest

register_codes({
    "REPLICATE_NOT_SUPPORTED": "Public and ISO images cannot be replicated.",
    "FULL_ECS_CROSS_REGION_ONLY": "Full-ECS images are only replicated to another region.",
    "REPLICATE_ENCRYPTED_CROSS_REGION": "Encrypted images are not replicated across regions, and cross-region "
                                        "copies are not encrypted.",
    "REPLICATE_TOO_LARGE": "Images over 128 GiB (virtual size) cannot be replicated.",
    "SAME_REGION": "A cross-region replication names a region other than the image's own.",
    "SAME_KEY": "The copy's KMS key must differ from the source image's.",
    "REPLICATE_CONVERSION_FAILED": "The image could not be converted to a raw (quick) copy.",
    "REPLICATE_SOURCE_INVALID": "The source image's stored data failed verification while it was copied; no copy "
                                "was made.",
})

GiB = 1024**3
#: Largest image (virtual size) a replication copies.
REPLICATE_MAX_GIB = 128
#: Kinds an ACCEPTED member of a shared image may replicate.
MEMBER_REPLICABLE_KINDS = frozenset({ImageKind.SYSTEM_DISK.value, ImageKind.DATA_DISK.value})


@dataclass(frozen=True)
class ReplicationRequest:
    """The fields of `ReplicateImageInput`."""

    image_id: str
    name: str
    description: str = ""
    kms_key_id: str | None = None
    encrypt_with_default_key: bool = False
    region: str | None = None

    @property
    def wants_encryption(self) -> bool:
        return self.kms_key_id is not None or self.encrypt_with_default_key


@dataclass(frozen=True)
class Replication:
    """An accepted request: its job and the QUEUED copy."""

    job: Job
    copy: VisibleImage


def virtual_size(image: Image) -> int:
    """Bytes the image's disks describe: its virtual size, else the sum of its disks."""
    if image.virtual_size_bytes is not None:
        return image.virtual_size_bytes
    return sum(int(d.get("sizeGb", 0)) for d in image.disks) * GiB


def manifest_ids(image: Image) -> list[str]:
    return [str(d["manifestId"]) for d in image.disks if d.get("manifestId")]


class ReplicationService:
    def __init__(self, db: Database, key_provider: KeyProvider, regions: tuple[str, ...], jobs: JobService) -> None:
        self.db = db
        self.kms = key_provider
        self.regions = regions
        self.jobs = jobs

    async def replicate(self, caller: Caller, request: ReplicationRequest) -> Replication:
        """Check the rules and enqueue the copy; nothing is created when a rule refuses."""
        name = validate_name(request.name)
        description = validate_description(request.description)
        if request.region is not None and request.region not in self.regions:
            raise Invalid("INVALID_REGION", f"Unknown region {request.region!r}.", field="input.region")
        async with self.db.uow(caller.account_id, write=False) as uow:
            view = await uow.images.get_visible(request.image_id)
        source = self._check_source(view, caller, request)
        target_region = request.region or source.region
        self._check_placement(source, request, target_region)
        # KMS calls open transactions of their own: they run before the enqueuing one.
        if request.kms_key_id is None and request.encrypt_with_default_key:
            # ims/default is made on first use: a request refused anyway must not leave it
            # made. What could refuse it after the key is asked first (the quotas again under
            # the account lock below).
            await self._require_source_key(caller, source)
            async with self.db.uow(caller.account_id, write=False) as uow:
                await self._check_quotas(uow, caller.account_id, target_region)
        target_key = await self._target_key(caller, source, request)
        await self._require_source_key(caller, source)

        async with self.db.uow(caller.account_id) as uow:
            await uow.accounts.lock_account(caller.account_id)
            # Again, under lock: the source may have changed (deleted, unshared) meanwhile.
            view = await uow.images.get_visible(request.image_id, for_update=True)
            source = self._check_source(view, caller, request)
            await self._check_quotas(uow, caller.account_id, target_region)
            copy = self._copy_row(source, caller, name, description, target_region, target_key)
            await uow.images.add(copy)
            for manifest_id in manifest_ids(source):
                if not await uow.chunks.retain(manifest_id):
                    raise RuntimeError(f"manifest {manifest_id} of ACTIVE image {source.id} is missing")
            job = await self.jobs.enqueue(
                uow, caller.account_id, JobType.REPLICATE_IMAGE, image_ids=[copy.id],
                params={
                    "sourceImageId": source.id, "imageId": copy.id, "kmsKeyId": target_key,
                    "sourceDiskFormat": source.disk_format, "sourceQuick": source.quick_provisioning,
                    "sourceChecksum": source.checksum, "sourceSizeBytes": source.size_bytes,
                },
            )
            await uow.commit()
        async with self.db.uow(caller.account_id, write=False) as uow:
            created = await uow.images.get_visible(copy.id)
        assert created is not None
        return Replication(job, created)

    # ---------------------------------------------------------------- the job's side

    async def start(self, account_id: str, image_id: str) -> Image | None:
        """QUEUED → SAVING (compare-and-set); the copy as it is now, None when it is gone."""
        async with self.db.uow(account_id) as uow:
            view = await uow.images.get_visible(image_id, for_update=True)
            if view is None:
                return None
            image = view.image
            if image.status == ImageStatus.QUEUED.value:
                await uow.images.compare_and_set(
                    image.id, image.version, {"status": ImageStatus.SAVING.value, "updated_at": utcnow()},
                    expected_status=ImageStatus.QUEUED.value,
                )
                await uow.commit()
        async with self.db.uow(account_id, write=False) as uow:
            view = await uow.images.get_visible(image_id)
        return view.image if view is not None else None

    async def complete(
        self, account_id: str, image_id: str, disks: list[dict[str, Any]], replaced: list[tuple[str, NewManifest]],
        values: dict[str, Any],
    ) -> bool:
        """SAVING → ACTIVE with the copy's final disks, in one transaction with the new manifests
        and the release of the source references they replace. False (nothing changed) when the
        copy is no longer SAVING, e.g. an earlier attempt of the job finished it."""
        async with self.db.uow(account_id) as uow:
            view = await uow.images.get_visible(image_id, for_update=True)
            if view is None or view.image.status != ImageStatus.SAVING.value:
                return False
            now = utcnow()
            for old_manifest_id, new in replaced:
                await uow.chunks.add_manifest(new.manifest, new.refs, new.sizes, now)
                await uow.chunks.release(old_manifest_id, now)
            ok = await uow.images.compare_and_set(
                image_id, view.image.version,
                {**values, "disks": disks, "status": ImageStatus.ACTIVE.value, "updated_at": now},
                expected_status=ImageStatus.SAVING.value,
            )
            if not ok:
                return False
            await uow.commit()
        return True

    @staticmethod
    async def abort(uow: UnitOfWork, account_id: str, image_id: str) -> None:
        """In the transaction that fails the job: a QUEUED/SAVING copy becomes KILLED and lets
        go of the data it held (its disks keep their sizes, not their manifests)."""
        images = ImageRepository(uow.session, account_id)
        view = await images.get_visible(image_id, for_update=True)
        if view is None or view.image.status not in (ImageStatus.QUEUED.value, ImageStatus.SAVING.value):
            return
        image = view.image
        now = utcnow()
        disks = [{k: v for k, v in d.items() if k != "manifestId"} for d in image.disks]
        if await images.compare_and_set(image.id, image.version,
                                        {"status": ImageStatus.KILLED.value, "disks": disks, "updated_at": now},
                                        expected_status=image.status):
            for manifest_id in manifest_ids(image):
                await uow.chunks.release(manifest_id, now)

    # ---------------------------------------------------------------- rules

    @staticmethod
    def _check_source(view: VisibleImageRow | None, caller: Caller, request: ReplicationRequest) -> Image:
        if view is None:
            raise NotFound("IMAGE_NOT_FOUND", resource_id=request.image_id)
        rel = relation(view, caller)
        image = view.image
        if rel is ImageVisibility.SHARED:
            assert view.membership is not None
            # A pending or rejected share is the owner's offer, not yet the member's image.
            if view.membership.status != MemberStatus.ACCEPTED.value:
                raise NotFound("IMAGE_NOT_FOUND", resource_id=request.image_id)
        if rel is ImageVisibility.PUBLIC:
            raise NotSupported("REPLICATE_NOT_SUPPORTED", "Public images cannot be replicated.")
        if image.kind == ImageKind.ISO.value:
            raise NotSupported("REPLICATE_NOT_SUPPORTED", "ISO images cannot be replicated.")
        if rel is ImageVisibility.SHARED and image.kind not in MEMBER_REPLICABLE_KINDS:
            raise Forbidden("NOT_OWNER", "Only the owner replicates a full-ECS image.")
        if image.status != ImageStatus.ACTIVE.value:
            raise Conflict("IMAGE_NOT_ACTIVE")
        return image

    @staticmethod
    def _check_placement(source: Image, request: ReplicationRequest, target_region: str) -> None:
        if request.region is not None and request.region == source.region:
            raise Invalid("SAME_REGION", "Leave region null to replicate within the image's region.",
                          field="input.region")
        cross_region = target_region != source.region
        if source.kind == ImageKind.FULL_ECS.value and not cross_region:
            raise NotSupported("FULL_ECS_CROSS_REGION_ONLY")
        if cross_region and (source.kms_key_id is not None or request.wants_encryption):
            raise NotSupported("REPLICATE_ENCRYPTED_CROSS_REGION")
        if virtual_size(source) > REPLICATE_MAX_GIB * GiB:
            raise LimitExceeded("REPLICATE_TOO_LARGE", limit=REPLICATE_MAX_GIB)

    async def _require_source_key(self, caller: Caller, source: Image) -> None:
        """An encrypted source is read with its key: the caller must be able to decrypt with it."""
        if source.kms_key_id is not None:
            await self.kms.require_decrypt(caller.account_id, source.kms_key_id)

    async def _target_key(self, caller: Caller, source: Image, request: ReplicationRequest) -> str | None:
        """The copy's KMS key, checked usable: the caller must be able to make data keys with it."""
        if request.kms_key_id is not None:
            key_id = request.kms_key_id
        elif request.encrypt_with_default_key:
            key_id = (await self.kms.ensure_default_key(caller.account_id)).id
        else:
            return None
        if key_id == source.kms_key_id:
            raise Invalid("SAME_KEY", field="input.kmsKeyId" if request.kms_key_id is not None
                          else "input.encryptWithDefaultKey")
        # The port has no dry run for data keys: one is made and dropped (nothing is stored).
        await self.kms.generate_data_key(caller.account_id, key_id)
        return key_id

    @staticmethod
    async def _check_quotas(uow: UnitOfWork, account_id: str, region: str) -> None:
        """Counted in the enqueuing transaction, under the account lock."""
        overrides = await uow.accounts.quota_overrides(account_id)

        def limit(resource: QuotaResource) -> int:
            return overrides.get(resource.value, DEFAULT_QUOTAS[resource])

        replications = limit(QuotaResource.CONCURRENT_REPLICATIONS)
        running = await uow.accounts.count_active_jobs(account_id, frozenset({JobType.REPLICATE_IMAGE.value}))
        if running >= replications:
            raise LimitExceeded("QUOTA_CONCURRENT_REPLICATIONS", limit=replications)
        images = limit(QuotaResource.PRIVATE_IMAGES)
        if await uow.accounts.count_private_images(account_id, region) >= images:
            raise LimitExceeded("QUOTA_PRIVATE_IMAGES", limit=images)

    @staticmethod
    def _copy_row(source: Image, caller: Caller, name: str, description: str, region: str,
                  kms_key_id: str | None) -> Image:
        now = utcnow()
        inherited: dict[str, Any] = {
            field: getattr(source, field)
            for field in ("kind", "os_type", "os_platform", "os_version", "os_bits", "min_disk_gb", "min_ram_mb",
                          "max_ram_mb", "virtual_size_bytes", "boot_mode", "nic_multi_queue", "sriov_driver",
                          "licensed_platform")
        }
        return Image(
            id=new_id("img"), owner_id=caller.account_id, visibility=ImageVisibility.PRIVATE.value, region=region,
            name=name, description=description, status=ImageStatus.QUEUED.value,
            # Copies are stored raw: a non-raw import yields a quick copy.
            disk_format=source.disk_format if source.quick_provisioning else DiskFormat.RAW.value,
            quick_provisioning=True, kms_key_id=kms_key_id, protected=False,
            origin_type=OriginType.IMAGE.value, origin_ref=source.id,
            # The source's manifests, retained for the copy: the job keeps or replaces them.
            disks=[dict(d) for d in source.disks], backup_id=None,
            created_at=now, updated_at=now, **inherited,
        )


__all__ = ["REPLICATE_MAX_GIB", "Replication", "ReplicationRequest", "ReplicationService", "virtual_size"]
