"""Image memberships: who an image is shared with, and each member's status.

The sharing service locks the image rows (`ImageRepository.get_many_visible(for_update=True)`)
before it counts or changes memberships, so the counts read here hold until it commits.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.repositories.images import MemberRow
from app.db.tables import Account, ImageMember


class SharingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

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

    async def add(self, pairs: list[tuple[str, str]], status: str, now: datetime) -> None:
        """New memberships (image id, account id), all in `status`."""
        for image_id, account_id in pairs:
            self.session.add(
                ImageMember(image_id=image_id, account_id=account_id, status=status, created_at=now, updated_at=now)
            )
        await self.session.flush()

    async def remove(self, image_ids: list[str], account_ids: list[str]) -> int:
        """Delete every membership of these accounts on these images; how many were deleted."""
        result = await self.session.execute(
            delete(ImageMember).where(
                col(ImageMember.image_id).in_(image_ids), col(ImageMember.account_id).in_(account_ids)
            )
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

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
        stmt = (
            select(ImageMember, col(Account.name))
            .join(Account, col(Account.id) == col(ImageMember.account_id))
            .where(col(ImageMember.image_id).in_(image_ids), col(ImageMember.account_id).in_(account_ids))
            # Rows this session loaded before an UPDATE must show the new values.
            .execution_options(populate_existing=True)
        )
        rows = (await self.session.execute(stmt)).all()
        return {(m.image_id, m.account_id): MemberRow(m, name) for m, name in rows}
