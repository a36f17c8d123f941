"""Full-ECS backups: the `backups` query and `deleteBackups` (a kept backup's way out)."""

from __future__ import annotations

from typing import Annotated

import strawberry

from app.api.common import PageInfo
from app.api.compute_types import Backup
from app.api.context import Info
from app.api.errors import ConflictError, NotFoundError, ValidationError, payload, query_errors


@strawberry.type(description="A backup of `backups`, with its cursor.")
class BackupEdge:
    cursor: str = strawberry.field(
        description="Opaque; pass it as `after` for the backups after this one.")
    node: Backup = strawberry.field(description="The backup.")


@strawberry.type(description="A page of the caller's full-ECS backups, newest first.")
class BackupConnection:
    edges: list[BackupEdge] = strawberry.field(
        description="The backups of this page, newest first.")
    page_info: PageInfo = strawberry.field(
        description="This page's first and last cursors, and whether more pages follow.")
    total_count: int = strawberry.field(
        description="How many backups the caller has, in every region.")


@strawberry.type
class BackupQueries:
    @strawberry.field(  # type: ignore[untyped-decorator]
        description="The caller's full-ECS backups in every region, newest first (by `createdAt`, "
        "then `id`); one kept after its image was deleted has `image: null` (`deleteBackups` "
        "deletes it). A bad `first` or `after` is a top-level error: `INVALID_PAGE_SIZE`, "
        "`INVALID_CURSOR`.")
    async def backups(
        self, info: Info,
        first: Annotated[int | None, strawberry.argument(
            description="Page size, 0 to 1000; null: 50.")] = None,
        after: Annotated[str | None, strawberry.argument(
            description="The `cursor` of the last backup of the previous page (its "
            "`pageInfo.endCursor`); null: from the newest.")] = None,
    ) -> BackupConnection:
        with query_errors():
            page = await info.context.services.backups.page(info.context.me, first, after, info.context.reader)
        edges = [BackupEdge(cursor=c, node=Backup.of(b)) for b, c in zip(page.items, page.cursors, strict=True)]
        return BackupConnection(edges=edges, page_info=PageInfo.of(page.cursors, page.has_next, page.has_previous),
                                total_count=page.total)


@strawberry.input(description="The backups to delete.")
class DeleteBackupsInput:
    ids: list[strawberry.ID] = strawberry.field(
        description="1 to 100 of the caller's backups whose image is deleted; an id given twice "
        "counts once.")


@strawberry.type(description="The backups `deleteBackups` deleted.")
class DeleteBackupsSuccess:
    deleted_ids: list[strawberry.ID] = strawberry.field(
        description="Every backup named, in request order, each once.")


DeleteBackupsPayload = Annotated[
    DeleteBackupsSuccess | NotFoundError | ConflictError | ValidationError,
    strawberry.union("DeleteBackupsPayload",
                     description="The deleted ids, or why nothing was deleted."),
]


@strawberry.type
class BackupMutations:
    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Delete backups of the caller whose image is gone, atomically, releasing their "
        "data for garbage collection. Errors: `EMPTY_REQUEST`, `TOO_MANY_ITEMS`; "
        "`BACKUP_NOT_FOUND` (also another account's); `BACKUP_IN_USE` (an image still holds it: "
        "`deleteImages(deleteBackups: true)` deletes both).")
    async def delete_backups(
        self, info: Info,
        input: Annotated[DeleteBackupsInput, strawberry.argument(
            description="The backups to delete.")],
    ) -> DeleteBackupsPayload:
        async def run() -> DeleteBackupsSuccess:
            ids = await info.context.services.backups.delete(info.context.me, [str(i) for i in input.ids])
            info.context.clear_loaders()
            return DeleteBackupsSuccess(deleted_ids=[strawberry.ID(i) for i in ids])

        return await payload((NotFoundError, ConflictError, ValidationError), run())
