"""An IMPORT_IMAGE attempt overtaken by an earlier one that saved the image (on SQLite and
PostgreSQL): the job succeeds, the image keeps the manifest the earlier attempt recorded. A
last attempt that saved the image and died before recording SUCCESS: the job succeeds too."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlmodel import col

from app.datastore.chunks import CHUNK_SIZE
from app.datastore.tables import Manifest
from app.db.tables import Job
from app.db.types import utcnow
from app.db.uow import Database
from app.domain.enums import DiskFormat, ImageKind
from app.domain.images import Caller
from app.domain.jobs import MAX_ATTEMPTS
from app.jobs.handlers import import_image
from app.jobs.registry import JobContext
from app.jobs.worker import Worker
from app.services.imports import ImportRequest
from app.services.registry import Services
from tests.factories import make_account


async def test_an_import_attempt_overtaken_by_an_earlier_one_that_saved_the_image_succeeds(
    db: Database, product_services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner, _ = await make_account(db)
    me = Caller(owner.id, owner.name, owner.role)
    bucket = await product_services.storage.create_bucket(me, "imports", None)
    await product_services.storage.store(bucket.region).put_bytes(bucket.name, "disk.raw", secrets.token_bytes(CHUNK_SIZE))
    job, image = await product_services.imports.import_image(me, ImportRequest(
        bucket="imports", key="disk.raw", name="disk", min_disk_gb=1, kind=ImageKind.DATA_DISK,
        disk_format=DiskFormat.RAW,
    ))
    # Attempt 1's worker stalls past its lease; attempt 2 starts while attempt 1 still runs.
    assert await product_services.jobs.queue.claim("stalled", 0.05, frozenset({"IMPORT_IMAGE"})) is not None
    await asyncio.sleep(0.1)
    original = import_image._activate
    earlier: list[str] = []

    async def activate_overtaken(ctx: Any, row: Any, pending: Any, fmt: DiskFormat, size: int) -> None:
        # Attempt 2 has written the data; attempt 1, which wrote it too, saves the image first.
        mine = await product_services.chunks.write_pending(bucket.region, _pieces(await _read(product_services, bucket.name)))
        earlier.append(mine.manifest.id)
        await original(ctx, row, mine, fmt, size)
        await original(ctx, row, pending, fmt, size)

    monkeypatch.setattr(import_image, "_activate", activate_overtaken)
    assert await Worker(product_services, "heir").run_once()
    async with db.uow(owner.id, write=False) as uow:
        done = await uow.jobs.get(job.id)
        view = await uow.images.get_visible(image.id)
        manifests = int((await uow.session.execute(select(func.count()).select_from(Manifest))).scalar_one())
    assert done is not None and (done.status, done.error_code) == ("SUCCESS", None)
    assert view is not None and view.image.status == "ACTIVE"
    assert [d["manifestId"] for d in view.image.disks] == earlier
    assert manifests == 1  # the overtaken attempt's manifest was never recorded


async def _import_job(db: Database, product_services: Services) -> tuple[Any, Any]:
    owner, _ = await make_account(db)
    me = Caller(owner.id, owner.name, owner.role)
    bucket = await product_services.storage.create_bucket(me, "imports", None)
    await product_services.storage.store(bucket.region).put_bytes(bucket.name, "disk.raw", secrets.token_bytes(CHUNK_SIZE))
    return await product_services.imports.import_image(me, ImportRequest(
        bucket="imports", key="disk.raw", name="disk", min_disk_gb=1, kind=ImageKind.DATA_DISK,
        disk_format=DiskFormat.RAW,
    ))


async def test_a_last_attempt_that_saved_the_image_before_its_worker_died_succeeds(
    db: Database, product_services: Services
) -> None:
    job, image = await _import_job(db, product_services)
    types = frozenset({"IMPORT_IMAGE"})
    for n in range(MAX_ATTEMPTS):
        if n:
            await asyncio.sleep(0.1)  # the previous attempt's worker died: its lease lapses
        claim = await product_services.jobs.queue.claim(f"dead-{n}", 0.05 if n < MAX_ATTEMPTS - 1 else 30, types)
        assert claim is not None and claim.attempt == n + 1
    # The last attempt does the whole import, then its worker dies before recording SUCCESS.
    assert claim is not None
    write = partial(product_services.jobs.queue.progress, job.id, f"dead-{MAX_ATTEMPTS - 1}")
    assert await import_image.handle(JobContext(claim.job, claim.attempt, product_services, write)) == {"imageId": image.id}
    async with db.uow() as uow:  # the lease lapses
        await uow.session.execute(update(Job).where(col(Job.id) == job.id).values(lease_expires_at=utcnow()))
        await uow.commit()
    assert await Worker(product_services, "heir").run_once()
    async with db.uow(write=False) as uow:
        done = await uow.jobs.get(job.id)
    assert done is not None
    assert (done.status, done.error_code, done.attempts, done.result) == ("SUCCESS", None, MAX_ATTEMPTS,
                                                                           {"imageId": image.id})
    async with db.uow(done.account_id, write=False) as uow:
        view = await uow.images.get_visible(image.id)
    assert view is not None and view.image.status == "ACTIVE"


async def test_a_job_past_its_last_attempt_with_its_image_unsaved_fails_worker_lost(
    db: Database, product_services: Services
) -> None:
    job, image = await _import_job(db, product_services)
    types = frozenset({"IMPORT_IMAGE"})
    for n in range(MAX_ATTEMPTS):
        assert await product_services.jobs.queue.claim(f"dead-{n}", 0.05, types) is not None
        await asyncio.sleep(0.1)
    assert await Worker(product_services, "heir").run_once()
    async with db.uow(write=False) as uow:
        done = await uow.jobs.get(job.id)
    assert done is not None and (done.status, done.error_code) == ("FAIL", "WORKER_LOST")
    async with db.uow(done.account_id, write=False) as uow:
        view = await uow.images.get_visible(image.id)
    assert view is not None and view.image.status == "KILLED"


async def _read(product_services: Services, bucket: str) -> bytes:
    return await product_services.storage.store("region-1").get_bytes(bucket, "disk.raw")


async def _pieces(data: bytes) -> AsyncIterator[bytes]:
    yield data
