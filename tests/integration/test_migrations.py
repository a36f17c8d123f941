"""Every migration goes down and up again on each backend, leaving the tables the code
declares (every column, default, index, constraint and foreign key action as the models make
them, and the triggers of 0002); and the entity tags of recorded object checksums (0004) come without losing the
checksums recorded before."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url

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


# ---------------------------------------------------------------- migrated schema == models


@pytest.fixture
def models_engine(database_url: str, tmp_path: Path) -> Iterator[Engine]:
    """A database of the same backend holding what `metadata().create_all` makes of the models
    (on PostgreSQL a database of its own, dropped afterwards)."""
    if database_url.startswith("sqlite"):
        engine = create_engine(f"sqlite:///{tmp_path / 'models.db'}")
        metadata().create_all(engine)
        yield engine
        engine.dispose()
        return
    base = make_url(sync_url(database_url))
    name = f"ims_models_{secrets.token_hex(4)}"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = create_engine(base.set(database=name))
    try:
        metadata().create_all(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def reflected(engine: Engine) -> dict[str, dict[str, object]]:
    """Every table as the database describes it: columns (type, nullable, server default),
    primary key, indexes, unique and check constraints, foreign keys with their actions."""
    insp = inspect(engine)
    tables: dict[str, dict[str, object]] = {}
    for table in sorted(set(insp.get_table_names()) - {"alembic_version"}):
        tables[table] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"], c.get("default")) for c in insp.get_columns(table)],
            "primary key": insp.get_pk_constraint(table)["constrained_columns"],
            "indexes": sorted((i["name"], tuple(i["column_names"]), i["unique"], repr(i.get("dialect_options")))
                              for i in insp.get_indexes(table)),
            "unique": sorted((u["name"], tuple(u["column_names"])) for u in insp.get_unique_constraints(table)),
            "checks": sorted((c["name"], c["sqltext"]) for c in insp.get_check_constraints(table)),
            "foreign keys": sorted((f["name"], tuple(f["constrained_columns"]), f["referred_table"],
                                    tuple(f["referred_columns"]), repr(sorted(f["options"].items())))
                                   for f in insp.get_foreign_keys(table)),
        }
    return tables


#: The triggers migration 0002 adds (models cannot declare them): they keep image_counts.
TRIGGERS = {
    "sqlite": {"image_counts_image_insert", "image_counts_image_delete", "image_counts_image_update",
               "image_counts_member_insert", "image_counts_member_delete", "image_counts_member_update"},
    "postgresql": {"image_counts_image_insert", "image_counts_image_delete", "image_counts_image_update",
                   "image_counts_member_change", "image_counts_member_update"},
}


def triggers(engine: Engine) -> set[str]:
    query = ("SELECT name FROM sqlite_master WHERE type = 'trigger'" if engine.dialect.name == "sqlite"
             else "SELECT DISTINCT trigger_name FROM information_schema.triggers WHERE trigger_schema = 'public'")
    with engine.connect() as conn:
        return {str(name) for name in conn.execute(text(query)).scalars()}


def test_the_migrated_schema_is_the_one_the_models_declare(engine: Engine, models_engine: Engine) -> None:
    # Alembic's comparison, with server defaults too (off by default), then every detail the
    # database reports, against a database made from the models themselves.
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        assert compare_metadata(context, metadata()) == []
    assert reflected(engine) == reflected(models_engine)
    assert triggers(engine) == TRIGGERS[engine.dialect.name]
    assert triggers(models_engine) == set()
