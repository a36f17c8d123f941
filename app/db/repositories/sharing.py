"""Image memberships: who an image is shared with, and each member's status.

The sharing service locks the image rows (`ImageRepository.get_many_visible(for_update=True)`)
before it counts or changes memberships, so the counts read here hold until it commits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import datetime

from sqlalchemy import DateTime, String, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.repositories.images import MemberFields, MemberRow
from app.db.tables import Account, ImageCsvHold, ImageMember


class SharingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def _postgres(self) -> bool:
        return self.session.bind is not None and self.session.bind.dialect.name == "postgresql"

    async def member_ids(self, image_ids: list[str]) -> dict[str, set[str]]:
        """The member account ids of each image (every status)."""
        out: dict[str, set[str]] = {i: set() for i in image_ids}
        if not image_ids:
            return out
        stmt = select(col(ImageMember.image_id), col(ImageMember.account_id)).where(
            col(ImageMember.image_id).in_(image_ids)
        )
        for image_id, account_id in (await self.session.execute(stmt)).all():
            out[image_id].add(account_id)
        return out

    @asynccontextmanager
    async def _texts_written_once(self, image_ids: Iterable[str]) -> AsyncIterator[None]:
        """The members texts of these images (`Image.csv_shared_with`) written once, as the
        block ends, instead of at each membership it changes (migration 0008): a batch sharing
        an image with n accounts aggregated its members n times. No `finally`: a failed
        statement leaves the transaction to its rollback, which takes the holds with it."""
        held = sorted(set(image_ids))
        if not held or self._postgres:  # its statement triggers (0011) write each text once
            yield
            return
        await self.session.execute(insert(ImageCsvHold), [{"image_id": i} for i in held])
        yield
        await self.session.execute(delete(ImageCsvHold).where(col(ImageCsvHold.image_id).in_(held)))

    async def add(self, pairs: list[tuple[str, str]], status: str, now: datetime) -> None:
        """New memberships (image id, account id), all in `status`."""
        if not pairs:
            return
        async with self._texts_written_once(image_id for image_id, _ in pairs):
            if self._postgres:
                # One statement for every row, from two arrays: its statement triggers (0011)
                # run once. (Rows as parameters would run them once per row: asyncpg executes
                # an executemany row by row.)
                rows = (func.unnest(bindparam("images", type_=ARRAY(String)),
                                    bindparam("accounts", type_=ARRAY(String)))
                        .table_valued("image_id", "account_id").render_derived("pairs"))
                table = ImageMember.__table__  # type: ignore[attr-defined]  # Core: the parameters bind arrays, not rows
                stmt = insert(table).from_select(
                    ["image_id", "account_id", "status", "created_at", "updated_at"],
                    select(rows.c.image_id, rows.c.account_id, bindparam("status", type_=String),
                           bindparam("now", type_=DateTime(timezone=True)), bindparam("now")),
                )
                await self.session.execute(stmt, {"images": [i for i, _ in pairs], "accounts": [a for _, a in pairs],
                                                  "status": status, "now": now})
                return
            # SQLite's row triggers run per row anyway: one statement executed for each row
            # (ORM objects took 1 s to build for 10,000 rows).
            await self.session.execute(insert(ImageMember), [
                {"image_id": image_id, "account_id": account_id, "status": status, "created_at": now,
                 "updated_at": now} for image_id, account_id in pairs
            ])

    async def remove(self, image_ids: list[str], account_ids: list[str]) -> int:
        """Delete every membership of these accounts on these images; how many were deleted."""
        async with self._texts_written_once(image_ids):
            result = await self.session.execute(
                delete(ImageMember).where(
                    col(ImageMember.image_id).in_(image_ids), col(ImageMember.account_id).in_(account_ids)
                )
            )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def remove_every_member(self, image_ids: list[str]) -> None:
        """Delete every membership of these images (an image made public)."""
        async with self._texts_written_once(image_ids):
            await self.session.execute(delete(ImageMember).where(col(ImageMember.image_id).in_(image_ids)))

    async def set_status(self, image_id: str, account_id: str, status: str, now: datetime) -> bool:
        """Change one membership's status; False when the membership is gone (unshared)."""
        result = await self.session.execute(
            update(ImageMember)
            .where(col(ImageMember.image_id) == image_id, col(ImageMember.account_id) == account_id)
            .values(status=status, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    async def members(self, image_ids: list[str], account_ids: list[str]) -> dict[tuple[str, str], MemberRow]:
        """The memberships of these accounts on these images, keyed (image id, account id),
        with the account names."""
        if not image_ids or not account_ids:
            return {}
        m = ImageMember.__table__.c  # type: ignore[attr-defined]
        # Plain values, read after this transaction's changes (a batch's 10,000 rows built as
        # ORM instances took 0.45 s).
        stmt = (
            select(m.image_id, m.account_id, m.status, m.created_at, m.updated_at, col(Account.name))
            .join(Account, col(Account.id) == m.account_id)
            .where(m.image_id.in_(image_ids), m.account_id.in_(account_ids))
        )
        rows = (await self.session.execute(stmt)).all()
        return {(image_id, account_id): MemberRow(MemberFields(image_id, account_id, status, created, updated), name)
                for image_id, account_id, status, created, updated, name in rows}
