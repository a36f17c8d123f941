"""The local KeyProvider: keys in the service's own database, sealed under a root key file.

For the embedded default, development and CI. Per key, 256 random bits of material are
stored only sealed under the root key (see `app.kms.envelope`); data keys are wrapped with
the material. Destroying a key deletes its row, and with it the only copy of the material:
every data key wrapped with it is unrecoverable from then on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError

from app.db.repositories.kms import GrantRow
from app.db.types import new_id, utcnow
from app.db.uow import Database, UnitOfWork
from app.domain.images import Caller
from app.domain.pagination import decode_time_cursor, encode_cursor
from app.domain.rules import validate_description
from app.errors import Conflict, Invalid, KmsKeyProblem, NotFound
from app.kms.envelope import RootSealer, new_data_key, new_material, unwrap_data_key, wrap_data_key
from app.kms.port import (
    DEFAULT_KEY_ALIAS,
    GrantInfo,
    GrantOperation,
    KeyInfo,
    KeyPage,
    KeyState,
)
from app.kms.rules import normalize_operations, validate_alias, validate_pending_days
from app.kms.tables import KmsGrant, KmsKey

log = logging.getLogger(__name__)

_CURSOR_ORDERING = "kms:CREATED_AT:ASC"
_DEFAULT_KEY_DESCRIPTION = "Default key of the image service."


def _grant_info(row: GrantRow) -> GrantInfo:
    g = row.grant
    return GrantInfo(
        id=g.id, key_id=g.key_id, grantee_account_id=g.grantee_account_id, grantee_name=row.grantee_name,
        operations=tuple(GrantOperation(op) for op in g.operations), created_at=g.created_at,
    )


def _key_info(key: KmsKey, grants: Iterable[GrantRow] = ()) -> KeyInfo:
    return KeyInfo(
        id=key.id, account_id=key.account_id, alias=key.alias, description=key.description,
        state=KeyState(key.state), is_default=key.is_default, created_at=key.created_at,
        updated_at=key.updated_at, deletion_date=key.deletion_date,
        grants=tuple(_grant_info(g) for g in grants),
    )


class LocalKeyProvider:
    """The KeyProvider of `app.kms.port` over the `kms_keys`/`kms_grants` tables."""

    def __init__(self, db: Database, root_key: bytes, *, now: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self._sealer = RootSealer(root_key)
        self._now = now

    def __repr__(self) -> str:
        return "LocalKeyProvider(<root key hidden>)"

    async def check_root_key(self) -> None:
        """KmsSealError unless the root key opens the stored keys (tried on one of them), so a
        wrong root key file stops the process at start, not each encrypted operation later."""
        async with self.db.uow(write=False) as uow:
            key = await uow.kms.any_key()
        if key is not None:
            self._sealer.unseal(key.id, key.sealed_material)

    # ---------------------------------------------------------------- management

    def _destroyed(self, key: KmsKey) -> bool:
        """Past its deletion date: destroyed, though `purge_due` may not have deleted its row
        yet (it runs every IMS_MAINTENANCE_INTERVAL, or never). Such a key is gone for every
        call: cancelling its deletion must not bring it back after the waiting period."""
        return (key.state == KeyState.PENDING_DELETION.value and key.deletion_date is not None
                and key.deletion_date <= self._now())

    def _new_key(self, account_id: str, alias: str, description: str, *, is_default: bool) -> KmsKey:
        key_id = new_id("key")
        now = self._now()
        return KmsKey(
            id=key_id, account_id=account_id, alias=alias, description=description,
            state=KeyState.ENABLED.value, is_default=is_default,
            sealed_material=self._sealer.seal(key_id, new_material()), created_at=now, updated_at=now,
        )

    async def create_key(self, caller: Caller, alias: str, description: str = "") -> KeyInfo:
        validate_alias(alias)
        description = validate_description(description)
        key = self._new_key(caller.account_id, alias, description, is_default=False)
        try:
            async with self.db.uow(caller.account_id) as uow:
                taken = await uow.kms.get_by_alias(caller.account_id, alias)
                if taken is not None and not self._destroyed(taken):
                    raise Conflict("KMS_ALIAS_EXISTS")
                if taken is not None:  # a destroyed key not purged yet: purge it now
                    await uow.kms.delete_keys([taken.id])
                await uow.kms.add_key(key)
                await uow.commit()
        except IntegrityError:  # a concurrent create of the same alias won
            raise Conflict("KMS_ALIAS_EXISTS") from None
        log.info("KMS key %s created", key.id)
        return _key_info(key)

    async def get_key(self, caller: Caller, key_id: str) -> KeyInfo:
        async with self.db.uow(caller.account_id, write=False) as uow:
            key = await uow.kms.get_key(key_id)
            if key is None or self._destroyed(key):
                raise NotFound("KMS_KEY_NOT_FOUND", resource_id=key_id)
            if key.account_id == caller.account_id:
                return _key_info(key, (await uow.kms.grants_of([key_id]))[key_id])
            mine = (await uow.kms.grants_of([key_id], grantee=caller.account_id))[key_id]
        if not any(GrantOperation.DESCRIBE_KEY.value in g.grant.operations for g in mine):
            raise NotFound("KMS_KEY_NOT_FOUND", resource_id=key_id)
        return _key_info(key, mine)

    async def list_keys(self, caller: Caller, first: int, after: str | None) -> KeyPage:
        cursor = decode_time_cursor(after, _CURSOR_ORDERING)
        me = caller.account_id
        async with self.db.uow(me, write=False) as uow:
            keys, has_next, total = await uow.kms.page_visible(me, first, cursor, self._now())
            grants = await uow.kms.grants_of([k.id for k in keys])
        items = [
            # A grantee sees its own grants on another account's key, never the others'.
            _key_info(k, [g for g in grants[k.id] if k.account_id == me or g.grant.grantee_account_id == me])
            for k in keys
        ]
        cursors = [encode_cursor(_CURSOR_ORDERING, k.created_at, k.id) for k in keys]
        return KeyPage(items=items, cursors=cursors, has_next=has_next, total=total)

    async def _owned(self, uow: UnitOfWork, caller: Caller, key_id: str) -> KmsKey:
        key = await uow.kms.get_key(key_id, for_update=True)
        if key is None or key.account_id != caller.account_id or self._destroyed(key):
            raise NotFound("KMS_KEY_NOT_FOUND", resource_id=key_id)
        return key

    async def _change_state(self, caller: Caller, key_id: str, change: Callable[[KmsKey], bool]) -> KeyInfo:
        """Lock the caller's key, let `change` check and edit it (True: it changed), commit."""
        async with self.db.uow(caller.account_id) as uow:
            key = await self._owned(uow, caller, key_id)
            if change(key):
                key.updated_at = self._now()
                await uow.session.flush()
                log.info("KMS key %s is now %s", key.id, key.state)
            info = _key_info(key, (await uow.kms.grants_of([key_id]))[key_id])
            await uow.commit()
        return info

    async def enable_key(self, caller: Caller, key_id: str) -> KeyInfo:
        def change(key: KmsKey) -> bool:
            if key.state == KeyState.PENDING_DELETION.value:
                raise Conflict("KMS_KEY_PENDING_DELETION", "Cancel the key's deletion before enabling it.")
            changed = key.state != KeyState.ENABLED.value
            key.state = KeyState.ENABLED.value
            return changed

        return await self._change_state(caller, key_id, change)

    async def disable_key(self, caller: Caller, key_id: str) -> KeyInfo:
        def change(key: KmsKey) -> bool:
            if key.is_default:
                raise Conflict("KMS_DEFAULT_KEY_MANAGED")
            if key.state == KeyState.PENDING_DELETION.value:
                raise Conflict("KMS_KEY_PENDING_DELETION")
            changed = key.state != KeyState.DISABLED.value
            key.state = KeyState.DISABLED.value
            return changed

        return await self._change_state(caller, key_id, change)

    async def schedule_deletion(self, caller: Caller, key_id: str, pending_days: int) -> KeyInfo:
        validate_pending_days(pending_days)

        def change(key: KmsKey) -> bool:
            if key.is_default:
                raise Conflict("KMS_DEFAULT_KEY_MANAGED")
            if key.state == KeyState.PENDING_DELETION.value:
                raise Conflict("KMS_KEY_PENDING_DELETION", "The key is already scheduled for deletion.")
            key.state = KeyState.PENDING_DELETION.value
            key.deletion_date = self._now() + timedelta(days=pending_days)
            return True

        return await self._change_state(caller, key_id, change)

    async def cancel_deletion(self, caller: Caller, key_id: str) -> KeyInfo:
        def change(key: KmsKey) -> bool:
            if key.state != KeyState.PENDING_DELETION.value:
                raise Conflict("KMS_KEY_NOT_PENDING_DELETION")
            # As AWS KMS: a key saved from deletion comes back disabled, not in use at once.
            key.state = KeyState.DISABLED.value
            key.deletion_date = None
            return True

        return await self._change_state(caller, key_id, change)

    async def create_grant(
        self, caller: Caller, key_id: str, grantee_account_id: str, operations: Iterable[GrantOperation]
    ) -> GrantInfo:
        ops = normalize_operations(operations)
        if grantee_account_id == caller.account_id:
            raise Invalid("KMS_GRANT_TO_SELF", field="input.granteeAccountId")
        async with self.db.uow(caller.account_id) as uow:
            key = await self._owned(uow, caller, key_id)
            if key.is_default:
                raise Invalid("KMS_DEFAULT_KEY_NOT_GRANTABLE", field="input.keyId")
            values = [op.value for op in ops]
            existing = next((g for g in await uow.kms.grants_to(key_id, grantee_account_id)
                             if g.operations == values), None)
            if existing is None:
                existing = KmsGrant(id=new_id("grt"), key_id=key_id, grantee_account_id=grantee_account_id,
                                    operations=values, created_at=self._now())
                await uow.kms.add_grant(existing)
                log.info("KMS grant %s on key %s created", existing.id, key_id)
            rows = (await uow.kms.grants_of([key_id], grantee=grantee_account_id))[key_id]
            await uow.commit()
        return next(_grant_info(r) for r in rows if r.grant.id == existing.id)

    async def revoke_grant(self, caller: Caller, key_id: str, grant_id: str) -> str:
        async with self.db.uow(caller.account_id) as uow:
            await self._owned(uow, caller, key_id)
            if not await uow.kms.delete_grant(key_id, grant_id):
                raise NotFound("GRANT_NOT_FOUND", resource_id=grant_id)
            await uow.commit()
        log.info("KMS grant %s on key %s revoked", grant_id, key_id)
        return grant_id

    # ---------------------------------------------------------------- data keys

    async def ensure_default_key(self, account_id: str) -> KeyInfo:
        async with self.db.uow(account_id, write=False) as uow:
            key = await uow.kms.get_by_alias(account_id, DEFAULT_KEY_ALIAS)
        if key is not None:
            return _key_info(key)
        key = self._new_key(account_id, DEFAULT_KEY_ALIAS, _DEFAULT_KEY_DESCRIPTION, is_default=True)
        try:
            async with self.db.uow(account_id) as uow:
                await uow.kms.add_key(key)
                await uow.commit()
            log.info("KMS default key %s created", key.id)
        except IntegrityError:  # created concurrently: use that one
            async with self.db.uow(account_id, write=False) as uow:
                found = await uow.kms.get_by_alias(account_id, DEFAULT_KEY_ALIAS)
            if found is None:
                raise
            key = found
        return _key_info(key)

    async def _usable(self, account_id: str, key_id: str, operation: GrantOperation | None) -> KmsKey:
        """The key if `account_id` may use it now for `operation` (None: owner only).

        Who may not even see the key gets KMS_KEY_NOT_FOUND; a grantee without the
        operation KMS_ACCESS_DENIED; only then does the key's state speak."""
        async with self.db.uow(account_id, write=False) as uow:
            key = await uow.kms.get_key(key_id)
            grants = [] if key is None or key.account_id == account_id else \
                await uow.kms.grants_to(key_id, account_id)
        if key is None or self._destroyed(key) or (key.account_id != account_id and not grants):
            raise KmsKeyProblem("KMS_KEY_NOT_FOUND", key_id=key_id)
        if key.account_id != account_id and (
            operation is None or not any(operation.value in g.operations for g in grants)
        ):
            raise KmsKeyProblem("KMS_ACCESS_DENIED", key_id=key_id)
        if key.state == KeyState.DISABLED.value:
            raise KmsKeyProblem("KMS_KEY_DISABLED", key_id=key_id)
        if key.state == KeyState.PENDING_DELETION.value:
            raise KmsKeyProblem("KMS_KEY_PENDING_DELETION", key_id=key_id)
        return key

    async def generate_data_key(self, account_id: str, key_id: str) -> tuple[bytes, bytes]:
        key = await self._usable(account_id, key_id, None)
        material = self._sealer.unseal(key.id, key.sealed_material)
        data_key = new_data_key()
        return data_key, wrap_data_key(material, key.id, data_key)

    async def decrypt_data_key(self, account_id: str, key_id: str, wrapped: bytes) -> bytes:
        key = await self._usable(account_id, key_id, GrantOperation.DECRYPT_DATA_KEY)
        return unwrap_data_key(self._sealer.unseal(key.id, key.sealed_material), key.id, wrapped)

    async def require_decrypt(self, account_id: str, key_id: str) -> None:
        await self._usable(account_id, key_id, GrantOperation.DECRYPT_DATA_KEY)

    async def can_decrypt(self, account_id: str, key_id: str) -> bool:
        try:
            await self.require_decrypt(account_id, key_id)
        except KmsKeyProblem:
            return False
        return True

    async def has_grant(self, key_id: str, grantee_account_id: str, operation: GrantOperation) -> bool:
        async with self.db.uow(grantee_account_id, write=False) as uow:
            grants = await uow.kms.grants_to(key_id, grantee_account_id)
        return any(operation.value in g.operations for g in grants)

    # ---------------------------------------------------------------- duties

    async def purge_due(self) -> int:
        async with self.db.uow() as uow:
            destroyed = await uow.kms.delete_due(self._now())
            await uow.commit()
        for key_id in destroyed:
            log.info("KMS key %s destroyed (deletion date passed)", key_id)
        return len(destroyed)
