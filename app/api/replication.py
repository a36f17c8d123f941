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


@strawberry.input(description="The image to copy, and the copy's name, key and region.")
class ReplicateImageInput:
    image_id: strawberry.ID = strawberry.field(
        description="An ACTIVE image of the caller, or a SYSTEM_DISK or DATA_DISK image shared "
        "with the caller and ACCEPTED; not a public or ISO image, and at most 128 GiB of virtual "
        "size.")
    name: str = strawberry.field(
        description="The copy's name: 1-128 letters (any script), digits, `-`, `.`, `_` or "
        "spaces; no outer space.")
    description: str | None = strawberry.field(
        default="", description="The copy's description: at most 1024 characters, none of `<`, "
        "`>`, CR or LF; null or absent: empty.")
    kms_key_id: strawberry.ID | None = strawberry.field(
        default=None, description="Encrypt the copy with this key, one of the caller's own, not "
        "the source's (`SAME_KEY`). Null: unencrypted, unless `encryptWithDefaultKey`."
    )
    encrypt_with_default_key: bool | None = strawberry.field(
        default=False,
        description="Encrypt the copy with the account's default key `ims/default` (created on first use); "
        "ignored when kmsKeyId is given.",
    )
    region: str | None = strawberry.field(
        default=None, description="Another region: a cross-region replication (the image's own "
        "is `SAME_REGION`), of an unencrypted image into an unencrypted copy only. Null: the "
        "image's own region, where a FULL_ECS image cannot be replicated."
    )


ReplicateImagePayload = Annotated[
    ImageJobSuccess | NotFoundError | ValidationError | ForbiddenError | ConflictError | NotSupportedError
    | LimitExceededError | KmsKeyError,
    strawberry.union("ReplicateImagePayload",
                     description="The job and the QUEUED copy, or why nothing was started."),
]

_ERRORS = (NotFoundError, ValidationError, ForbiddenError, ConflictError, NotSupportedError, LimitExceededError,
           KmsKeyError)


@strawberry.type
class ReplicationMutations:
    """Copy an image into a new private image of the caller, in its region or another; the
    copy is QUEUED until the job ends (`app.services.replication` has the rules)."""

    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Copy an image into a new private image of the caller, QUEUED until its "
        "REPLICATE_IMAGE job ends; the copy shares no fate with the source. Owner, or an ACCEPTED "
        "member of a system or data disk image. Errors: `INVALID_NAME`, `INVALID_DESCRIPTION`, "
        "`INVALID_REGION`, `SAME_REGION`, `SAME_KEY`; `IMAGE_NOT_FOUND`; `NOT_OWNER` (a member "
        "and a FULL_ECS image); `IMAGE_NOT_ACTIVE`; `REPLICATE_NOT_SUPPORTED`, "
        "`FULL_ECS_CROSS_REGION_ONLY`, `REPLICATE_ENCRYPTED_CROSS_REGION`; `REPLICATE_TOO_LARGE`, "
        "`QUOTA_CONCURRENT_REPLICATIONS`, `QUOTA_PRIVATE_IMAGES`; `KMS_KEY_NOT_FOUND`, "
        "`KMS_ACCESS_DENIED`, `KMS_KEY_DISABLED`, `KMS_KEY_PENDING_DELETION` (the copy's key, or "
        "the source's). A failed job leaves the copy KILLED (`REPLICATE_SOURCE_INVALID`, "
        "`REPLICATE_CONVERSION_FAILED`, ...).")
    async def replicate_image(
        self, info: Info,
        input: Annotated[ReplicateImageInput, strawberry.argument(
            description="The source and the copy.")],
    ) -> ReplicateImagePayload:
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
