"""KMS keys and grants: types, the `kmsKeys` query and the key and grant mutations."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated

import strawberry

from app.api.common import AccountRef, Node, PageInfo
from app.api.context import Info
from app.api.errors import ConflictError, NotFoundError, ValidationError, payload
from app.domain.images import Caller
from app.kms import port

# strawberry.enum registers the port's enums under the contract's names and returns them
# unchanged; the aliases keep the annotations plain classes for mypy.
strawberry.enum(port.KeyState, name="KmsKeyState")
strawberry.enum(port.GrantOperation, name="KmsGrantOperation")
KmsKeyState = port.KeyState
KmsGrantOperation = port.GrantOperation


@strawberry.type
class KmsGrant:
    id: strawberry.ID
    grantee: AccountRef
    operations: list[KmsGrantOperation]
    created_at: datetime

    @classmethod
    def of(cls, g: port.GrantInfo) -> KmsGrant:
        return cls(
            id=strawberry.ID(g.id), grantee=AccountRef(id=strawberry.ID(g.grantee_account_id), name=g.grantee_name),
            operations=list(g.operations), created_at=g.created_at,
        )


@strawberry.type
class KmsKey(Node):
    id: strawberry.ID
    alias: str
    description: str
    state: KmsKeyState
    is_default: bool = strawberry.field(
        description="The account's default key (`ims/default`); images encrypted with it cannot be shared."
    )
    grants: list[KmsGrant] = strawberry.field(
        description="Every grant for the key's owner; an account the key is granted to sees only its own."
    )
    created_at: datetime
    deletion_date: datetime | None

    @classmethod
    def of(cls, k: port.KeyInfo) -> KmsKey:
        return cls(
            id=strawberry.ID(k.id), alias=k.alias, description=k.description, state=k.state,
            is_default=k.is_default, grants=[KmsGrant.of(g) for g in k.grants], created_at=k.created_at,
            deletion_date=k.deletion_date,
        )


@strawberry.type
class KmsKeyEdge:
    cursor: str
    node: KmsKey


@strawberry.type
class KmsKeyConnection:
    edges: list[KmsKeyEdge]
    page_info: PageInfo
    total_count: int


@strawberry.type
class KmsQueries:
    @strawberry.field
    async def kms_keys(self, info: Info, first: int | None = None, after: str | None = None) -> KmsKeyConnection:
        """The caller's keys and the keys granted to it with DESCRIBE_KEY, oldest first."""
        page = await info.context.services.kms.list_keys(info.context.me, first, after)
        edges = [KmsKeyEdge(cursor=c, node=KmsKey.of(k)) for k, c in zip(page.items, page.cursors, strict=True)]
        return KmsKeyConnection(
            edges=edges, page_info=PageInfo.of(page.cursors, page.has_next, bool(after)),
            total_count=page.total,
        )


# ---------------------------------------------------------------- mutations


@strawberry.input
class CreateKmsKeyInput:
    alias: str
    description: str | None = ""


@strawberry.type
class KmsKeySuccess:
    key: KmsKey


CreateKmsKeyPayload = Annotated[
    KmsKeySuccess | ValidationError | ConflictError, strawberry.union("CreateKmsKeyPayload")
]


@strawberry.input
class KmsKeyStateInput:
    key_id: strawberry.ID
    pending_days: int | None = strawberry.field(
        default=None,
        description="Days before a scheduled deletion takes effect (7 to 1096); only with scheduleKmsKeyDeletion.",
    )


KmsKeyStatePayload = Annotated[
    KmsKeySuccess | NotFoundError | ConflictError | ValidationError, strawberry.union("KmsKeyStatePayload")
]


@strawberry.input
class CreateKmsGrantInput:
    key_id: strawberry.ID
    grantee_account_id: strawberry.ID
    operations: list[KmsGrantOperation]


@strawberry.type
class KmsGrantSuccess:
    grant: KmsGrant


CreateKmsGrantPayload = Annotated[
    KmsGrantSuccess | NotFoundError | ValidationError, strawberry.union("CreateKmsGrantPayload")
]


@strawberry.input
class RevokeKmsGrantInput:
    key_id: strawberry.ID
    grant_id: strawberry.ID


@strawberry.type
class RevokeKmsGrantSuccess:
    revoked_id: strawberry.ID


RevokeKmsGrantPayload = Annotated[RevokeKmsGrantSuccess | NotFoundError, strawberry.union("RevokeKmsGrantPayload")]

StateChange = Callable[[Caller, str, "int | None"], Awaitable[port.KeyInfo]]
_STATE_ERRORS = (NotFoundError, ConflictError, ValidationError)


async def _change_state(change: StateChange, info: Info, input: KmsKeyStateInput) -> KmsKeyStatePayload:
    async def run() -> KmsKeySuccess:
        key = await change(info.context.me, str(input.key_id), input.pending_days)
        return KmsKeySuccess(key=KmsKey.of(key))

    return await payload(_STATE_ERRORS, run())


@strawberry.type
class KmsMutations:
    @strawberry.mutation
    async def create_kms_key(self, info: Info, input: CreateKmsKeyInput) -> CreateKmsKeyPayload:
        async def run() -> KmsKeySuccess:
            key = await info.context.services.kms.create_key(info.context.me, input.alias, input.description or "")
            return KmsKeySuccess(key=KmsKey.of(key))

        return await payload((ValidationError, ConflictError), run())

    @strawberry.mutation
    async def enable_kms_key(self, info: Info, input: KmsKeyStateInput) -> KmsKeyStatePayload:
        return await _change_state(info.context.services.kms.enable_key, info, input)

    @strawberry.mutation
    async def disable_kms_key(self, info: Info, input: KmsKeyStateInput) -> KmsKeyStatePayload:
        return await _change_state(info.context.services.kms.disable_key, info, input)

    @strawberry.mutation
    async def schedule_kms_key_deletion(self, info: Info, input: KmsKeyStateInput) -> KmsKeyStatePayload:
        return await _change_state(info.context.services.kms.schedule_deletion, info, input)

    @strawberry.mutation
    async def cancel_kms_key_deletion(self, info: Info, input: KmsKeyStateInput) -> KmsKeyStatePayload:
        return await _change_state(info.context.services.kms.cancel_deletion, info, input)

    @strawberry.mutation
    async def create_kms_grant(self, info: Info, input: CreateKmsGrantInput) -> CreateKmsGrantPayload:
        async def run() -> KmsGrantSuccess:
            grant = await info.context.services.kms.create_grant(
                info.context.me, str(input.key_id), str(input.grantee_account_id),
                [port.GrantOperation(op) for op in input.operations],
            )
            return KmsGrantSuccess(grant=KmsGrant.of(grant))

        return await payload((NotFoundError, ValidationError), run())

    @strawberry.mutation
    async def revoke_kms_grant(self, info: Info, input: RevokeKmsGrantInput) -> RevokeKmsGrantPayload:
        async def run() -> RevokeKmsGrantSuccess:
            revoked = await info.context.services.kms.revoke_grant(
                info.context.me, str(input.key_id), str(input.grant_id)
            )
            return RevokeKmsGrantSuccess(revoked_id=strawberry.ID(revoked))

        return await payload((NotFoundError,), run())
