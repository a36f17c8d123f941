"""CREATE_IMAGE_FROM_SERVER and CREATE_FULL_ECS_IMAGE: take the image to ACTIVE.

The request already took the disks' references (and made the FULL_ECS backup's row); the
job runs the differential pass of a backup and moves the image QUEUED → SAVING → ACTIVE, so
clients follow every image creation the same way. On failure the image is KILLED and an
unfinished backup is deleted with its references.
"""

from __future__ import annotations

from typing import Any

from app.db.uow import UnitOfWork
from app.domain.enums import JobType
from app.jobs.registry import JobContext, JobRegistry, kill_job_images


async def create_image_from_server(ctx: JobContext) -> dict[str, Any]:
    backup_id = ctx.params.get("backupId")
    return await ctx.services.server_images.finish(
        str(ctx.params["imageId"]), str(backup_id) if backup_id else None, ctx.progress
    )


async def on_fail(ctx: JobContext, uow: UnitOfWork) -> None:
    await kill_job_images(ctx, uow)
    backup_id = ctx.params.get("backupId")
    if backup_id:
        await ctx.services.server_images.discard_backup(uow, str(ctx.params["imageId"]), str(backup_id))


def register(registry: JobRegistry) -> None:
    registry.register(JobType.CREATE_IMAGE_FROM_SERVER, create_image_from_server, saves_images=True)
    registry.register(JobType.CREATE_FULL_ECS_IMAGE, create_image_from_server, on_fail=on_fail, saves_images=True)
