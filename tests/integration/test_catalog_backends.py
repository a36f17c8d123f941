"""The catalog and the image-list CSV give the same answers on SQLite and PostgreSQL.

A seeded random catalog (names that differ by case, accents, script and plane; ties on every
sort key; NULL sizes; memberships in every status; tags with Unicode keys) is written
identically into both databases; random filters and orderings are paged through to the end,
a random page size at a time, on both, and each walk is compared with the other and with a
reference computed here from the documented ordering (README "Catalog order"): the sort key
in code point order, ties broken by the id, NULL sizes as -1; `nameContains` a substring of
the name, both folded by Unicode's simple lowercase mapping (ς as σ).

PostgreSQL runs four times: on the configured database, and on databases beside it of an ICU
locale (en-US: its collation sorts names linguistically, its lower() takes full case mappings),
of the plain C locale (its lower() folds ASCII only) and of a Turkish ICU locale (its lower()
maps "I" to "ı").
"""

from __future__ import annotations

import random
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import DBAPIError

from app.api.images import ImageFilter, TagFilter, to_query
from app.bootstrap import build_database
from app.config import Settings
from app.db.engine import sync_url
from app.db.migrate import upgrade
from app.db.tables import Account, Image, ImageMember, ImageTag
from app.db.uow import Database
from app.domain import enums as d
from app.domain.images import Caller, ImageOrder
from app.services import image_list
from app.services.images import ImageService
from tests.conftest import PG_URL, _truncate_pg

pytestmark = pytest.mark.skipif(not PG_URL, reason="compares SQLite with PostgreSQL (IMS_TEST_DATABASE_URL)")

REGIONS = ("region-1", "region-2")
NAMES = [
    "alpha", "Alpha", "ALPHA", "alpha 2", "alpha-2", "alpha_2", "alpha.2", "Äpfel", "äpfel", "apfel", "Apfel",
    "Zebra", "zebra", "école", "École", "Ecole", "ecole", "ΟΔΟΣ", "οδος", "Οδός", "İzmir", "izmir", "IZMIR",
    "Straße", "STRASSE", "𐐀𐐁", "𐐨𐐩", "Ωmega", "ωmega", "ǅemal", "ǆemal", "日本語", "Сервер", "сервер",
    "Ǎb", "b", "B", "_x", "x_y", "x.y", "10", "9", "a b", "ab",
]
PLATFORMS = ["Ubuntu", "Debian", "ÜberOS", "überos", "İnux", "Σύστημα"]
TAG_KEYS = ["env", "Env", "ключ", "région", "𐐨key"]
TAG_VALUES = ["prod", "dev", "", "产品", "Prod"]
SIZES = [None, None, 0, 1, 100, 100, 5 << 40, 2**62]
T0 = datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=UTC)
TIMES = [T0, T0, T0 + timedelta(microseconds=1), T0 - timedelta(microseconds=1), T0 + timedelta(seconds=1),
         T0 + timedelta(days=400, microseconds=500_000), T0 - timedelta(days=3000)]


def fold(text: str) -> str:
    """Unicode's simple lowercase mapping, one code point for one (İ is i, Σ is σ anywhere),
    and the final sigma ς as σ."""
    return "".join({"\u0130": "i", "\u03c2": "\u03c3"}.get(ch) or ch.lower() for ch in text)


@dataclass
class Catalog:
    """The rows written into both databases, and the caller whose view is queried."""

    me: str
    accounts: list[dict[str, Any]] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    tags: list[dict[str, Any]] = field(default_factory=list)
    members: list[dict[str, Any]] = field(default_factory=list)


def make_catalog(rng: random.Random, n: int) -> Catalog:
    accounts = [{"id": f"acc-{i}", "name": f"user-{i}", "role": "ADMIN" if i == 0 else "USER",
                 "created_at": T0} for i in range(4)]
    catalog = Catalog(me="acc-1", accounts=accounts)
    for i in range(n):
        owner = rng.choice(["acc-0", "acc-1", "acc-1", "acc-2", "acc-3"])
        created = rng.choice(TIMES)
        # Random ids, not in creation order: ties on a key are broken by an id out of line.
        image_id = "img-" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(16))
        catalog.images.append({
            "id": image_id, "owner_id": owner, "visibility": "PUBLIC" if owner == "acc-0" else "PRIVATE",
            "region": rng.choice(REGIONS) if i % 5 == 0 else REGIONS[0], "name": rng.choice(NAMES),
            "description": "", "kind": rng.choice(list(d.ImageKind)).value, "status": rng.choice(list(d.ImageStatus)).value,
            "disk_format": "RAW", "os_type": "LINUX", "os_platform": rng.choice(PLATFORMS), "os_version": "v",
            "os_bits": 64, "min_disk_gb": 10, "size_bytes": rng.choice(SIZES), "virtual_size_bytes": None,
            "protected": rng.random() < 0.2, "origin_type": "NONE", "disks": [],
            "created_at": created, "updated_at": created,
        })
        for key in rng.sample(TAG_KEYS, rng.randint(0, 3)):
            catalog.tags.append({"image_id": image_id, "key": key, "value": rng.choice(TAG_VALUES)})
        if owner in ("acc-2", "acc-3"):
            for member in ("acc-1", "acc-2", "acc-3"):
                if member != owner and rng.random() < 0.6:
                    catalog.members.append({"image_id": image_id, "account_id": member, "created_at": created,
                                            "updated_at": created,
                                            "status": rng.choice(list(d.MemberStatus)).value})
    return catalog


async def write_catalog(db: Database, catalog: Catalog) -> None:
    async with db.uow() as uow:
        uow.session.add_all([Account(**a) for a in catalog.accounts])
        await uow.session.flush()
        uow.session.add_all([Image(**i) for i in catalog.images])
        await uow.session.flush()
        uow.session.add_all([ImageTag(**t) for t in catalog.tags] + [ImageMember(**m) for m in catalog.members])
        await uow.commit()


def random_filter(rng: random.Random, catalog: Catalog) -> ImageFilter:
    def subset(values: list[Any]) -> list[Any] | None:
        return rng.sample(values, rng.randint(1, len(values))) if rng.random() < 0.3 else None

    f = ImageFilter(
        visibility=subset(list(d.ImageVisibility)),
        kind=subset(list(d.ImageKind)),
        status=subset(list(d.ImageStatus)),
        member_status=subset(list(d.MemberStatus)),
        region=rng.choice([None, None, None, "region-2"]),
    )
    if rng.random() < 0.5:
        name = rng.choice(catalog.images)["name"]
        start = rng.randrange(len(name))
        needle = name[start:rng.randint(start + 1, len(name))]
        f.name_contains = rng.choice([needle, needle.upper(), needle.lower(), needle.swapcase(), fold(needle),
                                      "%", "_", "\\", "a%", "_2", "ı", "i̇", "οδος", "ΟΔΟς"])
    if rng.random() < 0.2:
        f.platform = rng.sample([*PLATFORMS, "UBUNTU", "ÜBEROS", "inux", "σύστημα"], 2)
    if rng.random() < 0.3:
        f.tags = [TagFilter(key=rng.choice(TAG_KEYS), value=rng.choice([None, *TAG_VALUES]))
                  for _ in range(rng.randint(1, 2))]
    if rng.random() < 0.2:
        f.protected = rng.random() < 0.5
    if rng.random() < 0.3:
        f.created_after = rng.choice(TIMES)
    if rng.random() < 0.2:
        f.created_before = rng.choice(TIMES)
    return f


def expected_ids(catalog: Catalog, f: ImageFilter, order: ImageOrder) -> list[str]:
    """The documented answer, computed from the rows."""
    q = to_query(f, f.region or REGIONS[0])
    tags: dict[str, dict[str, str]] = {}
    for t in catalog.tags:
        tags.setdefault(t["image_id"], {})[t["key"]] = t["value"]
    mine = {m["image_id"]: m["status"] for m in catalog.members if m["account_id"] == catalog.me}

    def relation(i: dict[str, Any]) -> d.ImageVisibility | None:
        if i["visibility"] == "PUBLIC":
            return d.ImageVisibility.PUBLIC
        if i["owner_id"] == catalog.me:
            return d.ImageVisibility.PRIVATE
        if i["id"] in mine and d.MemberStatus(mine[i["id"]]) in q.member_statuses:
            return d.ImageVisibility.SHARED
        return None

    def matches(i: dict[str, Any]) -> bool:
        own = tags.get(i["id"], {})
        return (
            relation(i) in q.visibility and i["region"] == q.region
            and (q.kinds is None or d.ImageKind(i["kind"]) in q.kinds)
            and (q.statuses is None or d.ImageStatus(i["status"]) in q.statuses)
            and (not q.name_contains or fold(q.name_contains) in fold(i["name"]))
            and (q.platforms is None or fold(i["os_platform"]) in {fold(p) for p in q.platforms})
            and (q.protected is None or i["protected"] == q.protected)
            and all(t.key in own and (t.value is None or own[t.key] == t.value) for t in q.tags)
            and (q.created_after is None or i["created_at"] > q.created_after)
            and (q.created_before is None or i["created_at"] < q.created_before)
            and (q.ids is None or i["id"] in q.ids)
        )

    def key(i: dict[str, Any]) -> tuple[Any, str]:
        if order.field is d.ImageOrderField.NAME:
            return i["name"], i["id"]
        if order.field is d.ImageOrderField.SIZE:
            return -1 if i["size_bytes"] is None else i["size_bytes"], i["id"]
        if order.field is d.ImageOrderField.STATUS:
            return i["status"], i["id"]
        return i["created_at"], i["id"]

    chosen = sorted((i for i in catalog.images if matches(i)), key=key,
                    reverse=order.direction is d.OrderDirection.DESC)
    return [i["id"] for i in chosen]


Row = tuple[str, tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]


async def walk(db: Database, caller: Caller, f: ImageFilter, order: ImageOrder, size: int) -> tuple[list[Row], int]:
    """Every page of the query, `size` rows at a time: the rows in order (id, tags, members)
    and the total each page gave (all the same)."""
    service = ImageService(db, REGIONS)
    query = to_query(f, f.region or REGIONS[0])
    rows: list[Row] = []
    totals: set[int | None] = set()
    after: str | None = None
    for _ in range(200):
        page = await service.list(caller, query, order, size, after, with_total=True, with_tags=True,
                                  with_members=True)
        totals.add(page.total)
        assert len(page.items) <= size
        for v in page.items:
            assert v.tags is not None and v.members is not None
            rows.append((v.image.id, tuple(sorted(v.tags)),
                         tuple((m.member.account_id, m.member.status) for m in v.members)))
        if not page.has_next:
            break
        assert len(page.items) == size
        after = page.cursors[-1]
    [total] = totals
    assert total is not None
    return rows, total


def _database_beside(pg_migrated: str, suffix: str, options: str) -> Iterator[str]:
    """A migrated database created with `options` beside the configured one (skipped where the
    server cannot make it)."""
    url = make_url(sync_url(pg_migrated))
    other = url.set(database=f"{url.database}_{suffix}")
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{other.database}"'))
            conn.execute(text(f'CREATE DATABASE "{other.database}" {options} TEMPLATE template0'))
    except DBAPIError as exc:  # PostgreSQL < 15, or built without ICU
        admin.dispose()
        pytest.skip(f"no {suffix} database: {exc.orig}")
    async_url = other.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    upgrade(async_url)
    yield async_url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{other.database}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def pg_icu_migrated(pg_migrated: str) -> Iterator[str]:
    """A database of an ICU locale (en-US): its default collation sorts "alpha" < "Alpha" < "b"
    < "B"; its lower() maps İ to "i̇"."""
    yield from _database_beside(pg_migrated, "icu", "LOCALE_PROVIDER icu ICU_LOCALE 'en-US'")


@pytest.fixture(scope="session")
def pg_c_migrated(pg_migrated: str) -> Iterator[str]:
    """A UTF-8 database of the plain C locale: its own lower() folds ASCII only."""
    yield from _database_beside(pg_migrated, "c", "ENCODING 'UTF8' LOCALE 'C'")


@pytest.fixture(scope="session")
def pg_turkish_migrated(pg_migrated: str) -> Iterator[str]:
    """A database of a Turkish ICU locale: its own lower() maps "I" to "ı"."""
    yield from _database_beside(pg_migrated, "tr", "LOCALE_PROVIDER icu ICU_LOCALE 'tr-TR'")


BESIDE = {"icu": "pg_icu_migrated", "c": "pg_c_migrated", "turkish": "pg_turkish_migrated"}


@pytest.fixture(params=["configured", *BESIDE])
async def backends(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path,
                   pg_migrated: str) -> AsyncIterator[tuple[Database, Database]]:
    """A fresh SQLite database and a truncated PostgreSQL one: the configured database, or
    one of an ICU, a plain C or a Turkish locale."""
    (tmp_path / "lite").mkdir()
    shutil.copy(sqlite_template, tmp_path / "lite" / "ims.db")
    pg_url = pg_migrated if request.param == "configured" else request.getfixturevalue(BESIDE[request.param])
    _truncate_pg(pg_url)
    base = Settings(data_dir=tmp_path / "lite", auto_migrate=False, workers=0, regions=REGIONS)
    lite = build_database(base)
    pg = build_database(replace(base, data_dir=tmp_path / "pg", database_url=pg_url))
    yield lite, pg
    await lite.dispose()
    await pg.dispose()


async def test_name_and_platform_filters_fold_case_whatever_the_locale(backends: tuple[Database, Database]) -> None:
    catalog = make_catalog(random.Random(3), 0)
    for n, name in enumerate(NAMES):
        catalog.images.append({**make_catalog(random.Random(n), 1).images[0], "owner_id": catalog.me,
                               "visibility": "PRIVATE", "region": REGIONS[0], "name": name,
                               "os_platform": PLATFORMS[n % len(PLATFORMS)]})
    for db in backends:
        await write_catalog(db, catalog)
    caller = Caller(catalog.me, "user-1", "USER")
    order = ImageOrder(d.ImageOrderField.NAME, d.OrderDirection.ASC)
    filters = [ImageFilter(name_contains=needle) for needle in
               ("äpfel", "ÄPFEL", "izmir", "IZMIR", "ızmır", "οδος", "ΟΔΟΣ", "école", "ǆemal", "ǅEMAL", "сервер",
                "𐐨", "ωMEGA", "straße")]
    filters += [ImageFilter(platform=[p]) for p in ("überos", "İNUX", "inux", "σύστημα", "UBUNTU")]
    for f in filters:
        expected = expected_ids(catalog, f, order)
        for db in backends:
            rows, total = await walk(db, caller, f, order, 50)
            assert ([r[0] for r in rows], total) == (expected, len(expected)), (db.dialect, f)


@pytest.mark.parametrize("seed", range(4))
async def test_random_walks_agree_with_each_other_and_the_documented_order(
    backends: tuple[Database, Database], seed: int
) -> None:
    lite, pg = backends
    rng = random.Random(seed)
    catalog = make_catalog(rng, 70)
    for db in backends:
        await write_catalog(db, catalog)
    caller = Caller(catalog.me, "user-1", "USER")
    assert catalog.tags and catalog.members  # to filter by and to show
    for _ in range(30):
        f = random_filter(rng, catalog)
        order = ImageOrder(rng.choice(list(d.ImageOrderField)), rng.choice(list(d.OrderDirection)))
        size = rng.randint(1, 6)
        expected = expected_ids(catalog, f, order)
        lite_rows, lite_total = await walk(lite, caller, f, order, size)
        pg_rows, pg_total = await walk(pg, caller, f, order, size)
        context = (f, order, size)
        assert [r[0] for r in lite_rows] == expected, ("sqlite", context)
        assert [r[0] for r in pg_rows] == expected, ("postgresql", context)
        assert lite_rows == pg_rows, context
        assert lite_total == pg_total == len(expected), context


async def test_names_sort_in_code_point_order_whatever_the_collation(backends: tuple[Database, Database]) -> None:
    catalog = make_catalog(random.Random(7), 0)
    names = ["b", "B", "alpha", "Alpha", "ALPHA", "Äpfel", "apfel", "_x", "10", "9", "a b", "ab", "𐐨", "日本"]
    for n, name in enumerate(names):
        catalog.images.append({**make_catalog(random.Random(n), 1).images[0], "owner_id": catalog.me,
                               "visibility": "PRIVATE", "region": REGIONS[0], "name": name})
    for db in backends:
        await write_catalog(db, catalog)
    by_name = sorted(catalog.images, key=lambda i: (i["name"], i["id"]))
    for direction in d.OrderDirection:
        order = ImageOrder(d.ImageOrderField.NAME, direction)
        wanted = [i["id"] for i in (by_name if direction is d.OrderDirection.ASC else by_name[::-1])]
        for db in backends:
            rows, total = await walk(db, Caller(catalog.me, "user-1", "USER"), ImageFilter(), order, 4)
            assert ([r[0] for r in rows], total) == (wanted, len(names)), (db.dialect, direction)


@pytest.mark.parametrize("visibility", [d.ImageVisibility.PRIVATE, d.ImageVisibility.PUBLIC])
async def test_image_list_csv_is_the_same_file_on_both(
    backends: tuple[Database, Database], visibility: d.ImageVisibility, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pages of 3 rows: keysets inside runs of equal creation times.
    monkeypatch.setattr(image_list, "PAGE_ROWS", 3)
    catalog = make_catalog(random.Random(99), 60)
    for db in backends:
        await write_catalog(db, catalog)
    files = []
    for db in backends:
        pieces = [p async for p in image_list.csv_pieces(db, catalog.me, visibility, REGIONS[0])]
        files.append(b"".join(pieces).decode())
    assert files[0] == files[1]
    lines = files[0].splitlines()[1:]
    wanted = sorted(
        (i for i in catalog.images if i["region"] == REGIONS[0] and i["visibility"] == visibility.value
         and (visibility is d.ImageVisibility.PUBLIC or i["owner_id"] == catalog.me)),
        key=lambda i: (i["created_at"], i["id"]))
    assert [line.split('","')[1] for line in lines] == [i["id"] for i in wanted]
