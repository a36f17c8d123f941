"""KMS keys and grants of the local key provider."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, String, and_, cast, delete, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.tables import Account
from app.kms.port import GrantOperation, KeyState
from app.kms.tables import KmsGrant, KmsKey


@dataclass(frozen=True)
class GrantRow:
    grant: KmsGrant
    grantee_name: str


def _grants_operation(operation: GrantOperation) -> ColumnElement[bool]:
    # Operations are a JSON list of fixed enum names; matching the quoted name in its text
    # form works the same on SQLite and PostgreSQL without JSON operators of either.
    return cast(col(KmsGrant.operations), String).like(f'%"{operation.value}"%')


class KmsRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # ---------------------------------------------------------------- keys

    async def add_key(self, key: KmsKey) -> None:
        self.session.add(key)
        await self.session.flush()

    async def get_key(self, key_id: str, *, for_update: bool = False) -> KmsKey | None:
        stmt = select(KmsKey).where(col(KmsKey.id) == key_id)
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def any_key(self) -> KmsKey | None:
        """Some key of any account (the oldest): whether material is sealed under the root key."""
        stmt = select(KmsKey).order_by(col(KmsKey.created_at), col(KmsKey.id)).limit(1)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get_by_alias(self, account_id: str, alias: str) -> KmsKey | None:
        stmt = select(KmsKey).where(col(KmsKey.account_id) == account_id, col(KmsKey.alias) == alias)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    @staticmethod
    def _live(now: datetime) -> ColumnElement[bool]:
        """Not past its deletion date: such a key is destroyed, whether or not purged yet."""
        return or_(col(KmsKey.state) != KeyState.PENDING_DELETION.value, col(KmsKey.deletion_date) > now)

    def _visible_to(self, account_id: str, now: datetime) -> ColumnElement[bool]:
        described = exists().where(
            col(KmsGrant.key_id) == col(KmsKey.id),
            col(KmsGrant.grantee_account_id) == account_id,
            _grants_operation(GrantOperation.DESCRIBE_KEY),
        )
        return and_(or_(col(KmsKey.account_id) == account_id, described), self._live(now))

    async def page_visible(
        self, account_id: str, first: int, after: tuple[datetime, str] | None, now: datetime
    ) -> tuple[list[KmsKey], bool, int]:
        """Keys the account owns or may describe, oldest first, keyset-paged on (created_at, id);
        not those past their deletion date (`now`)."""
        visible = self._visible_to(account_id, now)
        stmt = select(KmsKey).where(visible)
        if after is not None:
            created, last_id = after
            stmt = stmt.where(or_(
                col(KmsKey.created_at) > created,
                and_(col(KmsKey.created_at) == created, col(KmsKey.id) > last_id),
            ))
        stmt = stmt.order_by(col(KmsKey.created_at), col(KmsKey.id)).limit(first + 1)
        rows = list((await self.session.execute(stmt)).scalars())
        total = (await self.session.execute(select(func.count()).select_from(KmsKey).where(visible))).scalar_one()
        return rows[:first], len(rows) > first, int(total)

    async def delete_due(self, now: datetime) -> list[str]:
        """Delete the keys (material included) whose deletion date has passed; their ids.

        Grants go first rather than by ON DELETE CASCADE, which SQLite applies only with
        foreign keys on."""
        due = select(col(KmsKey.id)).where(
            col(KmsKey.state) == KeyState.PENDING_DELETION.value, col(KmsKey.deletion_date) <= now
        )
        ids = list((await self.session.execute(due.with_for_update())).scalars())
        await self.delete_keys(ids)
        return ids

    async def delete_keys(self, ids: list[str]) -> None:
        """Delete these keys (material included) and their grants."""
        if ids:
            await self.session.execute(delete(KmsGrant).where(col(KmsGrant.key_id).in_(ids)))
            await self.session.execute(delete(KmsKey).where(col(KmsKey.id).in_(ids)))

    # ---------------------------------------------------------------- grants

    async def add_grant(self, grant: KmsGrant) -> None:
        self.session.add(grant)
        await self.session.flush()

    async def grants_of(self, key_ids: list[str], grantee: str | None = None) -> dict[str, list[GrantRow]]:
        """Grants of each key with the grantee's name, oldest first; only `grantee`'s if given."""
        out: dict[str, list[GrantRow]] = {k: [] for k in key_ids}
        if not key_ids:
            return out
        stmt = (
            select(KmsGrant, col(Account.name))
            .join(Account, col(Account.id) == col(KmsGrant.grantee_account_id))
            .where(col(KmsGrant.key_id).in_(key_ids))
            .order_by(col(KmsGrant.key_id), col(KmsGrant.created_at), col(KmsGrant.id))
        )
        if grantee is not None:
            stmt = stmt.where(col(KmsGrant.grantee_account_id) == grantee)
        for grant, name in (await self.session.execute(stmt)).all():
            out[grant.key_id].append(GrantRow(grant, name))
        return out

    async def grants_to(self, key_id: str, grantee: str) -> list[KmsGrant]:
        stmt = select(KmsGrant).where(col(KmsGrant.key_id) == key_id, col(KmsGrant.grantee_account_id) == grantee)
        return list((await self.session.execute(stmt)).scalars())

    async def delete_grant(self, key_id: str, grant_id: str) -> bool:
        result = await self.session.execute(
            delete(KmsGrant).where(col(KmsGrant.id) == grant_id, col(KmsGrant.key_id) == key_id)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]
