"""Custom scalars of the contract."""

from __future__ import annotations

from typing import NewType

import strawberry

BigInt = strawberry.scalar(
    NewType("BigInt", int),
    description="An integer that may exceed 2^31 (byte counts), sent as a JSON number.",
    serialize=int,
    parse_value=int,
)
