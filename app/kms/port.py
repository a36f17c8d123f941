"""The KeyProvider port: customer master keys, grants, and envelope data keys.

A provider owns the key store. Key material never leaves it in clear: callers get a
fresh data key (plaintext + wrapped) to seal their data with, store only the wrapped
form, and ask the provider to unwrap it when they read the data again.

Errors (see `KMS_CODES`):

- managing a key (get, enable, disable, schedule/cancel deletion, grants) that is not the
  caller's, or is gone: `NotFound KMS_KEY_NOT_FOUND`; a bad argument: `Invalid`; a state
  that does not allow the change: `Conflict`;
- using a key for data (generate, decrypt): `KmsKeyProblem` with KMS_KEY_NOT_FOUND,
  KMS_ACCESS_DENIED, KMS_KEY_DISABLED, KMS_KEY_PENDING_DELETION or KMS_INVALID_CIPHERTEXT;
- the provider's own secrets failing to open (wrong root key): `KmsSealError`, which is
  not an expected failure and is masked and logged.

Management calls take the `Caller`; data calls take the account id, so jobs can use them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Protocol, runtime_checkable

from app.domain.images import Caller
from app.errors import register_codes

#: Error codes of the KMS feature (KMS_KEY_NOT_FOUND and GRANT_NOT_FOUND are in app.errors).
KMS_CODES: dict[str, str] = {
    # ValidationError
    "INVALID_KMS_ALIAS": "Key alias: 1-255 characters of letters, digits, '/', '_' or '-'.",
    "KMS_ALIAS_RESERVED": "Aliases starting with 'ims/' are reserved for the service's own keys.",
    "INVALID_PENDING_DAYS": "pendingDays: 7 to 1096, and only with scheduleKmsKeyDeletion.",
    "INVALID_GRANT_OPERATIONS": "A grant names at least one operation.",
    "KMS_GRANT_TO_SELF": "A key's owner cannot grant its own key to itself.",
    "KMS_DEFAULT_KEY_NOT_GRANTABLE": "The default key ims/default cannot be granted to other accounts.",
    # ConflictError
    "KMS_ALIAS_EXISTS": "The account already has a key with this alias.",
    "KMS_KEY_NOT_PENDING_DELETION": "The key is not scheduled for deletion.",
    "KMS_DEFAULT_KEY_MANAGED": "The default key ims/default cannot be disabled or deleted.",
    # ConflictError (state changes) and KmsKeyError (data operations)
    "KMS_KEY_PENDING_DELETION": "The key is scheduled for deletion.",
    # KmsKeyError
    "KMS_KEY_DISABLED": "The key is disabled.",
    "KMS_ACCESS_DENIED": "The caller may not use this key for this operation.",
    "KMS_INVALID_CIPHERTEXT": "The wrapped data key is corrupt or belongs to another key.",
}
register_codes(KMS_CODES)


class KeyState(str, Enum):
    ENABLED = "ENABLED"
    DISABLED = "DISABLED"
    PENDING_DELETION = "PENDING_DELETION"


class GrantOperation(str, Enum):
    #: See the key (in `kmsKeys`, by id); not its other grants.
    DESCRIBE_KEY = "DESCRIBE_KEY"
    #: Unwrap data keys made under the key (read data encrypted with it).
    DECRYPT_DATA_KEY = "DECRYPT_DATA_KEY"


#: The alias of every account's default key, created on first use.
DEFAULT_KEY_ALIAS = "ims/default"
#: Aliases under this prefix belong to the service (case-insensitive).
RESERVED_ALIAS_PREFIX = "ims/"
DATA_KEY_BYTES = 32


class KmsSealError(Exception):
    """Stored key material cannot be opened: the root key is not the one it was sealed with."""


@dataclass(frozen=True)
class GrantInfo:
    id: str
    key_id: str
    grantee_account_id: str
    grantee_name: str
    operations: tuple[GrantOperation, ...]
    created_at: datetime


@dataclass(frozen=True)
class KeyInfo:
    """A key as its viewer may see it: the owner gets every grant, a grantee only its own."""

    id: str
    account_id: str
    alias: str
    description: str
    state: KeyState
    is_default: bool
    created_at: datetime
    updated_at: datetime
    deletion_date: datetime | None
    grants: tuple[GrantInfo, ...] = ()


@dataclass(frozen=True)
class KeyPage:
    items: list[KeyInfo]
    cursors: list[str]
    has_next: bool
    total: int


@runtime_checkable
class KeyProvider(Protocol):
    """Customer master keys per account, grants to other accounts, and envelope data keys."""

    # ---------------------------------------------------------------- management

    async def create_key(self, caller: Caller, alias: str, description: str = "") -> KeyInfo:
        """A new ENABLED key of the caller. Invalid alias/description; Conflict KMS_ALIAS_EXISTS."""
        ...

    async def get_key(self, caller: Caller, key_id: str) -> KeyInfo:
        """An own key, or one granted to the caller with DESCRIBE_KEY; else NotFound."""
        ...

    async def list_keys(self, caller: Caller, first: int, after: str | None) -> KeyPage:
        """Own keys and keys granted with DESCRIBE_KEY, oldest first; `after` is a cursor."""
        ...

    async def enable_key(self, caller: Caller, key_id: str) -> KeyInfo:
        """DISABLED → ENABLED (ENABLED stays); PENDING_DELETION → Conflict."""
        ...

    async def disable_key(self, caller: Caller, key_id: str) -> KeyInfo:
        """ENABLED → DISABLED (DISABLED stays); PENDING_DELETION → Conflict."""
        ...

    async def schedule_deletion(self, caller: Caller, key_id: str, pending_days: int) -> KeyInfo:
        """→ PENDING_DELETION, destroyed `pending_days` (7..1096) from now: from then on the key
        is gone for every call (KMS_KEY_NOT_FOUND), though `purge_due` deletes its row later."""
        ...

    async def cancel_deletion(self, caller: Caller, key_id: str) -> KeyInfo:
        """PENDING_DELETION → DISABLED (as AWS KMS does); other states → Conflict."""
        ...

    async def create_grant(
        self, caller: Caller, key_id: str, grantee_account_id: str, operations: Iterable[GrantOperation]
    ) -> GrantInfo:
        """Owner only. A grant identical to an existing one returns that grant (idempotent)."""
        ...

    async def revoke_grant(self, caller: Caller, key_id: str, grant_id: str) -> str:
        """Owner only; NotFound GRANT_NOT_FOUND when the key has no such grant."""
        ...

    # ---------------------------------------------------------------- data keys

    async def ensure_default_key(self, account_id: str) -> KeyInfo:
        """The account's `ims/default` key, created (ENABLED) on first use."""
        ...

    async def generate_data_key(self, account_id: str, key_id: str) -> tuple[bytes, bytes]:
        """(32-byte plaintext data key, wrapped form to store). Owner only, key ENABLED."""
        ...

    async def decrypt_data_key(self, account_id: str, key_id: str, wrapped: bytes) -> bytes:
        """Unwrap a data key: the owner or a DECRYPT_DATA_KEY grantee, key ENABLED."""
        ...

    async def require_decrypt(self, account_id: str, key_id: str) -> None:
        """Raise the KmsKeyProblem `decrypt_data_key` would raise now, if any."""
        ...

    async def can_decrypt(self, account_id: str, key_id: str) -> bool:
        """Whether `decrypt_data_key` would be allowed now (access and key state)."""
        ...

    async def has_grant(self, key_id: str, grantee_account_id: str, operation: GrantOperation) -> bool:
        """Whether some grant on the key gives `operation` to the grantee (whatever the state)."""
        ...

    # ---------------------------------------------------------------- duties

    async def purge_due(self) -> int:
        """Destroy keys whose deletion date has passed, with their grants; how many."""
        ...


__all__ = [
    "DATA_KEY_BYTES",
    "DEFAULT_KEY_ALIAS",
    "KMS_CODES",
    "RESERVED_ALIAS_PREFIX",
    "GrantInfo",
    "GrantOperation",
    "KeyInfo",
    "KeyPage",
    "KeyProvider",
    "KeyState",
    "KmsSealError",
]
