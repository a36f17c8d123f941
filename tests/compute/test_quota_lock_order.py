"""Images made from disks and replications of the image those disks came from take the
account's quota lock and the shared manifest's row in one order (PostgreSQL: the account's
advisory lock, then the rows). A volume made from a quick image holds the image's manifest;
replicating the image retains that manifest under the account lock, and an image made from
the volume used to retain it first and ask for the account lock after: each waited for the
other and PostgreSQL aborted one as a deadlock (a masked internal error)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest
from sqlalchemy import text

from app.config import Settings
from app.db.uow import Database
from app.domain.enums import ImageKind
from app.services.compute import VolumeSpec
from app.services.registry import Services
from app.services.replication import ReplicationRequest
from app.services.server_images import NewImage
from tests.compute.conftest import caller, new_server, volumes
from tests.factories import make_account, make_image_with_data
from tests.pg_locks import ADVISORY_WAITERS, lock_waiters


async def _queued_behind_the_account_lock(db: Database, account_id: str, first: Awaitable[Any],
                                          second: Awaitable[Any]) -> list[Any]:
    """Run `first`, then `second`, each once it waits for the account's quota lock, which a
    transaction of the test holds meanwhile; then let them go, in that order."""
    async with db.engine.connect() as holder:
        await holder.execute(text("SELECT pg_advisory_lock(hashtext(:k))"), {"k": account_id})
        try:
            one = asyncio.ensure_future(first)
            await lock_waiters(db, 1, ADVISORY_WAITERS, "the advisory lock")
            two = asyncio.ensure_future(second)
            await lock_waiters(db, 2, ADVISORY_WAITERS, "the advisory lock")
        finally:
            await holder.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": account_id})
            await holder.commit()
    return list(await asyncio.gather(one, two, return_exceptions=True))


@pytest.fixture
def postgres_only(settings: Settings) -> None:
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's row and advisory locks (SQLite serializes writers)")


@pytest.mark.usefixtures("postgres_only")
async def test_an_image_of_a_volume_and_a_replication_of_its_source_both_succeed(
    db: Database, settings: Settings, services: Services
) -> None:
    owner, _ = await make_account(db)
    source = await make_image_with_data(db, settings, owner, b"\x05" * 70_000, kind="DATA_DISK")
    volume = await services.compute.create_volume(caller(owner), VolumeSpec("data", 1, image_id=source.id))
    assert volume.manifest_id == source.disks[0]["manifestId"]  # one manifest, two holders

    replicated, imaged = await _queued_behind_the_account_lock(
        db, owner.id,
        services.replication.replicate(caller(owner), ReplicationRequest(source.id, "copy")),
        services.server_images.from_volume(caller(owner), volume.id, NewImage("of the volume", ImageKind.DATA_DISK)),
    )
    assert not isinstance(replicated, BaseException), replicated
    assert not isinstance(imaged, BaseException), imaged
    async with db.uow(write=False) as uow:
        manifest = await uow.chunks.manifest(volume.manifest_id)
    assert manifest is not None and manifest.refcount == 4  # the source, the volume, the copy, the new image


@pytest.mark.usefixtures("postgres_only")
async def test_an_image_of_a_server_and_a_replication_of_its_source_both_succeed(
    db: Database, settings: Settings, services: Services
) -> None:
    owner, _ = await make_account(db)
    source = await make_image_with_data(db, settings, owner, b"\x06" * 70_000)
    server = await new_server(services, owner, source)
    [system] = await volumes(services, owner, server)
    assert system.manifest_id == source.disks[0]["manifestId"]

    replicated, imaged = await _queued_behind_the_account_lock(
        db, owner.id,
        services.replication.replicate(caller(owner), ReplicationRequest(source.id, "copy")),
        services.server_images.from_server(caller(owner), server.id, NewImage("of the server", ImageKind.SYSTEM_DISK)),
    )
    assert not isinstance(replicated, BaseException), replicated
    assert not isinstance(imaged, BaseException), imaged
    async with db.uow(write=False) as uow:
        manifest = await uow.chunks.manifest(system.manifest_id)
    assert manifest is not None and manifest.refcount == 4  # the source, the disk, the copy, the new image
