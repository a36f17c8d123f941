"""Full-ECS backups: the `backups` query and `deleteBackups` (a kept backup's way out)."""

from __future__ import annotations

from typing import Annotated

import strawberry

from app.api.common import PageInfo
from app.api.compute_types import Backup
from app.api.context import Info
from app.api.errors import ConflictError, NotFoundError, ValidationError, payload, query_errors


@strawberry.type
class BackupEdge:
    cursor: str
    node: Backup


@strawberry.type
class BackupConnection:
    edges: list[BackupEdge]
    page_info: PageInfo
    total_count: int


@strawberry.type
class BackupQueries:
    @strawberry.field(description="The caller's full-ECS backups in every region, newest first; one kept after "  # type: ignore[untyped-decorator]
                      "its image was deleted has `image: null` (`deleteBackups` deletes it).")
    async def backups(self, info: Info, first: int | None = None, after: str | None = None) -> BackupConnection:
        with query_errors():
            page = await info.context.services.backups.page(info.context.me, first, after, info.context.reader)
        edges = [BackupEdge(cursor=c, node=Backup.of(b)) for b, c in zip(page.items, page.cursors, strict=True)]
        return BackupConnection(edges=edges, page_info=PageInfo.of(page.cursors, page.has_next, page.has_previous),
                                total_count=page.total)


@strawberry.input
class DeleteBackupsInput:
    ids: list[strawberry.ID]


@strawberry.type
class DeleteBackupsSuccess:
    deleted_ids: list[strawberry.ID]


DeleteBackupsPayload = Annotated[
    DeleteBackupsSuccess | NotFoundError | ConflictError | ValidationError, strawberry.union("DeleteBackupsPayload"),
]


@strawberry.type
class BackupMutations:
    @strawberry.mutation(description="Delete backups whose image is gone, atomically, releasing their data for "  # type: ignore[untyped-decorator]
                         "garbage collection. A backup an image still holds is BACKUP_IN_USE.")
    async def delete_backups(self, info: Info, input: DeleteBackupsInput) -> DeleteBackupsPayload:
        async def run() -> DeleteBackupsSuccess:
            ids = await info.context.services.backups.delete(info.context.me, [str(i) for i in input.ids])
            info.context.clear_loaders()
            return DeleteBackupsSuccess(deleted_ids=[strawberry.ID(i) for i in ids])

        return await payload((NotFoundError, ConflictError, ValidationError), run())
