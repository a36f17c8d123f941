"""The event bus contract on both adapters, and JobService.watch on top of it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from app.bootstrap import build_database
from app.config import Settings
from app.db.uow import Database
from app.domain.images import Caller
from app.errors import NotFound
from app.jobs.events import EventBus, InProcessEventBus, event_bus_for
from app.jobs.events_pg import PostgresEventBus
from app.services.registry import Services
from tests.factories import make_account
from tests.jobs.conftest import enqueue
from tests.jobs.handlers import ECHO

QUIET = 0.3


async def publish(db: Database, bus: EventBus, job_id: str, *, commit: bool) -> None:
    async with db.uow() as uow:
        await bus.publish(uow.session, job_id)
        if commit:
            await uow.commit()


@contextlib.asynccontextmanager
async def second_process(settings: Settings) -> AsyncIterator[tuple[Database, EventBus]]:
    """Another database handle and bus, as a separate process would have."""
    db = build_database(settings)
    bus = event_bus_for(db)
    try:
        yield db, bus
    finally:
        await bus.close()
        await db.dispose()


async def test_bus_is_picked_by_dialect(db: Database) -> None:
    bus = event_bus_for(db)
    expected = PostgresEventBus if db.dialect == "postgresql" else InProcessEventBus
    assert isinstance(bus, expected)
    await bus.close()


async def test_delivered_on_commit_only(db: Database) -> None:
    bus = event_bus_for(db)
    try:
        async with bus.subscribe("job-a") as sub_a, bus.subscribe("job-b") as sub_b:
            await publish(db, bus, "job-a", commit=False)
            assert not await sub_a.wait(QUIET)
            await publish(db, bus, "job-a", commit=True)
            await publish(db, bus, "job-a", commit=True)
            assert await sub_a.wait(5)
            assert not await sub_b.wait(QUIET)
    finally:
        await bus.close()


async def test_postgres_notifications_cross_processes(db: Database, settings: Settings) -> None:
    if db.dialect != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    async with (
        second_process(settings) as (db_a, bus_a),
        second_process(settings) as (_db_b, bus_b),
        bus_b.subscribe("job-x") as sub,
    ):
        await publish(db_a, bus_a, "job-x", commit=False)
        assert not await sub.wait(QUIET)
        await publish(db_a, bus_a, "job-x", commit=True)
        assert await sub.wait(5)
        assert not await sub.wait(QUIET)


async def test_postgres_listener_reconnects_and_wakes_subscribers(db: Database, settings: Settings) -> None:
    if db.dialect != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    async with second_process(settings) as (db_a, bus_a), second_process(settings) as (_db_b, bus_b):
        assert isinstance(bus_b, PostgresEventBus)
        async with bus_b.subscribe("job-y") as sub:
            pid = bus_b._conn.get_server_pid()
            async with db_a.uow() as uow:
                await uow.session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            assert await sub.wait(10)  # woken after the reconnect, to re-read
            assert bus_b.listening
            await publish(db_a, bus_a, "job-y", commit=True)
            assert await sub.wait(5)


async def test_watch_yields_each_visible_change_and_ends_with_the_job(services: Services, db: Database) -> None:
    alice, _ = await make_account(db)
    me = Caller(alice.id, alice.name, alice.role)
    job = await enqueue(services, alice, ECHO)
    queue = services.jobs.queue
    seen: list[tuple[str, float, str | None]] = []

    async def follow() -> None:
        async for j in services.jobs.watch(me, job.id):
            seen.append((j.status, j.progress, j.step))

    watcher = asyncio.create_task(follow())
    await asyncio.sleep(0.2)
    assert await queue.claim("w", 30, frozenset({ECHO})) is not None
    await asyncio.sleep(0.2)
    assert await queue.heartbeat(job.id, "w", 30)  # invisible: no update
    assert await queue.progress(job.id, "w", 0.5, "half")
    await asyncio.sleep(0.2)
    assert await queue.succeed(job.id, "w", None)
    await asyncio.wait_for(watcher, 5)
    assert seen == [("INIT", 0.0, None), ("RUNNING", 0.0, None), ("RUNNING", 0.5, "half"), ("SUCCESS", 1.0, "half")]


async def test_watch_of_an_invisible_job_is_not_found(services: Services, db: Database) -> None:
    alice, _ = await make_account(db)
    bob, _ = await make_account(db)
    job = await enqueue(services, alice, ECHO)
    with pytest.raises(NotFound):
        async for _ in services.jobs.watch(Caller(bob.id, bob.name, bob.role), job.id):
            pass
