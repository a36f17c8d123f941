"""Column types and ids that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes everywhere (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        """On SQLite the stored text (naive UTC, ISO 8601) is read by one C call, not by
        SQLAlchemy's regular expression and then this decorator (a catalog page reads 150
        of them); on asyncpg the driver's value is already right."""
        if dialect.name == "postgresql" and dialect.driver == "asyncpg":
            # asyncpg decodes timestamptz from the binary protocol as aware UTC datetimes
            # already: nothing to do per value (a catalog page reads 153 of them).
            return None
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        def process(value: Any) -> datetime | None:
            if value is None:
                return None
            parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)

        return process


def insert_for(dialect: str) -> Any:
    """The dialect's INSERT, which has ON CONFLICT: an insert that meets a unique row (one a
    concurrent transaction is committing too: PostgreSQL waits for it) does nothing, or
    updates it, instead of raising."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """An opaque id: a type prefix and 80 random bits (`img-7w3kq2...`)."""
    raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()
    return f"{prefix}-{raw}"


#: Prefixes of every id kind; `node(id)` dispatches on them.
ID_PREFIXES = {
    "acc": "Account",
    "tok": "ApiToken",
    "img": "Image",
    "job": "Job",
    "key": "KmsKey",
    "grt": "KmsGrant",
    "srv": "Server",
    "vol": "Volume",
    "bak": "Backup",
    "man": "Manifest",
}
