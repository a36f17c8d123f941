"""KMS keys and grants as the API offers them: input rules on top of the KeyProvider port.

The provider enforces what depends on the stored keys (ownership, alias uniqueness, the
state machine, grant semantics); this service adds the request-level rules: page sizes,
`pendingDays` only where it means something, and grantees that are real accounts.
"""

from __future__ import annotations

from collections.abc import Iterable

from app.db.uow import Database
from app.domain.images import Caller
from app.domain.rules import validate_page_size
from app.errors import Invalid, NotFound
from app.kms.port import GrantInfo, GrantOperation, KeyInfo, KeyPage, KeyProvider
from app.kms.rules import PENDING_DAYS_DEFAULT


def _no_pending_days(pending_days: int | None) -> None:
    if pending_days is not None:
        raise Invalid("INVALID_PENDING_DAYS", "pendingDays is only taken by scheduleKmsKeyDeletion.",
                      field="input.pendingDays")


class KmsService:
    def __init__(self, db: Database, provider: KeyProvider) -> None:
        self.db = db
        self.provider = provider

    async def list_keys(self, caller: Caller, first: int | None, after: str | None) -> KeyPage:
        return await self.provider.list_keys(caller, validate_page_size(first), after)

    async def get_key(self, caller: Caller, key_id: str) -> KeyInfo:
        return await self.provider.get_key(caller, key_id)

    async def create_key(self, caller: Caller, alias: str, description: str = "") -> KeyInfo:
        return await self.provider.create_key(caller, alias, description)

    async def enable_key(self, caller: Caller, key_id: str, pending_days: int | None = None) -> KeyInfo:
        _no_pending_days(pending_days)
        return await self.provider.enable_key(caller, key_id)

    async def disable_key(self, caller: Caller, key_id: str, pending_days: int | None = None) -> KeyInfo:
        _no_pending_days(pending_days)
        return await self.provider.disable_key(caller, key_id)

    async def schedule_deletion(self, caller: Caller, key_id: str, pending_days: int | None = None) -> KeyInfo:
        days = PENDING_DAYS_DEFAULT if pending_days is None else pending_days
        return await self.provider.schedule_deletion(caller, key_id, days)

    async def cancel_deletion(self, caller: Caller, key_id: str, pending_days: int | None = None) -> KeyInfo:
        _no_pending_days(pending_days)
        return await self.provider.cancel_deletion(caller, key_id)

    async def create_grant(
        self, caller: Caller, key_id: str, grantee_account_id: str, operations: Iterable[GrantOperation]
    ) -> GrantInfo:
        ops = list(operations)
        if grantee_account_id != caller.account_id:
            # The key first: a caller granting on a key that is not its own (or none) learns
            # nothing of whether the grantee's account exists.
            key = await self.provider.get_key(caller, key_id)
            if key.account_id != caller.account_id:
                raise NotFound("KMS_KEY_NOT_FOUND", resource_id=key_id)
            async with self.db.uow(caller.account_id, write=False) as uow:
                if await uow.accounts.get(grantee_account_id) is None:
                    raise NotFound("ACCOUNT_NOT_FOUND", resource_id=grantee_account_id)
        return await self.provider.create_grant(caller, key_id, grantee_account_id, ops)

    async def revoke_grant(self, caller: Caller, key_id: str, grant_id: str) -> str:
        return await self.provider.revoke_grant(caller, key_id, grant_id)
