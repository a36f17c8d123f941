"""`ImageJobSuccess`: the payload of every mutation that starts a job making new images
(create from a server or volume, import, replicate)."""

from __future__ import annotations

from collections.abc import Iterable

import strawberry

from app.api.image_types import Image, image_of
from app.api.jobs import Job
from app.db.repositories.images import VisibleImage
from app.db.tables import Job as JobRow
from app.domain.images import Caller


@strawberry.type
class ImageJobSuccess:
    job: Job
    images: list[Image] = strawberry.field(description="The new images, in QUEUED or SAVING status until the job ends.")

    @classmethod
    def of(cls, job: JobRow, images: Iterable[VisibleImage], caller: Caller) -> ImageJobSuccess:
        return cls(job=Job.of(job), images=[image_of(v, caller) for v in images])


__all__ = ["ImageJobSuccess"]
