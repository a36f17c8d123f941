"""Images, their tags and memberships, always seen through one caller's eyes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, delete, exists, false, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlmodel import col

from app.db.tables import Account, Image, ImageMember, ImageTag
from app.domain.enums import ImageOrderField, ImageVisibility, OrderDirection
from app.domain.images import ImageOrder, ImageQuery


@dataclass(frozen=True)
class VisibleImage:
    """An image row with what the caller's relation to it needs: owner name, membership."""

    image: Image
    owner: Account
    membership: ImageMember | None

    @property
    def owner_name(self) -> str:
        return self.owner.name


@dataclass(frozen=True)
class MemberRow:
    member: ImageMember
    account_name: str


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def sort_column(field: ImageOrderField) -> ColumnElement[Any]:
    if field is ImageOrderField.NAME:
        return col(Image.name)
    if field is ImageOrderField.SIZE:
        return func.coalesce(col(Image.size_bytes), -1)
    if field is ImageOrderField.STATUS:
        return col(Image.status)
    return col(Image.created_at)


def sort_value(image: Image, field: ImageOrderField) -> Any:
    if field is ImageOrderField.NAME:
        return image.name
    if field is ImageOrderField.SIZE:
        return -1 if image.size_bytes is None else image.size_bytes
    if field is ImageOrderField.STATUS:
        return image.status
    return image.created_at


class ImageRepository:
    def __init__(self, session: AsyncSession, caller_id: str) -> None:
        self.session = session
        self.caller_id = caller_id
        self._member = aliased(ImageMember, name="my_membership")
        self._owner = aliased(Account, name="owner")

    # ---------------------------------------------------------------- reads

    def _visible_select(self) -> Select[Any]:
        m, o = self._member, self._owner
        return (
            select(Image, o, m)
            .join(o, o.id == col(Image.owner_id))
            .outerjoin(m, and_(m.image_id == col(Image.id), m.account_id == self.caller_id))
        )

    def _visibility_condition(self, query: ImageQuery) -> ColumnElement[bool]:
        m = self._member
        parts: list[ColumnElement[bool]] = []
        if ImageVisibility.PUBLIC in query.visibility:
            parts.append(col(Image.visibility) == "PUBLIC")
        if ImageVisibility.PRIVATE in query.visibility:
            parts.append(and_(col(Image.visibility) == "PRIVATE", col(Image.owner_id) == self.caller_id))
        if ImageVisibility.SHARED in query.visibility and query.member_statuses:
            parts.append(
                and_(
                    col(Image.visibility) == "PRIVATE",
                    col(Image.owner_id) != self.caller_id,
                    m.status.in_(sorted(s.value for s in query.member_statuses)),
                )
            )
        return or_(*parts) if parts else false()

    def _conditions(self, query: ImageQuery) -> list[ColumnElement[bool]]:
        conds: list[ColumnElement[bool]] = [col(Image.region) == query.region, self._visibility_condition(query)]
        if query.kinds is not None:
            conds.append(col(Image.kind).in_(sorted(k.value for k in query.kinds)))
        if query.statuses is not None:
            conds.append(col(Image.status).in_(sorted(s.value for s in query.statuses)))
        if query.name_contains:
            pattern = f"%{_escape_like(query.name_contains.lower())}%"
            conds.append(func.lower(col(Image.name)).like(pattern, escape="\\"))
        if query.os_types is not None:
            conds.append(col(Image.os_type).in_(sorted(t.value for t in query.os_types)))
        if query.platforms is not None:
            conds.append(func.lower(col(Image.os_platform)).in_(sorted(p.lower() for p in query.platforms)))
        if query.disk_formats is not None:
            conds.append(col(Image.disk_format).in_(sorted(f.value for f in query.disk_formats)))
        if query.encrypted is not None:
            conds.append(col(Image.kms_key_id).is_not(None) if query.encrypted else col(Image.kms_key_id).is_(None))
        if query.kms_key_id is not None:
            conds.append(col(Image.kms_key_id) == query.kms_key_id)
        if query.protected is not None:
            conds.append(col(Image.protected) == query.protected)
        for tag in query.tags:
            tag_cond = and_(col(ImageTag.image_id) == col(Image.id), col(ImageTag.key) == tag.key)
            if tag.value is not None:
                tag_cond = and_(tag_cond, col(ImageTag.value) == tag.value)
            conds.append(exists().where(tag_cond))
        if query.created_after is not None:
            conds.append(col(Image.created_at) > query.created_after)
        if query.created_before is not None:
            conds.append(col(Image.created_at) < query.created_before)
        if query.ids is not None:
            conds.append(col(Image.id).in_(sorted(query.ids)))
        return conds

    async def page(
        self,
        query: ImageQuery,
        order: ImageOrder,
        first: int,
        after: tuple[Any, str] | None,
        *,
        with_total: bool,
    ) -> tuple[list[VisibleImage], bool, int | None]:
        """One keyset page (`first` rows after the cursor's (sort key, id)).

        The total, when asked for, rides in the same statement as a scalar subquery, so a
        page costs one round trip.
        """
        conds = self._conditions(query)
        key = sort_column(order.field)
        stmt = self._visible_select().where(*conds)
        if with_total:
            m, o = self._member, self._owner
            total_q = (
                select(func.count())
                .select_from(Image)
                .join(o, o.id == col(Image.owner_id))
                .outerjoin(m, and_(m.image_id == col(Image.id), m.account_id == self.caller_id))
                .where(*conds)
                .scalar_subquery()
            )
            stmt = stmt.add_columns(total_q.label("total"))
        if after is not None:
            value, last_id = after
            if order.direction is OrderDirection.ASC:
                stmt = stmt.where(or_(key > value, and_(key == value, col(Image.id) > last_id)))
            else:
                stmt = stmt.where(or_(key < value, and_(key == value, col(Image.id) < last_id)))
        if order.direction is OrderDirection.ASC:
            stmt = stmt.order_by(key.asc(), col(Image.id).asc())
        else:
            stmt = stmt.order_by(key.desc(), col(Image.id).desc())
        rows = list((await self.session.execute(stmt.limit(first + 1))).all())
        total: int | None = None
        if with_total:
            if rows:
                total = int(rows[0][3])
            else:
                total = await self.count(query)
        items = [VisibleImage(r[0], r[1], r[2]) for r in rows[:first]]
        return items, len(rows) > first, total

    async def count(self, query: ImageQuery) -> int:
        m, o = self._member, self._owner
        stmt = (
            select(func.count())
            .select_from(Image)
            .join(o, o.id == col(Image.owner_id))
            .outerjoin(m, and_(m.image_id == col(Image.id), m.account_id == self.caller_id))
            .where(*self._conditions(query))
        )
        return int((await self.session.execute(stmt)).scalar_one())

    def _may_see(self) -> ColumnElement[bool]:
        """Public, owned, or shared with the caller in any membership status."""
        return or_(
            col(Image.visibility) == "PUBLIC",
            col(Image.owner_id) == self.caller_id,
            self._member.account_id.is_not(None),
        )

    async def get_visible(self, image_id: str, *, for_update: bool = False) -> VisibleImage | None:
        """The image if the caller may see it: public, owned, or shared with it in any status."""
        stmt = self._visible_select().where(col(Image.id) == image_id, self._may_see())
        if for_update:
            stmt = stmt.with_for_update(of=Image)
        row = (await self.session.execute(stmt)).first()
        return VisibleImage(row[0], row[1], row[2]) if row else None

    async def get_many_visible(self, ids: list[str], *, for_update: bool = False) -> dict[str, VisibleImage]:
        if not ids:
            return {}
        stmt = self._visible_select().where(col(Image.id).in_(ids), self._may_see())
        if for_update:
            # Rows are locked in id order: two batches naming the same images in different
            # orders then queue behind each other instead of deadlocking.
            stmt = stmt.order_by(col(Image.id)).with_for_update(of=Image)
        return {r[0].id: VisibleImage(r[0], r[1], r[2]) for r in (await self.session.execute(stmt)).all()}

    # ---------------------------------------------------------------- writes

    async def add(self, image: Image) -> None:
        self.session.add(image)
        await self.session.flush()

    async def compare_and_set(self, image_id: str, expected_version: int, values: dict[str, Any], *,
                              expected_status: str | None = "ACTIVE") -> bool:
        """`UPDATE … WHERE version = :expected [AND status = :status]`; bumps the version."""
        conds = [col(Image.id) == image_id, col(Image.version) == expected_version]
        if expected_status is not None:
            conds.append(col(Image.status) == expected_status)
        result = await self.session.execute(
            update(Image).where(*conds).values(**values, version=col(Image.version) + 1)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    async def delete(self, image_ids: list[str]) -> None:
        await self.session.execute(delete(Image).where(col(Image.id).in_(image_ids)))

    async def refresh(self, image: Image) -> Image:
        await self.session.refresh(image)
        return image

    # ---------------------------------------------------------------- tags

    async def tags_of(self, image_ids: list[str]) -> dict[str, list[ImageTag]]:
        out: dict[str, list[ImageTag]] = {i: [] for i in image_ids}
        if not image_ids:
            return out
        stmt = select(ImageTag).where(col(ImageTag.image_id).in_(image_ids)).order_by(
            col(ImageTag.image_id), col(ImageTag.key)
        )
        for tag in (await self.session.execute(stmt)).scalars():
            out[tag.image_id].append(tag)
        return out

    async def put_tags(self, image_id: str, tags: dict[str, str]) -> None:
        existing = {t.key: t for t in (await self.tags_of([image_id]))[image_id]}
        for key, value in tags.items():
            if key in existing:
                existing[key].value = value
            else:
                self.session.add(ImageTag(image_id=image_id, key=key, value=value))
        await self.session.flush()

    async def delete_tags(self, image_id: str, keys: list[str]) -> None:
        await self.session.execute(
            delete(ImageTag).where(col(ImageTag.image_id) == image_id, col(ImageTag.key).in_(keys))
        )

    # ---------------------------------------------------------------- members

    async def members_of(self, image_ids: list[str]) -> dict[str, list[MemberRow]]:
        out: dict[str, list[MemberRow]] = {i: [] for i in image_ids}
        if not image_ids:
            return out
        stmt = (
            select(ImageMember, Account.name)
            .join(Account, col(Account.id) == col(ImageMember.account_id))
            .where(col(ImageMember.image_id).in_(image_ids))
            .order_by(col(ImageMember.image_id), col(ImageMember.created_at), col(ImageMember.account_id))
        )
        for member, name in (await self.session.execute(stmt)).all():
            out[member.image_id].append(MemberRow(member, name))
        return out

    async def delete_members(self, image_ids: list[str]) -> None:
        await self.session.execute(delete(ImageMember).where(col(ImageMember.image_id).in_(image_ids)))

    async def touch(self, image_id: str, now: datetime) -> None:
        await self.session.execute(
            update(Image).where(col(Image.id) == image_id)
            .values(updated_at=now, version=col(Image.version) + 1)
            .execution_options(synchronize_session=False)
        )
