"""Fixtures of the job tests: services with the test handlers, helpers to enqueue and wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import replace
from typing import Any

import pytest

from app.bootstrap import build_services
from app.config import Settings
from app.db.tables import Account, Job, JobAttempt
from app.db.uow import Database
from app.domain.enums import JobType
from app.services.registry import Services

TEST_HANDLERS = ("tests.jobs.handlers",)


@pytest.fixture
def job_settings(settings: Settings) -> Settings:
    return replace(settings, test_job_handlers=TEST_HANDLERS)


@pytest.fixture
async def services(job_settings: Settings, db: Database) -> AsyncIterator[Services]:
    built = build_services(job_settings, db)
    yield built
    await built.close()


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
