"""`exportImage` (an image into a bucket as QCOW2, VMDK, VHD or RAW) and `exportImageList`
(the image list as CSV): each answers with the job, whose `object` is the file once it ends."""

from __future__ import annotations

from typing import Annotated

import strawberry

from app.api.common import ImageVisibility
from app.api.context import Info
from app.api.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    NotSupportedError,
    ValidationError,
    payload,
)
from app.api.jobs import Job
from app.domain import enums as d
from app.services.exports import ExportRequest

# strawberry.enum returns the enum unchanged; the alias keeps annotations plain classes for mypy.
strawberry.enum(d.ExportFormat)
ExportFormat = d.ExportFormat


@strawberry.input
class ExportImageInput:
    image_id: strawberry.ID
    bucket: str
    key: str
    format: ExportFormat = d.ExportFormat.QCOW2


@strawberry.type
class ExportJobSuccess:
    job: Job


@strawberry.input
class ExportImageListInput:
    visibility: ImageVisibility = strawberry.field(description="PUBLIC or PRIVATE.")
    region: str | None = None
    bucket: str | None = strawberry.field(
        default=None,
        description="Write the CSV into this bucket of the caller; null: a bucket of the service's own, "
        "downloadable by the caller.",
    )


ExportImagePayload = Annotated[
    ExportJobSuccess | NotFoundError | ValidationError | ForbiddenError | ConflictError | NotSupportedError,
    strawberry.union("ExportImagePayload"),
]
ExportImageListPayload = Annotated[
    ExportJobSuccess | NotFoundError | ValidationError, strawberry.union("ExportImageListPayload"),
]


@strawberry.type
class ExportMutations:
    @strawberry.mutation(description="Export a private image into a bucket of the caller in its region; the job's "  # type: ignore[untyped-decorator]
                                     "`object` is the file once it ends.")
    async def export_image(self, info: Info, input: ExportImageInput) -> ExportImagePayload:
        request = ExportRequest(image_id=str(input.image_id), bucket=input.bucket, key=input.key,
                                format=d.ExportFormat(input.format))

        async def run() -> ExportJobSuccess:
            job = await info.context.services.exports.export(info.context.me, request)
            return ExportJobSuccess(job=Job.of(job))

        return await payload((NotFoundError, ValidationError, ForbiddenError, ConflictError, NotSupportedError), run())

    @strawberry.mutation(description="Write the caller's PUBLIC or PRIVATE images of a region as a CSV file; the "  # type: ignore[untyped-decorator]
                                     "job's `object` is the file once it ends.")
    async def export_image_list(self, info: Info, input: ExportImageListInput) -> ExportImageListPayload:
        async def run() -> ExportJobSuccess:
            job = await info.context.services.image_list.export_list(
                info.context.me, d.ImageVisibility(input.visibility), input.region, input.bucket)
            return ExportJobSuccess(job=Job.of(job))

        return await payload((NotFoundError, ValidationError), run())
