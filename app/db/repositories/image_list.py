"""The rows of an image-list CSV: keyset pages of plain tuples (Core statements on the tables,
no ORM entities), a private row's tags and members read as two more columns of the image (the
CSV's texts, kept by triggers), so a 100k-row list costs twenty statements and constant memory.
Synchronous: each page is read whole on `Database.reads` (a thread of its own on SQLite,
`run_sync` on asyncpg)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Select, String, Text, cast, func, or_, select, type_coerce
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from app.db.repositories.catalog_sql import NotIndexed
from app.db.tables import Image
from app.domain.enums import ImageVisibility

_images = Image.__table__.c  # type: ignore[attr-defined]

class CsvTimestamp(FunctionElement[str]):
    """A UTC timestamp as the CSV shows it, `YYYY-MM-DDTHH:MM:SSZ` (fractions cut), formatted
    by the database: no datetime object per row, parsed and formatted again in Python."""

    name = "csv_timestamp"
    type = String()
    inherit_cache = True


@compiles(CsvTimestamp)
def _to_char(element: CsvTimestamp, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"""


@compiles(CsvTimestamp, "sqlite")
def _text_parts(element: CsvTimestamp, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps naive UTC text, `YYYY-MM-DD HH:MM:SS.ffffff`: cut, not `strftime`, which
    # rounds fractions to the millisecond on older SQLite versions (…:59.9996 → the next second).
    column = compiler.process(element.clauses, **kw)
    return f"substr({column}, 1, 10) || 'T' || substr({column}, 12, 8) || 'Z'"


#: The image columns a list row is made of, in this order. `disks` comes as its JSON text, cast
#: by the database (asyncpg decodes a `json` column itself, and the CSV then encoded each row's
#: list again to look it up: half of a PostgreSQL page's formatting): the few distinct layouts
#: are parsed once each (see app.services.image_list). `created` is the CSV's text;
#: `created_raw` the stored value, untyped (parse it with `keyset_of`, which a page does for its
#: last row only).
LIST_COLUMNS = (
    _images.id, _images.name, _images.status, _images.os_version, _images.kind,
    CsvTimestamp(_images.created_at).label("created"),
    cast(_images.disks, Text).label("disks"), _images.min_disk_gb, _images.min_ram_mb, _images.size_bytes,
    _images.kms_key_id, type_coerce(_images.created_at, String).label("created_raw"),
)
#: Position of `id` and `created_raw` in a list row (the keyset of its page's last row).
ID_COLUMN, CREATED_RAW_COLUMN = 0, 11


Keyset = tuple[datetime, str]


def keyset_of(row: Sequence[Any]) -> Keyset:
    """The keyset after a list row, from its raw creation time (SQLite's naive UTC text, or
    the driver's datetime on PostgreSQL)."""
    return _keyset(row[CREATED_RAW_COLUMN], row[ID_COLUMN])


def _keyset(raw: str | datetime, image_id: str) -> Keyset:
    created = datetime.fromisoformat(raw) if isinstance(raw, str) else raw
    created = created.replace(tzinfo=UTC) if created.tzinfo is None else created.astimezone(UTC)
    return created, image_id


@dataclass(frozen=True)
class ListRange:
    """The images of a list after a keyset `(created_at, id)` (exclusive; None: from the
    start). PUBLIC: every public image of the region; PRIVATE: the owner's private images of
    the region."""

    visibility: ImageVisibility
    region: str
    owner_id: str
    after: Keyset | None = None

    def conditions(self) -> list[Any]:
        if self.visibility is ImageVisibility.PRIVATE:
            # The owner's index, (owner_id, region, created_at, id): without statistics SQLite
            # chose the public one and visited every private image of the region.
            conds = [_images.region == self.region, NotIndexed(_images.visibility) == self.visibility.value,
                     _images.owner_id == self.owner_id]
        else:
            conds = [_images.region == self.region, _images.visibility == self.visibility.value]
        if self.after is not None:
            created, image_id = self.after
            # The bare bound lets the index seek to the keyset (under the OR alone every page
            # walked the index from the range's start).
            conds.append(_images.created_at >= created)
            conds.append(or_(_images.created_at > created, _images.id > image_id))
        return conds


def count_rows(connection: Connection, scope: ListRange) -> int:
    stmt = select(func.count()).select_from(Image.__table__).where(*scope.conditions())  # type: ignore[attr-defined]
    return int(connection.execute(stmt).scalar_one())


#: A private list row's tags (`key=value` pairs in key order) and members (`account
#: name:STATUS` pairs in name order), each joined with `;`: the CSV's texts, kept on the image
#: by triggers (migration 0007). Read with the row, they cost nothing more than its other
#: columns; probed from `image_tags` and `image_members` they were two thirds of a page's
#: statement.
RELATION_COLUMNS = (_images.csv_tags.label("tags"), _images.csv_shared_with.label("members"))


@dataclass(frozen=True)
class ListPage:
    """A page of list rows: `count` of them and the keyset after the last (None: empty).

    `rows()` gives the rows. On SQLite the page is read as one JSON value and `rows()`
    decodes it: call it off the thread that reads the next page (the CSV formats a page in
    a worker thread while the reads thread reads the next one)."""

    count: int
    after: Keyset | None
    records: Sequence[Sequence[Any]] | None = None
    text: str | None = None

    def rows(self) -> Sequence[Sequence[Any]]:
        if self.text is None:
            assert self.records is not None
            return self.records
        rows: list[list[Any]] = orjson.loads(self.text)
        # The aggregate takes the rows in the page's order; sorting is linear on sorted
        # input and makes the result not depend on that.
        rows.sort(key=_keyset_key)
        return rows


def read_page(connection: Connection, scope: ListRange, limit: int, *, with_relations: bool = False) -> ListPage:
    """Up to `limit` rows of the range, oldest first (index-served: ix_images_owner_created for
    PRIVATE, ix_images_public_created for PUBLIC); `with_relations`: each with its tags and
    members as two more columns (`RELATION_COLUMNS`).

    On SQLite the page comes as one JSON value (`page_json_statement`) that SQLite builds in a
    single step, during which the sqlite3 module releases the GIL. Read row by row, every row
    took the GIL back, and while another thread held it (formatting the page before) each row
    waited for the switch interval: reading and formatting ran one after the other instead of
    side by side."""
    if connection.dialect.name == "sqlite":
        text, count, last = connection.execute(
            page_json_statement(scope, limit, with_relations=with_relations)).one()
        return ListPage(count=count, after=None if last is None else _split_keyset(last), text=text)
    records = connection.execute(page_statement(scope, limit, with_relations=with_relations)).all()
    return ListPage(count=len(records), after=keyset_of(records[-1]) if records else None, records=records)


def _keyset_key(row: Sequence[Any]) -> tuple[Any, Any]:
    return row[CREATED_RAW_COLUMN], row[ID_COLUMN]


#: Joins a row's raw creation time and id into one text whose order is the keyset's (binary
#: collation): the character sorts below every character of either.
_KEYSET_JOIN = "\x01"


def _split_keyset(joined: str) -> Keyset:
    created_raw, _, image_id = joined.partition(_KEYSET_JOIN)
    return _keyset(created_raw, image_id)


def page_json_statement(scope: ListRange, limit: int, *, with_relations: bool = False) -> Select[Any]:
    """SQLite: the page of `page_statement` as (a JSON array of row arrays, the columns in
    `LIST_COLUMNS` order then tags and members; the row count; the last row's keyset as
    `created_raw` and `id` joined by `_KEYSET_JOIN`), in one pass over the page.

    The keyset is the greatest joined text of the page (`max`), not the last row's read
    again in reverse order (a second scan and a sort: a sixth of the statement's time)."""
    page = select(*LIST_COLUMNS, *(RELATION_COLUMNS if with_relations else ())).where(*scope.conditions()) \
        .order_by(_images.created_at, _images.id).limit(limit).subquery("page")
    columns: list[Any] = [page.c[column.key] for column in LIST_COLUMNS]
    if with_relations:
        columns += [page.c.tags, page.c.members]
    last = func.max(page.c.created_raw.concat(_KEYSET_JOIN).concat(page.c.id))
    return select(func.json_group_array(func.json_array(*columns)), func.count(), last).select_from(page)


def page_statement(scope: ListRange, limit: int, *, with_relations: bool = False) -> Select[Any]:
    columns = (*LIST_COLUMNS, *RELATION_COLUMNS) if with_relations else LIST_COLUMNS
    return select(*columns).where(*scope.conditions()).order_by(_images.created_at, _images.id).limit(limit)
