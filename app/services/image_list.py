"""The image list as a CSV file (DESIGN §1 "export image list"): a job streams it into the
caller's bucket or the service's bucket of the region, in constant memory.

    PRIVATE  name,id,status,os,kind,created_at,disk_capacity_gb,size_bytes,encrypted,kms_key_id,
             shared_with,tags            — the caller's own private images of the region
    PUBLIC   name,id,status,os,kind,created_at,min_disk_gb,min_ram_mb
                                         — the public images of the region

File name `<private|public>-images-<region>-<UTC yyyymmddHHMMSS>.csv` (the time the job was
asked for). Every field is quoted; a cell that starts with `=`, `+`, `-`, `@` (or a tab or
carriage return) gets a leading `'`, so that a spreadsheet shows it as text instead of running
it as a formula (CSV injection). `shared_with` is `account:STATUS` pairs and `tags`
`key=value` pairs, each joined with `;`; rows are in creation order.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import functools
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

from sqlalchemy import Connection

from app.db.repositories import image_list as rows_sql
from app.db.tables import Job
from app.db.types import new_id, utcnow
from app.db.uow import Database
from app.domain.enums import ImageVisibility, JobType
from app.domain.images import Caller
from app.errors import Invalid, register_codes
from app.jobs.service import JobService
from app.runtime import gc_paused
from app.services.storage import StorageService
from app.storage.factory import service_bucket

register_codes({
    "INVALID_VISIBILITY": "Image lists are of PUBLIC or PRIVATE images.",
})

PRIVATE_COLUMNS = ("name", "id", "status", "os", "kind", "created_at", "disk_capacity_gb", "size_bytes", "encrypted",
                   "kms_key_id", "shared_with", "tags")
PUBLIC_COLUMNS = ("name", "id", "status", "os", "kind", "created_at", "min_disk_gb", "min_ram_mb")
#: First characters that make a spreadsheet evaluate a cell.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
#: Rows read per statement; also the rows per piece handed to the object store.
PAGE_ROWS = 5000
#: Where lists written into the service's bucket go.
SERVICE_PREFIX = "image-lists"


def guard(value: str) -> str:
    """The cell as a spreadsheet will show it: a formula trigger at the start is neutralized."""
    return "'" + value if value.startswith(FORMULA_TRIGGERS) else value


def file_name(visibility: ImageVisibility, region: str, at: datetime) -> str:
    stamp = at.astimezone(UTC).strftime("%Y%m%d%H%M%S")
    return f"{visibility.value.lower()}-images-{region}-{stamp}.csv"


@functools.lru_cache(maxsize=1024)
def _disks_gb(disks: str | None) -> int:
    """The sum of the disks' sizes in GiB, from the column's JSON text (images share a few
    layouts, so each is parsed once)."""
    parsed = json.loads(disks) if disks else []
    return sum(int(d.get("sizeGb") or 0) for d in parsed or [])


def _capacity_gb(disks: str | None, min_disk_gb: int) -> int:
    return _disks_gb(disks) or min_disk_gb


async def csv_pieces(
    db: Database, caller_id: str, visibility: ImageVisibility, region: str,
    progress: Callable[[int, int], Awaitable[None]] | None = None,
) -> AsyncIterator[bytes]:
    """The CSV, a page of rows per piece; `progress(rows written, rows in all)` after each.
    The next page is read while this one is formatted (the database works on its own thread
    or server meanwhile)."""
    reads = db.reads
    total = await reads.run(partial(rows_sql.count_rows, scope=rows_sql.ListRange(visibility, region, caller_id)))
    private = visibility is ImageVisibility.PRIVATE

    def read(connection: Connection, after: tuple[datetime, str] | None) -> rows_sql.ListPage:
        scope = rows_sql.ListRange(visibility, region, caller_id, after)
        return rows_sql.read_page(connection, scope, PAGE_ROWS, with_relations=private)

    async def fetch(after: tuple[datetime, str] | None) -> rows_sql.ListPage:
        return await reads.run(partial(read, after=after))

    yield _csv([PRIVATE_COLUMNS if private else PUBLIC_COLUMNS])
    written = 0
    pending: asyncio.Task[Any] | None = asyncio.ensure_future(fetch(None))
    try:
        while pending is not None:
            page = await pending
            pending = None
            if page.count == PAGE_ROWS:
                pending = asyncio.ensure_future(fetch(page.after))
            if page.count:
                # A page takes tens of ms to decode and format: off the event loop, which
                # serves the API too, and beside the reading of the next page.
                yield await asyncio.to_thread(_paused_page_csv, page, private)
            written += page.count
            if progress is not None:
                await progress(written, total)
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending


def _csv(rows: Iterable[Sequence[Any]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, quoting=csv.QUOTE_ALL).writerows(rows)
    return buffer.getvalue().encode()


def _cell(value: str) -> str:
    """A text cell's content between its quotes: guarded, its quotes doubled."""
    return guard(value).replace('"', '""')


#: A row as `csv.writer(quoting=QUOTE_ALL)` writes it (every field quoted, "\r\n"). Columns
#: filled with `%s` unescaped hold only what the service writes (image ids, enum names,
#: timestamps, numbers); the others have their quotes doubled, and the text a user gave is
#: guarded too (`_cell`).
_PRIVATE_LINE = '"%s","%s","%s","%s","%s","%s","%d","%s","%s","%s","%s","%s"\r\n'
_PUBLIC_LINE = '"%s","%s","%s","%s","%s","%s","%d","%d"\r\n'


def _paused_page_csv(page: rows_sql.ListPage, private: bool) -> bytes:
    """`_page_csv` with the garbage collector paused (`gc_paused`): a page decoded from
    SQLite's JSON is thousands of lists (30,000 when tags and members came as arrays of
    pairs), and collections over them took 2-4 times the decoding itself."""
    with gc_paused():
        return _page_csv(page, private)


def _page_csv(page: rows_sql.ListPage, private: bool) -> bytes:
    """A page of list rows as CSV lines, every text cell guarded. A private row ends with its
    tags and members as the CSV shows them (`Image.csv_tags`, kept in order by the database).

    Each line is one %-format of the row instead of a `csv.writer` row: the writer looked at
    every character of every field and made up a third of the page's formatting time; the
    same bytes come out (a test compares them for hostile text)."""
    lines: list[str] = []
    append = lines.append
    if private:
        for image_id, name, status, os, kind, created, disks, min_disk, _, size, kms_key, _, tags, members in page.rows():
            append(_PRIVATE_LINE % (
                _cell(name), image_id, status, _cell(os or ""), kind, created, _capacity_gb(disks, min_disk),
                "" if size is None else size, "true" if kms_key else "false", (kms_key or "").replace('"', '""'),
                _cell(members) if members else "", _cell(tags) if tags else ""))
    else:
        for image_id, name, status, os, kind, created, _, min_disk, min_ram, _, _, _ in page.rows():
            append(_PUBLIC_LINE % (_cell(name), image_id, status, _cell(os or ""), kind, created, min_disk, min_ram))
    return "".join(lines).encode()


class ImageListService:
    def __init__(self, db: Database, storage: StorageService, regions: tuple[str, ...], default_region: str,
                 jobs: JobService) -> None:
        self.db = db
        self.storage = storage
        self.regions = regions
        self.default_region = default_region
        self.jobs = jobs

    async def export_list(
        self, caller: Caller, visibility: ImageVisibility, region: str | None, bucket_name: str | None,
    ) -> Job:
        """Check the request and enqueue EXPORT_IMAGE_LIST."""
        if visibility not in (ImageVisibility.PUBLIC, ImageVisibility.PRIVATE):
            raise Invalid("INVALID_VISIBILITY", field="input.visibility")
        # Only null means the default region: "" is no region (as in images(filter:)); taken
        # for the default it wrote the default region's list for a request that named none.
        region = self.default_region if region is None else region
        if region not in self.regions:
            raise Invalid("INVALID_REGION", f"Unknown region {region!r}.", field="input.region")
        if bucket_name is not None:
            bucket = await self.storage.owned_bucket(caller, bucket_name)
            target_bucket, target_region = bucket.name, bucket.region
        else:
            target_bucket, target_region = service_bucket(region), region
        name = file_name(visibility, region, utcnow())
        # In the service's bucket each list has a key of its own, under the caller's id.
        key = name if bucket_name is not None else f"{SERVICE_PREFIX}/{caller.account_id}/{new_id('lst')}/{name}"
        async with self.db.uow(caller.account_id) as uow:
            job = await self.jobs.enqueue(uow, caller.account_id, JobType.EXPORT_IMAGE_LIST, params={
                "visibility": visibility.value, "region": region, "bucket": target_bucket,
                "bucketRegion": target_region, "key": key,
            })
            await uow.commit()
        return job


__all__ = ["PRIVATE_COLUMNS", "PUBLIC_COLUMNS", "ImageListService", "csv_pieces", "file_name", "guard"]
