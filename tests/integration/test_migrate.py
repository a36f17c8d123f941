"""Migrations started by several processes at once on one fresh database (`ims migrate` beside
starting servers) wait for each other: every process succeeds and the schema is whole."""

from __future__ import annotations

import multiprocessing
import os
import sys
from multiprocessing.synchronize import Barrier
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from app.db.engine import sync_url
from app.db.migrate import alembic_config
from app.db.tables import metadata

PROCESSES = 4


def _migrate_together(barrier: Barrier, data_dir: str) -> None:
    """`ims migrate` in a child process, let go at the same moment as its siblings."""
    import app.cli
    import app.db.migrate  # imported before the barrier: only the migrations race

    os.environ.pop("IMS_DATABASE_URL", None)
    os.environ["IMS_DATA_DIR"] = data_dir
    sys.argv = ["ims", "migrate"]
    barrier.wait()
    app.cli.main()


def test_concurrent_migrations_of_a_fresh_sqlite_database_all_succeed(tmp_path: Path) -> None:
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(PROCESSES)
    procs = [spawn.Process(target=_migrate_together, args=(barrier, str(tmp_path))) for _ in range(PROCESSES)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0] * PROCESSES

    url = f"sqlite:///{tmp_path / 'ims.db'}"
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    engine = create_engine(sync_url(url))
    with engine.connect() as conn:
        context = MigrationContext.configure(conn)
        assert (context.get_current_revision(), compare_metadata(context, metadata())) == (head, [])
    engine.dispose()
