"""Fixtures of the compute tests: services over the test's database and data directory, a
worker that runs queued jobs to their end, and shortcuts to servers and their disks."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from app.compute.tables import Server, Volume
from app.config import Settings
from app.datastore.tables import Manifest
from app.db.tables import Account, Image, Job
from app.db.uow import Database
from app.domain.images import Caller
from app.jobs.worker import Worker
from app.services.compute import DataDiskSpec, ServerSpec
from app.services.registry import Services
from app.storage.factory import service_bucket
from tests.factories import built_services

MiB = 1024 * 1024
GiB = 1024 * MiB


@pytest.fixture
async def services(settings: Settings, db: Database) -> AsyncIterator[Services]:
    async with built_services(settings, db) as built:
        yield built


def caller(account: Account) -> Caller:
    return Caller(account.id, account.name, account.role)


async def run_jobs(services: Services) -> list[Job]:
    """Run every claimable job to its end (in order), as a worker would; the finished jobs."""
    worker = Worker(services, "test-worker")
    ran: list[str] = []
    while True:
        async with services.db.uow(write=False) as uow:
            before = {j.id for j in await _active(uow)}
        if not await worker.run_once():
            break
        async with services.db.uow(write=False) as uow:
            ran += sorted(before - {j.id for j in await _active(uow)})
    async with services.db.uow(write=False) as uow:
        return [job for job_id in ran if (job := await uow.jobs.get(job_id)) is not None]


async def _active(uow: Any) -> list[Job]:
    stmt = select(Job).where(Job.status.in_(("INIT", "RUNNING")))  # type: ignore[attr-defined]
    return list((await uow.session.execute(stmt)).scalars())


async def new_server(services: Services, owner: Account, image: Image, **fields: Any) -> Server:
    disks = tuple(DataDiskSpec(*d) if isinstance(d, tuple) else DataDiskSpec(d) for d in fields.pop("data_disks", ()))
    spec = ServerSpec(name=fields.pop("name", "web-1"), image_id=image.id, data_disks=disks, **fields)
    return await services.compute.create_server(caller(owner), spec)


async def volumes(services: Services, owner: Account, server: Server) -> list[Volume]:
    return (await services.compute.volumes_of(caller(owner), [server.id]))[server.id]


async def disk_bytes(services: Services, volume: Volume, data_key: bytes | None = None) -> bytes:
    return b"".join([p async for p in services.chunks.read(volume.manifest_id, data_key=data_key)])


async def manifest_bytes(services: Services, manifest_id: str, owner_id: str) -> bytes:
    """A manifest's plaintext, unsealed with its own key when it has one."""
    manifest, _ = await services.chunks.load(manifest_id)
    key = None
    if manifest.wrapped_key is not None and manifest.kms_key_id is not None:
        key = await services.key_provider.decrypt_data_key(owner_id, manifest.kms_key_id, manifest.wrapped_key)
    return b"".join([p async for p in services.chunks.read(manifest_id, data_key=key)])


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def manifest_count(db: Database) -> int:
    async with db.uow(write=False) as uow:
        return int((await uow.session.execute(select(func.count()).select_from(Manifest))).scalar_one())


async def chunk_objects(services: Services, region: str = "region-1") -> int:
    store = services.chunks.stores[region]
    return len(await store.list_objects(service_bucket(region), prefix="chunks/", limit=100000))


async def load_image(db: Database, image_id: str) -> Image | None:
    async with db.uow(write=False) as uow:
        return await uow.session.get(Image, image_id)
