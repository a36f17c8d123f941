"""Sharing mutations: shareImages, unshareImages, updateImageMembership."""

from __future__ import annotations

from typing import Annotated

import strawberry

from app.api.context import Info
from app.api.errors import (
    ConflictError,
    ForbiddenError,
    KmsKeyError,
    LimitExceededError,
    NotFoundError,
    NotSupportedError,
    ValidationError,
    payload,
)
from app.api.image_types import ImageMember
from app.domain import enums as d


@strawberry.input(description="Images to share, each with every account named.")
class ShareImagesInput:
    image_ids: list[strawberry.ID] = strawberry.field(
        description="1 to 100 ACTIVE private images of the caller; an id given twice counts once.")
    account_ids: list[strawberry.ID] = strawberry.field(
        description="1 to 100 other accounts (not the caller's own); an id given twice counts "
        "once.")


@strawberry.type(description="The memberships `shareImages` made or found.")
class ShareImagesSuccess:
    members: list[ImageMember] = strawberry.field(
        description="One per (image, account) pair, by image then account in request order. A new "
        "member is PENDING; an account that was a member already keeps its status.")


ShareImagesPayload = Annotated[
    ShareImagesSuccess | NotFoundError | ValidationError | ForbiddenError | ConflictError | NotSupportedError
    | LimitExceededError | KmsKeyError,
    strawberry.union("ShareImagesPayload",
                     description="The memberships, or why nothing was shared."),
]


@strawberry.input(description="Memberships to end: each account named, of each image named.")
class UnshareImagesInput:
    image_ids: list[strawberry.ID] = strawberry.field(
        description="1 to 100 of the caller's private images; an id given twice counts once.")
    account_ids: list[strawberry.ID] = strawberry.field(
        description="1 to 100 accounts, each a member of every image named; an id given twice "
        "counts once.")


@strawberry.type(description="What `unshareImages` removed.")
class UnshareImagesSuccess:
    removed: int = strawberry.field(
        description="How many memberships were removed: one per (image, account) pair.")


# ForbiddenError is beyond the contract's union: a member (NOT_OWNER) or a user naming a
# public image (PUBLIC_IMAGE_READ_ONLY) sees the image, so NotFoundError would be a lie.
UnshareImagesPayload = Annotated[
    UnshareImagesSuccess | NotFoundError | ValidationError | ForbiddenError,
    strawberry.union("UnshareImagesPayload",
                     description="How many memberships went, or why none did."),
]


@strawberry.input(description="The caller's answer to images shared with it.")
class UpdateImageMembershipInput:
    image_ids: list[strawberry.ID] = strawberry.field(
        description="1 to 100 images shared with the caller, in any membership status; an id given "
        "twice counts once.")
    # The domain enum itself: app.api.common registers it with strawberry as MemberStatus.
    status: d.MemberStatus = strawberry.field(
        description="ACCEPTED or REJECTED (PENDING is `INVALID_MEMBER_STATUS`).")


@strawberry.type(description="The caller's memberships after `updateImageMembership`.")
class UpdateImageMembershipSuccess:
    members: list[ImageMember] = strawberry.field(
        description="The caller's membership of each image, in request order.")


UpdateImageMembershipPayload = Annotated[
    UpdateImageMembershipSuccess | NotFoundError | ValidationError | ForbiddenError,
    strawberry.union("UpdateImageMembershipPayload",
                     description="The memberships, or why none changed."),
]


def _ids(ids: list[strawberry.ID]) -> list[str]:
    return [str(i) for i in ids]


@strawberry.type
class SharingMutations:
    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Owner only: share ACTIVE private images with other accounts, every pair or "
        "none; the new members see them PENDING until they answer with `updateImageMembership`. "
        "At most 256 members per image, 10 per FULL_ECS image. Errors: `EMPTY_REQUEST`, "
        "`TOO_MANY_ITEMS`, `SHARE_WITH_SELF`; `IMAGE_NOT_FOUND`, `ACCOUNT_NOT_FOUND`; "
        "`RESHARE_FORBIDDEN`; `IMAGE_NOT_ACTIVE`; `PUBLIC_IMAGE_NOT_SHAREABLE`, "
        "`SHARE_DEFAULT_KEY_ENCRYPTED`; `SHARE_LIMIT`; `KMS_GRANT_REQUIRED` (an image under a "
        "custom key needs every recipient to hold a DECRYPT_DATA_KEY grant on it), "
        "`KMS_KEY_NOT_FOUND`.")
    async def share_images(
        self, info: Info,
        input: Annotated[ShareImagesInput, strawberry.argument(
            description="The images and the accounts.")],
    ) -> ShareImagesPayload:
        async def run() -> ShareImagesSuccess:
            rows = await info.context.services.sharing.share(
                info.context.me, _ids(input.image_ids), _ids(input.account_ids)
            )
            info.context.clear_loaders()
            return ShareImagesSuccess(members=[ImageMember.of(r) for r in rows])

        return await payload(
            (NotFoundError, ValidationError, ForbiddenError, ConflictError, NotSupportedError, LimitExceededError,
             KmsKeyError),
            run(),
        )

    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Owner only: remove accounts from images' members, every pair or none. The "
        "former members no longer see the images; what they made from them keeps working. "
        "Errors: `EMPTY_REQUEST`, `TOO_MANY_ITEMS`; `IMAGE_NOT_FOUND`, `MEMBER_NOT_FOUND`; "
        "`NOT_OWNER`, `PUBLIC_IMAGE_READ_ONLY`.")
    async def unshare_images(
        self, info: Info,
        input: Annotated[UnshareImagesInput, strawberry.argument(
            description="The images and the accounts.")],
    ) -> UnshareImagesPayload:
        async def run() -> UnshareImagesSuccess:
            removed = await info.context.services.sharing.unshare(
                info.context.me, _ids(input.image_ids), _ids(input.account_ids)
            )
            info.context.clear_loaders()
            return UnshareImagesSuccess(removed=removed)

        return await payload((NotFoundError, ValidationError, ForbiddenError), run())

    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Members only: accept or reject images shared with the caller, all or none. "
        "An ACCEPTED image is listed and usable; a REJECTED one can be accepted again until the "
        "owner unshares it. Errors: `EMPTY_REQUEST`, `TOO_MANY_ITEMS`, `INVALID_MEMBER_STATUS`; "
        "`IMAGE_NOT_FOUND`; `NOT_MEMBER` (the caller's own or a public image).")
    async def update_image_membership(
        self, info: Info,
        input: Annotated[UpdateImageMembershipInput, strawberry.argument(
            description="The images and the answer.")],
    ) -> UpdateImageMembershipPayload:
        async def run() -> UpdateImageMembershipSuccess:
            rows = await info.context.services.sharing.update_membership(
                info.context.me, _ids(input.image_ids), d.MemberStatus(input.status)
            )
            info.context.clear_loaders()
            return UpdateImageMembershipSuccess(members=[ImageMember.of(r) for r in rows])

        return await payload((NotFoundError, ValidationError, ForbiddenError), run())
