"""Alembic migrations, run by `ims migrate` and at start for the embedded default.

Several processes may migrate one database at once (servers starting together with
IMS_AUTO_MIGRATE, or `ims migrate` beside them): `migration_lock`, taken by the Alembic
environment before it reads the schema's revision, makes them run one after another, so
that the later ones find the schema current instead of creating its tables again."""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, inspect, pool, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from app.db import DatabaseNotReadyError
from app.db.engine import sync_url

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: The PostgreSQL advisory lock key of migration runs (any constant shared by all processes;
#: app.jobs.maintenance holds another).
MIGRATION_LOCK_KEY = 0x1A5_0001
#: Seconds a start waits for PostgreSQL to accept its first connection (a host that drops
#: packets would hold it for minutes of TCP retries).
CONNECT_TIMEOUT_SECONDS = 10


def _where(database_url: str) -> str:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return f"the SQLite database {url.database}"
    return f"the database {url.database or ''} at {url.host or 'localhost'}:{url.port or 5432}"


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' would be read as interpolation by configparser.
    cfg.set_main_option("sqlalchemy.url", sync_url(database_url).replace("%", "%%"))
    return cfg


def _make_sqlite_dir(database_url: str) -> None:
    """Create the directory of a SQLite database; DatabaseNotReadyError when it cannot be (a
    file in the way, no right), instead of the OSError's traceback."""
    if not database_url.startswith("sqlite"):
        return
    try:
        Path(make_url(database_url).database or "").parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseNotReadyError(f"cannot create the directory of {_where(database_url)}: "
                                    f"{exc.strerror or exc}") from None


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database to `revision` (blocking; call it off the event loop)."""
    _make_sqlite_dir(database_url)
    command.upgrade(alembic_config(database_url), revision)


def prepare(database_url: str, *, migrate: bool) -> None:
    """Make sure the database serves this version before a process starts (blocking): migrate
    it (`migrate`), or check that its schema is this version's head, or newer (processes of the
    previous version go on running after `ims migrate` brought a new one). DatabaseNotReadyError
    when it cannot be reached, or when its schema is behind and this process does not migrate
    (on PostgreSQL, where `ims migrate` runs once before the processes start)."""
    where = _where(database_url)
    try:
        current = _current_revision(database_url)
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
        raise DatabaseNotReadyError(f"cannot connect to {where}: {reason}") from None
    script = ScriptDirectory.from_config(alembic_config(database_url))
    head = script.get_current_head()
    if current == head:
        return
    if current is not None and current not in {revision.revision for revision in script.walk_revisions()}:
        log.warning("%s is at schema revision %s, newer than this version's %s", where, current, head)
        return
    if migrate:
        upgrade(database_url)
        return
    if current is None:
        raise DatabaseNotReadyError(f"{where} has no schema yet: run `ims migrate` first")
    raise DatabaseNotReadyError(f"{where} is at schema revision {current}, this version needs {head}: "
                                "run `ims migrate` first")


def _current_revision(database_url: str) -> str | None:
    """The database's Alembic revision (None before the first migration)."""
    url = sync_url(database_url)
    if url.startswith("sqlite"):
        _make_sqlite_dir(database_url)
        connect_args: dict[str, object] = {}
    else:
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    engine = create_engine(url, poolclass=pool.NullPool, connect_args=connect_args)
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
            return None if revision is None else str(revision)
    finally:
        engine.dispose()


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
