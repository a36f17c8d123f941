"""Images, their tags and memberships, always seen through one caller's eyes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

import orjson
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Select,
    TextClause,
    and_,
    bindparam,
    delete,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlmodel import col

from app.db.repositories.catalog_sql import (
    IMAGE_COLUMNS,
    count_statement,
    page_statement,
    shape_and_params,
)
from app.db.tables import Account, Image, ImageMember, ImageTag
from app.domain.enums import ImageOrderField
from app.domain.images import ImageOrder, ImageQuery


class ImageRecord(NamedTuple):
    """An image read for display only: the `images` columns in table order, no ORM instance
    (a catalog page builds fifty)."""

    id: str
    owner_id: str
    visibility: str
    region: str
    name: str
    description: str
    kind: str
    status: str
    disk_format: str
    os_type: str | None
    os_platform: str | None
    os_version: str | None
    os_bits: int | None
    min_disk_gb: int
    min_ram_mb: int
    max_ram_mb: int | None
    size_bytes: int | None
    virtual_size_bytes: int | None
    checksum: str | None
    boot_mode: str
    nic_multi_queue: bool
    sriov_driver: bool
    quick_provisioning: bool
    kms_key_id: str | None
    protected: bool
    origin_type: str
    origin_ref: str | None
    licensed_platform: str | None
    disks: list[dict[str, Any]]
    backup_id: str | None
    version: int
    created_at: datetime
    updated_at: datetime


class AccountRecord(NamedTuple):
    """An account read for display only."""

    id: str
    name: str
    role: str
    created_at: datetime


@dataclass(frozen=True)
class VisibleImage:
    """An image row with what the caller's relation to it needs: owner name, membership.
    A catalog page's also carry their tags and members when the request shows them."""

    image: Image | ImageRecord
    owner: Account | AccountRecord
    membership: ImageMember | MemberFields | None
    tags: list[TagFields] | None = None
    members: list[MemberRow] | None = None

    @property
    def owner_name(self) -> str:
        return self.owner.name


@dataclass(frozen=True)
class VisibleImageRow(VisibleImage):
    """A `VisibleImage` read as ORM instances (`get_visible`, `get_many_visible`): what a unit
    of work changes and the services' rules take."""

    image: Image
    owner: Account


class Membership(Protocol):
    """What reading a membership needs: an `ImageMember` row, or a `MemberFields`."""

    @property
    def image_id(self) -> str: ...
    @property
    def account_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...


class MemberFields(NamedTuple):
    """A membership read for display only: plain values, no ORM instance to build."""

    image_id: str
    account_id: str
    status: str
    created_at: datetime
    updated_at: datetime


class TagFields(NamedTuple):
    """A tag read for display only."""

    key: str
    value: str


@dataclass(frozen=True)
class MemberRow:
    member: Membership
    account_name: str


def _display_statements() -> tuple[Select[Any], Select[Any]]:
    """The loaders' statements, built once: the ids travel as one expanding parameter, so a
    call neither builds a statement nor coerces fifty literals."""
    t = ImageTag.__table__.c  # type: ignore[attr-defined]
    m = ImageMember.__table__.c  # type: ignore[attr-defined]
    a = Account.__table__.c  # type: ignore[attr-defined]
    ids: BindParameter[list[str]] = bindparam("ids", expanding=True)
    tags = select(t.image_id, t.key, t.value).where(t.image_id.in_(ids)).order_by(t.image_id, t.key)
    members = (
        select(m.image_id, m.account_id, m.status, m.created_at, m.updated_at, a.name)
        .join(Account.__table__, a.id == m.account_id)  # type: ignore[attr-defined]
        .where(m.image_id.in_(ids))
        .order_by(m.image_id, m.created_at, m.account_id)
    )
    return tags, members


_TAG_FIELDS, _MEMBER_FIELDS = _display_statements()


def _delete_locks() -> tuple[TextClause, TextClause]:
    """`ImageRepository.lock_for_delete`'s statements (PostgreSQL): the images' memberships,
    then the `image_counts` rows their deletion changes: the members' SHARED counts first,
    then the owners' or the public counts; each in key order."""
    ids: BindParameter[list[str]] = bindparam("ids", expanding=True)
    members = text(
        "SELECT 1 FROM image_members WHERE image_id IN :ids ORDER BY image_id, account_id FOR UPDATE"
    ).bindparams(ids)
    counts = text(
        "SELECT 1 FROM image_counts c JOIN ("
        " SELECT i.region, 'SHARED' AS scope, m.account_id, m.status AS member_status, i.kind"
        " FROM image_members m JOIN images i ON i.id = m.image_id"
        " WHERE i.id IN :ids AND i.visibility <> 'PUBLIC' AND m.account_id <> i.owner_id"
        " UNION SELECT region, CASE WHEN visibility = 'PUBLIC' THEN 'PUBLIC' ELSE 'OWNED' END,"
        " CASE WHEN visibility = 'PUBLIC' THEN '' ELSE owner_id END, '', kind FROM images WHERE id IN :ids"
        ") k USING (region, scope, account_id, member_status, kind)"
        " ORDER BY c.scope <> 'SHARED', c.region, c.scope, c.account_id, c.member_status, c.kind FOR UPDATE OF c"
    ).bindparams(ids)
    return members, counts


_LOCK_MEMBERS, _LOCK_COUNTS = _delete_locks()
MEMBER = aliased(ImageMember, name="my_membership")
OWNER = aliased(Account, name="owner")


def page_items(rows: Sequence[Any], caller_id: str, *, with_tags: bool, with_members: bool) -> list[VisibleImage]:
    """A catalog page's rows (see `catalog_sql.page_statement`) as records."""
    n = len(IMAGE_COLUMNS)
    items = []
    for row in rows:
        image = ImageRecord._make(row[:n])
        owner = AccountRecord(image.owner_id, row[n], row[n + 1], row[n + 2])
        mine = orjson.loads(row[n + 3])
        membership = MemberFields(image.id, caller_id, mine[0][0], _utc(mine[0][1]), _utc(mine[0][2])) if mine \
            else None
        extra = n + 4
        tags = members = None
        if with_tags:
            tags = [TagFields(k, v) for k, v in sorted(orjson.loads(row[extra]))]
            extra += 1
        if with_members:
            members = [
                MemberRow(MemberFields(image.id, account_id, status, _utc(created), _utc(updated)), name)
                for account_id, status, created, updated, name in orjson.loads(row[extra])
            ]
            members.sort(key=lambda r: (r.member.created_at, r.member.account_id))
        items.append(VisibleImage(image, owner, membership, tags, members))
    return items


class RowReader(Protocol):
    """Where `read_page` reads its statements (`Database.reads`, or a unit of work)."""

    async def rows(self, stmt: Any, params: dict[str, Any], *, now: bool = False) -> Sequence[Sequence[Any]]: ...


class _SessionRows:
    """`RowReader` in a unit of work's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def rows(self, stmt: Any, params: dict[str, Any], *, now: bool = False) -> Sequence[Sequence[Any]]:
        return (await self.session.execute(stmt, params)).all()


async def read_page(reads: RowReader, caller_id: str, query: ImageQuery, order: ImageOrder, first: int,
                    after: tuple[Any, str] | None, *, with_total: bool, with_tags: bool = False,
                    with_members: bool = False, now: bool = False) -> tuple[list[VisibleImage], bool, int | None]:
    """A catalog page read whole on `Database.reads` (`Reads.rows`: a thread or the event
    loop on SQLite, asyncpg itself on PostgreSQL): one statement, and a count only when a
    filtered page is empty."""
    shape, params = shape_and_params(query, order, caller_id, first, after, with_total,
                                     with_tags=with_tags, with_members=with_members)
    stmt = page_statement(shape)
    if stmt is None:
        return [], False, 0 if with_total else None
    rows = await reads.rows(stmt, params, now=now)
    total: int | None = None
    if with_total and rows:
        total = int(rows[0][-1])  # it rides in every row
    elif with_total:
        count = _count_of(query, caller_id)
        total = 0 if count is None else int((await reads.rows(*count, now=now))[0][0])
    return _page(rows, first, caller_id, total, with_tags, with_members)


def _count_of(query: ImageQuery, caller_id: str) -> tuple[Any, dict[str, Any]] | None:
    """The count statement of an empty page's query (None: nothing can match)."""
    count_shape, count_params = shape_and_params(query, ImageOrder(), caller_id, 0, None, True)
    count = count_statement(count_shape)
    return None if count is None else (count, count_params)


def _page(rows: Sequence[Sequence[Any]], first: int, caller_id: str, total: int | None, with_tags: bool,
          with_members: bool) -> tuple[list[VisibleImage], bool, int | None]:
    items = page_items(rows[:first], caller_id, with_tags=with_tags, with_members=with_members)
    return items, len(rows) > first, total


def _utc(text: str) -> datetime:
    """A datetime that came through JSON: SQLite's stored text (naive UTC) or PostgreSQL's
    ISO 8601 with its offset."""
    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def sort_value(image: Image | ImageRecord, field: ImageOrderField) -> Any:
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
        # Built once per process: a unit of work (and its repositories) is built per request.
        self._member = MEMBER
        self._owner = OWNER

    # ---------------------------------------------------------------- reads

    def _visible_select(self) -> Select[Image, Account, ImageMember]:
        m, o = self._member, self._owner
        return (
            select(Image, o, m)
            .join(o, col(o.id) == col(Image.owner_id))
            .outerjoin(m, and_(col(m.image_id) == col(Image.id), col(m.account_id) == self.caller_id))
        )

    async def page(
        self,
        query: ImageQuery,
        order: ImageOrder,
        first: int,
        after: tuple[Any, str] | None,
        *,
        with_total: bool,
        with_tags: bool = False,
        with_members: bool = False,
    ) -> tuple[list[VisibleImage], bool, int | None]:
        """One keyset page (`first` rows after the cursor's (sort key, id)), see catalog_sql.

        Each visibility branch takes its own first `first + 1` rows after the cursor from its
        index; the union of those few rows is sorted once more and joined with owners and
        memberships. The total, and the page's tags and members when asked for, ride in the
        same statement: a page costs one round trip, and a deep page costs what page 1 costs.
        Rows become records, not ORM instances."""
        return await read_page(
            _SessionRows(self.session), caller_id=self.caller_id, query=query, order=order, first=first,
            after=after, with_total=with_total, with_tags=with_tags, with_members=with_members,
        )

    async def count(self, query: ImageQuery) -> int:
        shape, params = shape_and_params(query, ImageOrder(), self.caller_id, 0, None, True)
        stmt = count_statement(shape)
        return 0 if stmt is None else int((await self.session.execute(stmt, params)).scalar_one())

    def _may_see(self) -> ColumnElement[bool]:
        """Public, owned, or shared with the caller in any membership status."""
        return or_(
            col(Image.visibility) == "PUBLIC",
            col(Image.owner_id) == self.caller_id,
            col(self._member.account_id).is_not(None),
        )

    async def get_visible(self, image_id: str, *, for_update: bool = False) -> VisibleImageRow | None:
        """The image if the caller may see it: public, owned, or shared with it in any status."""
        stmt = self._visible_select().where(col(Image.id) == image_id, self._may_see())
        if for_update:
            stmt = stmt.with_for_update(of=Image)
        row = (await self.session.execute(stmt)).first()
        return VisibleImageRow(row[0], row[1], row[2]) if row else None

    async def get_many_visible(self, ids: list[str], *, for_update: bool = False) -> dict[str, VisibleImageRow]:
        if not ids:
            return {}
        stmt = self._visible_select().where(col(Image.id).in_(ids), self._may_see())
        if for_update:
            # Rows are locked in id order: two batches naming the same images in different
            # orders then queue behind each other instead of deadlocking.
            stmt = stmt.order_by(col(Image.id)).with_for_update(of=Image)
        return {r[0].id: VisibleImageRow(r[0], r[1], r[2]) for r in (await self.session.execute(stmt)).all()}

    async def own_of_backups(self, backup_ids: list[str]) -> dict[str, VisibleImageRow]:
        """The caller's images made with these backups (FULL_ECS), by backup id."""
        if not backup_ids:
            return {}
        stmt = self._visible_select().where(col(Image.backup_id).in_(sorted(set(backup_ids))),
                                            col(Image.owner_id) == self.caller_id)
        rows = (await self.session.execute(stmt)).all()
        return {str(r[0].backup_id): VisibleImageRow(r[0], r[1], r[2]) for r in rows}

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

    async def lock_for_delete(self, image_ids: list[str]) -> None:
        """Before deleting these (locked) images and their memberships, lock what the
        deletion's triggers change, in one order (PostgreSQL; SQLite serializes writers).
        The triggers update the `image_counts` rows one by one in the order the rows go:
        two batches whose images differ in kind, or whose members are the same accounts,
        took the same counters in opposite orders (a batch of a system and a data disk image
        beside one of a data and a system disk image) and PostgreSQL aborted one as a
        deadlock."""
        if self.session.bind is None or self.session.bind.dialect.name != "postgresql":
            return
        await self.session.execute(_LOCK_MEMBERS, {"ids": image_ids})
        await self.session.execute(_LOCK_COUNTS, {"ids": image_ids})

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
        for tags in out.values():  # code point order (see tag_fields_of)
            tags.sort(key=lambda tag: tag.key)
        return out

    async def tag_fields_of(self, image_ids: list[str]) -> dict[str, list[TagFields]]:
        """`tags_of` for display: plain (key, value) rows, no ORM instances (a catalog page
        reads a hundred tags or more)."""
        out: dict[str, list[TagFields]] = {i: [] for i in image_ids}
        if not image_ids:
            return out
        for image_id, key, value in (await self.session.execute(_TAG_FIELDS, {"ids": image_ids})).all():
            out[image_id].append(TagFields(key, value))
        # In code point order, as a catalog page's tags (sorted above) and the CSV's text: the
        # statement's ORDER BY compares in the database's collation (PostgreSQL's en_US puts
        # `a` before `B`; code point order puts `B` first).
        for tags in out.values():
            tags.sort()
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
        """Memberships with account names, for display: plain values (`MemberFields`), no
        ORM instances."""
        out: dict[str, list[MemberRow]] = {i: [] for i in image_ids}
        if not image_ids:
            return out
        rows = (await self.session.execute(_MEMBER_FIELDS, {"ids": image_ids})).all()
        for image_id, account_id, status, created, updated, name in rows:
            out[image_id].append(MemberRow(MemberFields(image_id, account_id, status, created, updated), name))
        return out

    async def touch(self, image_id: str, now: datetime) -> None:
        await self.session.execute(
            update(Image).where(col(Image.id) == image_id)
            .values(updated_at=now, version=col(Image.version) + 1)
            .execution_options(synchronize_session=False)
        )
