"""Servers and volumes of the built-in compute inventory (the caller's own only).

Disks are manifests of the chunk store: a server made from a quick image shares the
image's manifest (O(1)); see `app.compute.provision` for the other ways a disk is filled.
The data work happens outside any transaction; the transaction that records the server
then checks everything again under row locks and takes the references, so an image deleted
meanwhile cannot leave a disk pointing at released data.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from app.compute.provision import (
    PlannedDisk,
    Provisioner,
    disk_licence,
    require_active,
    usable_image,
)
from app.compute.tables import Backup, Server, Volume
from app.datastore.chunks import CHUNK_SIZE
from app.datastore.store import ChunkStore, DataKey, blank_manifest
from app.db.tables import Image
from app.db.types import new_id, utcnow
from app.db.uow import Database, UnitOfWork
from app.domain.compute import (
    DATA_DISK_MAX_GB,
    DATA_DISKS_PER_SERVER,
    SYSTEM_DISK_MAX_GB,
    GiB,
    ServerStatus,
    validate_disk_size,
)
from app.domain.enums import DiskRole, ImageKind
from app.domain.images import Caller
from app.domain.pagination import decode_time_cursor, encode_cursor
from app.domain.rules import validate_name, validate_page_size
from app.errors import Invalid, NotFound, NotSupported, register_codes
from app.kms.port import KeyProvider

register_codes({
    "INVALID_DISK_SIZE": "A disk's size in GiB is out of range.",
    "DISK_SMALLER_THAN_IMAGE": "The disk is smaller than the image's minDiskGb.",
    "TOO_MANY_DATA_DISKS": "A server has at most 23 data disks.",
    "REGION_MISMATCH": "The image is in another region.",
    "INVALID_VOLUME_IMAGE": "A volume is filled from an ACTIVE system or data disk image only.",
    "IMAGE_KIND_NOT_SUPPORTED": "This kind of image cannot provision this disk (servers boot from system "
                                "disk or full-ECS images; data disks are filled from data disk images).",
})

_ORDERING = "servers:created_at:DESC"


@dataclass(frozen=True)
class DataDiskSpec:
    size_gb: int
    image_id: str | None = None


@dataclass(frozen=True)
class ServerSpec:
    name: str
    image_id: str
    region: str | None = None
    system_disk_gb: int | None = None
    data_disks: tuple[DataDiskSpec, ...] = ()
    kms_key_id: str | None = None


@dataclass(frozen=True)
class VolumeSpec:
    name: str
    size_gb: int
    image_id: str | None = None
    kms_key_id: str | None = None
    region: str | None = None


@dataclass
class ServerPage:
    items: list[Server]
    has_next: bool
    has_previous: bool
    total: int
    cursors: list[str]


def _disk_name(name: str, suffix: str) -> str:
    return name[: 128 - len(suffix)] + suffix


class ComputeService:
    def __init__(self, db: Database, chunks: ChunkStore, kms: KeyProvider, regions: tuple[str, ...],
                 work_dir: Path) -> None:
        self.db = db
        self.chunks = chunks
        self.kms = kms
        self.regions = regions
        self.provisioner = Provisioner(chunks, kms, work_dir)

    def _region(self, region: str | None) -> str | None:
        if region is not None and region not in self.regions:
            raise Invalid("INVALID_REGION", f"Unknown region {region!r}.", field="input.region")
        return region

    # ---------------------------------------------------------------- reads

    async def get_server(self, caller: Caller, server_id: str) -> Server:
        async with self.db.uow(caller.account_id, write=False) as uow:
            server = await uow.compute.get_server(server_id)
        if server is None:
            raise NotFound("SERVER_NOT_FOUND", resource_id=server_id)
        return server

    async def list_servers(self, caller: Caller, first: int | None, after: str | None) -> ServerPage:
        size = validate_page_size(first)
        cursor = decode_time_cursor(after, _ORDERING)
        async with self.db.uow(caller.account_id, write=False) as uow:
            items, has_next, total = await uow.compute.page_servers(size, cursor)
        cursors = [encode_cursor(_ORDERING, s.created_at, s.id) for s in items]
        return ServerPage(items, has_next, cursor is not None, total, cursors)

    async def volumes_of(self, caller: Caller, server_ids: list[str]) -> dict[str, list[Volume]]:
        async with self.db.uow(caller.account_id, write=False) as uow:
            return await uow.compute.volumes_of(server_ids)

    async def get_volume(self, caller: Caller, volume_id: str) -> Volume:
        async with self.db.uow(caller.account_id, write=False) as uow:
            volume = await uow.compute.get_volume(volume_id)
        if volume is None:
            raise NotFound("VOLUME_NOT_FOUND", resource_id=volume_id)
        return volume

    async def get_backups(self, caller: Caller, backup_ids: list[str]) -> dict[str, Backup]:
        async with self.db.uow(caller.account_id, write=False) as uow:
            return await uow.compute.get_backups(backup_ids)

    async def visible_images(self, caller: Caller, image_ids: list[str]) -> set[str]:
        """Which of these images the caller may still see (a volume's source, say)."""
        async with self.db.uow(caller.account_id, write=False) as uow:
            return set(await uow.images.get_many_visible(image_ids))

    # ---------------------------------------------------------------- servers

    async def _plan_server(self, uow: UnitOfWork, caller: Caller, spec: ServerSpec, *,
                           lock: bool = False) -> tuple[Image, list[PlannedDisk]]:
        if lock:
            # Every image the server is made from, locked at once in id order: locked one by
            # one in request order, two servers naming the same data disk images in opposite
            # orders each held one and waited for the other (a deadlock on PostgreSQL).
            await uow.images.get_many_visible(
                [spec.image_id, *(d.image_id for d in spec.data_disks if d.image_id is not None)], for_update=True)
        image = usable_image(await uow.images.get_visible(spec.image_id, for_update=lock), caller, spec.image_id)
        if image.kind not in (ImageKind.SYSTEM_DISK.value, ImageKind.FULL_ECS.value):
            raise NotSupported("IMAGE_KIND_NOT_SUPPORTED", f"A {image.kind} image cannot boot a server.")
        require_active(image)
        region = spec.region or image.region
        if image.region != region:
            raise Invalid("REGION_MISMATCH", field="input.region")
        system_gb = image.min_disk_gb if spec.system_disk_gb is None else spec.system_disk_gb
        if system_gb < image.min_disk_gb:
            raise Invalid("DISK_SMALLER_THAN_IMAGE", f"The image needs at least {image.min_disk_gb} GiB.",
                          field="input.systemDiskGb")
        sources: list[dict[str, Any] | None] = [*image.disks] or [None]
        disks = [PlannedDisk(DiskRole.SYSTEM, system_gb, image, sources[0], size_field="input.systemDiskGb")]
        disks += [PlannedDisk(DiskRole.DATA, int(d["sizeGb"]), image, d, size_field=None) for d in sources[1:] if d]
        for i, wanted in enumerate(spec.data_disks):
            size_field = f"input.dataDisks[{i}].sizeGb"
            if wanted.image_id is None:
                disks.append(PlannedDisk(DiskRole.DATA, wanted.size_gb, size_field=size_field))
                continue
            data = usable_image(await uow.images.get_visible(wanted.image_id, for_update=lock), caller,
                                wanted.image_id)
            if data.kind != ImageKind.DATA_DISK.value:
                raise NotSupported("IMAGE_KIND_NOT_SUPPORTED", f"A {data.kind} image cannot fill a data disk.")
            require_active(data)
            if data.region != region:
                raise Invalid("REGION_MISMATCH", field=f"input.dataDisks[{i}].imageId")
            if wanted.size_gb < data.min_disk_gb:
                raise Invalid("DISK_SMALLER_THAN_IMAGE", f"The image needs at least {data.min_disk_gb} GiB.",
                              field=size_field)
            disks.append(PlannedDisk(DiskRole.DATA, wanted.size_gb, data, data.disks[0] if data.disks else None,
                                     size_field=size_field))
        if len(disks) - 1 > DATA_DISKS_PER_SERVER:
            raise Invalid("TOO_MANY_DATA_DISKS", field="input.dataDisks")
        return image, disks

    @staticmethod
    def _check_converted_size(disks: list[PlannedDisk]) -> None:
        """A non-raw image is converted to a raw disk of its virtual size: one larger than the
        disk asked for is refused now, before a conversion of its whole virtual size (which a
        data disk image's minDiskGb does not bound) takes minutes to find it out."""
        for disk in disks:
            image = disk.image
            if image is None or image.quick_provisioning or not image.virtual_size_bytes:
                continue
            if image.virtual_size_bytes > disk.size_gb * GiB:
                raise Invalid("DISK_SMALLER_THAN_IMAGE", f"The image's disk is {image.virtual_size_bytes} bytes: "
                              f"{disk.size_gb} GiB is too small.", field=disk.size_field)

    async def _prepare(self, caller: Caller, disks: list[PlannedDisk], kms_key_id: str | None) -> list[DataKey | None]:
        """Check the sizes and the keys (the images' for reading, the requested one for
        sealing), then do the data work; returns each disk's new data key (None: plain, or the
        image's key)."""
        self._check_converted_size(disks)
        for key_id in sorted({d.image.kms_key_id for d in disks if d.image is not None and d.image.kms_key_id}):
            await self.kms.require_decrypt(caller.account_id, key_id)
        keys: list[DataKey | None] = []
        for _ in disks:
            keys.append(await self.provisioner.new_data_key(caller.account_id, kms_key_id)
                        if kms_key_id is not None else None)
        # What fill makes stays unrecorded until the transaction that makes the disks
        # (`_take`): a refusal, failure or crash before it records nothing.
        for disk, key in zip(disks, keys, strict=True):
            await self.provisioner.fill(caller.account_id, disk, key)
            made = disk.pending.manifest.size if disk.pending is not None else 0
            if made > disk.size_gb * GiB:  # a converted image's raw disk is larger than asked for
                raise Invalid("DISK_SMALLER_THAN_IMAGE", f"The image's disk is {made} bytes: {disk.size_gb} GiB is "
                              "too small.", field=disk.size_field)
        return keys

    async def _take(self, uow: UnitOfWork, region: str, planned: PlannedDisk, checked: PlannedDisk,
                    key: DataKey | None) -> tuple[str, str | None]:
        """The (manifest id, KMS key id) a new disk holds, its reference taken in `uow`."""
        if planned.pending is not None:
            made = await ChunkStore.add_pending(uow, planned.pending)
            return made.id, made.kms_key_id
        source = checked.source_manifest
        if source is not None:
            manifest = await uow.chunks.manifest(source)
            if manifest is None or not await uow.chunks.retain(source):
                raise NotFound("IMAGE_NOT_FOUND", resource_id=checked.image.id if checked.image else None)
            if manifest.size > planned.size_gb * GiB:
                # By reference as by conversion, a disk holds its image whole. A data disk image's
                # minDiskGb does not bound its data (a raw import, a quick copy of a qcow2 one).
                raise Invalid("DISK_SMALLER_THAN_IMAGE", f"The image's disk is {manifest.size} bytes: "
                              f"{planned.size_gb} GiB is too small.", field=planned.size_field)
            return source, manifest.kms_key_id
        blank = blank_manifest(region, key)
        await uow.chunks.add_manifest(blank, [], {}, utcnow())
        return blank.id, blank.kms_key_id

    async def create_server(self, caller: Caller, spec: ServerSpec) -> Server:
        """A RUNNING server booted from a public, own or accepted shared image."""
        name = validate_name(spec.name)
        self._region(spec.region)
        if spec.system_disk_gb is not None:
            validate_disk_size(spec.system_disk_gb, SYSTEM_DISK_MAX_GB, "input.systemDiskGb")
        if len(spec.data_disks) > DATA_DISKS_PER_SERVER:
            raise Invalid("TOO_MANY_DATA_DISKS", field="input.dataDisks")
        for i, d in enumerate(spec.data_disks):
            validate_disk_size(d.size_gb, DATA_DISK_MAX_GB, f"input.dataDisks[{i}].sizeGb")
        async with self.db.uow(caller.account_id, write=False) as uow:
            _, disks = await self._plan_server(uow, caller, spec)
        keys = await self._prepare(caller, disks, spec.kms_key_id)
        async with self.db.uow(caller.account_id) as uow:
            image, checked = await self._plan_server(uow, caller, spec, lock=True)
            now = utcnow()
            server = Server(
                id=new_id("srv"), account_id=caller.account_id, name=name, status=ServerStatus.RUNNING.value,
                region=image.region, source_image_id=image.id, os_type=image.os_type,
                os_platform=image.os_platform, os_version=image.os_version, os_bits=image.os_bits,
                # The system disk's origin (a full-ECS image's data disks may have others).
                boot_mode=image.boot_mode, licensed_platform=disk_licence(checked[0]), created_at=now,
                updated_at=now,
            )
            await uow.compute.add(server)
            for position, (planned, check, key) in enumerate(zip(disks, checked, keys, strict=True)):
                manifest_id, kms_key_id = await self._take(uow, image.region, planned, check, key)
                suffix = "-system" if position == 0 else f"-data{position}"
                await uow.compute.add(self._volume(caller, _disk_name(name, suffix), image.region, check,
                                                   manifest_id, kms_key_id, server.id, position, now))
            await uow.commit()
        return server

    @staticmethod
    def _volume(caller: Caller, name: str, region: str, disk: PlannedDisk, manifest_id: str,
                kms_key_id: str | None, server_id: str | None, position: int, now: datetime) -> Volume:
        return Volume(
            id=new_id("vol"), account_id=caller.account_id, name=name, region=region, role=disk.role.value,
            size_gb=disk.size_gb, server_id=server_id, position=position, manifest_id=manifest_id,
            kms_key_id=kms_key_id, source_image_id=disk.image.id if disk.image else None,
            licensed_platform=disk_licence(disk), created_at=now, updated_at=now,
        )

    async def delete_server(self, caller: Caller, server_id: str, delete_volumes: bool = True) -> str:
        """Delete a server and its system disk (and its data disks unless `delete_volumes` is
        false: they stay as detached volumes). Images made from it keep their own references."""
        async with self.db.uow(caller.account_id) as uow:
            server = await uow.compute.get_server(server_id, for_update=True)
            if server is None:
                raise NotFound("SERVER_NOT_FOUND", resource_id=server_id)
            volumes = (await uow.compute.volumes_of([server.id]))[server.id]
            drop = [v for v in volumes if delete_volumes or v.role == DiskRole.SYSTEM.value]
            now = utcnow()
            await uow.compute.detach([v.id for v in volumes if v not in drop], now)
            await delete_volume_rows(uow, drop)
            await uow.compute.delete_server(server.id)
            await uow.commit()
        return server_id

    async def set_server_status(self, caller: Caller, server_id: str, status: ServerStatus) -> Server:
        """Stop or start one of the caller's servers (`stopServer`, `startServer`). A server
        already in `status` is returned unchanged, as cloud APIs answer a repeated stop or start.
        The change is a compare-and-set on the status read, so a concurrent stop, start or
        delete is never overwritten: the server is returned as it then is (a deleted one is
        `SERVER_NOT_FOUND`)."""
        async with self.db.uow(caller.account_id) as uow:
            server = await uow.compute.get_server(server_id)
            if server is None:
                raise NotFound("SERVER_NOT_FOUND", resource_id=server_id)
            if server.status == status.value:
                return server
            changed = await uow.compute.set_server_status(server.id, server.status, status.value, utcnow())
            server = await uow.compute.get_server(server_id, fresh=True)
            if server is None:
                raise NotFound("SERVER_NOT_FOUND", resource_id=server_id)
            if changed:
                await uow.commit()
        return server

    # ---------------------------------------------------------------- volumes

    async def _plan_volume(self, uow: UnitOfWork, caller: Caller, spec: VolumeSpec, region: str, *,
                           lock: bool = False) -> PlannedDisk:
        if spec.image_id is None:
            return PlannedDisk(DiskRole.DATA, spec.size_gb)
        image = usable_image(await uow.images.get_visible(spec.image_id, for_update=lock), caller, spec.image_id)
        usable = image.kind in (ImageKind.SYSTEM_DISK.value, ImageKind.DATA_DISK.value)
        if not usable or image.status != "ACTIVE":
            raise Invalid("INVALID_VOLUME_IMAGE", field="input.imageId")
        if image.region != region:
            raise Invalid("REGION_MISMATCH", field="input.region")
        if spec.size_gb < image.min_disk_gb:
            raise Invalid("DISK_SMALLER_THAN_IMAGE", f"The image needs at least {image.min_disk_gb} GiB.",
                          field="input.sizeGb")
        return PlannedDisk(DiskRole.DATA, spec.size_gb, image, image.disks[0] if image.disks else None)

    async def create_volume(self, caller: Caller, spec: VolumeSpec) -> Volume:
        """A detached data volume: blank, or filled from a system or data disk image."""
        name = validate_name(spec.name)
        validate_disk_size(spec.size_gb, DATA_DISK_MAX_GB, "input.sizeGb")
        region = self._region(spec.region)
        async with self.db.uow(caller.account_id, write=False) as uow:
            if region is None and spec.image_id is not None:
                view = await uow.images.get_visible(spec.image_id)
                region = view.image.region if view is not None else None
            region = region or self.regions[0]
            disk = await self._plan_volume(uow, caller, spec, region)
        keys = await self._prepare(caller, [disk], spec.kms_key_id)
        async with self.db.uow(caller.account_id) as uow:
            checked = await self._plan_volume(uow, caller, spec, region, lock=True)
            manifest_id, kms_key_id = await self._take(uow, region, disk, checked, keys[0])
            volume = self._volume(caller, name, region, checked, manifest_id, kms_key_id, None, 0, utcnow())
            await uow.compute.add(volume)
            await uow.commit()
        return volume

    async def write_volume(self, volume_id: str, offset: int, data: bytes) -> None:
        """Write `data` at `offset` of a volume, as a guest would (tests and benchmarks; no
        caller check). Copy-on-write: the touched 4 MiB chunks are read, modified and stored
        into a new manifest that shares every other chunk with the old one, which the
        volume then lets go of (images and backups holding it keep it)."""
        async with self.db.uow(write=False) as uow:
            volume = await uow.compute.volume_any(volume_id)
        if volume is None:
            raise KeyError(volume_id)
        end = offset + len(data)
        if offset < 0 or end > volume.size_gb * GiB:
            raise ValueError(f"write [{offset}, {end}) outside a {volume.size_gb} GiB disk")
        if not data:
            return
        manifest = await self.chunks.head(volume.manifest_id)
        plaintext = await self.provisioner.open_key(volume.account_id, manifest)
        key = None
        if plaintext is not None:
            assert manifest.kms_key_id and manifest.data_key_id and manifest.wrapped_key
            key = DataKey(manifest.kms_key_id, manifest.data_key_id, plaintext, manifest.wrapped_key)
        size = max(manifest.size, end)
        touched = set(range(offset // CHUNK_SIZE, (end - 1) // CHUNK_SIZE + 1))
        if manifest.size % CHUNK_SIZE and size > manifest.size:
            touched.add(manifest.size // CHUNK_SIZE)  # a short last chunk grows
        changes: dict[int, bytes] = {}
        for index in sorted(touched):
            start = index * CHUNK_SIZE
            chunk = bytearray(min(CHUNK_SIZE, size - start))
            if start < manifest.size:
                old = b"".join([p async for p in self.chunks.read(
                    manifest.id, data_key=plaintext, offset=start, length=min(CHUNK_SIZE, manifest.size - start))])
                chunk[: len(old)] = old
            lo, hi = max(offset, start), min(end, start + len(chunk))
            if lo < hi:
                chunk[lo - start : hi - start] = data[lo - offset : hi - offset]
            changes[index] = bytes(chunk)
        made = await self.chunks.compose(manifest.id, changes, key=key)
        async with self.db.uow() as uow:  # the new manifest is recorded only if the volume takes it
            await ChunkStore.add_pending(uow, made)
            swapped = await uow.compute.swap_manifest(volume.id, manifest.id, made.manifest.id, utcnow())
            if swapped:
                await uow.chunks.release(manifest.id, utcnow())
                await uow.commit()
        if not swapped:
            raise RuntimeError(f"volume {volume_id} was written concurrently")


async def delete_volume_rows(uow: UnitOfWork, volumes: Iterable[Volume]) -> None:
    """Delete volumes and release their manifests (one reference each), in the caller's
    transaction, through `release_all` (the manifests in id order, then the chunks in digest
    order, as every batch that lets go of data takes its locks). Images and backups made from
    a volume hold references of their own and keep its data; chunks no one else holds are the
    garbage collector's after its grace period. The one path by which a volume goes:
    `deleteServer` (its disks) and `deleteVolumes`."""
    gone = list(volumes)
    if not gone:
        return
    await uow.compute.delete_volumes(sorted(v.id for v in gone))
    await uow.chunks.release_all([v.manifest_id for v in gone], utcnow())
