"""Every migration goes down and up again on each backend, leaving the tables the code
declares (every column, default, index, constraint and foreign key action as the models make
them, and the triggers of 0002, 0007, 0008 and 0011); the entity tags of recorded object checksums (0004)
come without losing the checksums recorded before; and the CSV texts of 0007 are filled in for
the images there before."""

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


#: A private image of `:owner`, named `:id`, in the columns of revisions 0006 to 0008.
IMAGE = ("INSERT INTO images (id, owner_id, visibility, region, name, description, kind, status, disk_format, "
         "min_disk_gb, min_ram_mb, boot_mode, nic_multi_queue, sriov_driver, quick_provisioning, protected, "
         "origin_type, disks, version, created_at, updated_at) VALUES (:id, :owner, 'PRIVATE', 'r', :id, '', "
         "'SYSTEM_DISK', 'ACTIVE', 'RAW', 1, 0, 'BIOS', false, false, false, false, 'NONE', '[]', 1, :at, :at)")


def test_csv_texts_are_filled_in_for_the_images_there_before_and_go_away_down(
    database_url: str, engine: Engine
) -> None:
    """0007 fills images.csv_tags and csv_shared_with in for the tags and members there
    before it (in code point order), leaves NULL where there are none, and its triggers keep
    them from then on; down, the columns and triggers go and the rows stay."""
    downgrade(database_url, "0006")
    run = secrets.token_hex(4)  # names of this run's rows (the PostgreSQL database is shared)
    now = "2026-01-02 03:04:05"
    one, two = f"img-{run}-1", f"img-{run}-2"
    accounts = {"o": "owner", "z": "zed", "b": "Bea", "e": "\u00e9va"}
    with engine.begin() as conn:
        for letter, name in accounts.items():
            conn.execute(text("INSERT INTO accounts (id, name, role, created_at) VALUES (:id, :name, 'USER', :at)"),
                         {"id": f"acc-{run}-{letter}", "name": f"{name}-{run}", "at": now})
        for image_id in (one, two):
            conn.execute(text(IMAGE), {"id": image_id, "owner": f"acc-{run}-o", "at": now})
        for key, value in (("zone", "b"), ("Env", "prod"), ("\u00e4", ""), ("app", "x=y;z")):
            conn.execute(text("INSERT INTO image_tags (image_id, key, value) VALUES (:i, :k, :v)"),
                         {"i": one, "k": key, "v": value})
        for letter, status in (("z", "PENDING"), ("e", "ACCEPTED"), ("b", "REJECTED")):
            conn.execute(text("INSERT INTO image_members (image_id, account_id, status, created_at, updated_at) "
                              "VALUES (:i, :a, :s, :at, :at)"),
                         {"i": one, "a": f"acc-{run}-{letter}", "s": status, "at": now})

    upgrade(database_url)
    texts = text("SELECT id, csv_tags, csv_shared_with FROM images WHERE id IN (:one, :two) ORDER BY id")
    with engine.begin() as conn:
        assert [tuple(r) for r in conn.execute(texts, {"one": one, "two": two})] == [
            (one, "Env=prod;app=x=y;z;zone=b;\u00e4=",
             f"Bea-{run}:REJECTED;zed-{run}:PENDING;\u00e9va-{run}:ACCEPTED"),
            (two, None, None),
        ]
        conn.execute(text("INSERT INTO image_tags (image_id, key, value) VALUES (:i, 'k', 'v')"), {"i": two})
        assert conn.execute(text("SELECT csv_tags FROM images WHERE id = :i"), {"i": two}).scalar_one() == "k=v"

    downgrade(database_url, "0006")
    assert not {"csv_tags", "csv_shared_with"} & {c["name"] for c in inspect(engine).get_columns("images")}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM image_tags WHERE image_id IN (:one, :two)"),
                            {"one": one, "two": two}).scalar_one() == 5
        assert conn.execute(text("SELECT count(*) FROM image_members WHERE image_id = :one"),
                            {"one": one}).scalar_one() == 3


def test_member_texts_are_kept_by_each_revisions_triggers_below_and_above_0008(
    database_url: str, engine: Engine
) -> None:
    """Down to 0007, the holds and their trigger go and 0007's membership triggers write the
    text at each change again; up, a held image's text waits for its hold to go."""
    run = secrets.token_hex(4)
    now = "2026-01-02 03:04:05"
    image_id = f"img-{run}"
    member = ("INSERT INTO image_members (image_id, account_id, status, created_at, updated_at) "
              "VALUES (:i, :a, 'PENDING', :at, :at)")
    shared_with = text("SELECT csv_shared_with FROM images WHERE id = :i")
    downgrade(database_url, "0007")
    assert "image_csv_holds" not in inspect(engine).get_table_names()
    assert triggers(engine) == TRIGGERS_BEFORE_0011[engine.dialect.name] - {"image_csv_hold_release"}
    with engine.begin() as conn:
        for letter in "abc":
            conn.execute(text("INSERT INTO accounts (id, name, role, created_at) VALUES (:id, :id, 'USER', :at)"),
                         {"id": f"{letter}-{run}", "at": now})
        conn.execute(text(IMAGE), {"id": image_id, "owner": f"a-{run}", "at": now})
        conn.execute(text(member), {"i": image_id, "a": f"c-{run}", "at": now})
        assert conn.execute(shared_with, {"i": image_id}).scalar_one() == f"c-{run}:PENDING"

    upgrade(database_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO image_csv_holds (image_id) VALUES (:i)"), {"i": image_id})
        conn.execute(text(member), {"i": image_id, "a": f"b-{run}", "at": now})
        assert conn.execute(shared_with, {"i": image_id}).scalar_one() == f"c-{run}:PENDING"
        conn.execute(text("DELETE FROM image_csv_holds WHERE image_id = :i"), {"i": image_id})
        assert conn.execute(shared_with, {"i": image_id}).scalar_one() == f"b-{run}:PENDING;c-{run}:PENDING"
        conn.execute(text("DELETE FROM image_members WHERE image_id = :i AND account_id = :a"),
                     {"i": image_id, "a": f"c-{run}"})
        assert conn.execute(shared_with, {"i": image_id}).scalar_one() == f"b-{run}:PENDING"
        conn.execute(text("DELETE FROM images WHERE id = :i"), {"i": image_id})
        conn.execute(text("DELETE FROM accounts WHERE id LIKE :run"), {"run": f"%-{run}"})


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


#: The triggers migrations add (models cannot declare them): 0002's keep image_counts, 0007's
#: the CSV texts of an image's tags and members (images.csv_tags, images.csv_shared_with),
#: 0008's writes the members text of an image a batch held (image_csv_holds); on PostgreSQL,
#: 0011's count and write for a whole statement's memberships.
TRIGGERS = {
    "sqlite": {"image_counts_image_insert", "image_counts_image_delete", "image_counts_image_update",
               "image_counts_member_insert", "image_counts_member_delete", "image_counts_member_update",
               "image_csv_tags_insert", "image_csv_tags_delete", "image_csv_tags_update",
               "image_csv_members_insert", "image_csv_members_delete", "image_csv_members_update",
               "image_csv_account_rename", "image_csv_hold_release"},
    "postgresql": {"image_counts_image_insert", "image_counts_image_delete", "image_counts_image_update",
                   "image_counts_member_update", "image_members_added", "image_members_removed",
                   "image_csv_tags", "image_csv_members", "image_csv_account_rename", "image_csv_hold_release"},
}
#: Below 0011, PostgreSQL's membership inserts and deletes had row triggers, as SQLite's still do.
TRIGGERS_BEFORE_0011 = {
    "sqlite": TRIGGERS["sqlite"],
    "postgresql": TRIGGERS["postgresql"] - {"image_members_added", "image_members_removed"}
    | {"image_counts_member_change"},
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
