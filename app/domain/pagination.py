"""Opaque keyset cursors: base64url JSON of the ordering, the sort key and the id."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any

import orjson

from app.errors import Invalid


def encode_cursor(ordering: str, value: Any, item_id: str) -> str:
    if isinstance(value, datetime):
        value = value.isoformat()
    raw = orjson.dumps([ordering, value, item_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, ordering: str) -> tuple[Any, str]:
    """(sort value as stored in the cursor, id); INVALID_CURSOR if it is not ours."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise Invalid("INVALID_CURSOR", field="after") from exc
    if (
        not isinstance(data, list)
        or len(data) != 3
        or data[0] != ordering
        or not isinstance(data[2], str)
        or not isinstance(data[1], (str, int, float))
        or not all(_storable(v) for v in data[1:] if isinstance(v, str))
    ):
        raise Invalid("INVALID_CURSOR", field="after")
    return data[1], data[2]


def _storable(text: str) -> bool:
    """Text a database can compare: no NUL (PostgreSQL refuses it in text). The request's own
    text is checked for it; a cursor's decoded value is not that text. (orjson refuses a
    JSON unpaired surrogate already.)"""
    return "\x00" not in text


#: The largest size a cursor may carry (sizes are 64-bit integers; -1 stands for none).
MAX_SIZE_VALUE = 2**63 - 1


def decode_time_cursor(cursor: str | None, ordering: str) -> tuple[datetime, str] | None:
    """The (created_at, id) after which a newest-first keyset page starts; None for the first
    page (no cursor). A cursor of another list, or not one at all, is INVALID_CURSOR."""
    if not cursor:
        return None
    value, item_id = decode_cursor(cursor, ordering)
    return decode_datetime(value), item_id


def decode_datetime(value: Any) -> datetime:
    """A cursor's date-time, in UTC. One without an offset, or outside what UTC can hold
    (`0001-01-01T00:00:00+05:00`), is INVALID_CURSOR."""
    try:
        parsed = datetime.fromisoformat(str(value))
        if parsed.tzinfo is None:
            raise ValueError("no UTC offset")
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise Invalid("INVALID_CURSOR", field="after") from exc


def decode_size(value: Any) -> int:
    """A cursor's size: an integer (not a bool) from -1 (no size) to 2**63 - 1."""
    if type(value) is not int or not -1 <= value <= MAX_SIZE_VALUE:
        raise Invalid("INVALID_CURSOR", field="after")
    return value
