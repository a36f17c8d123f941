"""Alembic migrations, run by `ims migrate` and at start for the embedded default.

Several processes may migrate one database at once (servers starting together with
IMS_AUTO_MIGRATE, or `ims migrate` beside them): `migration_lock`, taken by the Alembic
environment before it reads the schema's revision, makes them run one after another, so
that the later ones find the schema current instead of creating its tables again."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

from app.db.engine import sync_url

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: The PostgreSQL advisory lock key of migration runs (any constant shared by all processes;
#: app.jobs.maintenance holds another).
MIGRATION_LOCK_KEY = 0x1A5_0001


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' would be read as interpolation by configparser.
    cfg.set_main_option("sqlalchemy.url", sync_url(database_url).replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database to `revision` (blocking; call it off the event loop)."""
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[1]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(database_url), revision)


@contextmanager
def migration_lock(connection: Connection) -> Iterator[None]:
    """Hold the database's migration lock; enter it before the first statement of a run.

    PostgreSQL: a session advisory lock on `connection`, taken outside the transaction Alembic
    opens next (which runs every migration) and released after it, or by ending the session
    when the run fails (the server also ends it when the process dies).
    SQLite: an exclusive `flock` on `<database>.migrate-lock` beside the file (released by
    the kernel when the process dies); an in-memory database has no other process to wait for."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        connection.commit()
        try:
            yield
        except BaseException:
            connection.invalidate()  # ending the session releases the lock; the error goes on
            raise
        connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
        connection.commit()
        return
    database = connection.engine.url.database
    if connection.dialect.name != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    fd = os.open(f"{database}.migrate-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the only descriptor of the open file releases the lock
