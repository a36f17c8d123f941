"""The catalog page statement's plan: each visibility branch on its own index, the total
counted once when a filter asks for a count (SQLite without statistics needs both spelt out;
see catalog_sql), and read from the `image_counts` rows when none does."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from contextlib import closing
from typing import Any

import pytest
from sqlalchemy import Connection, Select, event
from sqlalchemy.dialects import postgresql

from app.config import Settings
from app.db.repositories.catalog_sql import page_statement, shape_and_params
from app.db.uow import Database
from app.domain.enums import ImageStatus
from app.domain.images import ImageOrder, ImageQuery
from tests.factories import make_account, make_image, share

ACTIVE = ImageQuery(region="region-1", statuses=frozenset({ImageStatus.ACTIVE}))


async def _plan(db: Database, caller: str, query: ImageQuery,
                after: tuple[Any, str] | None = None) -> tuple[list[str], int | None, list[str]]:
    """The page's names, its total and SQLite's plan of the page statement."""
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        captured.append((statement, parameters))

    event.listen(db.engine.sync_engine, "before_cursor_execute", capture)
    try:
        async with db.uow(caller, write=False) as uow:
            items, _, total = await uow.images.page(query, ImageOrder(), 50, after, with_total=True)
            statement, parameters = captured[-1]
            connection = await uow.session.connection()
            result = await connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            plan: list[tuple[Any, ...]] = [tuple(row) for row in result.all()]
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", capture)
    return [v.image.name for v in items], total, [str(row[3]) for row in plan]


async def test_sqlite_plan_reads_owned_images_by_owner_and_counts_once(db: Database) -> None:
    if db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's planner")
    alice, _ = await make_account(db)
    await make_image(db, alice, name="mine")
    names, total, details = await _plan(db, alice.id, ACTIVE)
    assert (names, total) == (["mine"], 1)
    # The owned branch of the page and of the count, both through (owner_id, region, …).
    assert sum("USING INDEX ix_images_owner_" in d for d in details) == 2
    assert details.count("MATERIALIZE total") == 1


async def test_unfiltered_total_is_read_from_the_counters(db: Database) -> None:
    if db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's planner")
    alice, _ = await make_account(db)
    for name in ("one", "two"):
        await make_image(db, alice, name=name)
    names, total, details = await _plan(db, alice.id, ImageQuery(region="region-1"))
    assert (names, total) == (["two", "one"], 2)
    # Counted once, from image_counts by its primary key (region, scope, account, membership
    # status) for each of the three branches; images are searched by the page's branches only.
    assert details.count("MATERIALIZE total") == 1
    counters = [d for d in details if "image_counts" in d]
    assert counters == [
        ("SEARCH image_counts USING INDEX sqlite_autoindex_image_counts_1 "
         "(region=? AND scope=? AND account_id=? AND member_status=?)")
    ] * 3
    assert sum(d.startswith("SEARCH images") for d in details) == 3


def test_other_dialects_see_the_bare_column() -> None:
    shape, _ = shape_and_params(ACTIVE, ImageOrder(), "acc-1", 50, None, True)
    statement = page_statement(shape)
    assert statement is not None
    sql = str(statement.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]
    assert "+images" not in sql
    assert "images.owner_id = %(caller)s::VARCHAR AND images.visibility = " in sql
    assert "WITH total AS MATERIALIZED" in sql


async def test_a_deep_page_seeks_to_its_cursor(db: Database) -> None:
    """Each branch starts at the cursor in its index: a page deep in the catalog reads what
    page 1 reads, not every entry before it."""
    if db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's planner")
    alice, _ = await make_account(db)
    images = [await make_image(db, alice, name=f"i{n}") for n in range(3)]
    names, _, details = await _plan(db, alice.id, ImageQuery(region="region-1"),
                                    (images[2].created_at, images[2].id))
    assert names == ["i1", "i0"]
    searches = [d for d in details if d.startswith("SEARCH images")]
    assert len(searches) == 3
    assert all("created_at<?" in d for d in searches), searches


@pytest.mark.parametrize("visibility,index", [("PRIVATE", "ix_images_owner_created"),
                                              ("PUBLIC", "ix_images_public_created")])
async def test_sqlite_plan_reads_an_image_list_page_by_its_own_index(db: Database, visibility: str,
                                                                      index: str) -> None:
    """A PRIVATE list's pages go through (owner_id, region, created_at, id): without the hint
    SQLite took the public index and visited every private image of the region."""
    if db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's planner")
    from app.db.repositories import image_list as rows_sql
    from app.domain.enums import ImageVisibility

    alice, _ = await make_account(db)
    scope = rows_sql.ListRange(ImageVisibility(visibility), "region-1", alice.id)
    # The statement SQLite runs: the page as one JSON value, around the page statement.
    stmt = rows_sql.page_json_statement(scope, 5000, with_relations=visibility == "PRIVATE")
    compiled = stmt.compile(dialect=db.engine.dialect)
    async with db.uow(alice.id, write=False) as uow:
        connection = await uow.session.connection()
        result = await connection.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled),
                                                  tuple(compiled.params[k] for k in compiled.positiontup or ()))
        # SQLAlchemy 2.1 types exec_driver_sql's rows as one column (CursorResult[Any]).
        details = [str(row[3]) for row in result.all()]  # type: ignore[misc]
    assert any(d.startswith(f"SEARCH images USING INDEX {index} ") for d in details), details


def _rows_as_lists(stmt: Select[Any]) -> Callable[[Connection], list[list[Any]]]:
    """A read for `Database.reads.run`: the statement's rows, as lists."""
    return lambda connection: [list(row) for row in connection.execute(stmt)]


@pytest.mark.parametrize("visibility", ["PRIVATE", "PUBLIC"])
async def test_an_image_list_page_read_as_json_holds_the_rows_of_the_page_statement(db: Database,
                                                                                    visibility: str) -> None:
    """SQLite's one-value pages: the same rows, values and types as the row statement gives
    (tags and members as their texts), in keyset order, the count and the keyset after the
    last."""
    if db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite reads list pages as JSON")
    from app.db.repositories import image_list as rows_sql
    from app.domain.enums import ImageVisibility
    from tests.factories import share

    alice, _ = await make_account(db)
    bob, _ = await make_account(db, "bob")
    owner = alice if visibility == "PRIVATE" else (await make_account(db, "publisher"))[0]
    same_time = (await make_image(db, owner, visibility=visibility)).created_at
    for number in range(6):
        image = await make_image(db, owner, visibility=visibility, created_at=same_time, size_bytes=None,
                                 kms_key_id=None, tags={"n": str(number), "a": "é"} if number % 2 else {})
        if number == 3:
            await share(db, image, bob, "PENDING")
    relations = visibility == "PRIVATE"
    scope = rows_sql.ListRange(ImageVisibility(visibility), "region-1", alice.id)
    for limit in (4, 100):
        page = await db.reads.run(functools.partial(rows_sql.read_page, scope=scope, limit=limit,
                                                    with_relations=relations))
        expected = await db.reads.run(_rows_as_lists(rows_sql.page_statement(scope, limit, with_relations=relations)))
        got = [list(row) for row in page.rows()]
        assert got == expected
        assert [[type(value) for value in row] for row in got] == [[type(value) for value in row] for row in expected]
        assert page.count == len(expected) == min(limit, 7)
        assert page.after == rows_sql.keyset_of(expected[-1])


async def test_image_list_pages_walk_every_row_once_across_ties_on_the_time(db: Database) -> None:
    """SQLite's page gives its keyset as the greatest `created_at ‖ \\x01 ‖ id` text. The
    times are set so that it matters: the greatest id comes first, alone before a day's end,
    and pages of 2 and 4 rows end on rows tied on the time; a keyset of the page's greatest
    time and greatest id taken apart, or the smallest id among the tied rows, skips or
    repeats rows (times as SQLAlchemy stores them, six digits of fraction)."""
    if db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's joined keyset")
    from sqlalchemy import text

    from app.db.repositories import image_list as rows_sql
    from app.domain.enums import ImageVisibility

    alice, _ = await make_account(db)
    ids = sorted([(await make_image(db, alice)).id for _ in range(7)])
    stored = {ids[-1]: "2025-12-31 23:59:59.999999", ids[0]: "2026-01-01 00:00:00.000001"}
    stored |= {image_id: "2026-01-01 00:00:00.000000" for image_id in ids[1:-1]}
    async with db.uow(alice.id) as uow:
        for image_id, created in stored.items():
            await uow.session.execute(text("UPDATE images SET created_at = :c WHERE id = :i"),
                                      {"c": created, "i": image_id})
        await uow.commit()
    scope = rows_sql.ListRange(ImageVisibility.PRIVATE, "region-1", alice.id)
    expected = await db.reads.run(lambda c: [row[0] for row in c.execute(rows_sql.page_statement(scope, 100))])
    assert expected == [ids[-1], *ids[1:-1], ids[0]]
    for limit in (1, 2, 4):
        walked, after = [], None
        while True:
            page = await db.reads.run(functools.partial(
                rows_sql.read_page, scope=rows_sql.ListRange(ImageVisibility.PRIVATE, "region-1", alice.id, after),
                limit=limit))
            if not page.count:
                break
            walked += [row[0] for row in page.rows()]
            after = page.after
        assert walked == expected, limit


async def test_sqlite_skips_the_shared_arm_of_a_caller_without_memberships(db: Database,
                                                                           settings: Settings) -> None:
    """The SQLite VM's steps for such a caller's page do not grow with the other accounts'
    private images: the SHARED arm's guarded LIMIT is 0 before it reads any (it walked them
    all, checking the membership guard on each, before)."""
    if db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's planner")
    owner, _ = await make_account(db)
    loner, _ = await make_account(db)
    friend, _ = await make_account(db)
    await share(db, await make_image(db, owner, name="shared"), friend)

    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        captured.append((statement, parameters))

    async def steps(caller: str) -> tuple[list[str], int]:
        captured.clear()
        event.listen(db.engine.sync_engine, "before_cursor_execute", capture)
        try:
            async with db.uow(caller, write=False) as uow:
                items, _, _ = await uow.images.page(ImageQuery(region="region-1"), ImageOrder(), 50, None,
                                                    with_total=True)
        finally:
            event.remove(db.engine.sync_engine, "before_cursor_execute", capture)
        # The page statement (an empty page's total is a second one).
        statement, parameters = next(c for c in captured if "page_ids" in c[0])
        counted = 0

        def step() -> int:
            nonlocal counted
            counted += 1
            return 0

        with closing(sqlite3.connect(settings.data_dir / "ims.db")) as conn:
            conn.set_progress_handler(step, 1)
            conn.execute(statement, parameters).fetchall()
        return [v.image.name for v in items], counted

    names, before = await steps(loner.id)
    assert names == []
    for n in range(60):
        await make_image(db, owner, name=f"private {n}")
    names, after = await steps(loner.id)
    assert names == []
    assert after == before
    # The guard lets a caller with a membership through: its shared image is on its page.
    assert (await steps(friend.id))[0] == ["shared"]
