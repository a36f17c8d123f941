"""Custom scalars of the contract (registered in the schema config's scalar_map)."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, NewType

import strawberry
from strawberry.schema.types.base_scalars import DateTimeDefinition

BigInt = NewType("BigInt", int)

SCALAR_MAP: dict[object, Any] = {
    BigInt: strawberry.scalar(
        name="BigInt",
        description="An integer that may exceed 2^31 (byte counts), sent as a JSON number.",
        serialize=int,
        parse_value=int,
    ),
    # Strawberry's own DateTime (same name, serialization and parsing), described as served.
    datetime: dataclasses.replace(
        DateTimeDefinition,
        description="An ISO 8601 date and time. Sent in UTC with its offset "
                    "(`2026-01-31T12:00:00.123456+00:00`); one given must carry its offset "
                    "(`2026-01-31T12:00:00Z`), else `INVALID_DATETIME`.",
    ),
}
