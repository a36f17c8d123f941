"""createServer locks the images it is made from in one order, whatever the request's order
(PostgreSQL): two servers naming the same data disk images in opposite orders locked them
in request order and deadlocked, and PostgreSQL aborted one (a masked internal error)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from app.config import Settings
from app.db.uow import Database
from app.services.compute import DataDiskSpec, ServerSpec
from app.services.registry import Services
from tests.compute.conftest import caller
from tests.factories import make_account, make_image_with_data
from tests.pg_locks import lock_waiters


async def test_servers_naming_data_images_in_opposite_orders_both_start(
    db: Database, settings: Settings, services: Services
) -> None:
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's row locks (SQLite serializes writers)")
    owner, _ = await make_account(db)
    systems = [await make_image_with_data(db, settings, owner, bytes([n]) * 40_000) for n in (1, 2)]
    one, two = sorted([await make_image_with_data(db, settings, owner, bytes([n]) * 40_000, kind="DATA_DISK")
                       for n in (3, 4)], key=lambda i: i.id)

    def server(system: int, data: list[str]) -> ServerSpec:
        return ServerSpec(f"s{system}", systems[system].id, data_disks=tuple(DataDiskSpec(1, d) for d in data))

    # A transaction of the test holds the first data image's row, so that the first server
    # waits holding its system image and the second takes the other data image meanwhile.
    async with db.engine.connect() as holder:
        await holder.begin()
        await holder.execute(text("SELECT id FROM images WHERE id = :i FOR UPDATE"), {"i": one.id})
        first = asyncio.ensure_future(services.compute.create_server(caller(owner), server(0, [one.id, two.id])))
        await lock_waiters(db, 1)
        second = asyncio.ensure_future(services.compute.create_server(caller(owner), server(1, [two.id, one.id])))
        await lock_waiters(db, 2)
        await holder.rollback()
    made = await asyncio.gather(first, second, return_exceptions=True)
    assert not any(isinstance(m, BaseException) for m in made), made
    async with db.uow(write=False) as uow:
        for image in (one, two):
            manifest = await uow.chunks.manifest(image.disks[0]["manifestId"])
            assert manifest is not None and manifest.refcount == 3  # the image and one disk of each server
