"""The numbers and pure validators of KMS keys (DESIGN §1 "KMS keys")."""

from __future__ import annotations

import re
from collections.abc import Iterable

from app.errors import Invalid
from app.kms.port import RESERVED_ALIAS_PREFIX, GrantOperation

ALIAS_MAX = 255
PENDING_DAYS_MIN = 7
PENDING_DAYS_MAX = 1096
#: AWS KMS's default waiting period, used when pendingDays is not given.
PENDING_DAYS_DEFAULT = 30
_ALIAS_RE = re.compile(r"[A-Za-z0-9/_-]+")


def validate_alias(alias: str, field: str = "input.alias") -> str:
    if not 1 <= len(alias) <= ALIAS_MAX or not _ALIAS_RE.fullmatch(alias):
        raise Invalid("INVALID_KMS_ALIAS", field=field)
    if alias.lower().startswith(RESERVED_ALIAS_PREFIX):
        raise Invalid("KMS_ALIAS_RESERVED", field=field)
    return alias


def validate_pending_days(days: int, field: str = "input.pendingDays") -> int:
    if not PENDING_DAYS_MIN <= days <= PENDING_DAYS_MAX:
        raise Invalid("INVALID_PENDING_DAYS", f"pendingDays must be {PENDING_DAYS_MIN} to {PENDING_DAYS_MAX}.",
                      field=field)
    return days


def normalize_operations(operations: Iterable[GrantOperation], field: str = "input.operations") -> tuple[
    GrantOperation, ...
]:
    """De-duplicated, in the enum's order (so equal sets compare equal); never empty."""
    given = {GrantOperation(op) for op in operations}
    if not given:
        raise Invalid("INVALID_GRANT_OPERATIONS", field=field)
    return tuple(op for op in GrantOperation if op in given)
