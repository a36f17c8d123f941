"""Accounts, tokens, quotas, viewer: types, queries and mutations."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from app.api.common import AccountRole, Node, PageInfo, QuotaResource
from app.api.context import Info
from app.api.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    ValidationError,
    payload,
    query_errors,
)
from app.db.repositories.images import AccountRecord
from app.db.tables import Account as AccountRow
from app.db.tables import ApiToken as ApiTokenRow
from app.domain import enums as d
from app.services.accounts import QuotaUsage


@strawberry.type
class Account(Node):
    id: strawberry.ID
    name: str
    role: AccountRole
    created_at: datetime

    @classmethod
    def of(cls, row: AccountRow | AccountRecord) -> Account:
        return cls(id=strawberry.ID(row.id), name=row.name, role=d.AccountRole(row.role), created_at=row.created_at)


@strawberry.type
class Quota:
    resource: QuotaResource
    used: int
    limit: int

    @classmethod
    def of(cls, q: QuotaUsage) -> Quota:
        return cls(resource=q.resource, used=q.used, limit=q.limit)


@strawberry.type
class ApiToken(Node):
    id: strawberry.ID
    name: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, row: ApiTokenRow) -> ApiToken:
        return cls(id=strawberry.ID(row.id), name=row.name, created_at=row.created_at, expires_at=row.expires_at,
                   last_used_at=row.last_used_at)


@strawberry.type
class Viewer:
    @strawberry.field
    async def account(self, info: Info) -> Account:
        return Account.of(await info.context.services.accounts.get(info.context.me.account_id))

    @strawberry.field
    async def quotas(
        self, info: Info,
        region: Annotated[str | None, strawberry.argument(
            description="The region PRIVATE_IMAGES (a limit per region) is counted in; the default region when null.",
        )] = None,
    ) -> list[Quota]:
        return [Quota.of(q) for q in await info.context.services.accounts.quotas(info.context.me.account_id, region)]

    @strawberry.field
    async def api_tokens(self, info: Info) -> list[ApiToken]:
        return [ApiToken.of(t) for t in await info.context.services.accounts.tokens(info.context.me)]


@strawberry.type
class AccountEdge:
    cursor: str
    node: Account


@strawberry.type
class AccountConnection:
    edges: list[AccountEdge]
    page_info: PageInfo
    total_count: int


# ---------------------------------------------------------------- mutations


@strawberry.input
class CreateAccountInput:
    name: str
    role: AccountRole = d.AccountRole.USER


@strawberry.type
class CreateAccountSuccess:
    account: Account
    token: str = strawberry.field(description="Shown once; only a hash is stored.")


CreateAccountPayload = Annotated[
    CreateAccountSuccess | ValidationError | ForbiddenError | ConflictError, strawberry.union("CreateAccountPayload")
]


@strawberry.input
class CreateApiTokenInput:
    name: str
    expires_in_days: int | None = None


@strawberry.type
class CreateApiTokenSuccess:
    api_token: ApiToken
    token: str = strawberry.field(description="Shown once; only a hash is stored.")


CreateApiTokenPayload = Annotated[CreateApiTokenSuccess | ValidationError, strawberry.union("CreateApiTokenPayload")]


@strawberry.input
class RevokeApiTokenInput:
    id: strawberry.ID


@strawberry.type
class RevokeApiTokenSuccess:
    revoked_id: strawberry.ID


RevokeApiTokenPayload = Annotated[RevokeApiTokenSuccess | NotFoundError, strawberry.union("RevokeApiTokenPayload")]


@strawberry.input
class SetQuotaInput:
    account_id: strawberry.ID
    resource: QuotaResource
    limit: int


@strawberry.type
class SetQuotaSuccess:
    quota: Quota


SetQuotaPayload = Annotated[
    SetQuotaSuccess | NotFoundError | ValidationError | ForbiddenError, strawberry.union("SetQuotaPayload")
]


@strawberry.type
class AccountQueries:
    @strawberry.field
    def viewer(self) -> Viewer:
        return Viewer()

    @strawberry.field(description="Administrators only.")  # type: ignore[untyped-decorator]
    async def accounts(self, info: Info, first: int | None = None, after: str | None = None) -> AccountConnection:
        with query_errors():
            page = await info.context.services.accounts.list_accounts(info.context.me, first, after)
        edges = [AccountEdge(cursor=c, node=Account.of(r)) for r, c in zip(page.items, page.cursors, strict=True)]
        return AccountConnection(
            edges=edges, page_info=PageInfo.of(page.cursors, page.has_next, page.has_previous),
            total_count=page.total,
        )


@strawberry.type
class AccountMutations:
    @strawberry.mutation
    async def create_account(self, info: Info, input: CreateAccountInput) -> CreateAccountPayload:
        async def run() -> CreateAccountSuccess:
            account, token = await info.context.services.accounts.create_account(
                info.context.me, input.name, d.AccountRole(input.role)
            )
            return CreateAccountSuccess(account=Account.of(account), token=token)

        return await payload((ValidationError, ForbiddenError, ConflictError), run())

    @strawberry.mutation
    async def create_api_token(self, info: Info, input: CreateApiTokenInput) -> CreateApiTokenPayload:
        async def run() -> CreateApiTokenSuccess:
            row, token = await info.context.services.accounts.create_token(
                info.context.me, input.name, input.expires_in_days
            )
            return CreateApiTokenSuccess(api_token=ApiToken.of(row), token=token)

        return await payload((ValidationError,), run())

    @strawberry.mutation
    async def revoke_api_token(self, info: Info, input: RevokeApiTokenInput) -> RevokeApiTokenPayload:
        async def run() -> RevokeApiTokenSuccess:
            revoked = await info.context.services.accounts.revoke_token(info.context.me, str(input.id))
            return RevokeApiTokenSuccess(revoked_id=strawberry.ID(revoked))

        return await payload((NotFoundError,), run())

    @strawberry.mutation
    async def set_quota(self, info: Info, input: SetQuotaInput) -> SetQuotaPayload:
        async def run() -> SetQuotaSuccess:
            q = await info.context.services.accounts.set_quota(
                info.context.me, str(input.account_id), d.QuotaResource(input.resource), input.limit
            )
            return SetQuotaSuccess(quota=Quota.of(q))

        return await payload((NotFoundError, ValidationError, ForbiddenError), run())
