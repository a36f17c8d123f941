"""Alembic environment: synchronous drivers, metadata from app.db.tables; one run at a time
per database (app.db.migrate.migration_lock)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from app.db.migrate import migration_lock
from app.db.tables import metadata

config = context.config
target_metadata = metadata()


def run() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url
    engine = create_engine(url, poolclass=pool.NullPool)
    # The lock is taken before Alembic reads the current revision: a run that waited for
    # another one reads the revision it left.
    with engine.connect() as connection, migration_lock(connection):
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()
