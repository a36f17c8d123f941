"""Custom scalars of the contract (registered in the schema config's scalar_map)."""

from __future__ import annotations

from typing import Any, NewType

import strawberry

BigInt = NewType("BigInt", int)

SCALAR_MAP: dict[object, Any] = {
    BigInt: strawberry.scalar(
        name="BigInt",
        description="An integer that may exceed 2^31 (byte counts), sent as a JSON number.",
        serialize=int,
        parse_value=int,
    )
}
