"""Accounts, API tokens, quotas and authentication."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from app.config import DEFAULT_EXPIRED_TOKEN_RETENTION, DEFAULT_TOKENS_PER_ACCOUNT
from app.db.repositories.accounts import authenticate, read_account
from app.db.repositories.images import AccountRecord
from app.db.tables import Account, ApiToken
from app.db.types import new_id, utcnow
from app.db.uow import Database
from app.domain.enums import CREATION_JOB_TYPES, AccountRole, JobType, QuotaResource
from app.domain.images import Caller
from app.domain.pagination import decode_cursor, encode_cursor
from app.domain.rules import (
    ACCOUNT_NAME_RE,
    DEFAULT_QUOTAS,
    ENV_ADMIN_TOKEN_NAME,
    QUOTA_MAX,
    TOKEN_DAYS_MAX,
    validate_page_size,
    validate_token_name,
)
from app.errors import Conflict, Forbidden, Invalid, NotFound, register_codes

log = logging.getLogger(__name__)

register_codes({
    "TOO_MANY_TOKENS": "The account has as many live API tokens as it may (IMS_TOKENS_PER_ACCOUNT): revoke one with "
                       "`revokeApiToken` to make another. The message names the limit.",
})

#: The accounts list's order (its cursors name it).
_ACCOUNTS_ORDERING = "accounts:id:ASC"


@dataclass(frozen=True)
class AccountPage:
    items: list[Account]
    has_next: bool
    has_previous: bool
    total: int
    cursors: list[str]


#: last_used_at is refreshed at most this often, so authentication stays one read.
TOKEN_TOUCH_INTERVAL = timedelta(minutes=5)
#: Expired tokens deleted per transaction: a long backlog goes in short transactions, between
#: which the requests' writes (serialized on SQLite) get their turn.
TOKEN_PRUNE_BATCH = 1000


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """256 random bits, URL-safe, with a recognizable prefix (secret scanners key on it)."""
    return "ims_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class QuotaUsage:
    resource: QuotaResource
    used: int
    limit: int


def require_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise Forbidden("ADMIN_REQUIRED")


class AccountService:
    def __init__(self, db: Database, default_region: str, regions: Sequence[str] = (), *,
                 tokens_per_account: int = DEFAULT_TOKENS_PER_ACCOUNT,
                 expired_token_retention: timedelta = timedelta(seconds=DEFAULT_EXPIRED_TOKEN_RETENTION)) -> None:
        self.db = db
        self.default_region = default_region
        self.regions = tuple(regions) or (default_region,)
        self.tokens_per_account = tokens_per_account
        self.expired_token_retention = expired_token_retention

    async def authenticate(self, token: str) -> Caller | None:
        if not token or len(token) > 256:
            return None
        now = utcnow()
        found = await authenticate(self.db.reads, hash_token(token), now)
        if found is None:
            return None
        account, api_token = found
        if api_token.last_used_at is None or now - api_token.last_used_at > TOKEN_TOUCH_INTERVAL:
            async with self.db.uow() as uow:
                await uow.accounts.touch_token(api_token.id, now)
                await uow.commit()
        return Caller(account.id, account.name, account.role, api_token.expires_at)

    async def get(self, account_id: str) -> AccountRecord:
        account = await read_account(self.db.reads, account_id)
        if account is None:
            raise NotFound("ACCOUNT_NOT_FOUND", resource_id=account_id)
        return account

    async def create_account(self, caller: Caller | None, name: str, role: AccountRole) -> tuple[Account, str]:
        """Create an account and its first token (returned once). `caller` None: bootstrap."""
        if caller is not None:
            require_admin(caller)
        if not ACCOUNT_NAME_RE.fullmatch(name):
            raise Invalid("INVALID_ACCOUNT_NAME", field="input.name")
        token = new_token()
        async with self.db.uow() as uow:
            account = Account(id=new_id("acc"), name=name, role=role.value, created_at=utcnow())
            if not await uow.accounts.add_if_name_free(account):
                raise Conflict("ACCOUNT_EXISTS")
            await uow.accounts.add_token(self._token_row(account.id, "default", token, None))
            await uow.commit()
        return account, token

    @staticmethod
    def _token_row(account_id: str, name: str, token: str, expires_at: datetime | None) -> ApiToken:
        return ApiToken(
            id=new_id("tok"), account_id=account_id, name=name, token_hash=hash_token(token),
            created_at=utcnow(), expires_at=expires_at,
        )

    async def create_token(self, caller: Caller, name: str, expires_in_days: int | None) -> tuple[ApiToken, str]:
        """A new token of the caller's account. It never outlives the token that creates it: a
        request made with a token expiring on day D gets a token expiring on D at the latest
        (its `expiresAt` says when), so a short-lived token, once leaked, cannot be turned
        into a lasting one.

        An account has at most `tokens_per_account` live tokens (expired ones do not count,
        revoked ones are gone): one more is TOO_MANY_TOKENS and nothing is made. They are
        counted under the account's lock (PostgreSQL's advisory lock, as image and bucket
        creations take it; SQLite's BEGIN IMMEDIATE serializes writers already), held until
        the token's row commits, so two creations cannot both take the last place."""
        name = validate_token_name(name)
        expires_at = None
        if expires_in_days is not None:
            if not 1 <= expires_in_days <= TOKEN_DAYS_MAX:
                raise Invalid("INVALID_EXPIRY", field="input.expiresInDays")
            expires_at = utcnow() + timedelta(days=expires_in_days)
        if caller.token_expires_at is not None and (expires_at is None or expires_at > caller.token_expires_at):
            expires_at = caller.token_expires_at
        token = new_token()
        row = self._token_row(caller.account_id, name, token, expires_at)
        async with self.db.uow() as uow:
            await uow.accounts.lock_account(caller.account_id)
            limit = self.tokens_per_account
            if await uow.accounts.count_live_tokens(caller.account_id, utcnow()) >= limit:
                raise Invalid("TOO_MANY_TOKENS", f"An account may have at most {limit} live API tokens: "
                                                 "revoke one with revokeApiToken to make another.", field="input")
            await uow.accounts.add_token(row)
            await uow.commit()
        return row, token

    async def tokens(self, caller: Caller) -> list[ApiToken]:
        async with self.db.uow(write=False) as uow:
            return await uow.accounts.tokens_of(caller.account_id)

    async def revoke_token(self, caller: Caller, token_id: str) -> str:
        async with self.db.uow() as uow:
            if not await uow.accounts.delete_token(caller.account_id, token_id):
                raise NotFound("TOKEN_NOT_FOUND", resource_id=token_id)
            await uow.commit()
        return token_id

    async def prune_expired_tokens(self, *, batch: int = TOKEN_PRUNE_BATCH) -> int:
        """Delete the tokens, of every account, that expired longer ago than
        `expired_token_retention`; how many. A maintenance duty.

        Until then an expired token stays listed (its owner sees which one ran out) though it
        authenticates no request. Nothing refers to a token's row, and a revoked token's row
        is deleted at once, so only expired ones wait here. The deletion goes `batch` rows per
        transaction until a batch comes back short."""
        cutoff = utcnow() - self.expired_token_retention
        deleted = 0
        while True:
            async with self.db.uow() as uow:
                gone = await uow.accounts.delete_expired_tokens(cutoff, batch)
                await uow.commit()
            deleted += gone
            if gone < batch:
                return deleted

    async def list_accounts(self, caller: Caller, first: int | None, after: str | None) -> AccountPage:
        """Every account by id. The cursor is opaque like every connection's: one that is not
        this list's is INVALID_CURSOR, not a place among the ids."""
        require_admin(caller)
        size = validate_page_size(first)
        last_id: str | None = None
        if after:
            value, last_id = decode_cursor(after, _ACCOUNTS_ORDERING)
            if value != last_id:
                raise Invalid("INVALID_CURSOR", field="after")
        async with self.db.uow(write=False) as uow:
            rows, has_next, total = await uow.accounts.page(size, last_id)
        cursors = [encode_cursor(_ACCOUNTS_ORDERING, r.id, r.id) for r in rows]
        return AccountPage(rows, has_next, last_id is not None, total, cursors)

    async def quotas(self, account_id: str, region: str | None = None) -> list[QuotaUsage]:
        """The account's quotas and what it uses of them, PRIVATE_IMAGES counted in `region`
        (the default region when None; INVALID_REGION for one the service does not have)."""
        if region is None:
            region = self.default_region
        elif region not in self.regions:
            raise Invalid("INVALID_REGION", f"Unknown region {region!r}.", field="region")
        async with self.db.uow(write=False) as uow:
            overrides = await uow.accounts.quota_overrides(account_id)
            used = {
                QuotaResource.PRIVATE_IMAGES: await uow.accounts.count_private_images(account_id, region),
                QuotaResource.CONCURRENT_REPLICATIONS: await uow.accounts.count_active_jobs(
                    account_id, frozenset({JobType.REPLICATE_IMAGE.value})
                ),
                QuotaResource.CONCURRENT_CREATIONS: await uow.accounts.count_active_jobs(
                    account_id, frozenset(t.value for t in CREATION_JOB_TYPES)
                ),
            }
        return [
            QuotaUsage(r, used[r], overrides.get(r.value, DEFAULT_QUOTAS[r])) for r in QuotaResource
        ]

    async def set_quota(self, caller: Caller, account_id: str, resource: QuotaResource, limit: int) -> QuotaUsage:
        require_admin(caller)
        if not 0 <= limit <= QUOTA_MAX:
            raise Invalid("INVALID_QUOTA", field="input.limit")
        async with self.db.uow() as uow:
            if await uow.accounts.get(account_id) is None:
                raise NotFound("ACCOUNT_NOT_FOUND", resource_id=account_id)
            await uow.accounts.set_quota(account_id, resource.value, limit)
            await uow.commit()
        return next(q for q in await self.quotas(account_id) if q.resource is resource)

    async def bootstrap_admin(self, name: str, env_token: str | None, token_file: Path) -> Account:
        """Make sure an admin exists and can log in; see IMS_ADMIN_TOKEN in the README.

        A new IMS_ADMIN_TOKEN replaces the admin's token that the environment set before (the
        one named ENV_ADMIN_TOKEN_NAME), in the transaction that adds it: rotating a leaked token
        through the environment revokes it. Tokens made through the API are never touched.

        Several API processes may start at once on one database: the loser of the race for the
        account name (or the token hash) sees the unique violation and reads what the winner wrote."""
        for attempt in range(3):
            try:
                return await self._bootstrap_admin_once(name, env_token, token_file)
            except IntegrityError:
                if attempt == 2:
                    raise
                log.info("another process bootstrapped the admin concurrently; reading its rows")
        raise AssertionError("unreachable")

    async def _bootstrap_admin_once(self, name: str, env_token: str | None, token_file: Path) -> Account:
        async with self.db.uow() as uow:
            admin = await uow.accounts.get_by_name(name)
            if admin is None:
                admin = Account(id=new_id("acc"), name=name, role=AccountRole.ADMIN.value, created_at=utcnow())
                await uow.accounts.add(admin)
                fresh = True
            else:
                fresh = False
            token: str | None = None
            revoked: list[str] = []
            if env_token:
                env_hash = hash_token(env_token)
                if await uow.accounts.authenticate(env_hash, utcnow()) is None:
                    revoked = await uow.accounts.delete_named_tokens(admin.id, ENV_ADMIN_TOKEN_NAME, env_hash)
                    await uow.accounts.add_token(self._token_row(admin.id, ENV_ADMIN_TOKEN_NAME, env_token, None))
                else:
                    # Earlier versions named it "bootstrap", like the token file's: the one the
                    # environment still holds is its own, marked so that the next change revokes it.
                    await uow.accounts.rename_token(admin.id, env_hash, "bootstrap", ENV_ADMIN_TOKEN_NAME)
            elif fresh or not token_file.exists():
                token = new_token()
                await uow.accounts.add_token(self._token_row(admin.id, "bootstrap", token, None))
            await uow.commit()
        if revoked:
            log.warning("IMS_ADMIN_TOKEN changed: revoked %d token(s) its earlier value gave %s (%s)",
                        len(revoked), name, ", ".join(revoked))
        if token is not None:
            token_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(token + "\n")
            os.chmod(token_file, 0o600)
            log.info("admin token written to %s (mode 0600)", token_file)
        return admin
