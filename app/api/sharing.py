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


@strawberry.input
class ShareImagesInput:
    image_ids: list[strawberry.ID]
    account_ids: list[strawberry.ID]


@strawberry.type
class ShareImagesSuccess:
    members: list[ImageMember]


ShareImagesPayload = Annotated[
    ShareImagesSuccess | NotFoundError | ValidationError | ForbiddenError | ConflictError | NotSupportedError
    | LimitExceededError | KmsKeyError,
    strawberry.union("ShareImagesPayload"),
]


@strawberry.input
class UnshareImagesInput:
    image_ids: list[strawberry.ID]
    account_ids: list[strawberry.ID]


@strawberry.type
class UnshareImagesSuccess:
    removed: int


# ForbiddenError is beyond the contract's union: a member (NOT_OWNER) or a user naming a
# public image (PUBLIC_IMAGE_READ_ONLY) sees the image, so NotFoundError would be a lie.
UnshareImagesPayload = Annotated[
    UnshareImagesSuccess | NotFoundError | ValidationError | ForbiddenError,
    strawberry.union("UnshareImagesPayload"),
]


@strawberry.input
class UpdateImageMembershipInput:
    image_ids: list[strawberry.ID]
    # The domain enum itself: app.api.common registers it with strawberry as MemberStatus.
    status: d.MemberStatus = strawberry.field(description="ACCEPTED or REJECTED.")


@strawberry.type
class UpdateImageMembershipSuccess:
    members: list[ImageMember]


UpdateImageMembershipPayload = Annotated[
    UpdateImageMembershipSuccess | NotFoundError | ValidationError | ForbiddenError,
    strawberry.union("UpdateImageMembershipPayload"),
]


def _ids(ids: list[strawberry.ID]) -> list[str]:
    return [str(i) for i in ids]


@strawberry.type
class SharingMutations:
    @strawberry.mutation
    async def share_images(self, info: Info, input: ShareImagesInput) -> ShareImagesPayload:
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

    @strawberry.mutation
    async def unshare_images(self, info: Info, input: UnshareImagesInput) -> UnshareImagesPayload:
        async def run() -> UnshareImagesSuccess:
            removed = await info.context.services.sharing.unshare(
                info.context.me, _ids(input.image_ids), _ids(input.account_ids)
            )
            info.context.clear_loaders()
            return UnshareImagesSuccess(removed=removed)

        return await payload((NotFoundError, ValidationError, ForbiddenError), run())

    @strawberry.mutation
    async def update_image_membership(
        self, info: Info, input: UpdateImageMembershipInput
    ) -> UpdateImageMembershipPayload:
        async def run() -> UpdateImageMembershipSuccess:
            rows = await info.context.services.sharing.update_membership(
                info.context.me, _ids(input.image_ids), d.MemberStatus(input.status)
            )
            info.context.clear_loaders()
            return UpdateImageMembershipSuccess(members=[ImageMember.of(r) for r in rows])

        return await payload((NotFoundError, ValidationError, ForbiddenError), run())
