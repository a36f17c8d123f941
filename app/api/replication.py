"""`replicateImage`: copy an image into a new private image of the caller (a job)."""

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
from app.api.image_jobs import ImageJobSuccess
from app.services.replication import ReplicationRequest


@strawberry.input
class ReplicateImageInput:
    image_id: strawberry.ID
    name: str
    description: str | None = ""
    kms_key_id: strawberry.ID | None = strawberry.field(
        default=None, description="Encrypt the copy with this key; null gives an unencrypted copy."
    )
    encrypt_with_default_key: bool | None = strawberry.field(
        default=False,
        description="Encrypt the copy with the account's default key `ims/default` (created on first use); "
        "ignored when kmsKeyId is given.",
    )
    region: str | None = strawberry.field(
        default=None, description="Another region: a cross-region replication. Null: the image's own region."
    )


ReplicateImagePayload = Annotated[
    ImageJobSuccess | NotFoundError | ValidationError | ForbiddenError | ConflictError | NotSupportedError
    | LimitExceededError | KmsKeyError,
    strawberry.union("ReplicateImagePayload"),
]

_ERRORS = (NotFoundError, ValidationError, ForbiddenError, ConflictError, NotSupportedError, LimitExceededError,
           KmsKeyError)


@strawberry.type
class ReplicationMutations:
    """Copy an image into a new private image of the caller, in its region or another; the
    copy is QUEUED until the job ends (`app.services.replication` has the rules)."""

    @strawberry.mutation
    async def replicate_image(self, info: Info, input: ReplicateImageInput) -> ReplicateImagePayload:
        request = ReplicationRequest(
            image_id=str(input.image_id), name=input.name, description=input.description or "",
            kms_key_id=str(input.kms_key_id) if input.kms_key_id is not None else None,
            encrypt_with_default_key=bool(input.encrypt_with_default_key), region=input.region,
        )

        async def run() -> ImageJobSuccess:
            me = info.context.me
            done = await info.context.services.replication.replicate(me, request)
            info.context.clear_loaders()
            return ImageJobSuccess.of(done.job, [done.copy], me)

        return await payload(_ERRORS, run())
