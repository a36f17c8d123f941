"""The rows of an image-list CSV: keyset pages of plain tuples (Core statements on the tables,
no ORM entities), and the tags and members of a page in one statement each, so a 100k-row list
costs a few dozen statements and constant memory. Synchronous: each page is read whole on
`Database.reads` (a thread of its own on SQLite, `run_sync` on asyncpg)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, String, func, or_, select, type_coerce

from app.db.tables import Account, Image, ImageMember, ImageTag
from app.domain.enums import ImageVisibility

_images = Image.__table__.c  # type: ignore[attr-defined]
_tags = ImageTag.__table__.c  # type: ignore[attr-defined]
_members = ImageMember.__table__.c  # type: ignore[attr-defined]
_accounts = Account.__table__.c  # type: ignore[attr-defined]

#: The image columns a list row is made of, in this order. `disks` comes as its JSON text:
#: the few distinct layouts are parsed once each (see app.services.image_list).
LIST_COLUMNS = (
    _images.id, _images.name, _images.status, _images.os_version, _images.kind, _images.created_at,
    type_coerce(_images.disks, String).label("disks"), _images.min_disk_gb, _images.min_ram_mb, _images.size_bytes,
    _images.kms_key_id,
)


Keyset = tuple[datetime, str]


@dataclass(frozen=True)
class ListRange:
    """The images of a list between two keysets `(created_at, id)`: after `after` (exclusive,
    None: from the start) up to `last` (inclusive, None: to the end). PUBLIC: every public
    image of the region; PRIVATE: the owner's private images of the region."""

    visibility: ImageVisibility
    region: str
    owner_id: str
    after: Keyset | None = None
    last: Keyset | None = None

    def conditions(self) -> list[Any]:
        conds = [_images.region == self.region, _images.visibility == self.visibility.value]
        if self.visibility is ImageVisibility.PRIVATE:
            conds.append(_images.owner_id == self.owner_id)
        if self.after is not None:
            created, image_id = self.after
            # The bare bound lets the index seek to the keyset (under the OR alone every page
            # walked the index from the range's start).
            conds.append(_images.created_at >= created)
            conds.append(or_(_images.created_at > created, _images.id > image_id))
        if self.last is not None:
            created, image_id = self.last
            conds.append(_images.created_at <= created)
            conds.append(or_(_images.created_at < created, _images.id <= image_id))
        return conds

    def ids(self) -> Any:
        """The range's image ids as a subquery: a page's tags and members are selected by it,
        not by a list of thousands of bound ids."""
        return select(_images.id).where(*self.conditions()).scalar_subquery()


def count_rows(connection: Connection, scope: ListRange) -> int:
    stmt = select(func.count()).select_from(Image.__table__).where(*scope.conditions())
    return int(connection.execute(stmt).scalar_one())


def page_rows(connection: Connection, scope: ListRange, limit: int) -> Sequence[Row[Any]]:
    """Up to `limit` rows of the range, oldest first (index-served: ix_images_owner_created for
    PRIVATE, ix_images_public_created for PUBLIC)."""
    stmt = (select(*LIST_COLUMNS).where(*scope.conditions())
            .order_by(_images.created_at, _images.id).limit(limit))
    return connection.execute(stmt).all()


def tags_of(connection: Connection, scope: ListRange) -> dict[str, list[tuple[str, str]]]:
    stmt = (select(_tags.image_id, _tags.key, _tags.value)
            .where(_tags.image_id.in_(scope.ids())).order_by(_tags.image_id, _tags.key))
    found: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for image_id, key, value in connection.execute(stmt).all():
        found[image_id].append((key, value))
    return found


def members_of(connection: Connection, scope: ListRange) -> dict[str, list[tuple[str, str]]]:
    """(account name, membership status) of each image's members, by name."""
    stmt = (select(_members.image_id, _accounts.name, _members.status)
            .join_from(ImageMember.__table__, Account.__table__, _accounts.id == _members.account_id)
            .where(_members.image_id.in_(scope.ids())).order_by(_members.image_id, _accounts.name))
    found: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for image_id, name, status in connection.execute(stmt).all():
        found[image_id].append((name, status))
    return found
