"""Volumes: the `volumes` query and `deleteVolumes` (a detached volume's way out)."""

from __future__ import annotations

from typing import Annotated

import strawberry

from app.api.common import PageInfo
from app.api.compute_types import Volume
from app.api.context import Info
from app.api.errors import ConflictError, NotFoundError, ValidationError, payload, query_errors


@strawberry.type(description="A volume of `volumes`, with its cursor.")
class VolumeEdge:
    cursor: str = strawberry.field(
        description="Opaque; pass it as `after` for the volumes after this one.")
    node: Volume = strawberry.field(description="The volume.")


@strawberry.type(description="A page of the caller's volumes, newest first.")
class VolumeConnection:
    edges: list[VolumeEdge] = strawberry.field(
        description="The volumes of this page, newest first.")
    page_info: PageInfo = strawberry.field(
        description="This page's first and last cursors, and whether more pages follow.")
    total_count: int = strawberry.field(
        description="How many volumes the caller has, attached or not, in every region.")


@strawberry.type
class VolumeQueries:
    @strawberry.field(  # type: ignore[untyped-decorator]
        description="The caller's volumes in every region, newest first (by `createdAt`, then "
        "`id`): the servers' disks (`serverId` set) and detached volumes, made by `createVolume` "
        "or kept by `deleteServer(deleteVolumes: false)` (`serverId: null`; `deleteVolumes` "
        "deletes them). A bad `first` or `after` is a top-level error: `INVALID_PAGE_SIZE`, "
        "`INVALID_CURSOR`.")
    async def volumes(
        self, info: Info,
        first: Annotated[int | None, strawberry.argument(
            description="Page size, 0 to 1000; null: 50.")] = None,
        after: Annotated[str | None, strawberry.argument(
            description="The `cursor` of the last volume of the previous page (its "
            "`pageInfo.endCursor`); null: from the newest.")] = None,
    ) -> VolumeConnection:
        with query_errors():
            page = await info.context.services.volumes.page(info.context.me, first, after, info.context.reader)
        edges = [VolumeEdge(cursor=c, node=Volume.of(v)) for v, c in zip(page.items, page.cursors, strict=True)]
        return VolumeConnection(edges=edges, page_info=PageInfo.of(page.cursors, page.has_next, page.has_previous),
                                total_count=page.total)


@strawberry.input(description="The volumes to delete.")
class DeleteVolumesInput:
    ids: list[strawberry.ID] = strawberry.field(
        description="1 to 100 of the caller's detached volumes (`serverId: null`); an id given "
        "twice counts once.")


@strawberry.type(description="The volumes `deleteVolumes` deleted.")
class DeleteVolumesSuccess:
    deleted_ids: list[strawberry.ID] = strawberry.field(
        description="Every volume named, in request order, each once.")


DeleteVolumesPayload = Annotated[
    DeleteVolumesSuccess | NotFoundError | ConflictError | ValidationError,
    strawberry.union("DeleteVolumesPayload",
                     description="The deleted ids, or why nothing was deleted."),
]


@strawberry.type
class VolumeMutations:
    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Delete detached volumes of the caller, atomically, releasing their data for "
        "garbage collection; images made from them keep theirs, an image still being made "
        "included. Errors: `EMPTY_REQUEST`, `TOO_MANY_ITEMS`; `VOLUME_NOT_FOUND` (also another "
        "account's); `VOLUME_IN_USE` (a server's disk: it goes with the server, `deleteServer`).")
    async def delete_volumes(
        self, info: Info,
        input: Annotated[DeleteVolumesInput, strawberry.argument(
            description="The volumes to delete.")],
    ) -> DeleteVolumesPayload:
        async def run() -> DeleteVolumesSuccess:
            ids = await info.context.services.volumes.delete(info.context.me, [str(i) for i in input.ids])
            info.context.clear_loaders()
            return DeleteVolumesSuccess(deleted_ids=[strawberry.ID(i) for i in ids])

        return await payload((NotFoundError, ConflictError, ValidationError), run())
