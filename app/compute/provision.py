"""Filling new disks from images: by reference, by conversion, blank.

A disk from a quick image is the image's manifest, retained (O(1)); an image's key comes
along with it (the wrapped data key lives in the manifest). A disk from a non-quick image
(an imported qcow2, say) is converted to raw once with qemu-img into a new manifest. A disk
that must be encrypted with a key its source does not have is copied under a new data key.
Blank disks are empty manifests, sealed when they must be encrypted.

The plan (`PlannedDisk`) is made by the service from what the caller may use; this module
does the data work, outside any transaction, and leaves the manifests it made owned by
the caller (one reference each) to retain in the transaction that records the disks, or
to release on failure.
"""

from __future__ import annotations

import asyncio
import secrets
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.datastore.chunks import CHUNK_SIZE
from app.datastore.errors import DatastoreError
from app.datastore.store import ChunkStore, DataKey, PendingManifest
from app.datastore.tables import Manifest
from app.db.repositories.images import VisibleImageRow
from app.db.tables import Image
from app.domain.enums import (
    DiskFormat,
    DiskRole,
    ImageKind,
    ImageStatus,
    ImageVisibility,
    MemberStatus,
)
from app.domain.images import Caller, is_licensed_platform
from app.errors import Conflict, Invalid, NotFound, register_codes
from app.formats import FormatError, inspect_file_async, qemu
from app.formats.types import GiB
from app.kms.port import KeyProvider
from app.services.access import relation
from app.services.replica_data import write_sparse_file

register_codes({
    "IMAGE_DATA_INVALID": "The image's stored data failed verification, is not a safe file of its format, or qemu-img "
                          "cannot read it; it cannot provision a disk.",
})


class LargerThanDisk(Exception):
    """The stored file, inspected before its conversion, is a disk larger than the one asked for."""

    def __init__(self, virtual_size: int) -> None:
        super().__init__(f"the image's disk is {virtual_size} bytes")
        self.virtual_size = virtual_size


@dataclass
class PlannedDisk:
    """One disk to create: blank (no `source`), or filled from an image's disk."""

    role: DiskRole
    size_gb: int
    image: Image | None = None
    #: The image's disk entry ({"role", "sizeGb", "storedBytes", "manifestId"}).
    source: dict[str, Any] | None = None
    #: The manifest the disk will hold: its source's (retained by reference), or `pending`.
    manifest_id: str | None = None
    #: The manifest this module made, unrecorded until the transaction that makes the disk
    #: (`ChunkStore.add_pending`): a failure or a crash before it leaves no manifest that
    #: nobody holds, only chunks that garbage collection takes after its grace period.
    pending: PendingManifest | None = None
    kms_key_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: The input field that sized the disk (named by a DISK_SMALLER_THAN_IMAGE refusal).
    size_field: str | None = "input.sizeGb"

    @property
    def source_manifest(self) -> str | None:
        return None if self.source is None else self.source.get("manifestId")


def usable_image(view: VisibleImageRow | None, caller: Caller, image_id: str) -> Image:
    """An image the caller may provision from: public, its own, or shared with it and
    ACCEPTED (a pending or rejected membership is as invisible as no image); ACTIVE."""
    if view is None:
        raise NotFound("IMAGE_NOT_FOUND", resource_id=image_id)
    if relation(view, caller) is ImageVisibility.SHARED and (
        view.membership is None or view.membership.status != MemberStatus.ACCEPTED.value
    ):
        raise NotFound("IMAGE_NOT_FOUND", resource_id=image_id)
    return view.image


def require_active(image: Image) -> None:
    if image.status != ImageStatus.ACTIVE.value:
        raise Conflict("IMAGE_NOT_ACTIVE", f"Image {image.id} is {image.status}, not ACTIVE.")


def licensed_origin(image: Image) -> str | None:
    """The licensed public platform in the image's origin chain, if any."""
    if image.licensed_platform:
        return image.licensed_platform
    if image.visibility == ImageVisibility.PUBLIC.value and is_licensed_platform(image.os_platform):
        return image.os_platform
    return None


def disk_licence(disk: PlannedDisk) -> str | None:
    """The licensed public platform in the origin chain of a disk filled from `disk.image`. A
    full-ECS image's disk entries say it disk by disk (`licensedPlatform`): its data disks
    have origins of their own, which the image's system disk does not share."""
    if disk.image is None:
        return None
    if disk.image.kind == ImageKind.FULL_ECS.value and disk.source is not None and "licensedPlatform" in disk.source:
        platform = disk.source["licensedPlatform"]
        return str(platform) if platform else None
    return licensed_origin(disk.image)


class Provisioner:
    """The data work of making disks: data keys, conversions, copies."""

    def __init__(self, chunks: ChunkStore, kms: KeyProvider, work_dir: Path) -> None:
        self.chunks = chunks
        self.kms = kms
        self.work_dir = work_dir

    async def new_data_key(self, account_id: str, kms_key_id: str) -> DataKey:
        """A fresh data key of `kms_key_id` (KmsKeyProblem when the caller cannot use it)."""
        plaintext, wrapped = await self.kms.generate_data_key(account_id, kms_key_id)
        return DataKey(kms_key_id, "dk-" + secrets.token_hex(8), plaintext, wrapped)

    async def open_key(self, account_id: str, manifest: Manifest) -> bytes | None:
        """The plaintext data key of a sealed manifest (None for a plain one)."""
        if manifest.kms_key_id is None or manifest.wrapped_key is None:
            return None
        return await self.kms.decrypt_data_key(account_id, manifest.kms_key_id, manifest.wrapped_key)

    async def fill(self, account_id: str, disk: PlannedDisk, key: DataKey | None) -> None:
        """Make the disk's own manifest when it cannot share its source's: a non-quick image
        is converted to raw; a plain quick image that must be encrypted with `key` is copied
        under it. Quick images otherwise stay by reference (nothing done here)."""
        source_id = disk.source_manifest
        if disk.image is None or source_id is None:
            return
        if disk.image.quick_provisioning and key is None:
            return  # by reference: the manifest (and its key, if any) shared as it is
        manifest = await self.chunks.head(source_id)
        if disk.image.quick_provisioning and manifest.size > disk.size_gb * GiB:
            # Refused before a copy under `key` writes it all (`_take` refuses it too).
            raise Invalid("DISK_SMALLER_THAN_IMAGE", f"The image's disk is {manifest.size} bytes: "
                          f"{disk.size_gb} GiB is too small.", field=disk.size_field)
        if disk.image.quick_provisioning and manifest.data_key_id is not None:
            # By reference too: the disk keeps its sealed manifest's key. The disk's own
            # manifest decides, not the image's key: a full-ECS image under a key may hold a
            # plain data disk (a blank one of the server it was made from), which `key` seals.
            return
        plaintext = await self.open_key(account_id, manifest)
        if manifest.data_key_id is not None:
            assert manifest.kms_key_id is not None and manifest.wrapped_key is not None and plaintext is not None
            # The image's own key stays with its disks: same data key, new nonces.
            key = DataKey(manifest.kms_key_id, manifest.data_key_id, plaintext, manifest.wrapped_key)
        try:
            made = await self._own_copy(disk, disk.image, source_id, manifest, plaintext, key)
        except DatastoreError as exc:
            # A chunk missing or failing its digest or tag, or the data key failing to unwrap:
            # the image's stored data is damaged, which no retry mends.
            raise Invalid("IMAGE_DATA_INVALID", f"Image {disk.image.id}'s stored data failed verification ({exc}); "
                          "it cannot provision a disk.") from exc
        if made is None:
            return
        disk.manifest_id, disk.pending = made.manifest.id, made
        disk.kms_key_id = made.manifest.kms_key_id

    async def _own_copy(self, disk: PlannedDisk, image: Image, source_id: str, manifest: Manifest,
                        plaintext: bytes | None, key: DataKey | None) -> PendingManifest | None:
        """The disk's own manifest made from the image's (see `fill`); None: it shares the image's."""
        if not image.quick_provisioning:
            fmt = DiskFormat(image.disk_format)
            try:
                return await self.convert_to_raw(source_id, fmt, plaintext, key, max_virtual_size=disk.size_gb * GiB)
            except LargerThanDisk as exc:
                raise Invalid("DISK_SMALLER_THAN_IMAGE", f"The image's disk is {exc.virtual_size} bytes: "
                              f"{disk.size_gb} GiB is too small.", field=disk.size_field) from exc
            except FormatError as exc:
                raise Invalid("IMAGE_DATA_INVALID", f"Image {image.id}'s stored data is not a safe "
                              f"{fmt.value} file ({exc}); it cannot provision a disk.") from exc
            except qemu.ConversionError as exc:
                if exc.out_of_space:
                    raise  # the service's disk, not the image: an internal error, logged
                # A file whose header passed inspection but whose body qemu-img cannot read
                # (a corrupt cluster table, say): the image's data, not the service, is at fault.
                raise Invalid("IMAGE_DATA_INVALID", f"Image {image.id}'s stored {fmt.value} data could not "
                              f"be converted ({exc.stderr_tail.strip()[-300:]}); it cannot provision "
                              "a disk.") from exc
        if key is not None and manifest.data_key_id is None:
            return await self.chunks.copy_pending(source_id, key=key)
        return None

    async def convert_to_raw(
        self, manifest_id: str, fmt: DiskFormat, data_key: bytes | None, key: DataKey | None, *,
        max_virtual_size: int | None = None,
    ) -> PendingManifest:
        """Stream the manifest into a private temporary file, have qemu-img convert it to raw
        (`qemu.raw_pieces`: a window at a time, so the scratch space taken is the stored file's
        and two windows', whatever the raw disk's size), and stream the raw disk into a new
        manifest sealed with `key`, returned unrecorded (`ChunkStore.add_pending`). The
        temporary files are removed whatever happens. The file is inspected again before
        qemu-img opens it (FormatError when it is not a safe `fmt` file, LargerThanDisk when it
        is a disk larger than `max_virtual_size`), as export and replication do."""
        region = (await self.chunks.head(manifest_id)).region
        await asyncio.to_thread(self.work_dir.mkdir, parents=True, exist_ok=True)
        async with qemu.temporary_workfile(self.work_dir, ".src") as src:
            await write_sparse_file(src, self.chunks.read(manifest_id, data_key=data_key))
            inspected = await inspect_file_async(src, fmt)
            # The image's recorded size may predate how inspection reads it now: qemu-img would
            # write the whole disk before the size of the result is checked.
            if max_virtual_size is not None and inspected.virtual_size > max_virtual_size:
                raise LargerThanDisk(inspected.virtual_size)
            size = await qemu.confirm(src, fmt, inspected.virtual_size)
            pieces = qemu.raw_pieces(src, fmt, size, self.work_dir, piece_size=CHUNK_SIZE)
            async with aclosing(pieces):
                return await self.chunks.write_pending(region, pieces, key=key)
