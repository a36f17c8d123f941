"""A process that starts against a database it cannot use stops at once with one line saying
why and exit status 1: the database is unreachable, has no schema yet, or is at an older
revision while the process does not migrate (PostgreSQL's default: `ims migrate` runs once
before the processes start). Before, `ims serve` started on an older schema and answered 500
to whatever touched a newer column, and an unreachable database gave a traceback of hundreds
of lines. A newer schema (processes of the previous version during a rolling upgrade) is
accepted. On PostgreSQL each test gets a database of its own."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.config import normalize_database_url
from app.db import DatabaseNotReadyError
from app.db.engine import sync_url
from app.db.migrate import alembic_config, prepare, upgrade
from tests.conftest import BACKENDS, PG_URL, free_port, run_ims

HEAD = ScriptDirectory.from_config(alembic_config("sqlite:///unused")).get_current_head()
PREVIOUS = "0003"


@pytest.fixture(params=BACKENDS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL (as IMS_DATABASE_URL spells it) of a database that exists and holds nothing."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'ims.db'}"
        return
    assert PG_URL
    base = make_url(sync_url(normalize_database_url(PG_URL)))
    name = f"ims_ready_{secrets.token_hex(4)}"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(drivername="postgresql", database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def where(url: str) -> str:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"the SQLite database {parsed.database}"
    return f"the database {parsed.database} at {parsed.host}:{parsed.port or 5432}"


def revision(url: str) -> str | None:
    engine = create_engine(sync_url(normalize_database_url(url)))
    try:
        with engine.connect() as conn:
            value = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            return None if value is None else str(value)
    finally:
        engine.dispose()




def serve_args() -> list[str]:
    return ["serve", "--port", str(free_port())]


@pytest.mark.parametrize("command", [serve_args(), ["worker"]], ids=["serve", "worker"])
def test_a_process_that_does_not_migrate_refuses_an_older_schema(
    empty_url: str, tmp_path: Path, command: list[str]
) -> None:
    upgrade(normalize_database_url(empty_url), PREVIOUS)
    env = {"IMS_DATA_DIR": str(tmp_path / "data"), "IMS_DATABASE_URL": empty_url, "IMS_AUTO_MIGRATE": "false",
           "IMS_WORKERS": "0"}
    result = run_ims(command, env)
    assert (result.returncode, result.stderr.splitlines()[-1:]) == (
        1, [(f"ims: {where(empty_url)} is at schema revision {PREVIOUS}, this version needs {HEAD}: "
             "run `ims migrate` first")]), result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert revision(empty_url) == PREVIOUS  # nothing migrated behind the operator's back

    assert run_ims(["migrate"], env).returncode == 0
    assert revision(empty_url) == HEAD


def test_a_process_that_does_not_migrate_refuses_a_database_without_schema(empty_url: str, tmp_path: Path) -> None:
    result = run_ims(serve_args(), {"IMS_DATA_DIR": str(tmp_path / "data"), "IMS_DATABASE_URL": empty_url,
                                "IMS_AUTO_MIGRATE": "false"})
    assert (result.returncode, result.stderr.splitlines()[-1:]) == (
        1, [f"ims: {where(empty_url)} has no schema yet: run `ims migrate` first"]), result.stderr[-3000:]


def test_a_process_that_migrates_brings_an_older_schema_up(empty_url: str) -> None:
    url = normalize_database_url(empty_url)
    upgrade(url, PREVIOUS)
    prepare(url, migrate=True)
    assert revision(empty_url) == HEAD


def test_a_newer_schema_is_accepted(empty_url: str) -> None:
    # `ims migrate` of the next version ran; this version's processes go on until replaced.
    url = normalize_database_url(empty_url)
    upgrade(url)
    engine = create_engine(sync_url(url))
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_next'"))
    engine.dispose()
    prepare(url, migrate=False)
    prepare(url, migrate=True)
    assert revision(empty_url) == "9999_next"


@pytest.mark.parametrize("command", [serve_args(), ["worker"], ["migrate"], ["admin", "maintenance"]],
                         ids=["serve", "worker", "migrate", "maintenance"])
def test_an_unreachable_database_is_one_line_without_the_password(tmp_path: Path, command: list[str]) -> None:
    port = free_port()  # nothing listens there
    result = run_ims(command, {"IMS_DATA_DIR": str(tmp_path / "data"),
                           "IMS_DATABASE_URL": f"postgresql://ims:pw-s3cret@127.0.0.1:{port}/ims"})
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.splitlines()[-1].startswith(f"ims: cannot connect to the database ims at 127.0.0.1:{port}: ")
    assert "Connection refused" in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr and "pw-s3cret" not in result.stderr + result.stdout


def test_the_error_is_typed() -> None:
    port = free_port()
    with pytest.raises(DatabaseNotReadyError, match=f"^cannot connect to the database ims at 127.0.0.1:{port}: "):
        prepare(f"postgresql+asyncpg://ims:pw@127.0.0.1:{port}/ims", migrate=False)
