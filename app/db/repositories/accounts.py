"""Accounts, API tokens and quota overrides."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import (
    Connection,
    Select,
    and_,
    bindparam,
    delete,
    exists,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.repositories.images import AccountRecord
from app.db.tables import Account, ApiToken, Image, Job, JobImage, Quota
from app.db.types import insert_for
from app.domain.enums import JobType

if TYPE_CHECKING:
    from app.db.uow import Reads


class AccountRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, account_id: str) -> Account | None:
        return await self.session.get(Account, account_id)

    async def get_by_name(self, name: str) -> Account | None:
        return (await self.session.execute(select(Account).where(col(Account.name) == name))).scalar_one_or_none()

    async def get_many(self, ids: list[str]) -> dict[str, Account]:
        if not ids:
            return {}
        rows = (await self.session.execute(select(Account).where(Account.id.in_(ids)))).scalars()  # type: ignore[attr-defined]
        return {a.id: a for a in rows}

    async def add(self, account: Account) -> None:
        self.session.add(account)
        await self.session.flush()

    async def add_if_name_free(self, account: Account) -> bool:
        """Insert the account; False, and nothing inserted, when its name is taken, also by a
        request whose transaction commits while this one runs (on PostgreSQL the insert waits
        for it, then does nothing, where a plain INSERT raised a unique violation)."""
        stmt = insert_for(self.session.bind.dialect.name)(Account).values(  # type: ignore[union-attr]
            id=account.id, name=account.name, role=account.role, created_at=account.created_at,
        ).on_conflict_do_nothing(index_elements=["name"])
        return bool((await self.session.execute(stmt)).rowcount == 1)  # type: ignore[attr-defined]

    async def page(self, first: int, after: str | None) -> tuple[list[Account], bool, int]:
        stmt = select(Account).order_by(Account.id).limit(first + 1)
        if after:
            stmt = stmt.where(col(Account.id) > after)
        rows = list((await self.session.execute(stmt)).scalars())
        total = (await self.session.execute(select(func.count()).select_from(Account))).scalar_one()
        return rows[:first], len(rows) > first, total

    # ---------------------------------------------------------------- tokens

    async def add_token(self, token: ApiToken) -> None:
        self.session.add(token)
        await self.session.flush()

    async def authenticate(self, token_hash: str, now: datetime) -> tuple[AccountRecord, TokenUse] | None:
        """The live token with this hash and its account (`authenticate_read`, in this unit
        of work's transaction)."""
        connection = await self.session.connection()
        return await connection.run_sync(authenticate_read, token_hash, now)

    async def touch_token(self, token_id: str, now: datetime) -> None:
        await self.session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now))  # type: ignore[arg-type]

    async def tokens_of(self, account_id: str) -> list[ApiToken]:
        stmt = select(ApiToken).where(ApiToken.account_id == account_id).order_by(ApiToken.created_at)  # type: ignore[arg-type]
        return list((await self.session.execute(stmt)).scalars())

    async def count_live_tokens(self, account_id: str, now: datetime) -> int:
        """The account's tokens that still authenticate: not expired at `now`."""
        stmt = select(func.count()).select_from(ApiToken).where(
            col(ApiToken.account_id) == account_id,
            or_(col(ApiToken.expires_at).is_(None), col(ApiToken.expires_at) > now))
        return int((await self.session.execute(stmt)).scalar_one())

    async def delete_expired_tokens(self, before: datetime, limit: int) -> int:
        """Delete at most `limit` tokens that expired before `before`, those expired longest
        ago first (ix_api_tokens_expires_at serves the range); how many went."""
        batch = (select(col(ApiToken.id)).where(col(ApiToken.expires_at) < before)
                 .order_by(col(ApiToken.expires_at)).limit(limit))
        result = await self.session.execute(
            delete(ApiToken).where(col(ApiToken.id).in_(batch)).execution_options(synchronize_session=False))
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def delete_named_tokens(self, account_id: str, name: str, keep_hash: str) -> list[str]:
        """Delete the account's tokens called `name` but the one with `keep_hash`; their ids."""
        result = await self.session.execute(
            delete(ApiToken)
            .where(col(ApiToken.account_id) == account_id, col(ApiToken.name) == name,
                   col(ApiToken.token_hash) != keep_hash)
            .returning(col(ApiToken.id))
            .execution_options(synchronize_session=False)
        )
        return sorted(result.scalars())

    async def rename_token(self, account_id: str, token_hash: str, old: str, new: str) -> bool:
        result = await self.session.execute(
            update(ApiToken)
            .where(col(ApiToken.account_id) == account_id, col(ApiToken.token_hash) == token_hash,
                   col(ApiToken.name) == old)
            .values(name=new)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    async def delete_token(self, account_id: str, token_id: str) -> bool:
        token = await self.session.get(ApiToken, token_id)
        if token is None or token.account_id != account_id:
            return False
        await self.session.delete(token)
        await self.session.flush()
        return True

    # ---------------------------------------------------------------- quotas

    async def quota_overrides(self, account_id: str) -> dict[str, int]:
        stmt = select(Quota).where(Quota.account_id == account_id)  # type: ignore[arg-type]
        return {q.resource: q.limit for q in (await self.session.execute(stmt)).scalars()}

    async def set_quota(self, account_id: str, resource: str, limit: int) -> None:
        """Insert or replace the override in one statement: two administrators setting an
        account's first override of a resource at once both found no row, and on PostgreSQL
        the second INSERT raised a unique violation; now it waits and replaces the first."""
        insert = insert_for(self.session.bind.dialect.name)(Quota)  # type: ignore[union-attr]
        stmt = insert.values(account_id=account_id, resource=resource, limit=limit)
        await self.session.execute(stmt.on_conflict_do_update(
            index_elements=["account_id", "resource"], set_={"limit": stmt.excluded.limit},
        ))

    async def lock_account(self, account_id: str) -> None:
        """Serialize quota checks of one account until the transaction ends (PostgreSQL
        advisory lock; SQLite writers are serialized by BEGIN IMMEDIATE already)."""
        if self.session.bind is not None and self.session.bind.dialect.name == "postgresql":
            await self.session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": account_id})

    async def count_private_images(self, account_id: str, region: str) -> int:
        """The account's private images in `region` (every status), but for those of its public
        imports: such an image is private until it is ACTIVE, then public (or KILLED), and was
        never a private image of the administrator's."""
        # Probed per image of the account (job_images is indexed by image), not a list of every
        # public import ever run.
        public_import = exists().where(
            col(JobImage.image_id) == col(Image.id), col(Job.id) == col(JobImage.job_id),
            col(Job.type) == JobType.IMPORT_IMAGE.value, col(Job.params)["public"].as_boolean().is_(True))
        stmt = select(func.count()).select_from(Image).where(
            Image.owner_id == account_id, Image.visibility == "PRIVATE", Image.region == region,  # type: ignore[arg-type]
            ~public_import,
        )
        return (await self.session.execute(stmt)).scalar_one()

    async def count_active_jobs(self, account_id: str, types: frozenset[str]) -> int:
        stmt = select(func.count()).select_from(Job).where(
            and_(
                Job.account_id == account_id,  # type: ignore[arg-type]
                Job.status.in_(("INIT", "RUNNING")),  # type: ignore[attr-defined]
                Job.type.in_(sorted(types)),  # type: ignore[attr-defined]
            )
        )
        return (await self.session.execute(stmt)).scalar_one()


def _statements() -> tuple[Select[Any], Select[Any]]:
    """The two hot reads of every request, built once: cached statements, so that the read
    pool compiles them once (`Reads.rows`)."""
    a = Account.__table__.c  # type: ignore[attr-defined]
    t = ApiToken.__table__.c  # type: ignore[attr-defined]
    token = (
        select(a.id, a.name, a.role, a.created_at, t.id, t.last_used_at, t.expires_at)
        .join_from(Account.__table__, ApiToken.__table__, t.account_id == a.id)  # type: ignore[attr-defined]
        .where(t.token_hash == bindparam("token_hash"),
               or_(t.expires_at.is_(None), t.expires_at > bindparam("now", type_=t.expires_at.type)))
    )
    account = select(a.id, a.name, a.role, a.created_at).where(a.id == bindparam("account_id"))
    return token, account


_TOKEN, _ACCOUNT = _statements()


def _token_use(row: Sequence[Any] | None) -> tuple[AccountRecord, TokenUse] | None:
    if row is None:
        return None
    return AccountRecord(row[0], row[1], row[2], row[3]), TokenUse(row[4], row[5], row[6])


def authenticate_read(connection: Connection, token_hash: str, now: datetime) -> tuple[AccountRecord, TokenUse] | None:
    """The live token with this hash and its account, as records, in one statement."""
    return _token_use(connection.execute(_TOKEN, {"token_hash": token_hash, "now": now}).first())


async def authenticate(reads: Reads, token_hash: str, now: datetime) -> tuple[AccountRecord, TokenUse] | None:
    """`authenticate_read` on `Database.reads` (every request: right on the event loop on
    SQLite, on asyncpg itself on PostgreSQL)."""
    rows = await reads.rows(_TOKEN, {"token_hash": token_hash, "now": now}, now=True)
    return _token_use(rows[0] if rows else None)


async def read_account(reads: Reads, account_id: str) -> AccountRecord | None:
    rows = await reads.rows(_ACCOUNT, {"account_id": account_id}, now=True)
    return AccountRecord(*rows[0]) if rows else None


class TokenUse(NamedTuple):
    id: str
    last_used_at: datetime | None
    expires_at: datetime | None
