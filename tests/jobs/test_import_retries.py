"""An IMPORT_IMAGE attempt overtaken by an earlier one that saved the image (on SQLite and
PostgreSQL): the job succeeds, the image keeps the manifest the earlier attempt recorded."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from app.bootstrap import build_services
from app.config import Settings
from app.datastore.chunks import CHUNK_SIZE
from app.datastore.tables import Manifest
from app.db.uow import Database
from app.domain.enums import DiskFormat, ImageKind
from app.domain.images import Caller
from app.jobs.handlers import import_image
from app.jobs.worker import Worker
from app.services.imports import ImportRequest
from app.services.registry import Services
from app.storage.factory import service_bucket
from tests.factories import make_account


@pytest.fixture
async def services(settings: Settings, db: Database) -> AsyncIterator[Services]:
    built = build_services(settings, db)
    for region, store in built.chunks.stores.items():
        await store.create_bucket(service_bucket(region))
    yield built
    await built.close()


async def test_an_import_attempt_overtaken_by_an_earlier_one_that_saved_the_image_succeeds(
    db: Database, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner, _ = await make_account(db)
    me = Caller(owner.id, owner.name, owner.role)
    bucket = await services.storage.create_bucket(me, "imports", None)
    await services.storage.store(bucket.region).put_bytes(bucket.name, "disk.raw", secrets.token_bytes(CHUNK_SIZE))
    job, image = await services.imports.import_image(me, ImportRequest(
        bucket="imports", key="disk.raw", name="disk", min_disk_gb=1, kind=ImageKind.DATA_DISK,
        disk_format=DiskFormat.RAW,
    ))
    # Attempt 1's worker stalls past its lease; attempt 2 starts while attempt 1 still runs.
    assert await services.jobs.queue.claim("stalled", 0.05, frozenset({"IMPORT_IMAGE"})) is not None
    await asyncio.sleep(0.1)
    original = import_image._activate
    earlier: list[str] = []

    async def activate_overtaken(ctx: Any, row: Any, pending: Any, fmt: DiskFormat, size: int) -> None:
        # Attempt 2 has written the data; attempt 1, which wrote it too, saves the image first.
        mine = await services.chunks.write_pending(bucket.region, _pieces(await _read(services, bucket.name)))
        earlier.append(mine.manifest.id)
        await original(ctx, row, mine, fmt, size)
        await original(ctx, row, pending, fmt, size)

    monkeypatch.setattr(import_image, "_activate", activate_overtaken)
    assert await Worker(services, "heir").run_once()
    async with db.uow(owner.id, write=False) as uow:
        done = await uow.jobs.get(job.id)
        view = await uow.images.get_visible(image.id)
        manifests = int((await uow.session.execute(select(func.count()).select_from(Manifest))).scalar_one())
    assert done is not None and (done.status, done.error_code) == ("SUCCESS", None)
    assert view is not None and view.image.status == "ACTIVE"
    assert [d["manifestId"] for d in view.image.disks] == earlier
    assert manifests == 1  # the overtaken attempt's manifest was never recorded


async def _read(services: Services, bucket: str) -> bytes:
    return await services.storage.store("region-1").get_bytes(bucket, "disk.raw")


async def _pieces(data: bytes) -> AsyncIterator[bytes]:
    yield data
