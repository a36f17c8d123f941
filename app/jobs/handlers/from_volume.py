"""CREATE_IMAGE_FROM_VOLUME: take an image made from a volume to ACTIVE.

The request took the volume's manifest reference; the image is usable by reference, so the
job only moves it QUEUED → SAVING → ACTIVE (KILLED on failure).
"""

from __future__ import annotations

from typing import Any

from app.domain.enums import JobType
from app.jobs.registry import JobContext, JobRegistry


async def create_image_from_volume(ctx: JobContext) -> dict[str, Any]:
    return await ctx.services.server_images.finish(str(ctx.params["imageId"]), None, ctx.progress)


def register(registry: JobRegistry) -> None:
    registry.register(JobType.CREATE_IMAGE_FROM_VOLUME, create_image_from_volume, saves_images=True)
