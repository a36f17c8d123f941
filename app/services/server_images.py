"""Images made from servers and volumes: SYSTEM_DISK, FULL_ECS (with a differential
backup) and DATA_DISK.

The request takes the disks as they are (one manifest reference each for the image, and
for a FULL_ECS image one more for its backup: O(1) in data size), creates the QUEUED image
and enqueues its job in one transaction. The job (`finish`) takes the image through SAVING
to ACTIVE; for FULL_ECS it first works out which chunks no earlier backup of the server
holds (`Backup.newBytes`) and verifies exactly those — a backup vouches for the chunks it
newly depends on, earlier backups already vouched for the others — so its cost follows the
changed data, not the disk size.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from app.compute.tables import Backup, Volume
from app.datastore.errors import ChunkIntegrityError
from app.datastore.store import SEAL_OVERHEAD, ChunkStore
from app.datastore.tables import Manifest
from app.db.tables import Image, Job
from app.db.types import new_id, utcnow
from app.db.uow import Database, UnitOfWork
from app.domain.compute import (
    DATA_IMAGE_MAX_GB,
    IMAGEABLE_STATUSES,
    SERVER_IMAGE_KINDS,
    SYSTEM_IMAGE_MAX_GB,
    VOLUME_IMAGE_KINDS,
    GiB,
    OsSpec,
    validate_os,
)
from app.domain.enums import ImageKind, ImageStatus, JobType, OriginType
from app.domain.images import Caller
from app.domain.rules import (
    TAGS_PER_IMAGE,
    validate_description,
    validate_name,
    validate_ram,
    validate_tags,
)
from app.errors import Conflict, Invalid, LimitExceeded, NotFound, NotSupported, register_codes
from app.jobs.registry import JobFailed
from app.jobs.service import JobService
from app.kms.port import KeyProvider
from app.services.quotas import check_creation_quotas, lock_quotas_first

register_codes({
    "INVALID_IMAGE_KIND": "This kind of image cannot be made from this source.",
    "SERVER_NOT_READY": "Images are made from RUNNING or STOPPED servers only.",
    "SYSTEM_DISK_TOO_LARGE": "A system disk image is made from a disk of at most 1024 GiB.",
    "DATA_DISK_TOO_LARGE": "A data disk image is made from a volume of at most 2048 GiB.",
    "FULL_ECS_MIXED_KEYS": "A full-ECS image is under one KMS key: the server's disks are encrypted with different keys.",
    # Job error codes (Job.error.code)
    "BACKUP_GONE": "The server's backup was deleted before the full-ECS image was saved.",
    "BACKUP_DATA_INVALID": "A disk's stored data failed verification while the image was saved.",
})

Progress = Callable[[float, str], Awaitable[None]]


@dataclass(frozen=True)
class NewImage:
    """What the caller says about the image to make."""

    name: str
    kind: ImageKind
    description: str = ""
    min_ram_mb: int = 0
    max_ram_mb: int | None = None
    tags: tuple[tuple[str, str], ...] = ()
    os: OsSpec | None = None


@dataclass(frozen=True)
class ImageJob:
    job: Job
    image_ids: list[str]


def validate_new_tags(tags: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """Tags given at creation follow the addImageTags rules."""
    seen = validate_tags(tags)
    if len(seen) > TAGS_PER_IMAGE:
        raise LimitExceeded("TOO_MANY_TAGS", limit=TAGS_PER_IMAGE)
    return seen


def _disk_entry(volume: Volume, manifest: Manifest) -> dict[str, Any]:
    return {"role": volume.role, "sizeGb": volume.size_gb, "storedBytes": manifest.stored_bytes,
            "manifestId": manifest.id, "licensedPlatform": volume.licensed_platform}


#: A job that finds its image gone: an image is not deleted while QUEUED or SAVING, so one that
#: is missing was saved (by an earlier attempt whose worker died before recording it) and then
#: deleted by its owner; a KILLED one was ended by an earlier attempt's failure.
_GONE = "The image is no longer being saved: it was deleted after an earlier attempt saved it, or that attempt failed."


class ServerImageService:
    def __init__(self, db: Database, chunks: ChunkStore, jobs: JobService, kms: KeyProvider) -> None:
        self.db = db
        self.chunks = chunks
        self.jobs = jobs
        self.kms = kms

    # ---------------------------------------------------------------- requests

    def _check(self, spec: NewImage, kinds: frozenset[ImageKind]) -> tuple[str, str, dict[str, str]]:
        if spec.kind not in kinds:
            raise Invalid("INVALID_IMAGE_KIND", f"Choose one of {', '.join(sorted(k.value for k in kinds))}.",
                          field="input.kind")
        name, description = validate_name(spec.name), validate_description(spec.description)
        validate_ram(spec.min_ram_mb, spec.max_ram_mb)
        return name, description, validate_new_tags(spec.tags)

    async def _require_keys(self, caller: Caller, server_id: str | None, volume_id: str | None,
                            system_only: bool = False) -> None:
        """The disks' keys must be usable now: imaging reads the disks, and a disabled or
        pending-deletion key stops every read of its data (KmsKeyError). KMS calls open
        transactions of their own, so this runs before the enqueuing one; a disk's key never
        changes, and a disk missing here is refused there."""
        async with self.db.uow(caller.account_id, write=False) as uow:
            if server_id is not None:
                volumes = (await uow.compute.volumes_of([server_id])).get(server_id, [])
                volumes = volumes[:1] if system_only else volumes  # the image's disks only
            else:
                assert volume_id is not None
                volume = await uow.compute.get_volume(volume_id)
                volumes = [volume] if volume is not None else []
        for key_id in sorted({v.kms_key_id for v in volumes if v.kms_key_id}):
            await self.kms.require_decrypt(caller.account_id, key_id)

    async def _disks(self, uow: UnitOfWork, volumes: list[Volume]) -> list[dict[str, Any]]:
        """Take one reference to each volume's manifest; their disk entries."""
        entries = []
        for volume in volumes:
            manifest = await uow.chunks.manifest(volume.manifest_id)
            if manifest is None or not await uow.chunks.retain(manifest.id):
                raise RuntimeError(f"volume {volume.id} lost its manifest {volume.manifest_id}")
            entries.append(_disk_entry(volume, manifest))
        return entries

    async def _record(self, uow: UnitOfWork, caller: Caller, image: Image, tags: dict[str, str],
                      job_type: JobType, params: dict[str, Any]) -> ImageJob:
        await check_creation_quotas(uow, caller.account_id, image.region)
        await uow.images.add(image)
        if tags:
            await uow.images.put_tags(image.id, tags)
        job = await self.jobs.enqueue(uow, caller.account_id, job_type, params={"imageId": image.id, **params},
                                      image_ids=[image.id])
        await uow.commit()
        return ImageJob(job, [image.id])

    def _image(self, caller: Caller, spec: NewImage, name: str, description: str, region: str,
               disks: list[dict[str, Any]], manifests_keys: list[str | None], **fields: Any) -> Image:
        now = utcnow()
        return Image(
            id=new_id("img"), owner_id=caller.account_id, visibility="PRIVATE", region=region, name=name,
            description=description, kind=spec.kind.value, status=ImageStatus.QUEUED.value, disk_format="RAW",
            min_disk_gb=disks[0]["sizeGb"], min_ram_mb=spec.min_ram_mb, max_ram_mb=spec.max_ram_mb,
            virtual_size_bytes=sum(d["sizeGb"] for d in disks) * GiB, quick_provisioning=True,
            # An image made from encrypted disks stays encrypted with their key.
            kms_key_id=next((k for k in manifests_keys if k), None), disks=disks,
            created_at=now, updated_at=now, **fields,
        )

    async def from_server(self, caller: Caller, server_id: str, spec: NewImage) -> ImageJob:
        """A SYSTEM_DISK image of the server's system disk, or a FULL_ECS image of all its
        disks with a differential backup. It inherits the server's OS and licensed origin."""
        name, description, tags = self._check(spec, SERVER_IMAGE_KINDS)
        await self._require_keys(caller, server_id, None, system_only=spec.kind is not ImageKind.FULL_ECS)
        async with self.db.uow(caller.account_id) as uow:
            await lock_quotas_first(uow, caller.account_id)
            server = await uow.compute.get_server(server_id, for_update=True)
            if server is None:
                raise NotFound("SERVER_NOT_FOUND", resource_id=server_id)
            if server.status not in IMAGEABLE_STATUSES:
                raise Conflict("SERVER_NOT_READY", f"The server is {server.status}.")
            volumes = (await uow.compute.volumes_of([server.id]))[server.id]
            full = spec.kind is ImageKind.FULL_ECS
            if not full and volumes[0].size_gb > SYSTEM_IMAGE_MAX_GB:
                raise LimitExceeded("SYSTEM_DISK_TOO_LARGE", limit=SYSTEM_IMAGE_MAX_GB)
            volumes = volumes if full else volumes[:1]
            keys = sorted({v.kms_key_id for v in volumes if v.kms_key_id})
            if len(keys) > 1:
                # The image records one key, and sharing, grants and key states are checked
                # on it: a disk under another key would escape them all.
                raise NotSupported("FULL_ECS_MIXED_KEYS", f"The server's disks are encrypted with {len(keys)} "
                                   f"different KMS keys ({', '.join(keys)}).")
            disks = await self._disks(uow, volumes)
            backup = None
            if full:
                backup = Backup(
                    id=new_id("bak"), account_id=caller.account_id, server_id=server.id, region=server.region,
                    size_bytes=sum(v.size_gb for v in volumes) * GiB, new_bytes=0,
                    disks=[{**d, "volumeId": v.id, "newBytes": 0}
                           for d, v in zip(await self._disks(uow, volumes), volumes, strict=True)],
                    created_at=utcnow(),
                )
                await uow.compute.add(backup)
            # A full-ECS image's origin chain runs through every disk: a data disk filled from
            # a licensed image's disk makes the image licensed too (each disk entry says its own).
            licensed = next((p for p in [server.licensed_platform, *(v.licensed_platform for v in volumes)] if p), None)
            image = self._image(
                caller, spec, name, description, server.region, disks, [v.kms_key_id for v in volumes],
                os_type=server.os_type, os_platform=server.os_platform, os_version=server.os_version,
                os_bits=server.os_bits, boot_mode=server.boot_mode, licensed_platform=licensed,
                origin_type=OriginType.SERVER.value, origin_ref=server.id,
                backup_id=backup.id if backup else None,
            )
            job_type = JobType.CREATE_FULL_ECS_IMAGE if full else JobType.CREATE_IMAGE_FROM_SERVER
            params = {"serverId": server.id, **({"backupId": backup.id} if backup else {})}
            return await self._record(uow, caller, image, tags, job_type, params)

    async def from_volume(self, caller: Caller, volume_id: str, spec: NewImage) -> ImageJob:
        """A DATA_DISK image of a volume, or a SYSTEM_DISK image when `os` says what it boots."""
        name, description, tags = self._check(spec, VOLUME_IMAGE_KINDS)
        system = spec.kind is ImageKind.SYSTEM_DISK
        os = None
        if system:
            if spec.os is None:
                raise Invalid("OS_REQUIRED", field="input.os")
            os = validate_os(spec.os)
        await self._require_keys(caller, None, volume_id)
        async with self.db.uow(caller.account_id) as uow:
            await lock_quotas_first(uow, caller.account_id)
            # Locked, as from_server locks the server: a concurrent deleteVolumes (or deleteServer)
            # either went first (the volume is missing) or waits until the image holds its own
            # reference to the volume's manifest.
            volume = await uow.compute.get_volume(volume_id, for_update=True)
            if volume is None:
                raise NotFound("VOLUME_NOT_FOUND", resource_id=volume_id)
            if system and volume.size_gb > SYSTEM_IMAGE_MAX_GB:
                raise LimitExceeded("SYSTEM_DISK_TOO_LARGE", limit=SYSTEM_IMAGE_MAX_GB)
            if not system and volume.size_gb > DATA_IMAGE_MAX_GB:
                raise LimitExceeded("DATA_DISK_TOO_LARGE", limit=DATA_IMAGE_MAX_GB)
            disks = [{**d, "role": "SYSTEM" if system else "DATA"} for d in await self._disks(uow, [volume])]
            image = self._image(
                caller, spec, name, description, volume.region, disks, [volume.kms_key_id],
                os_type=os.type.value if os else None, os_platform=os.platform if os else None,
                os_version=os.version if os else None, os_bits=os.bits if os else None,
                licensed_platform=volume.licensed_platform, origin_type=OriginType.VOLUME.value,
                origin_ref=volume.id,
            )
            return await self._record(uow, caller, image, tags, JobType.CREATE_IMAGE_FROM_VOLUME,
                                      {"volumeId": volume.id})

    # ---------------------------------------------------------------- the job

    async def finish(self, image_id: str, backup_id: str | None, progress: Progress) -> dict[str, Any]:
        """QUEUED → SAVING → ACTIVE (after the backup's differential pass, for FULL_ECS).
        Idempotent: an attempt after a crash resumes, one after success changes nothing."""
        async with self.db.uow() as uow:
            image = await uow.compute.image_any(image_id)
            if image is not None and image.status == ImageStatus.ACTIVE.value:
                # The result the attempt that saved it would have recorded.
                backup = await uow.compute.backup_any(backup_id) if backup_id is not None else None
                if backup is None:
                    return {"imageId": image_id}
                return {"imageId": image_id, "backupId": backup.id, "newBytes": backup.new_bytes}
            if image is None or image.status not in (ImageStatus.QUEUED.value, ImageStatus.SAVING.value):
                raise JobFailed("IMAGE_NOT_FOUND", _GONE)
            await uow.compute.advance_image(image_id, (ImageStatus.QUEUED.value,),
                                            {"status": ImageStatus.SAVING.value, "updated_at": utcnow()})
            await uow.commit()
        await progress(0.05, "saving the disks")
        result: dict[str, Any] = {"imageId": image_id}
        if backup_id is not None:
            result.update(backupId=backup_id, newBytes=await self._backup(backup_id, progress))
        async with self.db.uow() as uow:
            first = await uow.chunks.manifest(image.disks[0]["manifestId"])
            ok = await uow.compute.advance_image(image_id, (ImageStatus.SAVING.value,), {
                "status": ImageStatus.ACTIVE.value, "updated_at": utcnow(),
                "size_bytes": sum(int(d["storedBytes"]) for d in image.disks),
                "checksum": first.checksum if first is not None else None,
            })
            if not ok:
                # An earlier attempt whose lease lapsed while it still ran may have saved it.
                current = await uow.compute.image_any(image_id)
                if current is None or current.status != ImageStatus.ACTIVE.value:
                    raise JobFailed("IMAGE_NOT_FOUND", _GONE)
            await uow.commit()
        await progress(1.0, "done")
        return result

    async def _backup(self, backup_id: str, progress: Progress) -> int:
        """Work out, verify and record the chunks this backup holds that no earlier backup
        of the server holds; returns their stored bytes (`Backup.newBytes`)."""
        async with self.db.uow(write=False) as uow:
            backup = await uow.compute.backup_any(backup_id)
            if backup is None:
                raise JobFailed("BACKUP_GONE", "The backup was deleted before it was saved.")
            held = [d["manifestId"] for b in await uow.compute.earlier_backups(backup) for d in b.disks]
            found: list[list[tuple[str, int]]] = []
            overheads: list[int] = []
            for disk in backup.disks:
                manifest = await uow.chunks.manifest(disk["manifestId"])
                overheads.append(SEAL_OVERHEAD if manifest is not None and manifest.data_key_id else 0)
                found.append(await uow.compute.new_chunks(disk["manifestId"], held))
                held.append(disk["manifestId"])  # a chunk two disks share counts once
        digests = [digest for new in found for digest, _ in new]
        await progress(0.1, f"verifying {len(digests)} new chunks")

        async def verified(done: int) -> None:
            await progress(0.1 + 0.85 * done / max(1, len(digests)), f"verifying {len(digests)} new chunks")

        try:
            await self.chunks.verify(backup.region, digests, progress=verified)
        except ChunkIntegrityError as exc:
            raise JobFailed("BACKUP_DATA_INVALID", f"A disk's data failed verification: {exc}") from exc
        disks = [{**disk, "newBytes": sum(n + overhead for _, n in new)}
                 for disk, new, overhead in zip(backup.disks, found, overheads, strict=True)]
        total = sum(int(d["newBytes"]) for d in disks)
        async with self.db.uow() as uow:
            await uow.compute.update_backup(backup_id, {"new_bytes": total, "disks": disks})
            await uow.commit()
        return total

    async def discard_backup(self, uow: UnitOfWork, image_id: str, backup_id: str) -> None:
        """A failed FULL_ECS job's backup goes, with its references (in the job's FAIL
        transaction), unless an attempt saved the image before the job failed (e.g. its worker
        died between the two): an ACTIVE image keeps its backup. So does one that is gone: an
        image is not deleted while QUEUED or SAVING, and becomes KILLED only in this FAIL
        transaction, so a missing image was saved and then deleted by its owner, whose
        `deleteBackups` decided the backup's fate (false: it stays, and vouches for the
        server's later backups, until the owner deletes it with the `deleteBackups` mutation)."""
        image = await uow.compute.image_any(image_id)
        if image is None or image.status == ImageStatus.ACTIVE.value:
            return
        backup = await uow.compute.backup_any(backup_id)
        if backup is not None:
            await delete_backup_rows(uow, [backup])


async def delete_backup_rows(uow: UnitOfWork, backups: Iterable[Backup], *, releasing: Sequence[str] = ()) -> None:
    """Delete backups and release their manifests (one reference per disk), with the
    manifests `releasing` (a deleted image's) in the same `release_all`, in the caller's
    transaction: the rows in id order, then the manifests in `release_all`'s order (every
    batch that lets go of data takes its locks in the same order). Chunks no one else holds
    are then the garbage collector's, after its grace period. The one path by which a backup
    goes: a failed FULL_ECS job's, `deleteImages(deleteBackups: true)`, `deleteBackups`."""
    gone = list(backups)
    if gone:
        await uow.compute.delete_backups([b.id for b in gone])
    manifests = [*releasing, *(disk["manifestId"] for b in gone for disk in b.disks)]
    if manifests:
        await uow.chunks.release_all(manifests, utcnow())
