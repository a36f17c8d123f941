"""The catalog page statement's plan: each visibility branch on its own index, the total
counted once (SQLite without statistics needs both spelt out; see catalog_sql)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.dialects import postgresql

from app.db.repositories.catalog_sql import page_statement, shape_and_params
from app.db.uow import Database
from app.domain.images import ImageOrder, ImageQuery
from tests.factories import make_account, make_image


async def test_sqlite_plan_reads_owned_images_by_owner_and_counts_once(db: Database) -> None:
    if db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's planner")
    alice, _ = await make_account(db)
    await make_image(db, alice, name="mine")
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        captured.append((statement, parameters))

    event.listen(db.engine.sync_engine, "before_cursor_execute", capture)
    try:
        async with db.uow(alice.id, write=False) as uow:
            items, _, total = await uow.images.page(
                ImageQuery(region="region-1"), ImageOrder(), 50, None, with_total=True
            )
            statement, parameters = captured[-1]
            connection = await uow.session.connection()
            result = await connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            plan: list[tuple[Any, ...]] = [tuple(row) for row in result.all()]
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", capture)

    details = [row[3] for row in plan]
    assert ([v.image.name for v in items], total) == (["mine"], 1)
    # The owned branch of the page and of the count, both through (owner_id, region, …).
    assert sum("USING INDEX ix_images_owner_" in d for d in details) == 2
    assert details.count("MATERIALIZE total") == 1


def test_other_dialects_see_the_bare_column() -> None:
    shape, _ = shape_and_params(ImageQuery(region="region-1"), ImageOrder(), "acc-1", 50, None, True)
    statement = page_statement(shape)
    assert statement is not None
    sql = str(statement.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]
    assert "+images" not in sql
    assert "images.owner_id = %(caller)s::VARCHAR AND images.visibility = " in sql
    assert "WITH total AS MATERIALIZED" in sql
