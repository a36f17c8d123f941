"""KMS keys and grants: types, the `kmsKeys` query and the key and grant mutations."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated

import strawberry

from app.api.common import AccountRef, After, First, Node, PageInfo, describe_enum
from app.api.context import Info
from app.api.errors import ConflictError, NotFoundError, ValidationError, payload
from app.domain.images import Caller
from app.domain.rules import DESCRIPTION_MAX
from app.kms import port
from app.kms.rules import ALIAS_MAX, PENDING_DAYS_DEFAULT, PENDING_DAYS_MAX, PENDING_DAYS_MIN

# describe_enum registers the port's enums under the contract's names and returns them
# unchanged; the aliases keep the annotations plain classes for mypy.
describe_enum(port.KeyState, "The state of a KMS key.", {
    port.KeyState.ENABLED: "In use: data can be encrypted with it and read.",
    port.KeyState.DISABLED: ("Kept, but every operation that must read or encrypt data with it "
                             "fails with `KmsKeyError KMS_KEY_DISABLED` until `enableKmsKey`."),
    port.KeyState.PENDING_DELETION: (
        "To be destroyed at `deletionDate`, unusable meanwhile (`KMS_KEY_PENDING_DELETION`); "
        "`cancelKmsKeyDeletion` saves it. Once destroyed, data encrypted with it can never be "
        "read again."),
}, name="KmsKeyState")
describe_enum(port.GrantOperation, "What a grant lets its grantee do with a key.", {
    port.GrantOperation.DESCRIBE_KEY: ("See the key (`kmsKeys`, `node`), with the grantee's own "
                                       "grants only."),
    port.GrantOperation.DECRYPT_DATA_KEY: (
        "Read data encrypted with the key: use images encrypted with it that are shared with the "
        "grantee. Sharing such an image needs every recipient to hold it."),
}, name="KmsGrantOperation")
KmsKeyState = port.KeyState
KmsGrantOperation = port.GrantOperation


@strawberry.type(description="A permission a key's owner gives another account to use the key.")
class KmsGrant:
    id: strawberry.ID = strawberry.field(description="The grant's id, for `revokeKmsGrant`.")
    grantee: AccountRef = strawberry.field(description="The account the key is granted to.")
    operations: list[KmsGrantOperation] = strawberry.field(
        description="What the grantee may do, each once, in the enum's order.")
    created_at: datetime = strawberry.field(description="When the grant was made.")

    @classmethod
    def of(cls, g: port.GrantInfo) -> KmsGrant:
        return cls(
            id=strawberry.ID(g.id), grantee=AccountRef(id=strawberry.ID(g.grantee_account_id), name=g.grantee_name),
            operations=list(g.operations), created_at=g.created_at,
        )


@strawberry.type(description="A customer master key: it wraps the data keys that encrypt images.")
class KmsKey(Node):
    id: strawberry.ID = strawberry.field(description="The key's id, as `kmsKeyId` inputs take it.")
    alias: str = strawberry.field(
        description="Its name, unique among the owner's keys; `ims/default` for the default key.")
    description: str = strawberry.field(description="What the owner wrote about it; may be empty.")
    state: KmsKeyState = strawberry.field(description="Whether the key can be used now.")
    is_default: bool = strawberry.field(
        description="The account's default key (`ims/default`), made on first use "
                    "(`encryptWithDefaultKey`); images encrypted with it cannot be shared."
    )
    grants: list[KmsGrant] = strawberry.field(
        description="Every grant, oldest first, for the key's owner; an account the key is granted "
                    "to sees only its own."
    )
    created_at: datetime = strawberry.field(description="When the key was created.")
    deletion_date: datetime | None = strawberry.field(
        description="When a key `PENDING_DELETION` is destroyed; null in other states.")

    @classmethod
    def of(cls, k: port.KeyInfo) -> KmsKey:
        return cls(
            id=strawberry.ID(k.id), alias=k.alias, description=k.description, state=k.state,
            is_default=k.is_default, grants=[KmsGrant.of(g) for g in k.grants], created_at=k.created_at,
            deletion_date=k.deletion_date,
        )


@strawberry.type(description="One key of a page of `kmsKeys`.")
class KmsKeyEdge:
    cursor: str = strawberry.field(
        description="Opaque; pass it as `after` for the keys after this one.")
    node: KmsKey = strawberry.field(description="The key.")


@strawberry.type(description="A page of `kmsKeys`, oldest first.")
class KmsKeyConnection:
    edges: list[KmsKeyEdge] = strawberry.field(description="This page's keys, oldest first.")
    page_info: PageInfo = strawberry.field(description="Where this page lies in the list.")
    total_count: int = strawberry.field(description="Every key the caller sees, whatever the page.")


@strawberry.type
class KmsQueries:
    @strawberry.field(  # type: ignore[untyped-decorator]
        description="The caller's keys and the keys granted to it with `DESCRIBE_KEY`, oldest "
                    "first; not the keys past their deletion date.")
    async def kms_keys(self, info: Info, first: First = None,
                       after: After = None) -> KmsKeyConnection:
        page = await info.context.services.kms.list_keys(info.context.me, first, after)
        edges = [KmsKeyEdge(cursor=c, node=KmsKey.of(k)) for k, c in zip(page.items, page.cursors, strict=True)]
        return KmsKeyConnection(
            edges=edges, page_info=PageInfo.of(page.cursors, page.has_next, bool(after)),
            total_count=page.total,
        )


# ---------------------------------------------------------------- mutations


@strawberry.input(description="The key `createKmsKey` makes.")
class CreateKmsKeyInput:
    alias: str = strawberry.field(
        description=f"1-{ALIAS_MAX} letters, digits, `/`, `_` or `-`, unique among the caller's "
                    "keys; aliases starting with `ims/` (in any case) are the service's.")
    description: str | None = strawberry.field(
        default="",
        description=f"At most {DESCRIPTION_MAX} characters, no `<`, `>`, CR or LF; null: empty.")


@strawberry.type(description="The key as it now stands.")
class KmsKeySuccess:
    key: KmsKey = strawberry.field(description="The key, its state and grants after the change.")


CreateKmsKeyPayload = Annotated[
    KmsKeySuccess | ValidationError | ConflictError,
    strawberry.union(
        "CreateKmsKeyPayload", description="What `createKmsKey` answers: the key or why not."),
]


@strawberry.input(description="The key whose state `enableKmsKey`, `disableKmsKey`, "
                              "`scheduleKmsKeyDeletion` or `cancelKmsKeyDeletion` changes.")
class KmsKeyStateInput:
    key_id: strawberry.ID = strawberry.field(
        description="A key the caller owns; one only granted to it is `KMS_KEY_NOT_FOUND`.")
    pending_days: int | None = strawberry.field(
        default=None,
        description=f"Days before a scheduled deletion takes effect: {PENDING_DAYS_MIN} to "
                    f"{PENDING_DAYS_MAX}, default {PENDING_DAYS_DEFAULT}. Only "
                    "`scheduleKmsKeyDeletion` takes it: given to the others, it is "
                    "`INVALID_PENDING_DAYS`.",
    )


KmsKeyStatePayload = Annotated[
    KmsKeySuccess | NotFoundError | ConflictError | ValidationError,
    strawberry.union(
        "KmsKeyStatePayload", description="What a change of state answers: the key or why not."),
]


@strawberry.input(description="The grant `createKmsGrant` makes.")
class CreateKmsGrantInput:
    key_id: strawberry.ID = strawberry.field(
        description="A key the caller owns, other than its default key.")
    grantee_account_id: strawberry.ID = strawberry.field(
        description="The account to grant it to; not the caller.")
    operations: list[KmsGrantOperation] = strawberry.field(
        description="What the grantee may do: at least one; repeats count once.")


@strawberry.type(description="The grant made (or the identical one that existed).")
class KmsGrantSuccess:
    grant: KmsGrant = strawberry.field(description="The grant.")


CreateKmsGrantPayload = Annotated[
    KmsGrantSuccess | NotFoundError | ValidationError,
    strawberry.union(
        "CreateKmsGrantPayload", description="What `createKmsGrant` answers: a grant or why not."),
]


@strawberry.input(description="The grant `revokeKmsGrant` deletes.")
class RevokeKmsGrantInput:
    key_id: strawberry.ID = strawberry.field(description="A key the caller owns.")
    grant_id: strawberry.ID = strawberry.field(description="A grant on that key (`KmsKey.grants`).")


@strawberry.type(description="The grant is gone.")
class RevokeKmsGrantSuccess:
    revoked_id: strawberry.ID = strawberry.field(description="The id of the grant deleted.")


RevokeKmsGrantPayload = Annotated[
    RevokeKmsGrantSuccess | NotFoundError,
    strawberry.union(
        "RevokeKmsGrantPayload", description="What `revokeKmsGrant` answers: its id or why not."),
]

StateChange = Callable[[Caller, str, "int | None"], Awaitable[port.KeyInfo]]
_STATE_ERRORS = (NotFoundError, ConflictError, ValidationError)


async def _change_state(change: StateChange, info: Info, input: KmsKeyStateInput) -> KmsKeyStatePayload:
    async def run() -> KmsKeySuccess:
        key = await change(info.context.me, str(input.key_id), input.pending_days)
        return KmsKeySuccess(key=KmsKey.of(key))

    return await payload(_STATE_ERRORS, run())


@strawberry.type
class KmsMutations:
    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Make an `ENABLED` key of the caller's. Errors: `INVALID_KMS_ALIAS`, "
                    "`KMS_ALIAS_RESERVED`, `INVALID_DESCRIPTION` (`ValidationError`); "
                    "`KMS_ALIAS_EXISTS` (`ConflictError`).")
    async def create_kms_key(self, info: Info, input: Annotated[CreateKmsKeyInput, strawberry.argument(description="The new key's alias and description.")]) -> CreateKmsKeyPayload:
        async def run() -> KmsKeySuccess:
            key = await info.context.services.kms.create_key(info.context.me, input.alias, input.description or "")
            return KmsKeySuccess(key=KmsKey.of(key))

        return await payload((ValidationError, ConflictError), run())

    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Owner only: a `DISABLED` key becomes `ENABLED` (an `ENABLED` one stays so). "
                    "Errors: `KMS_KEY_NOT_FOUND` (`NotFoundError`); `KMS_KEY_PENDING_DELETION` "
                    "(`ConflictError`: cancel the deletion first); `INVALID_PENDING_DAYS` "
                    "(`ValidationError`).")
    async def enable_kms_key(self, info: Info, input: Annotated[KmsKeyStateInput, strawberry.argument(description="The key to enable.")]) -> KmsKeyStatePayload:
        return await _change_state(info.context.services.kms.enable_key, info, input)

    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Owner only: the key becomes `DISABLED` (a `DISABLED` one stays so); data "
                    "encrypted with it cannot be read until it is enabled again. Errors: "
                    "`KMS_KEY_NOT_FOUND` (`NotFoundError`); `KMS_DEFAULT_KEY_MANAGED`, "
                    "`KMS_KEY_PENDING_DELETION` (`ConflictError`); `INVALID_PENDING_DAYS` "
                    "(`ValidationError`).")
    async def disable_kms_key(self, info: Info, input: Annotated[KmsKeyStateInput, strawberry.argument(description="The key to disable.")]) -> KmsKeyStatePayload:
        return await _change_state(info.context.services.kms.disable_key, info, input)

    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Owner only: the key becomes `PENDING_DELETION`, to be destroyed `pendingDays` "
                    "from now (`deletionDate`); data encrypted with it can never be read after "
                    "that. Errors: `KMS_KEY_NOT_FOUND` (`NotFoundError`); "
                    "`KMS_DEFAULT_KEY_MANAGED`, `KMS_KEY_PENDING_DELETION` (already scheduled) "
                    "(`ConflictError`); `INVALID_PENDING_DAYS` (`ValidationError`).")
    async def schedule_kms_key_deletion(self, info: Info, input: Annotated[KmsKeyStateInput, strawberry.argument(description="The key to delete, and in how many days.")]) -> KmsKeyStatePayload:
        return await _change_state(info.context.services.kms.schedule_deletion, info, input)

    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Owner only: a key `PENDING_DELETION` is kept, `DISABLED` (enable it to use it "
                    "again). Errors: `KMS_KEY_NOT_FOUND` (`NotFoundError`, also once past its "
                    "deletion date); `KMS_KEY_NOT_PENDING_DELETION` (`ConflictError`); "
                    "`INVALID_PENDING_DAYS` (`ValidationError`).")
    async def cancel_kms_key_deletion(self, info: Info, input: Annotated[KmsKeyStateInput, strawberry.argument(description="The key whose scheduled deletion is cancelled.")]) -> KmsKeyStatePayload:
        return await _change_state(info.context.services.kms.cancel_deletion, info, input)

    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Owner only: let another account use the key. Asking again for the same "
                    "operations returns the existing grant; other operations make another grant. "
                    "Errors: `KMS_KEY_NOT_FOUND`, `ACCOUNT_NOT_FOUND` (`NotFoundError`); "
                    "`INVALID_GRANT_OPERATIONS`, `KMS_GRANT_TO_SELF`, "
                    "`KMS_DEFAULT_KEY_NOT_GRANTABLE` (`ValidationError`).")
    async def create_kms_grant(self, info: Info, input: Annotated[CreateKmsGrantInput, strawberry.argument(description="The key, the account granted, and the operations it may use.")]) -> CreateKmsGrantPayload:
        async def run() -> KmsGrantSuccess:
            grant = await info.context.services.kms.create_grant(
                info.context.me, str(input.key_id), str(input.grantee_account_id),
                [port.GrantOperation(op) for op in input.operations],
            )
            return KmsGrantSuccess(grant=KmsGrant.of(grant))

        return await payload((NotFoundError, ValidationError), run())

    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Owner only: delete a grant; the grantee loses what it gave from then on. "
                    "Errors: `KMS_KEY_NOT_FOUND`, `GRANT_NOT_FOUND` (`NotFoundError`).")
    async def revoke_kms_grant(self, info: Info, input: Annotated[RevokeKmsGrantInput, strawberry.argument(description="The grant to revoke.")]) -> RevokeKmsGrantPayload:
        async def run() -> RevokeKmsGrantSuccess:
            revoked = await info.context.services.kms.revoke_grant(
                info.context.me, str(input.key_id), str(input.grant_id)
            )
            return RevokeKmsGrantSuccess(revoked_id=strawberry.ID(revoked))

        return await payload((NotFoundError,), run())
