"""importImage: a file in the caller's bucket becomes an image through an IMPORT_IMAGE job."""

from __future__ import annotations

from typing import Annotated

import strawberry

from app.api.common import BootMode, DiskFormat, ImageKind
from app.api.context import Info
from app.api.errors import payload
from app.api.image_jobs import (
    CREATE_IMAGE_ERRORS,
    CreateImagePayload,
    ImageJobSuccess,
    OperatingSystemInput,
)
from app.api.image_types import image_of
from app.api.images import TagInput
from app.api.jobs import Job
from app.db.repositories.images import VisibleImage
from app.domain import enums as d
from app.services.imports import ImportRequest


@strawberry.input(
    description="The file to import and the new image's attributes. Every rule is checked before "
    "anything is created; the file itself is inspected by the job."
)
class ImportImageInput:
    bucket: str = strawberry.field(
        description="A bucket of the caller (`BUCKET_NOT_FOUND` otherwise); the image is made in "
        "its region."
    )
    key: str = strawberry.field(
        description="The object holding the file (`INVALID_OBJECT_KEY`, `OBJECT_NOT_FOUND`): not "
        "empty (`INVALID_IMAGE_FILE`), at most 128 GiB (`FILE_TOO_LARGE`), and not a compressed "
        "archive (the job fails with `UNSUPPORTED_FORMAT`: decompress it first)."
    )
    name: str = strawberry.field(
        description="1-128 characters: letters (any script), digits, `-`, `.`, `_` and space, no "
        "leading or trailing space (`INVALID_NAME`)."
    )
    description: str | None = strawberry.field(
        default="",
        description="At most 1024 characters, none of `<`, `>`, CR or LF (`INVALID_DESCRIPTION`); "
        "null is empty.",
    )
    kind: ImageKind = strawberry.field(
        default=d.ImageKind.SYSTEM_DISK,
        description="SYSTEM_DISK, DATA_DISK or ISO (an ISO file); FULL_ECS is "
        "`IMPORT_KIND_NOT_SUPPORTED`.",
    )
    disk_format: DiskFormat | None = strawberry.field(
        default=None,
        description="Declared format; it must match the file's content. Null: detect it. `ISO` "
        "exactly when `kind` is ISO (`FORMAT_MISMATCH`).",
    )
    os: OperatingSystemInput | None = strawberry.field(
        default=None,
        description="Required for SYSTEM_DISK and ISO (`OS_REQUIRED`); ignored for DATA_DISK.",
    )
    min_disk_gb: int = strawberry.field(
        description="In GiB: 1-1024 for SYSTEM_DISK and ISO, 1-2048 for DATA_DISK "
        "(`INVALID_MIN_DISK`). A SYSTEM_DISK needs at least the file's virtual size, rounded up to "
        "GiB, or the job fails with `MIN_DISK_TOO_SMALL`."
    )
    min_ram_mb: int | None = strawberry.field(
        default=0,
        description="In MiB; 0 or null: unrestricted. `0 <= minRamMb <= maxRamMb <= 1048576` "
        "(`INVALID_RAM_RANGE`).",
    )
    max_ram_mb: int | None = strawberry.field(
        default=None, description="In MiB, at most 1048576; null: unrestricted."
    )
    boot_mode: BootMode | None = strawberry.field(
        default=d.BootMode.BIOS,
        description="The firmware servers made from the image boot with; null is BIOS.",
    )
    kms_key_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="Encrypt the image with this key: one of the caller's own, enabled "
        "(`KmsKeyError` otherwise). Null: see `encryptWithDefaultKey`.",
    )
    encrypt_with_default_key: bool | None = strawberry.field(
        default=False,
        description="Encrypt the image with the account's default key `ims/default` (created on "
        "first use); ignored when `kmsKeyId` is given. Null is false.",
    )
    tags: list[TagInput] | None = strawberry.field(
        default_factory=list, description="The image's first tags: at most 10 (`TOO_MANY_TAGS`)."
    )
    public: bool | None = strawberry.field(
        default=False,
        description="Administrators only (`ADMIN_REQUIRED`): publish the image as PUBLIC when it "
        "becomes ACTIVE (until then it is the caller's private image). It cannot be encrypted "
        "(`PUBLIC_NOT_ENCRYPTED`), and the `PRIVATE_IMAGES` quota is not checked.",
    )

    def to_request(self) -> ImportRequest:
        os = self.os.spec() if self.os is not None else None
        return ImportRequest(
            bucket=self.bucket, key=self.key, name=self.name, min_disk_gb=self.min_disk_gb,
            description=self.description or "", kind=d.ImageKind(self.kind),
            disk_format=d.DiskFormat(self.disk_format) if self.disk_format else None, os=os,
            min_ram_mb=self.min_ram_mb or 0, max_ram_mb=self.max_ram_mb,
            boot_mode=d.BootMode(self.boot_mode or d.BootMode.BIOS).value,
            kms_key_id=str(self.kms_key_id) if self.kms_key_id is not None else None,
            encrypt_with_default_key=bool(self.encrypt_with_default_key),
            tags=[(t.key, t.value) for t in self.tags or []], public=bool(self.public),
        )


@strawberry.type
class ImportMutations:
    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Import a file from a bucket of the caller as a new private image (public with "
        "`public: true`): the image is `QUEUED`, and an `IMPORT_IMAGE` job inspects and stores the "
        "file, making it `ACTIVE`, or `KILLED` with the job's `error.code` (e.g. "
        "`FORMAT_MISMATCH`, `UNSAFE_IMAGE_FILE`, `UNSUPPORTED_FORMAT`, `INVALID_IMAGE_FILE`, "
        "`MIN_DISK_TOO_SMALL`). Refused with nothing created: the input's codes, `ADMIN_REQUIRED`, "
        "`PUBLIC_NOT_ENCRYPTED`, `QUOTA_PRIVATE_IMAGES`, `QUOTA_CONCURRENT_CREATIONS`, "
        "`KMS_KEY_NOT_FOUND`, `KMS_ACCESS_DENIED`, `KMS_KEY_DISABLED`, `KMS_KEY_PENDING_DELETION`."
    )
    async def import_image(
        self,
        info: Info,
        input: Annotated[
            ImportImageInput, strawberry.argument(description="The file and the new image.")
        ],
    ) -> CreateImagePayload:
        async def run() -> ImageJobSuccess:
            me = info.context.me
            job, image = await info.context.services.imports.import_image(me, input.to_request())
            view = await info.context.services.images.get(me, image.id)
            return ImageJobSuccess(job=Job.of(job), images=[image_of(view, me)])

        return await payload(CREATE_IMAGE_ERRORS, run())


__all__ = ["ImportImageInput", "ImportMutations", "VisibleImage"]
