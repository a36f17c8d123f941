"""Servers and volumes: queries, createServer/deleteServer/stopServer/startServer/createVolume,
and the images made from them (createImageFromServer, createImageFromVolume)."""

from __future__ import annotations

from typing import Annotated

import strawberry

from app.api.common import ImageKind, PageInfo
from app.api.compute_types import Server, ServerStatus, Volume
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

#: Texts several descriptions below share (the rules of app.domain.rules).
NAME_RULE = "1-128 letters (any script), digits, `-`, `.`, `_` or spaces; no outer space."
DESCRIPTION_RULE = "At most 1024 characters, none of `<`, `>`, CR or LF; null or absent: empty."
TAGS_RULE = ("At most 10 tags, each key once: keys of 1-36 letters, digits, `_` or `-`; values of "
             "0-43 letters, digits, `_`, `.` or `-`.")
KMS_ERRORS = ("`KMS_KEY_NOT_FOUND`, `KMS_ACCESS_DENIED`, `KMS_KEY_DISABLED`, "
              "`KMS_KEY_PENDING_DELETION`")


@strawberry.type(description="A server of `servers`, with its cursor.")
class ServerEdge:
    cursor: str = strawberry.field(
        description="Opaque; pass it as `after` for the servers after this one.")
    node: Server = strawberry.field(description="The server.")


@strawberry.type(description="A page of the caller's servers, newest first.")
class ServerConnection:
    edges: list[ServerEdge] = strawberry.field(
        description="The servers of this page, newest first.")
    page_info: PageInfo = strawberry.field(
        description="This page's first and last cursors, and whether more pages follow.")
    total_count: int = strawberry.field(
        description="How many servers the caller has, in every region.")


@strawberry.type
class ComputeQueries:
    @strawberry.field(  # type: ignore[untyped-decorator]
        description="The caller's servers in every region, newest first (by `createdAt`, then "
        "`id`). A bad `first` or `after` is a top-level error: `INVALID_PAGE_SIZE`, "
        "`INVALID_CURSOR`.")
    async def servers(
        self, info: Info,
        first: Annotated[int | None, strawberry.argument(
            description="Page size, 0 to 1000; null: 50.")] = None,
        after: Annotated[str | None, strawberry.argument(
            description="The `cursor` of the last server of the previous page (its "
            "`pageInfo.endCursor`); null: from the newest.")] = None,
    ) -> ServerConnection:
        with query_errors():
            page = await info.context.services.compute.list_servers(info.context.me, first, after)
        edges = [ServerEdge(cursor=c, node=Server.of(s)) for s, c in zip(page.items, page.cursors, strict=True)]
        return ServerConnection(edges=edges, page_info=PageInfo.of(page.cursors, page.has_next, page.has_previous),
                                total_count=page.total)

    @strawberry.field(  # type: ignore[untyped-decorator]
        description="One of the caller's servers; null when the caller has none with this id "
        "(another account's servers are never visible, an administrator's included).")
    async def server(
        self, info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The server's id.")],
    ) -> Server | None:
        try:
            return Server.of(await info.context.services.compute.get_server(info.context.me, str(id)))
        except NotFound:
            return None

    @strawberry.field(  # type: ignore[untyped-decorator]
        description="One of the caller's volumes, attached to a server or not; null when the "
        "caller has none with this id.")
    async def volume(
        self, info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The volume's id.")],
    ) -> Volume | None:
        try:
            return Volume.of(await info.context.services.compute.get_volume(info.context.me, str(id)))
        except NotFound:
            return None


# ---------------------------------------------------------------- inputs and payloads


@strawberry.input(description="A data disk of a new server: blank, or filled from an image.")
class DataDiskInput:
    size_gb: int = strawberry.field(
        description="Size in GiB, 1 to 32768; with `imageId`, at least the image's `minDiskGb` "
        "and its virtual size.")
    image_id: strawberry.ID | None = strawberry.field(
        default=None, description="An ACTIVE DATA_DISK image in the server's region to fill the "
        "disk from: public, the caller's own, or shared with the caller and ACCEPTED. Null: a "
        "blank disk.")


@strawberry.input(description="A server to boot from an image.")
class CreateServerInput:
    name: str = strawberry.field(description="The server's name: " + NAME_RULE)
    image_id: strawberry.ID = strawberry.field(
        description="An ACTIVE SYSTEM_DISK or FULL_ECS image to boot from: public, the caller's "
        "own, or shared with the caller and ACCEPTED. A full-ECS image's data disks become the "
        "server's first data disks.")
    region: str | None = strawberry.field(
        default=None, description="The image's region (another is `REGION_MISMATCH`); null: the "
        "image's region.")
    system_disk_gb: int | None = strawberry.field(
        default=None, description="System disk size in GiB, from the image's `minDiskGb` to 2048; "
        "null: the image's `minDiskGb`.")
    data_disks: list[DataDiskInput] | None = strawberry.field(
        default_factory=list, description="Further data disks, in this order; at most 23 data "
        "disks in all, a full-ECS image's own included.")
    kms_key_id: strawberry.ID | None = strawberry.field(
        default=None, description="Encrypt the new disks with this key, one of the caller's own: "
        "blank disks and disks of unencrypted images (an encrypted image's disks keep its key). "
        "Null: no new encryption.")


@strawberry.type(description="The server `createServer` made.")
class CreateServerSuccess:
    server: Server = strawberry.field(description="The new server, RUNNING, with its disks.")


CreateServerPayload = Annotated[
    CreateServerSuccess | NotFoundError | ValidationError | ConflictError | NotSupportedError | KmsKeyError,
    strawberry.union("CreateServerPayload", description="The new server, or why none was made."),
]


@strawberry.input(description="The server to delete.")
class DeleteServerInput:
    id: strawberry.ID = strawberry.field(description="One of the caller's servers.")
    delete_volumes: bool | None = strawberry.field(
        default=True, description="Also delete the server's data disks (the system disk always "
        "goes); false keeps them as detached volumes, listed by `volumes` and deleted by "
        "`deleteVolumes`."
    )


@strawberry.type(description="The server `deleteServer` deleted.")
class DeleteServerSuccess:
    deleted_id: strawberry.ID = strawberry.field(description="The deleted server's id.")


DeleteServerPayload = Annotated[
    DeleteServerSuccess | NotFoundError,
    strawberry.union("DeleteServerPayload",
                     description="The deleted server's id, or `SERVER_NOT_FOUND`."),
]


@strawberry.input(description="The server to stop.")
class StopServerInput:
    id: strawberry.ID = strawberry.field(description="One of the caller's servers, RUNNING or STOPPED.")


@strawberry.type(description="The server `stopServer` stopped (or found STOPPED already).")
class StopServerSuccess:
    server: Server = strawberry.field(description="The server, STOPPED, with its disks.")


StopServerPayload = Annotated[
    StopServerSuccess | NotFoundError,
    strawberry.union("StopServerPayload", description="The stopped server, or `SERVER_NOT_FOUND`."),
]


@strawberry.input(description="The server to start.")
class StartServerInput:
    id: strawberry.ID = strawberry.field(description="One of the caller's servers, STOPPED or RUNNING.")


@strawberry.type(description="The server `startServer` started (or found RUNNING already).")
class StartServerSuccess:
    server: Server = strawberry.field(description="The server, RUNNING, with its disks.")


StartServerPayload = Annotated[
    StartServerSuccess | NotFoundError,
    strawberry.union("StartServerPayload", description="The started server, or `SERVER_NOT_FOUND`."),
]


@strawberry.input(description="A detached data volume to create: blank, or filled from an image.")
class CreateVolumeInput:
    name: str = strawberry.field(description="The volume's name: " + NAME_RULE)
    size_gb: int = strawberry.field(
        description="Size in GiB, 1 to 32768; with `imageId`, at least the image's `minDiskGb` "
        "and its virtual size.")
    image_id: strawberry.ID | None = strawberry.field(
        default=None, description="An ACTIVE SYSTEM_DISK or DATA_DISK image to fill the volume "
        "from: public, the caller's own, or shared with the caller and ACCEPTED. Null: a blank "
        "volume.")
    kms_key_id: strawberry.ID | None = strawberry.field(
        default=None, description="Encrypt the volume with this key, one of the caller's own (an "
        "encrypted image's data keeps its key). Null: no new encryption.")
    region: str | None = strawberry.field(
        default=None, description="The volume's region, which must be the image's; null: the "
        "image's region, or the default region for a blank volume.")


@strawberry.type(description="The volume `createVolume` made.")
class CreateVolumeSuccess:
    volume: Volume = strawberry.field(
        description="The new volume: role DATA, detached (`serverId: null`).")


CreateVolumePayload = Annotated[
    CreateVolumeSuccess | NotFoundError | ValidationError | KmsKeyError,
    strawberry.union("CreateVolumePayload", description="The new volume, or why none was made."),
]


@strawberry.input(description="An image to make of one of the caller's servers.")
class CreateImageFromServerInput:
    server_id: strawberry.ID = strawberry.field(
        description="One of the caller's servers, RUNNING or STOPPED.")
    name: str = strawberry.field(description="The image's name: " + NAME_RULE)
    description: str | None = strawberry.field(default="", description=DESCRIPTION_RULE)
    kind: ImageKind = strawberry.field(
        default=d.ImageKind.SYSTEM_DISK, description="SYSTEM_DISK: the system disk alone (at most "
        "1024 GiB); FULL_ECS: every disk, with a differential `Backup`.")
    min_ram_mb: int | None = strawberry.field(
        default=0, description="Least RAM in MiB a server of the image needs, 0 to 1048576; 0 or "
        "null means unrestricted.")
    max_ram_mb: int | None = strawberry.field(
        default=None, description="Most RAM in MiB, `minRamMb` to 1048576; null means "
        "unrestricted.")
    tags: list[TagInput] | None = strawberry.field(default_factory=list, description=TAGS_RULE)


@strawberry.input(description="An image to make of one of the caller's volumes.")
class CreateImageFromVolumeInput:
    volume_id: strawberry.ID = strawberry.field(
        description="One of the caller's volumes, attached or not.")
    name: str = strawberry.field(description="The image's name: " + NAME_RULE)
    description: str | None = strawberry.field(default="", description=DESCRIPTION_RULE)
    kind: ImageKind = strawberry.field(
        default=d.ImageKind.DATA_DISK, description="DATA_DISK (a volume of at most 2048 GiB), or "
        "SYSTEM_DISK (at most 1024 GiB; then `os` is required)."
    )
    os: OperatingSystemInput | None = strawberry.field(
        default=None, description="What the image boots: required for SYSTEM_DISK, ignored for "
        "DATA_DISK.")
    tags: list[TagInput] | None = strawberry.field(default_factory=list, description=TAGS_RULE)


def _tags(tags: list[TagInput] | None) -> tuple[tuple[str, str], ...]:
    return tuple((t.key, t.value) for t in tags or [])


@strawberry.type
class ComputeMutations:
    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Boot a RUNNING server of the caller from an image, within the request (no "
        "job): a quick image is used by reference, another is converted to raw first. Errors: "
        "`INVALID_NAME`, `INVALID_REGION`, `REGION_MISMATCH`, `INVALID_DISK_SIZE`, "
        "`TOO_MANY_DATA_DISKS`, `DISK_SMALLER_THAN_IMAGE`, `IMAGE_DATA_INVALID`; "
        "`IMAGE_NOT_FOUND`; `IMAGE_NOT_ACTIVE`; `IMAGE_KIND_NOT_SUPPORTED`; " + KMS_ERRORS
        + " (the key given, or an image's key the caller may not decrypt with).")
    async def create_server(
        self, info: Info,
        input: Annotated[CreateServerInput, strawberry.argument(description="The server.")],
    ) -> CreateServerPayload:
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

    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Delete one of the caller's servers with its system disk, and its data disks "
        "unless `deleteVolumes` is false. Images and backups made from it keep their data. "
        "Error: `SERVER_NOT_FOUND`.")
    async def delete_server(
        self, info: Info,
        input: Annotated[DeleteServerInput, strawberry.argument(
            description="The server to delete.")],
    ) -> DeleteServerPayload:
        async def run() -> DeleteServerSuccess:
            deleted = await info.context.services.compute.delete_server(
                info.context.me, str(input.id), input.delete_volumes is not False
            )
            return DeleteServerSuccess(deleted_id=strawberry.ID(deleted))

        return await payload((NotFoundError,), run())

    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Stop one of the caller's RUNNING servers, within the request (no job); a "
        "STOPPED server stays as it is (not an error). A stopped server keeps its disks and can "
        "still be imaged (`createImageFromServer`) or deleted. Error: `SERVER_NOT_FOUND`.")
    async def stop_server(
        self, info: Info,
        input: Annotated[StopServerInput, strawberry.argument(description="The server to stop.")],
    ) -> StopServerPayload:
        async def run() -> StopServerSuccess:
            return StopServerSuccess(server=Server.of(await info.context.services.compute.set_server_status(
                info.context.me, str(input.id), ServerStatus.STOPPED)))

        return await payload((NotFoundError,), run())

    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Start one of the caller's STOPPED servers, within the request (no job); a "
        "RUNNING server stays as it is (not an error). Error: `SERVER_NOT_FOUND`.")
    async def start_server(
        self, info: Info,
        input: Annotated[StartServerInput, strawberry.argument(description="The server to start.")],
    ) -> StartServerPayload:
        async def run() -> StartServerSuccess:
            return StartServerSuccess(server=Server.of(await info.context.services.compute.set_server_status(
                info.context.me, str(input.id), ServerStatus.RUNNING)))

        return await payload((NotFoundError,), run())

    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Create a detached data volume of the caller, blank or filled from an image, "
        "within the request (no job). Errors: `INVALID_NAME`, `INVALID_DISK_SIZE`, "
        "`INVALID_REGION`, `REGION_MISMATCH`, `INVALID_VOLUME_IMAGE` (not an ACTIVE system or "
        "data disk image), `DISK_SMALLER_THAN_IMAGE`, `IMAGE_DATA_INVALID`; `IMAGE_NOT_FOUND`; "
        + KMS_ERRORS + ".")
    async def create_volume(
        self, info: Info,
        input: Annotated[CreateVolumeInput, strawberry.argument(description="The volume.")],
    ) -> CreateVolumePayload:
        spec = VolumeSpec(name=input.name, size_gb=input.size_gb,
                          image_id=str(input.image_id) if input.image_id is not None else None,
                          kms_key_id=str(input.kms_key_id) if input.kms_key_id is not None else None, region=input.region)

        async def run() -> CreateVolumeSuccess:
            return CreateVolumeSuccess(volume=Volume.of(await info.context.services.compute.create_volume(
                info.context.me, spec)))

        return await payload((NotFoundError, ValidationError, KmsKeyError), run())

    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Make a private image of one of the caller's servers, in its region: QUEUED "
        "now, ACTIVE when its job (CREATE_IMAGE_FROM_SERVER, or CREATE_FULL_ECS_IMAGE with a "
        "differential `Backup`) ends; it inherits the server's OS, boot mode and disks' KMS key. "
        "Errors: `INVALID_IMAGE_KIND`, `INVALID_NAME`, `INVALID_DESCRIPTION`, `INVALID_RAM_RANGE`, "
        "`INVALID_TAG_KEY`, `INVALID_TAG_VALUE`, `DUPLICATE_TAG_KEY`; `SERVER_NOT_FOUND`; "
        "`SERVER_NOT_READY`; `FULL_ECS_MIXED_KEYS`; `TOO_MANY_TAGS`, `SYSTEM_DISK_TOO_LARGE`, "
        "`QUOTA_PRIVATE_IMAGES`, `QUOTA_CONCURRENT_CREATIONS`; " + KMS_ERRORS + " (a disk's key).")
    async def create_image_from_server(
        self, info: Info,
        input: Annotated[CreateImageFromServerInput, strawberry.argument(
            description="The server and the image.")],
    ) -> CreateImagePayload:
        spec = NewImage(name=input.name, kind=d.ImageKind(input.kind), description=input.description or "",
                        min_ram_mb=input.min_ram_mb or 0, max_ram_mb=input.max_ram_mb, tags=_tags(input.tags))

        async def run() -> ImageJobSuccess:
            created = await info.context.services.server_images.from_server(
                info.context.me, str(input.server_id), spec)
            return await image_job_success(info, created)

        return await payload(CREATE_IMAGE_ERRORS, run())

    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Make a private image of one of the caller's volumes, in its region: QUEUED "
        "now, ACTIVE when its CREATE_IMAGE_FROM_VOLUME job ends; it keeps the volume's KMS key. "
        "Errors: `INVALID_IMAGE_KIND`, `INVALID_NAME`, `INVALID_DESCRIPTION`, `INVALID_TAG_KEY`, "
        "`INVALID_TAG_VALUE`, `DUPLICATE_TAG_KEY`, `OS_REQUIRED`, `INVALID_OS`; "
        "`VOLUME_NOT_FOUND`; `TOO_MANY_TAGS`, `SYSTEM_DISK_TOO_LARGE`, `DATA_DISK_TOO_LARGE`, "
        "`QUOTA_PRIVATE_IMAGES`, `QUOTA_CONCURRENT_CREATIONS`; " + KMS_ERRORS + " (the volume's "
        "key).")
    async def create_image_from_volume(
        self, info: Info,
        input: Annotated[CreateImageFromVolumeInput, strawberry.argument(
            description="The volume and the image.")],
    ) -> CreateImagePayload:
        spec = NewImage(name=input.name, kind=d.ImageKind(input.kind), description=input.description or "",
                        tags=_tags(input.tags), os=input.os.spec() if input.os else None)

        async def run() -> ImageJobSuccess:
            created = await info.context.services.server_images.from_volume(
                info.context.me, str(input.volume_id), spec)
            return await image_job_success(info, created)

        return await payload(CREATE_IMAGE_ERRORS, run())
