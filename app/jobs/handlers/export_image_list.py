"""EXPORT_IMAGE_LIST: stream the image-list CSV (`app.services.image_list`) into its bucket.

The object store writes atomically, so a re-run after a crash writes the whole file again
under the same key; the result names the object, its size and SHA-256."""

from __future__ import annotations

from typing import Any

from app.domain.enums import ImageVisibility, JobType
from app.jobs.registry import JobContext, JobFailed, JobRegistry
from app.services.image_list import csv_pieces
from app.storage.base import StorageError


async def export_image_list(ctx: JobContext) -> dict[str, Any]:
    params = ctx.params
    bucket, key, region = str(params["bucket"]), str(params["key"]), str(params["bucketRegion"])
    store = ctx.services.storage.store(region)
    rows = 0

    async def progress(written: int, total: int) -> None:
        nonlocal rows
        rows = written
        await ctx.progress(written / max(1, total), f"{written} of {total} images written")

    await ctx.progress(0.0, "listing images")
    pieces = csv_pieces(ctx.services.db, ctx.account_id, ImageVisibility(params["visibility"]), str(params["region"]),
                        progress)
    try:
        info = await store.put_stream(bucket, key, pieces)
    except StorageError as exc:
        raise JobFailed("EXPORT_WRITE_FAILED", f"Writing {bucket}/{key} failed: {exc}") from exc
    return {"bucket": bucket, "key": key, "region": region, "size": info.size, "checksum": info.checksum,
            "rows": rows}


def register(registry: JobRegistry) -> None:
    registry.register(JobType.EXPORT_IMAGE_LIST, export_image_list, on_fail=None)
