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


@strawberry.input(
    description="The operating system a new image boots; invalid values are `INVALID_OS` naming "
    "the field. Outer whitespace of `platform` and `version` is trimmed."
)
class OperatingSystemInput:
    type: OsType = strawberry.field(description="The OS family.")
    platform: str = strawberry.field(
        description="The distribution or product, 1-64 characters: e.g. Ubuntu, Debian, Windows."
    )
    version: str = strawberry.field(
        description="The release in words, 1-128 characters: e.g. `Ubuntu 22.04 server 64bit`."
    )
    bits: int = strawberry.field(default=64, description="32 or 64.")

    def spec(self) -> OsSpec:
        return OsSpec(d.OsType(self.type), self.platform, self.version, self.bits)


@strawberry.type(
    description="The request is accepted: the job that writes the new images, and those images."
)
class ImageJobSuccess:
    job: Job = strawberry.field(
        description="Follow it with `job(id:)` or `jobUpdated`: at `SUCCESS` the images are "
        "`ACTIVE`; at `FAIL` they are `KILLED` and the job's `error` says why."
    )
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
    strawberry.union(
        "CreateImagePayload",
        description="What `createImageFromServer`, `createImageFromVolume` and `importImage` "
        "answer: the job and its new images, or the error that refused the request (nothing was "
        "created).",
    ),
]


async def image_job_success(info: Info, created: ImageJob) -> ImageJobSuccess:
    """The payload of a creation: the job and its images as the caller now sees them."""
    info.context.clear_loaders()
    me = info.context.me
    views = [await info.context.services.images.get(me, i) for i in created.image_ids]
    return ImageJobSuccess(job=Job.of(created.job), images=[image_of(v, me) for v in views])
