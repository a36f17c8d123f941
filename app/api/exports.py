"""`exportImage` (an image into a bucket as QCOW2, VMDK, VHD or RAW) and `exportImageList`
(the image list as CSV): each answers with the job, whose `object` is the file once it ends."""

from __future__ import annotations

from typing import Annotated

import strawberry

from app.api.common import ImageVisibility, describe_enum
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

# describe_enum returns the enum unchanged; the alias keeps annotations plain classes for mypy.
describe_enum(d.ExportFormat, "The file format `exportImage` writes.", {
    d.ExportFormat.QCOW2: "QEMU's copy-on-write format (KVM, OpenStack).",
    d.ExportFormat.VMDK: "VMware's VMDK, streamOptimized (compressed).",
    d.ExportFormat.VHD: "Microsoft's VHD, sized exactly to the image's virtual size.",
    d.ExportFormat.RAW: "The bare disk, as large as the image's virtual size.",
})
ExportFormat = d.ExportFormat


@strawberry.input(description="Which image to export, where to, and in which format.")
class ExportImageInput:
    image_id: strawberry.ID = strawberry.field(
        description="One of the caller's own private, unencrypted, `ACTIVE` system or data disk "
        "images, of a virtual size below 1 TiB."
    )
    bucket: str = strawberry.field(
        description="A bucket of the caller (`BUCKET_NOT_FOUND`) in the image's region "
        "(`BUCKET_REGION_MISMATCH`)."
    )
    key: str = strawberry.field(
        description="The object to write, replaced if it exists: 1-1024 bytes of UTF-8 in "
        "`/`-separated segments of 1-255 bytes, none `.` or `..` (`INVALID_OBJECT_KEY`). No object "
        "may lie under it nor stand at one of its prefixes (`OBJECT_KEY_COLLISION`)."
    )
    format: ExportFormat = strawberry.field(
        default=d.ExportFormat.QCOW2, description="The file's format."
    )


@strawberry.type(description="The export is accepted and runs as a job.")
class ExportJobSuccess:
    job: Job = strawberry.field(
        description="Follow it with `job(id:)` or `jobUpdated`; at `SUCCESS` its `object` is the "
        "file written (bucket, key, size, checksum, download URL), at `FAIL` its `error` says why."
    )


@strawberry.input(description="Which image list to write, and where.")
class ExportImageListInput:
    visibility: ImageVisibility = strawberry.field(
        description="PRIVATE: the caller's own private images of the region; PUBLIC: the region's "
        "public images. SHARED is `INVALID_VISIBILITY`."
    )
    region: str | None = strawberry.field(
        default=None,
        description="The region whose images are listed; null: the default region. An unknown "
        "region is `INVALID_REGION`.",
    )
    bucket: str | None = strawberry.field(
        default=None,
        description="Write the CSV into this bucket of the caller (`BUCKET_NOT_FOUND`), any "
        "region, as `<private|public>-images-<region>-<UTC yyyymmddHHMMSS>.csv` at its top level; "
        "null: a bucket of the service's own, downloadable by the caller.",
    )


ExportImagePayload = Annotated[
    ExportJobSuccess | NotFoundError | ValidationError | ForbiddenError | ConflictError | NotSupportedError,
    strawberry.union(
        "ExportImagePayload",
        description="The export job, or the error that refused the export (no job was started).",
    ),
]
ExportImageListPayload = Annotated[
    ExportJobSuccess | NotFoundError | ValidationError,
    strawberry.union(
        "ExportImageListPayload",
        description="The list's job, or the error that refused the request (no job was started).",
    ),
]


@strawberry.type
class ExportMutations:
    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Export a private image into a bucket of the caller in its region; the job's "
        "`object` is the file once it ends. The image's owner only, one export of an image at a "
        "time. Errors: `IMAGE_NOT_FOUND`, `BUCKET_NOT_FOUND`; `INVALID_OBJECT_KEY`, "
        "`BUCKET_REGION_MISMATCH`, `OBJECT_KEY_COLLISION`; `NOT_OWNER`; `IMAGE_NOT_ACTIVE`, "
        "`EXPORT_IN_PROGRESS`; `EXPORT_NOT_SUPPORTED` (public, FULL_ECS, ISO or encrypted images, "
        "or a licensed public platform in the image's origin), `EXPORT_TOO_LARGE` (1 TiB or more). "
        "The job fails with `EXPORT_CONVERSION_FAILED`, `EXPORT_SOURCE_GONE`, "
        "`EXPORT_WRITE_FAILED` or `INSUFFICIENT_STORAGE`."
    )
    async def export_image(
        self,
        info: Info,
        input: Annotated[
            ExportImageInput, strawberry.argument(description="The image, target and format.")
        ],
    ) -> ExportImagePayload:
        request = ExportRequest(image_id=str(input.image_id), bucket=input.bucket, key=input.key,
                                format=d.ExportFormat(input.format))

        async def run() -> ExportJobSuccess:
            job = await info.context.services.exports.export(info.context.me, request)
            return ExportJobSuccess(job=Job.of(job))

        return await payload((NotFoundError, ValidationError, ForbiddenError, ConflictError, NotSupportedError), run())

    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Write the caller's PRIVATE images of a region, or the region's PUBLIC ones, "
        "as a CSV file, one row per image in creation order; the job's `object` is the file once "
        "it ends. Any account. Errors: `INVALID_VISIBILITY`, `INVALID_REGION`; `BUCKET_NOT_FOUND`. "
        "The job fails with `EXPORT_WRITE_FAILED` when the file cannot be written."
    )
    async def export_image_list(
        self,
        info: Info,
        input: Annotated[
            ExportImageListInput,
            strawberry.argument(description="Which list, and the bucket to write it into."),
        ],
    ) -> ExportImageListPayload:
        async def run() -> ExportJobSuccess:
            job = await info.context.services.image_list.export_list(
                info.context.me, d.ImageVisibility(input.visibility), input.region, input.bucket)
            return ExportJobSuccess(job=Job.of(job))

        return await payload((NotFoundError, ValidationError), run())
