"""Fixtures of the job tests: services with the test handlers, helpers to enqueue and wait."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.bootstrap import build_database, build_services
from app.config import Settings, normalize_database_url
from app.db.engine import sync_url
from app.db.migrate import upgrade
from app.db.tables import Account, Job, JobAttempt
from app.db.uow import Database
from app.domain.enums import JobType
from app.services.registry import Services
from tests.factories import built_services

TEST_HANDLERS = ("tests.jobs.handlers",)


@pytest.fixture
def job_settings(settings: Settings) -> Settings:
    return replace(settings, test_job_handlers=TEST_HANDLERS)


@pytest.fixture
async def services(job_settings: Settings, db: Database) -> AsyncIterator[Services]:
    built = build_services(job_settings, db)
    yield built
    await built.close()


@pytest.fixture
async def product_services(settings: Settings, db: Database) -> AsyncIterator[Services]:
    """Services with the product's job handlers (`services` has the tests' handlers)."""
    async with built_services(settings, db) as built:
        yield built


async def enqueue(
    services: Services, account: Account, job_type: JobType | str, params: dict[str, Any] | None = None,
    image_ids: Iterable[str] = (),
) -> Job:
    async with services.db.uow(account.id) as uow:
        job = await services.jobs.enqueue(uow, account.id, job_type, params=params, image_ids=image_ids)
        await uow.commit()
    return job


async def load(db: Database, job_id: str) -> Job:
    async with db.uow(write=False) as uow:
        job = await uow.jobs.get(job_id)
    assert job is not None
    return job


async def attempts(db: Database, job_ids: list[str]) -> list[JobAttempt]:
    async with db.uow(write=False) as uow:
        return await uow.jobs.attempts_of(job_ids)


async def wait_for(
    db: Database, job_id: str, predicate: Callable[[Job], bool], timeout: float = 20.0
) -> Job:
    """Poll the job until `predicate` holds (fails the test after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        job = await load(db, job_id)
        if predicate(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} never reached the state; last: {job.status} {job.progress}")
        await asyncio.sleep(0.05)


def finished(job: Job) -> bool:
    return job.status in ("SUCCESS", "FAIL")


@pytest.fixture
def proc_settings(settings: Settings) -> Iterator[Settings]:
    """The test's settings; on PostgreSQL pointed at a fresh database dropped afterwards
    (the shared test database may be truncated by other test runs at any moment)."""
    if settings.is_sqlite:
        yield replace(settings, test_job_handlers=TEST_HANDLERS)
        return
    base = make_url(sync_url(settings.effective_database_url))
    name = f"ims_jobs_proc_{secrets.token_hex(4)}"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = normalize_database_url(base.set(drivername="postgresql", database=name).render_as_string(hide_password=False))
    try:
        upgrade(url)
        yield replace(settings, database_url=url, test_job_handlers=TEST_HANDLERS)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
async def proc_services(proc_settings: Settings) -> AsyncIterator[Services]:
    built = build_services(proc_settings, build_database(proc_settings))
    yield built
    await built.close()
    await built.db.dispose()
