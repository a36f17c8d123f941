"""Accounts, tokens, quotas, viewer: types, queries and mutations."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from app.api.common import AccountRole, After, First, Node, PageInfo, QuotaResource
from app.api.context import Info
from app.api.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    ValidationError,
    payload,
    query_errors,
)
from app.config import DEFAULT_EXPIRED_TOKEN_RETENTION, DEFAULT_TOKENS_PER_ACCOUNT
from app.db.repositories.images import AccountRecord
from app.db.tables import Account as AccountRow
from app.db.tables import ApiToken as ApiTokenRow
from app.domain import enums as d
from app.domain.rules import ENV_ADMIN_TOKEN_NAME, QUOTA_MAX, TOKEN_DAYS_MAX, TOKEN_NAME_MAX
from app.services.accounts import TOKEN_TOUCH_INTERVAL, QuotaUsage

_RETENTION_DAYS = round(DEFAULT_EXPIRED_TOKEN_RETENTION / 86400)
_TOUCH_MINUTES = round(TOKEN_TOUCH_INTERVAL.total_seconds() / 60)


@strawberry.type(description="An account of the service: it owns images, buckets, KMS keys, "
                             "servers and API tokens.")
class Account(Node):
    id: strawberry.ID = strawberry.field(description="The account's id.")
    name: str = strawberry.field(
        description="Unique; 3-64 characters of `a-z`, `0-9`, `-`, `_`, the first not `-` or `_`.")
    role: AccountRole = strawberry.field(description="What the account may do.")
    created_at: datetime = strawberry.field(description="When the account was created.")

    @classmethod
    def of(cls, row: AccountRow | AccountRecord) -> Account:
        return cls(id=strawberry.ID(row.id), name=row.name, role=d.AccountRole(row.role), created_at=row.created_at)


@strawberry.type(description="One quota of an account and what the account uses of it.")
class Quota:
    resource: QuotaResource = strawberry.field(description="What is counted.")
    used: int = strawberry.field(
        description="What the account uses now: its private images in the region asked for, or its "
                    "jobs of the kind not finished yet. Above `limit` after the limit was lowered: "
                    "nothing is removed, further creations are refused.")
    limit: int = strawberry.field(
        description="The most the account may use: the limit an administrator set with `setQuota`, "
                    "else the default. For `PRIVATE_IMAGES`, the limit in each region.")

    @classmethod
    def of(cls, q: QuotaUsage) -> Quota:
        return cls(resource=q.resource, used=q.used, limit=q.limit)


@strawberry.type(description="An API token of the caller's account; its secret is shown only once.")
class ApiToken(Node):
    id: strawberry.ID = strawberry.field(
        description="The token's id, for `revokeApiToken`; not its secret.")
    name: str = strawberry.field(description="The name it was given; names need not be unique.")
    created_at: datetime = strawberry.field(description="When the token was created.")
    expires_at: datetime | None = strawberry.field(
        description="When the token stops authenticating; null: never. An expired token stays "
                    f"listed for IMS_EXPIRED_TOKEN_RETENTION (default {_RETENTION_DAYS} days), "
                    "then is deleted.")
    last_used_at: datetime | None = strawberry.field(
        description=f"When a request last authenticated with it, to within {_TOUCH_MINUTES} "
                    "minutes; null: never used.")

    @classmethod
    def of(cls, row: ApiTokenRow) -> ApiToken:
        return cls(id=strawberry.ID(row.id), name=row.name, created_at=row.created_at, expires_at=row.expires_at,
                   last_used_at=row.last_used_at)


@strawberry.type(description="The caller: the account whose API token the request carries.")
class Viewer:
    @strawberry.field(description="The caller's account.")  # type: ignore[untyped-decorator]
    async def account(self, info: Info) -> Account:
        return Account.of(await info.context.services.accounts.get(info.context.me.account_id))

    @strawberry.field(  # type: ignore[untyped-decorator]
        description="The caller's quotas, one per `QuotaResource` in the enum's order.")
    async def quotas(
        self, info: Info,
        region: Annotated[str | None, strawberry.argument(
            description="The region `PRIVATE_IMAGES` (a limit per region) is counted in; the "
                        "default region when null. One the service does not have is a top-level "
                        "error `INVALID_REGION`.",
        )] = None,
    ) -> list[Quota]:
        return [Quota.of(q) for q in await info.context.services.accounts.quotas(info.context.me.account_id, region)]

    @strawberry.field(  # type: ignore[untyped-decorator]
        description="Every API token of the caller's account, oldest first, expired ones included "
                    "until they are deleted. An account has at most IMS_TOKENS_PER_ACCOUNT live "
                    f"tokens (default {DEFAULT_TOKENS_PER_ACCOUNT}).")
    async def api_tokens(self, info: Info) -> list[ApiToken]:
        return [ApiToken.of(t) for t in await info.context.services.accounts.tokens(info.context.me)]


@strawberry.type(description="One account of a page of `accounts`.")
class AccountEdge:
    cursor: str = strawberry.field(
        description="Opaque; pass it as `after` for the accounts after this one.")
    node: Account = strawberry.field(description="The account.")


@strawberry.type(description="A page of `accounts`, ordered by id.")
class AccountConnection:
    edges: list[AccountEdge] = strawberry.field(description="This page's accounts, ordered by id.")
    page_info: PageInfo = strawberry.field(description="Where this page lies in the list.")
    total_count: int = strawberry.field(
        description="Every account of the service, whatever the page.")


# ---------------------------------------------------------------- mutations


@strawberry.input(description="The account `createAccount` makes.")
class CreateAccountInput:
    name: str = strawberry.field(
        description="Unique; 3-64 characters of `a-z`, `0-9`, `-`, `_`, the first not `-` or `_`.")
    role: AccountRole = strawberry.field(default=d.AccountRole.USER, description="What it may do.")


@strawberry.type(description="The account made, and its first API token.")
class CreateAccountSuccess:
    account: Account = strawberry.field(description="The new account.")
    token: str = strawberry.field(
        description="The new account's first API token (named `default`, never expiring), to send "
                    "as `Authorization: Bearer <token>`. Shown once; only a hash is stored.")


CreateAccountPayload = Annotated[
    CreateAccountSuccess | ValidationError | ForbiddenError | ConflictError,
    strawberry.union(
        "CreateAccountPayload", description="What `createAccount` answers: an account or why not."),
]


@strawberry.input(description="The API token `createApiToken` makes.")
class CreateApiTokenInput:
    name: str = strawberry.field(
        description=f"1-{TOKEN_NAME_MAX} printable characters (no control or format character), no "
                    f"leading or trailing whitespace, not `{ENV_ADMIN_TOKEN_NAME}`; may repeat.")
    expires_in_days: int | None = strawberry.field(
        default=None,
        description=f"Days until the token expires, 1 to {TOKEN_DAYS_MAX}; null: never. Either way "
                    "it expires no later than the token the request is made with "
                    "(`apiToken.expiresAt` says when).")


@strawberry.type(description="The API token made, and its secret.")
class CreateApiTokenSuccess:
    api_token: ApiToken = strawberry.field(
        description="The new token, as `viewer.apiTokens` lists it.")
    token: str = strawberry.field(
        description="The secret to send as `Authorization: Bearer <token>`. Shown once; only its "
                    "hash is stored.")


CreateApiTokenPayload = Annotated[
    CreateApiTokenSuccess | ValidationError,
    strawberry.union(
        "CreateApiTokenPayload", description="What `createApiToken` answers: a token or why not."),
]


@strawberry.input(description="The API token `revokeApiToken` deletes.")
class RevokeApiTokenInput:
    id: strawberry.ID = strawberry.field(
        description="A token of the caller's account (`viewer.apiTokens`), the request's own too.")


@strawberry.type(description="The API token is gone.")
class RevokeApiTokenSuccess:
    revoked_id: strawberry.ID = strawberry.field(description="The id of the token deleted.")


RevokeApiTokenPayload = Annotated[
    RevokeApiTokenSuccess | NotFoundError,
    strawberry.union(
        "RevokeApiTokenPayload", description="What `revokeApiToken` answers: its id or why not."),
]


@strawberry.input(description="The quota `setQuota` sets.")
class SetQuotaInput:
    account_id: strawberry.ID = strawberry.field(description="The account whose quota changes.")
    resource: QuotaResource = strawberry.field(description="Which quota.")
    limit: int = strawberry.field(
        description=f"The new limit, 0 to {QUOTA_MAX} (for `PRIVATE_IMAGES`, in each region). What "
                    "the account uses already is kept even above it; only further use is refused.")


@strawberry.type(description="The quota as it now stands.")
class SetQuotaSuccess:
    quota: Quota = strawberry.field(
        description="The quota with its new limit; for `PRIVATE_IMAGES`, `used` is counted in the "
                    "default region.")


SetQuotaPayload = Annotated[
    SetQuotaSuccess | NotFoundError | ValidationError | ForbiddenError,
    strawberry.union(
        "SetQuotaPayload", description="What `setQuota` answers: the quota or why not."),
]


@strawberry.type
class AccountQueries:
    @strawberry.field(  # type: ignore[untyped-decorator]
        description="The caller: the account whose API token the request carries.")
    def viewer(self) -> Viewer:
        return Viewer()

    @strawberry.field(  # type: ignore[untyped-decorator]
        description="Administrators only (anyone else gets a top-level error `ADMIN_REQUIRED`): "
                    "every account of the service, ordered by id.")
    async def accounts(self, info: Info, first: First = None,
                       after: After = None) -> AccountConnection:
        with query_errors():
            page = await info.context.services.accounts.list_accounts(info.context.me, first, after)
        edges = [AccountEdge(cursor=c, node=Account.of(r)) for r, c in zip(page.items, page.cursors, strict=True)]
        return AccountConnection(
            edges=edges, page_info=PageInfo.of(page.cursors, page.has_next, page.has_previous),
            total_count=page.total,
        )


@strawberry.type
class AccountMutations:
    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Administrators only: make an account and its first API token. Errors: "
                    "`ADMIN_REQUIRED` (`ForbiddenError`), `INVALID_ACCOUNT_NAME` "
                    "(`ValidationError`), `ACCOUNT_EXISTS` (`ConflictError`).")
    async def create_account(self, info: Info, input: Annotated[CreateAccountInput, strawberry.argument(description="The new account's name and role.")]) -> CreateAccountPayload:
        async def run() -> CreateAccountSuccess:
            account, token = await info.context.services.accounts.create_account(
                info.context.me, input.name, d.AccountRole(input.role)
            )
            return CreateAccountSuccess(account=Account.of(account), token=token)

        return await payload((ValidationError, ForbiddenError, ConflictError), run())

    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Make an API token for the caller's own account. Errors (`ValidationError`): "
                    "`INVALID_NAME`, `INVALID_EXPIRY`, and `TOO_MANY_TOKENS` when the account has "
                    f"IMS_TOKENS_PER_ACCOUNT (default {DEFAULT_TOKENS_PER_ACCOUNT}) live tokens "
                    "already.")
    async def create_api_token(self, info: Info, input: Annotated[CreateApiTokenInput, strawberry.argument(description="The new token's name and lifetime.")]) -> CreateApiTokenPayload:
        async def run() -> CreateApiTokenSuccess:
            row, token = await info.context.services.accounts.create_token(
                info.context.me, input.name, input.expires_in_days
            )
            return CreateApiTokenSuccess(api_token=ApiToken.of(row), token=token)

        return await payload((ValidationError,), run())

    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Delete an API token of the caller's account: it authenticates no request from "
                    "then on, even if it is the one this request carries. Error: `TOKEN_NOT_FOUND` "
                    "(`NotFoundError`) for an id that is not a token of the caller's account.")
    async def revoke_api_token(self, info: Info, input: Annotated[RevokeApiTokenInput, strawberry.argument(description="The token to revoke.")]) -> RevokeApiTokenPayload:
        async def run() -> RevokeApiTokenSuccess:
            revoked = await info.context.services.accounts.revoke_token(info.context.me, str(input.id))
            return RevokeApiTokenSuccess(revoked_id=strawberry.ID(revoked))

        return await payload((NotFoundError,), run())

    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Administrators only: set an account's limit of one resource. Errors: "
                    "`ADMIN_REQUIRED` (`ForbiddenError`), `INVALID_QUOTA` (`ValidationError`), "
                    "`ACCOUNT_NOT_FOUND` (`NotFoundError`).")
    async def set_quota(self, info: Info, input: Annotated[SetQuotaInput, strawberry.argument(description="The account, the quota and its new limit.")]) -> SetQuotaPayload:
        async def run() -> SetQuotaSuccess:
            q = await info.context.services.accounts.set_quota(
                info.context.me, str(input.account_id), d.QuotaResource(input.resource), input.limit
            )
            return SetQuotaSuccess(quota=Quota.of(q))

        return await payload((NotFoundError, ValidationError, ForbiddenError), run())
