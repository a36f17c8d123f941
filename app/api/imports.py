"""importImage: a file in the caller's bucket becomes an image through an IMPORT_IMAGE job."""

from __future__ import annotations

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


@strawberry.input
class ImportImageInput:
    bucket: str
    key: str
    name: str
    description: str | None = ""
    kind: ImageKind = d.ImageKind.SYSTEM_DISK
    disk_format: DiskFormat | None = strawberry.field(
        default=None, description="Declared format; it must match the file's content. Null: detect it."
    )
    os: OperatingSystemInput | None = strawberry.field(default=None, description="Required for SYSTEM_DISK and ISO.")
    min_disk_gb: int
    min_ram_mb: int | None = 0
    max_ram_mb: int | None = None
    boot_mode: BootMode | None = d.BootMode.BIOS
    kms_key_id: strawberry.ID | None = strawberry.field(default=None, description="Encrypt the image with this key.")
    encrypt_with_default_key: bool | None = False
    tags: list[TagInput] | None = strawberry.field(default_factory=list)
    public: bool | None = strawberry.field(
        default=False, description="Administrators only: publish the image as PUBLIC when it becomes ACTIVE."
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
    @strawberry.mutation
    async def import_image(self, info: Info, input: ImportImageInput) -> CreateImagePayload:
        async def run() -> ImageJobSuccess:
            me = info.context.me
            job, image = await info.context.services.imports.import_image(me, input.to_request())
            view = await info.context.services.images.get(me, image.id)
            return ImageJobSuccess(job=Job.of(job), images=[image_of(view, me)])

        return await payload(CREATE_IMAGE_ERRORS, run())


__all__ = ["ImportImageInput", "ImportMutations", "VisibleImage"]
