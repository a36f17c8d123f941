"""GraphQL types of the compute inventory: Server, Volume, Backup (built from table rows).

Relations a list can ask for (a server's volumes, whether a volume's source image is still
visible, an image's backup, a backup's image) go through per-request DataLoaders: one
statement per list.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry.dataloader import DataLoader

from app.api.common import DiskRole, Node, describe_enum
from app.api.context import Info
from app.api.scalars import BigInt
from app.compute.tables import Backup as BackupRow
from app.compute.tables import Server as ServerRow
from app.compute.tables import Volume as VolumeRow
from app.db.repositories.images import VisibleImage
from app.domain import compute as c
from app.domain import enums as d

if TYPE_CHECKING:
    from app.api.image_types import PrivateImage

# describe_enum returns the enum unchanged; the alias keeps annotations plain classes for mypy.
describe_enum(c.ServerStatus, "Whether a server is running; images are made from RUNNING or STOPPED servers.", {
    c.ServerStatus.RUNNING: "Running: from `createServer` on, and again after `startServer`.",
    c.ServerStatus.STOPPED: "Stopped by `stopServer` until `startServer`; its disks can still be imaged.",
})
ServerStatus = c.ServerStatus


def _volumes_loader(info: Info) -> DataLoader[str, list[VolumeRow]]:
    context = info.context
    if "server_volumes" not in context.loaders:
        async def load(server_ids: list[str]) -> list[list[VolumeRow]]:
            found = await context.services.compute.volumes_of(context.me, list(server_ids))
            return [found.get(s, []) for s in server_ids]

        context.loaders["server_volumes"] = DataLoader(load)
    return context.loaders["server_volumes"]


def _visible_loader(info: Info) -> DataLoader[str, bool]:
    context = info.context
    if "visible_source_images" not in context.loaders:
        async def load(image_ids: list[str]) -> list[bool]:
            visible = await context.services.compute.visible_images(context.me, list(image_ids))
            return [i in visible for i in image_ids]

        context.loaders["visible_source_images"] = DataLoader(load)
    return context.loaders["visible_source_images"]


def backup_loader(info: Info) -> DataLoader[str, BackupRow | None]:
    context = info.context
    if "backups" not in context.loaders:
        async def load(backup_ids: list[str]) -> list[BackupRow | None]:
            found = await context.services.compute.get_backups(context.me, list(backup_ids))
            return [found.get(b) for b in backup_ids]

        context.loaders["backups"] = DataLoader(load)
    return context.loaders["backups"]


def _backup_image_loader(info: Info) -> DataLoader[str, VisibleImage | None]:
    context = info.context
    if "backup_images" not in context.loaders:
        async def load(backup_ids: list[str]) -> list[VisibleImage | None]:
            found = await context.services.backups.images_of(context.me, list(backup_ids), context.reader)
            return [found.get(b) for b in backup_ids]

        context.loaders["backup_images"] = DataLoader(load)
    return context.loaders["backup_images"]


async def _visible_source(info: Info, image_id: str | None) -> strawberry.ID | None:
    if image_id is None or not await _visible_loader(info).load(image_id):
        return None
    return strawberry.ID(image_id)


@strawberry.type(description="A block-storage disk of the caller: a server's system or data disk, "
                  "or a detached volume made by `createVolume` or kept by "
                  "`deleteServer(deleteVolumes: false)`.")
class Volume(Node):
    id: strawberry.ID = strawberry.field(description="Opaque id, starting `vol-`.")
    name: str = strawberry.field(
        description="1-128 characters. A server's disks are named after it: `<server>-system`, "
        "`<server>-data1`, ...")
    role: DiskRole = strawberry.field(
        description="SYSTEM for a server's boot disk, DATA otherwise (a volume made by "
        "`createVolume` is DATA).")
    size_gb: int = strawberry.field(description="Capacity in GiB.")
    server_id: strawberry.ID | None = strawberry.field(
        description="The server it is attached to; null for a detached volume.")
    encrypted: bool = strawberry.field(
        description="Whether its data is encrypted with a KMS key (`kmsKeyId`).")
    kms_key_id: strawberry.ID | None = strawberry.field(
        description="The KMS key its data is encrypted with: its image's key, or the `kmsKeyId` it "
        "was created with; null when not encrypted.")
    created_at: datetime = strawberry.field(description="When it was created (UTC).")
    row: strawberry.Private[VolumeRow]

    @classmethod
    def of(cls, row: VolumeRow) -> Volume:
        return cls(
            id=strawberry.ID(row.id), name=row.name, role=d.DiskRole(row.role), size_gb=row.size_gb,
            server_id=strawberry.ID(row.server_id) if row.server_id else None, encrypted=row.kms_key_id is not None,
            kms_key_id=strawberry.ID(row.kms_key_id) if row.kms_key_id else None, created_at=row.created_at, row=row,
        )

    @strawberry.field(  # type: ignore[untyped-decorator]
        description="The image this volume was filled from; null for a blank disk, or once that "
        "image is deleted or no longer visible to the caller.")
    async def source_image_id(self, info: Info) -> strawberry.ID | None:
        return await _visible_source(info, self.row.source_image_id)


@strawberry.type(description="A virtual server of the caller's built-in compute inventory, booted "
                  "from an image by `createServer`; `createImageFromServer` makes images of it.")
class Server(Node):
    id: strawberry.ID = strawberry.field(description="Opaque id, starting `srv-`.")
    name: str = strawberry.field(description="1-128 characters, as given to `createServer`.")
    status: ServerStatus = strawberry.field(description="RUNNING from `createServer` on; STOPPED after `stopServer`, RUNNING "
                                          "again after `startServer`.")
    region: str = strawberry.field(description="The region it runs in: its image's region.")
    created_at: datetime = strawberry.field(description="When it was created (UTC).")
    row: strawberry.Private[ServerRow]

    @classmethod
    def of(cls, row: ServerRow) -> Server:
        return cls(id=strawberry.ID(row.id), name=row.name, status=c.ServerStatus(row.status), region=row.region,
                   created_at=row.created_at, row=row)

    @strawberry.field(  # type: ignore[untyped-decorator]
        description="The image it was booted from; null once that image is deleted or no longer "
        "visible to the caller (the server keeps working).")
    async def source_image_id(self, info: Info) -> strawberry.ID | None:
        return await _visible_source(info, self.row.source_image_id)

    @strawberry.field(  # type: ignore[untyped-decorator]
        description="Its disks: the system disk first, then the data disks in order.")
    async def volumes(self, info: Info) -> list[Volume]:
        rows = await _volumes_loader(info).load(self.row.id)
        return [Volume.of(r) for r in rows]


@strawberry.type(description="The differential backup a full-ECS image is made from: every disk "
                  "of the server as it was when `createImageFromServer` (kind FULL_ECS) was asked.")
class Backup(Node):
    id: strawberry.ID = strawberry.field(description="Opaque id, starting `bak-`.")
    server_id: strawberry.ID = strawberry.field(
        description="The server it was taken from, which may have been deleted since.")
    size_bytes: BigInt = strawberry.field(
        description="Total logical bytes of all backed-up disks (their sizes in GiB times 2^30).")
    new_bytes: BigInt = strawberry.field(
        description="Bytes this backup had to store that no earlier backup of the server already "
        "held; 0 until the image's job has saved it.")
    created_at: datetime = strawberry.field(description="When it was taken (UTC).")

    @classmethod
    def of(cls, row: BackupRow) -> Backup:
        return cls(id=strawberry.ID(row.id), server_id=strawberry.ID(row.server_id), size_bytes=BigInt(row.size_bytes),
                   new_bytes=BigInt(row.new_bytes), created_at=row.created_at)

    @strawberry.field(description="The full-ECS image made from this backup; null once that image is deleted "  # type: ignore[untyped-decorator]
                      "(`deleteImages` with `deleteBackups: false` keeps the backup: `deleteBackups` deletes it).")
    async def image(self, info: Info) -> Annotated[PrivateImage, strawberry.lazy("app.api.image_types")] | None:
        # Imported here: image_types imports this module (PrivateImage.backup).
        from app.api.image_types import PrivateImage, image_of

        view = await _backup_image_loader(info).load(str(self.id))
        made = image_of(view, info.context.me) if view is not None else None
        return made if isinstance(made, PrivateImage) else None
