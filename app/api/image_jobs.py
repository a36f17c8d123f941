"""What every image-creating mutation answers (createImageFromServer, createImageFromVolume,
importImage, replicateImage): the job and its new images; and the OS input they share."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

import strawberry

from app.api.common import OsType
from app.api.context import Info
from app.api.errors import (
    ConflictError,
    ForbiddenError,
    KmsKeyError,
    LimitExceededError,
    NotFoundError,
    NotSupportedError,
    ValidationError,
)
from app.api.image_types import Image, image_of
from app.api.jobs import Job
from app.db.repositories.images import VisibleImage
from app.db.tables import Job as JobRow
from app.domain import enums as d
from app.domain.compute import OsSpec
from app.domain.images import Caller
from app.services.server_images import ImageJob


@strawberry.input
class OperatingSystemInput:
    type: OsType
    platform: str
    version: str
    bits: int = 64

    def spec(self) -> OsSpec:
        return OsSpec(d.OsType(self.type), self.platform, self.version, self.bits)


@strawberry.type
class ImageJobSuccess:
    job: Job
    images: list[Image] = strawberry.field(description="The new images, in QUEUED or SAVING status until the job ends.")

    @classmethod
    def of(cls, job: JobRow, images: Iterable[VisibleImage], caller: Caller) -> ImageJobSuccess:
        return cls(job=Job.of(job), images=[image_of(v, caller) for v in images])


CREATE_IMAGE_ERRORS: tuple[type, ...] = (
    NotFoundError, ValidationError, ConflictError, ForbiddenError, NotSupportedError, LimitExceededError, KmsKeyError,
)

CreateImagePayload = Annotated[
    ImageJobSuccess | NotFoundError | ValidationError | ConflictError | ForbiddenError | NotSupportedError
    | LimitExceededError | KmsKeyError,
    strawberry.union("CreateImagePayload"),
]


async def image_job_success(info: Info, created: ImageJob) -> ImageJobSuccess:
    """The payload of a creation: the job and its images as the caller now sees them."""
    info.context.clear_loaders()
    me = info.context.me
    views = [await info.context.services.images.get(me, i) for i in created.image_ids]
    return ImageJobSuccess(job=Job.of(created.job), images=[image_of(v, me) for v in views])
