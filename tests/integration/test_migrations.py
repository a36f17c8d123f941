"""Every migration goes down and up again on each backend, leaving the tables the code
declares; and the entity tags of recorded object checksums (0004) come without losing the
checksums recorded before."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text

from app.db.engine import sync_url
from app.db.migrate import alembic_config, upgrade
from app.db.tables import metadata
from tests.conftest import BACKENDS


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database: a fresh SQLite file, or the session's PostgreSQL database, which
    is left at the head revision again whatever the test did."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
        upgrade(url)
        yield url
        return
    url = request.getfixturevalue("pg_migrated")
    try:
        yield url
    finally:
        upgrade(url)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(sync_url(database_url))
    yield engine
    engine.dispose()


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def test_every_migration_goes_down_and_up_again(database_url: str, engine: Engine) -> None:
    downgrade(database_url, "base")
    assert inspect(engine).get_table_names() == ["alembic_version"]
    upgrade(database_url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata()) == []


def test_checksums_recorded_before_entity_tags_keep_their_rows_both_ways(
    database_url: str, engine: Engine
) -> None:
    downgrade(database_url, "0003")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM object_checksums"))
        conn.execute(
            text("INSERT INTO object_checksums (bucket, key, size, modified_at, checksum) "
                 "VALUES ('b', 'k', 5, :at, 'sha256:old')"),
            {"at": "2026-01-02 03:04:05"},
        )

    upgrade(database_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT bucket, key, size, checksum, etag FROM object_checksums")).all()
    assert [tuple(r) for r in rows] == [("b", "k", 5, "sha256:old", None)]

    with engine.begin() as conn:
        conn.execute(text("UPDATE object_checksums SET etag = 'abc-1'"))
    downgrade(database_url, "0003")
    assert "etag" not in {c["name"] for c in inspect(engine).get_columns("object_checksums")}
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT bucket, key, size, checksum FROM object_checksums")).all()
    assert [tuple(r) for r in rows] == [("b", "k", 5, "sha256:old")]
