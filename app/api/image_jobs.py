"""What every image-creating mutation returns: the job and the new images."""

from __future__ import annotations

from typing import Annotated

import strawberry

from app.api.common import OsType
from app.api.errors import (
    ConflictError,
    ForbiddenError,
    KmsKeyError,
    LimitExceededError,
    NotFoundError,
    NotSupportedError,
    ValidationError,
)
from app.api.image_types import Image
from app.api.jobs import Job


@strawberry.type
class ImageJobSuccess:
    job: Job
    images: list[Image] = strawberry.field(description="The new images, in QUEUED or SAVING status until the job ends.")


@strawberry.input
class OperatingSystemInput:
    type: OsType
    platform: str
    version: str
    bits: int = 64


CREATE_IMAGE_ERRORS: tuple[type, ...] = (
    NotFoundError, ValidationError, ConflictError, ForbiddenError, NotSupportedError, LimitExceededError, KmsKeyError,
)

CreateImagePayload = Annotated[
    ImageJobSuccess | NotFoundError | ValidationError | ConflictError | ForbiddenError | NotSupportedError
    | LimitExceededError | KmsKeyError,
    strawberry.union("CreateImagePayload"),
]
