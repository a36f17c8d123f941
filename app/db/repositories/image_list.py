"""The rows of an image-list CSV: keyset pages of plain tuples (no ORM entities), and the tags
and members of a page in one statement each, so a 100k-row list costs a few hundred statements
and constant memory."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.tables import Account, Image, ImageMember, ImageTag
from app.domain.enums import ImageVisibility

#: The image columns a list row is made of, in this order.
LIST_COLUMNS = (
    Image.id, Image.name, Image.status, Image.os_version, Image.kind, Image.created_at, Image.disks,
    Image.min_disk_gb, Image.min_ram_mb, Image.size_bytes, Image.kms_key_id,
)


def _scope(visibility: ImageVisibility, region: str, owner_id: str) -> list[Any]:
    """PUBLIC: every public image of the region; PRIVATE: the caller's own private images."""
    conds = [col(Image.region) == region, col(Image.visibility) == visibility.value]
    if visibility is ImageVisibility.PRIVATE:
        conds.append(col(Image.owner_id) == owner_id)
    return conds


async def count_rows(session: AsyncSession, visibility: ImageVisibility, region: str, owner_id: str) -> int:
    stmt = select(func.count()).select_from(Image).where(*_scope(visibility, region, owner_id))
    return int((await session.execute(stmt)).scalar_one())


async def page_rows(
    session: AsyncSession, visibility: ImageVisibility, region: str, owner_id: str,
    after: tuple[datetime, str] | None, limit: int,
) -> Sequence[Row[Any]]:
    """Up to `limit` rows after the keyset `(created_at, id)`, oldest first (index-served:
    ix_images_owner_created for PRIVATE, ix_images_public_created for PUBLIC)."""
    stmt = select(*LIST_COLUMNS).where(*_scope(visibility, region, owner_id))
    if after is not None:
        created, last_id = after
        stmt = stmt.where(or_(col(Image.created_at) > created,
                              and_(col(Image.created_at) == created, col(Image.id) > last_id)))
    stmt = stmt.order_by(col(Image.created_at), col(Image.id)).limit(limit)
    return (await session.execute(stmt)).all()


async def tags_of(session: AsyncSession, image_ids: list[str]) -> dict[str, list[tuple[str, str]]]:
    stmt = (select(ImageTag.image_id, ImageTag.key, ImageTag.value)
            .where(col(ImageTag.image_id).in_(image_ids)).order_by(col(ImageTag.image_id), col(ImageTag.key)))
    found: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for image_id, key, value in await session.execute(stmt):
        found[image_id].append((key, value))
    return found


async def members_of(session: AsyncSession, image_ids: list[str]) -> dict[str, list[tuple[str, str]]]:
    """(account name, membership status) of each image's members, by name."""
    stmt = (select(ImageMember.image_id, Account.name, ImageMember.status)
            .join(Account, col(Account.id) == col(ImageMember.account_id))
            .where(col(ImageMember.image_id).in_(image_ids)).order_by(col(ImageMember.image_id), col(Account.name)))
    found: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for image_id, name, status in await session.execute(stmt):
        found[image_id].append((name, status))
    return found
