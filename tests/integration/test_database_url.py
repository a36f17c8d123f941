"""A PostgreSQL URL with libpq's `sslmode` (what managed databases hand out) works for both
drivers: asyncpg (the service) calls it `ssl`, psycopg2 (Alembic) `sslmode`."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.config import normalize_database_url
from app.db.engine import sync_url


@pytest.mark.parametrize("spelling", ["sslmode", "ssl"])
def test_the_ssl_option_reaches_each_driver_under_its_own_name(spelling: str) -> None:
    url = normalize_database_url(f"postgresql://u:p%40ss@db.example:5432/ims?{spelling}=require&connect_timeout=5")
    assert dict(make_url(url).query) == {"ssl": "require", "connect_timeout": "5"}
    app = create_async_engine(url)
    _, kwargs = app.dialect.create_connect_args(app.url)
    assert (kwargs["ssl"], kwargs["password"]) == ("require", "p@ss")
    alembic = create_engine(sync_url(url))
    _, kwargs = alembic.dialect.create_connect_args(alembic.url)
    assert (kwargs["sslmode"], kwargs["password"]) == ("require", "p@ss") and "ssl" not in kwargs


async def test_a_sslmode_url_connects_with_both_drivers() -> None:
    base = os.environ.get("IMS_TEST_DATABASE_URL")
    if not base:
        pytest.skip("PostgreSQL (IMS_TEST_DATABASE_URL)")
    url = normalize_database_url(base + ("&" if "?" in base else "?") + "sslmode=prefer")
    app = create_async_engine(url)
    try:
        async with app.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await app.dispose()
    alembic = create_engine(sync_url(url))
    with alembic.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
    alembic.dispose()
