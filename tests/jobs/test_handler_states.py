"""What the job handlers leave behind when an owner's change, a stop or a broken hook meets
them mid-way (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from app.datastore.chunks import CHUNK_SIZE
from app.db.uow import Database
from app.domain.enums import DiskFormat, ImageKind
from app.domain.images import Caller
from app.jobs.handlers import import_image
from app.jobs.registry import JobContext
from app.jobs.worker import Worker
from app.services.imports import ImportRequest
from app.services.registry import Services
from tests.factories import make_account


async def test_an_import_whose_queued_image_is_tagged_as_the_job_starts_saves_it(
    db: Database, product_services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner tags (or protects) the QUEUED image between the job's read of it and its
    QUEUED → SAVING: the image's version moved, and the job went on to store the whole file
    with the image still QUEUED, then failed IMAGE_NOT_FOUND ("deleted while it was
    written") and KILLED it."""
    owner, _ = await make_account(db)
    me = Caller(owner.id, owner.name, owner.role)
    bucket = await product_services.storage.create_bucket(me, "imports", None)
    await product_services.storage.store(bucket.region).put_bytes(bucket.name, "disk.raw", secrets.token_bytes(CHUNK_SIZE))
    job, image = await product_services.imports.import_image(me, ImportRequest(
        bucket="imports", key="disk.raw", name="disk", min_disk_gb=1, kind=ImageKind.DATA_DISK,
        disk_format=DiskFormat.RAW,
    ))
    read = import_image._image

    async def read_then_tagged(ctx: JobContext, image_id: str) -> Any:
        row = await read(ctx, image_id)
        await product_services.tags.add(me, image_id, [("team", "web")])  # the owner, at that moment
        return row

    monkeypatch.setattr(import_image, "_image", read_then_tagged)
    assert await Worker(product_services, "w1").run_once()
    async with db.uow(owner.id, write=False) as uow:
        done = await uow.jobs.get(job.id)
        view = await uow.images.get_visible(image.id)
        tags = (await uow.images.tags_of([image.id]))[image.id]
    assert done is not None and (done.status, done.error_code) == ("SUCCESS", None)
    assert view is not None and view.image.status == "ACTIVE" and view.image.size_bytes == CHUNK_SIZE
    assert [(t.key, t.value) for t in tags] == [("team", "web")]
