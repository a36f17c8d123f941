"""Servers, volumes and backups: the only SQL of the compute inventory.

Reads take the caller's account and never return another account's rows; the few
unscoped reads (`*_any`) are for jobs and the Python-level disk-write helper.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import and_, delete, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlmodel import col

from app.compute.tables import Backup, Server, Volume
from app.datastore.tables import ManifestChunk
from app.db.tables import Image
from app.domain.enums import ImageStatus

#: The tables an account owns rows of, each with an (account_id, created_at, id) index.
Owned = TypeVar("Owned", Server, Volume, Backup)


class ComputeRepository:
    def __init__(self, session: AsyncSession, caller_id: str = "") -> None:
        self.session = session
        self.caller_id = caller_id

    # ---------------------------------------------------------------- servers

    async def add(self, *rows: Server | Volume | Backup) -> None:
        self.session.add_all(rows)
        await self.session.flush()

    async def get_server(self, server_id: str, *, for_update: bool = False, fresh: bool = False) -> Server | None:
        """One of the caller's servers; `fresh` reloads a row this session has already read
        (after an UPDATE statement, which leaves loaded objects as they were)."""
        stmt = select(Server).where(col(Server.id) == server_id, col(Server.account_id) == self.caller_id)
        if for_update:
            stmt = stmt.with_for_update()
        if fresh:
            stmt = stmt.execution_options(populate_existing=True)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def page_servers(
        self, first: int, after: tuple[datetime, str] | None
    ) -> tuple[list[Server], bool, int]:
        """Newest first: one keyset page after the cursor's (created_at, id), and the total."""
        return await self._newest_first(Server, first, after)

    async def _newest_first(
        self, table: type[Owned], first: int, after: tuple[datetime, str] | None
    ) -> tuple[list[Owned], bool, int]:
        """The caller's rows of `table` newest first: one keyset page after the cursor's
        (created_at, id) on the table's (account_id, created_at, id) index, and the total."""
        mine = col(table.account_id) == self.caller_id
        stmt = select(table).where(mine)
        if after is not None:
            created, last_id = after
            stmt = stmt.where(or_(
                col(table.created_at) < created, and_(col(table.created_at) == created, col(table.id) < last_id)
            ))
        stmt = stmt.order_by(col(table.created_at).desc(), col(table.id).desc()).limit(first + 1)
        rows = list((await self.session.execute(stmt)).scalars())
        total = int((await self.session.execute(select(func.count()).select_from(table).where(mine))).scalar_one())
        return rows[:first], len(rows) > first, total

    async def set_server_status(self, server_id: str, expected: str, status: str, now: datetime) -> bool:
        """Compare-and-set one of the caller's servers' status (`UPDATE … WHERE status =
        :expected`), bumping `updated_at`; False when the server is not in `expected` (or gone)."""
        result = await self.session.execute(
            update(Server).where(col(Server.id) == server_id, col(Server.account_id) == self.caller_id,
                                 col(Server.status) == expected)
            .values(status=status, updated_at=now).execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    async def delete_server(self, server_id: str) -> None:
        await self.session.execute(delete(Server).where(col(Server.id) == server_id))

    # ---------------------------------------------------------------- volumes

    async def volumes_of(self, server_ids: list[str]) -> dict[str, list[Volume]]:
        """Each server's volumes, system disk first, then data disks in order."""
        out: dict[str, list[Volume]] = {s: [] for s in server_ids}
        if not server_ids:
            return out
        stmt = select(Volume).where(
            col(Volume.server_id).in_(server_ids), col(Volume.account_id) == self.caller_id
        ).order_by(col(Volume.server_id), col(Volume.position), col(Volume.id))
        for volume in (await self.session.execute(stmt)).scalars():
            assert volume.server_id is not None
            out[volume.server_id].append(volume)
        return out

    async def get_volume(self, volume_id: str, *, for_update: bool = False) -> Volume | None:
        stmt = select(Volume).where(col(Volume.id) == volume_id, col(Volume.account_id) == self.caller_id)
        if for_update:
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get_volumes(self, volume_ids: list[str], *, for_update: bool = False) -> dict[str, Volume]:
        if not volume_ids:
            return {}
        stmt = select(Volume).where(col(Volume.id).in_(volume_ids), col(Volume.account_id) == self.caller_id)
        if for_update:
            # In id order, as every batch takes its rows: two batches naming the same volumes
            # in different orders queue behind each other instead of deadlocking.
            stmt = stmt.order_by(col(Volume.id)).with_for_update().execution_options(populate_existing=True)
        return {v.id: v for v in (await self.session.execute(stmt)).scalars()}

    async def page_volumes(
        self, first: int, after: tuple[datetime, str] | None
    ) -> tuple[list[Volume], bool, int]:
        """Newest first: one keyset page after the cursor's (created_at, id), and the total."""
        return await self._newest_first(Volume, first, after)

    async def volume_any(self, volume_id: str) -> Volume | None:
        return await self.session.get(Volume, volume_id, populate_existing=True)

    async def delete_volumes(self, volume_ids: list[str]) -> None:
        if volume_ids:
            await self.session.execute(delete(Volume).where(col(Volume.id).in_(volume_ids)))

    async def detach(self, volume_ids: list[str], now: datetime) -> None:
        if volume_ids:
            await self.session.execute(
                update(Volume).where(col(Volume.id).in_(volume_ids)).values(server_id=None, updated_at=now)
                .execution_options(synchronize_session=False)
            )

    async def swap_manifest(self, volume_id: str, old: str, new: str, now: datetime) -> bool:
        """Compare-and-set a volume's manifest (a concurrent write makes this False)."""
        result = await self.session.execute(
            update(Volume).where(col(Volume.id) == volume_id, col(Volume.manifest_id) == old)
            .values(manifest_id=new, updated_at=now).execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    # ---------------------------------------------------------------- backups

    async def get_backups(self, backup_ids: list[str], *, for_update: bool = False) -> dict[str, Backup]:
        if not backup_ids:
            return {}
        stmt = select(Backup).where(col(Backup.id).in_(backup_ids), col(Backup.account_id) == self.caller_id)
        if for_update:
            # In id order, as every batch takes its rows: two batches naming the same backups
            # in different orders queue behind each other instead of deadlocking.
            stmt = stmt.order_by(col(Backup.id)).with_for_update().execution_options(populate_existing=True)
        return {b.id: b for b in (await self.session.execute(stmt)).scalars()}

    async def page_backups(
        self, first: int, after: tuple[datetime, str] | None
    ) -> tuple[list[Backup], bool, int]:
        """Newest first: one keyset page after the cursor's (created_at, id), and the total."""
        return await self._newest_first(Backup, first, after)

    async def images_holding(self, backup_ids: list[str]) -> dict[str, str]:
        """{backup id: id of the image made from it} for those of these backups whose image
        still exists, whoever's it is (one lookup on ix_images_backup_id)."""
        if not backup_ids:
            return {}
        stmt = select(col(Image.backup_id), col(Image.id)).where(col(Image.backup_id).in_(sorted(set(backup_ids))))
        return {str(b): str(i) for b, i in await self.session.execute(stmt)}

    async def backup_any(self, backup_id: str) -> Backup | None:
        return await self.session.get(Backup, backup_id, populate_existing=True)

    async def delete_backups(self, backup_ids: list[str]) -> None:
        """Delete backup rows, in id order (their manifests are the caller's to release)."""
        for backup_id in sorted(backup_ids):
            await self.session.execute(delete(Backup).where(col(Backup.id) == backup_id))

    async def earlier_backups(self, backup: Backup) -> list[Backup]:
        """The server's backups made before `backup` that still exist and were saved: one whose
        image is still QUEUED/SAVING has not verified its chunks yet (and is deleted if that
        fails), so it vouches for nothing."""
        saving = exists().where(
            col(Image.backup_id) == col(Backup.id), col(Image.status).in_((ImageStatus.QUEUED.value, ImageStatus.SAVING.value))
        )
        stmt = select(Backup).where(
            col(Backup.server_id) == backup.server_id,
            or_(col(Backup.created_at) < backup.created_at,
                and_(col(Backup.created_at) == backup.created_at, col(Backup.id) < backup.id)),
            ~saving,
        )
        return list((await self.session.execute(stmt)).scalars())

    async def new_chunks(self, manifest_id: str, held: list[str]) -> list[tuple[str, int]]:
        """(digest, plaintext length) of the manifest's distinct stored chunks that none of
        the `held` manifests lists (one anti-join on the digest index)."""
        other = aliased(ManifestChunk)
        conds: list[Any] = [col(ManifestChunk.manifest_id) == manifest_id, col(ManifestChunk.digest).is_not(None)]
        if held:
            conds.append(~exists().where(
                col(other.manifest_id).in_(sorted(set(held))), col(other.digest) == col(ManifestChunk.digest)
            ))
        stmt = select(col(ManifestChunk.digest), col(ManifestChunk.length)).where(*conds).distinct()
        return [(str(r[0]), int(r[1])) for r in await self.session.execute(stmt)]

    async def update_backup(self, backup_id: str, values: dict[str, Any]) -> None:
        await self.session.execute(
            update(Backup).where(col(Backup.id) == backup_id).values(**values)
            .execution_options(synchronize_session=False)
        )

    # ---------------------------------------------------------------- images made here

    async def advance_image(self, image_id: str, expected: tuple[str, ...], values: dict[str, Any]) -> bool:
        """Compare-and-set an image's status (`UPDATE … WHERE status IN :expected`); bumps the version."""
        result = await self.session.execute(
            update(Image).where(col(Image.id) == image_id, col(Image.status).in_(expected))
            .values(**values, version=col(Image.version) + 1).execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    async def image_any(self, image_id: str) -> Image | None:
        return await self.session.get(Image, image_id, populate_existing=True)
