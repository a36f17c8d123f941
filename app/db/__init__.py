"""Persistence: tables, the async engine, repositories (the only SQL), the unit of work."""

from __future__ import annotations


class DatabaseNotReadyError(RuntimeError):
    """The database cannot serve this process: unreachable, or its schema is older than this
    version's (app.db.migrate.prepare). The message is one line for the operator, naming the
    host but never the URL's password. Defined here, not beside `prepare`, so that the command
    line catches it without importing Alembic for every command."""
