"""Singleton duties: one process at a time acts; garbage collection really reclaims."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import timedelta

from app.bootstrap import build_database, build_services
from app.config import Settings
from app.datastore.chunks import CHUNK_PREFIX
from app.db.uow import Database
from app.jobs.maintenance import run_once, singleton
from app.storage.factory import service_bucket


async def _stream(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_exactly_one_process_acts(settings: Settings, db: Database) -> None:
    first = build_services(settings, db)
    other_db = build_database(settings)  # a second "process": its own engine and connections
    second = build_services(settings, other_db)
    await first.chunks.stores["region-1"].create_bucket(service_bucket("region-1"))
    try:
        async with singleton(first) as mine:
            assert mine is True
            assert await run_once(second) is None
        report = await run_once(second)
        assert report is not None and report.chunks_deleted == 0
    finally:
        await first.close()
        await second.close()
        await other_db.dispose()


async def test_maintenance_collects_released_chunks(settings: Settings, db: Database) -> None:
    services = build_services(settings, db)
    try:
        store = services.chunks.stores["region-1"]
        await store.create_bucket(service_bucket("region-1"))
        manifest = await services.chunks.write("region-1", _stream(secrets.token_bytes(70_000)))
        await services.chunks.release(manifest.id)
        report = await run_once(services)
        assert report is not None and report.chunks_deleted == 0  # inside the grace period
        services.chunks.grace = timedelta(0)
        report = await run_once(services)
        assert report is not None and report.chunks_deleted == 1
        assert await store.list_objects(service_bucket("region-1"), prefix=CHUNK_PREFIX) == []
    finally:
        await services.close()
