"""Servers and volumes: queries, createServer/deleteServer/createVolume, and the images
made from them (createImageFromServer, createImageFromVolume)."""

from __future__ import annotations

from typing import Annotated

import strawberry

from app.api.common import ImageKind, PageInfo
from app.api.compute_types import Server, Volume
from app.api.context import Info
from app.api.errors import (
    ConflictError,
    KmsKeyError,
    NotFoundError,
    NotSupportedError,
    ValidationError,
    payload,
    query_errors,
)
from app.api.image_jobs import (
    CREATE_IMAGE_ERRORS,
    CreateImagePayload,
    ImageJobSuccess,
    OperatingSystemInput,
    image_job_success,
)
from app.api.images import TagInput
from app.domain import enums as d
from app.errors import NotFound
from app.services.compute import DataDiskSpec, ServerSpec, VolumeSpec
from app.services.server_images import NewImage


@strawberry.type
class ServerEdge:
    cursor: str
    node: Server


@strawberry.type
class ServerConnection:
    edges: list[ServerEdge]
    page_info: PageInfo
    total_count: int


@strawberry.type
class ComputeQueries:
    @strawberry.field
    async def servers(self, info: Info, first: int | None = None, after: str | None = None) -> ServerConnection:
        with query_errors():
            page = await info.context.services.compute.list_servers(info.context.me, first, after)
        edges = [ServerEdge(cursor=c, node=Server.of(s)) for s, c in zip(page.items, page.cursors, strict=True)]
        return ServerConnection(edges=edges, page_info=PageInfo.of(page.cursors, page.has_next, page.has_previous),
                                total_count=page.total)

    @strawberry.field
    async def server(self, info: Info, id: strawberry.ID) -> Server | None:
        try:
            return Server.of(await info.context.services.compute.get_server(info.context.me, str(id)))
        except NotFound:
            return None

    @strawberry.field
    async def volume(self, info: Info, id: strawberry.ID) -> Volume | None:
        try:
            return Volume.of(await info.context.services.compute.get_volume(info.context.me, str(id)))
        except NotFound:
            return None


# ---------------------------------------------------------------- inputs and payloads


@strawberry.input
class DataDiskInput:
    size_gb: int
    image_id: strawberry.ID | None = strawberry.field(default=None, description="A DATA_DISK image to fill the disk from.")


@strawberry.input
class CreateServerInput:
    name: str
    image_id: strawberry.ID
    region: str | None = None
    system_disk_gb: int | None = strawberry.field(default=None, description="Default: the image's minDiskGb.")
    data_disks: list[DataDiskInput] | None = strawberry.field(default_factory=list)
    kms_key_id: strawberry.ID | None = strawberry.field(
        default=None, description="Encrypt the new disks with this key (images already encrypted keep their key)."
    )


@strawberry.type
class CreateServerSuccess:
    server: Server


CreateServerPayload = Annotated[
    CreateServerSuccess | NotFoundError | ValidationError | ConflictError | NotSupportedError | KmsKeyError,
    strawberry.union("CreateServerPayload"),
]


@strawberry.input
class DeleteServerInput:
    id: strawberry.ID
    delete_volumes: bool | None = strawberry.field(
        default=True, description="Also delete the server's data disks (the system disk always goes)."
    )


@strawberry.type
class DeleteServerSuccess:
    deleted_id: strawberry.ID


DeleteServerPayload = Annotated[DeleteServerSuccess | NotFoundError, strawberry.union("DeleteServerPayload")]


@strawberry.input
class CreateVolumeInput:
    name: str
    size_gb: int
    image_id: strawberry.ID | None = None
    kms_key_id: strawberry.ID | None = None
    region: str | None = None


@strawberry.type
class CreateVolumeSuccess:
    volume: Volume


CreateVolumePayload = Annotated[
    CreateVolumeSuccess | NotFoundError | ValidationError | KmsKeyError, strawberry.union("CreateVolumePayload")
]


@strawberry.input
class CreateImageFromServerInput:
    server_id: strawberry.ID
    name: str
    description: str | None = ""
    kind: ImageKind = strawberry.field(default=d.ImageKind.SYSTEM_DISK, description="SYSTEM_DISK or FULL_ECS.")
    min_ram_mb: int | None = 0
    max_ram_mb: int | None = None
    tags: list[TagInput] | None = strawberry.field(default_factory=list)


@strawberry.input
class CreateImageFromVolumeInput:
    volume_id: strawberry.ID
    name: str
    description: str | None = ""
    kind: ImageKind = strawberry.field(
        default=d.ImageKind.DATA_DISK, description="DATA_DISK, or SYSTEM_DISK (then `os` is required)."
    )
    os: OperatingSystemInput | None = None
    tags: list[TagInput] | None = strawberry.field(default_factory=list)


def _tags(tags: list[TagInput] | None) -> tuple[tuple[str, str], ...]:
    return tuple((t.key, t.value) for t in tags or [])


@strawberry.type
class ComputeMutations:
    @strawberry.mutation
    async def create_server(self, info: Info, input: CreateServerInput) -> CreateServerPayload:
        spec = ServerSpec(
            name=input.name, image_id=str(input.image_id), region=input.region, system_disk_gb=input.system_disk_gb,
            data_disks=tuple(DataDiskSpec(x.size_gb, str(x.image_id) if x.image_id is not None else None)
                             for x in input.data_disks or []),
            kms_key_id=str(input.kms_key_id) if input.kms_key_id is not None else None,
        )

        async def run() -> CreateServerSuccess:
            return CreateServerSuccess(server=Server.of(await info.context.services.compute.create_server(
                info.context.me, spec)))

        return await payload((NotFoundError, ValidationError, ConflictError, NotSupportedError, KmsKeyError), run())

    @strawberry.mutation
    async def delete_server(self, info: Info, input: DeleteServerInput) -> DeleteServerPayload:
        async def run() -> DeleteServerSuccess:
            deleted = await info.context.services.compute.delete_server(
                info.context.me, str(input.id), input.delete_volumes is not False
            )
            return DeleteServerSuccess(deleted_id=strawberry.ID(deleted))

        return await payload((NotFoundError,), run())

    @strawberry.mutation
    async def create_volume(self, info: Info, input: CreateVolumeInput) -> CreateVolumePayload:
        spec = VolumeSpec(name=input.name, size_gb=input.size_gb,
                          image_id=str(input.image_id) if input.image_id is not None else None,
                          kms_key_id=str(input.kms_key_id) if input.kms_key_id is not None else None, region=input.region)

        async def run() -> CreateVolumeSuccess:
            return CreateVolumeSuccess(volume=Volume.of(await info.context.services.compute.create_volume(
                info.context.me, spec)))

        return await payload((NotFoundError, ValidationError, KmsKeyError), run())

    @strawberry.mutation
    async def create_image_from_server(self, info: Info, input: CreateImageFromServerInput) -> CreateImagePayload:
        spec = NewImage(name=input.name, kind=d.ImageKind(input.kind), description=input.description or "",
                        min_ram_mb=input.min_ram_mb or 0, max_ram_mb=input.max_ram_mb, tags=_tags(input.tags))

        async def run() -> ImageJobSuccess:
            created = await info.context.services.server_images.from_server(
                info.context.me, str(input.server_id), spec)
            return await image_job_success(info, created)

        return await payload(CREATE_IMAGE_ERRORS, run())

    @strawberry.mutation
    async def create_image_from_volume(self, info: Info, input: CreateImageFromVolumeInput) -> CreateImagePayload:
        spec = NewImage(name=input.name, kind=d.ImageKind(input.kind), description=input.description or "",
                        tags=_tags(input.tags), os=input.os.spec() if input.os else None)

        async def run() -> ImageJobSuccess:
            created = await info.context.services.server_images.from_volume(
                info.context.me, str(input.volume_id), spec)
            return await image_job_success(info, created)

        return await payload(CREATE_IMAGE_ERRORS, run())
