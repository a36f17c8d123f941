"""Full-ECS backups as their owner sees them: listed (`backups`) and deleted (`deleteBackups`).

A FULL_ECS image's backup holds its own references to the disks' manifests. Deleting the
image with `deleteBackups: false` keeps the backup (it still vouches for the server's later
backups); this is how its owner finds it again and lets its data go. A backup its image still
holds is refused (`BACKUP_IN_USE`): the image is made of it, and `deleteImages(deleteBackups:
true)` deletes both.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.compute.tables import Backup
from app.db.repositories.images import VisibleImage
from app.db.uow import Database, SharedReader, reading, retrying_deadlocks
from app.domain.images import Caller
from app.domain.pagination import decode_time_cursor, encode_cursor
from app.domain.rules import validate_batch, validate_page_size
from app.errors import Conflict, NotFound, register_codes
from app.services.server_images import delete_backup_rows

register_codes({
    "BACKUP_NOT_FOUND": "No backup with this id belongs to the caller.",
    "BACKUP_IN_USE": "The backup's image still exists: delete the image with deleteImages (deleteBackups: true), "
                     "or delete the image first.",
})

_ORDERING = "backups:created_at:DESC"


@dataclass
class BackupPage:
    items: list[Backup]
    has_next: bool
    has_previous: bool
    total: int
    cursors: list[str]


class BackupService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def page(self, caller: Caller, first: int | None, after: str | None,
                   reader: SharedReader | None = None) -> BackupPage:
        """The caller's backups in every region, newest first (keyset pages)."""
        size = validate_page_size(first)
        cursor = decode_time_cursor(after, _ORDERING)
        async with reading(self.db, caller.account_id, reader) as uow:
            items, has_next, total = await uow.compute.page_backups(size, cursor)
        cursors = [encode_cursor(_ORDERING, b.created_at, b.id) for b in items]
        return BackupPage(items, has_next, cursor is not None, total, cursors)

    async def images_of(self, caller: Caller, backup_ids: list[str],
                        reader: SharedReader | None = None) -> dict[str, VisibleImage]:
        """The caller's images made from these backups, by backup id (a deleted one is absent)."""
        async with reading(self.db, caller.account_id, reader) as uow:
            return dict(await uow.images.own_of_backups(backup_ids))

    async def delete(self, caller: Caller, backup_ids: list[str]) -> list[str]:
        """Delete a batch atomically, releasing each backup's references as
        `deleteImages(deleteBackups: true)` does: every backup is the caller's and no image
        holds it, or nothing is deleted."""
        ids = validate_batch(backup_ids, "input.ids")
        return await retrying_deadlocks(lambda: self._delete(caller, ids))

    async def _delete(self, caller: Caller, ids: list[str]) -> list[str]:
        async with self.db.uow(caller.account_id) as uow:
            # Locked in id order; another account's backup is missing, exactly like an unknown id.
            backups = await uow.compute.get_backups(ids, for_update=True)
            for backup_id in ids:
                if backup_id not in backups:
                    raise NotFound("BACKUP_NOT_FOUND", resource_id=backup_id)
            held = await uow.compute.images_holding(ids)
            for backup_id in ids:
                if backup_id in held:
                    raise Conflict("BACKUP_IN_USE", f"Backup {backup_id} is image {held[backup_id]}'s: delete the "
                                   "image with deleteImages (deleteBackups: true), or delete the image first.")
            await delete_backup_rows(uow, backups.values())
            await uow.commit()
        return ids
