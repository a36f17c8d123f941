"""Jobs as callers see them (their own only), and enqueueing from other services."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass
from typing import Any

from app.db.tables import Job
from app.db.types import new_id, utcnow
from app.db.uow import Database, UnitOfWork
from app.domain.enums import JobStatus, JobType
from app.domain.images import Caller
from app.domain.jobs import TERMINAL_STATUSES, JobQuery
from app.domain.pagination import decode_time_cursor, encode_cursor
from app.domain.rules import validate_page_size
from app.errors import NotFound
from app.jobs.events import EventBus
from app.jobs.queue import JobQueue
from app.jobs.registry import JobRegistry

_ORDERING = "jobs:created_at:DESC"
#: A watcher re-reads its job after this long without a notification.
WATCH_POLL_SECONDS = 2.0


@dataclass
class JobPage:
    items: list[Job]
    has_next: bool
    has_previous: bool
    total: int | None
    cursors: list[str]


def _visible_state(job: Job) -> tuple[Any, ...]:
    """What a `jobUpdated` subscriber is told about: a heartbeat changes none of it."""
    return (job.status, job.progress, job.step, job.error_code, job.finished_at, job.attempts)


class JobService:
    def __init__(
        self, db: Database, events: EventBus, registry: JobRegistry, *, watch_poll_seconds: float = WATCH_POLL_SECONDS
    ) -> None:
        self.db = db
        self.events = events
        self.registry = registry
        self.queue = JobQueue(db, events)
        self.watch_poll_seconds = watch_poll_seconds

    async def enqueue(
        self, uow: UnitOfWork, account_id: str, job_type: JobType | str, *,
        params: dict[str, Any] | None = None, image_ids: Iterable[str] = (),
    ) -> Job:
        """Add an INIT job in `uow`'s transaction (the caller commits it together with the rows
        the job will work on, e.g. the QUEUED images it creates). `params` are ids and options,
        never secrets: they are stored as they are."""
        now = utcnow()
        job = Job(
            id=new_id("job"), account_id=account_id,
            type=job_type.value if isinstance(job_type, JobType) else job_type,
            status=JobStatus.INIT.value, params=dict(params or {}), image_ids=list(dict.fromkeys(image_ids)),
            created_at=now, updated_at=now,
        )
        await uow.jobs.add(job)
        await self.events.publish(uow.session, job.id)
        return job

    async def get(self, caller: Caller, job_id: str) -> Job:
        async with self.db.uow(caller.account_id, write=False) as uow:
            job = await uow.jobs.get_visible(job_id)
        if job is None:
            raise NotFound("JOB_NOT_FOUND", resource_id=job_id)
        return job

    async def list(
        self, caller: Caller, query: JobQuery, first: int | None, after: str | None, *, with_total: bool
    ) -> JobPage:
        """The caller's jobs, newest first."""
        size = validate_page_size(first)
        cursor = decode_time_cursor(after, _ORDERING)
        async with self.db.uow(caller.account_id, write=False) as uow:
            items, has_next, total = await uow.jobs.page(query, size, cursor, with_total=with_total)
        cursors = [encode_cursor(_ORDERING, j.created_at, j.id) for j in items]
        return JobPage(items, has_next, cursor is not None, total, cursors)

    async def watch(self, caller: Caller, job_id: str) -> AsyncGenerator[Job, None]:
        """The job now, then at every visible change, ending after SUCCESS or FAIL (or when the
        job disappears). NotFound before the first item when the caller may not see it."""
        async with self.events.subscribe(job_id) as changes:
            # Subscribed before the first read: a change between the two is not lost.
            job = await self.get(caller, job_id)
            yield job
            seen = _visible_state(job)
            while job.status not in TERMINAL_STATUSES:
                await changes.wait(self.watch_poll_seconds)
                async with self.db.uow(caller.account_id, write=False) as uow:
                    latest = await uow.jobs.get_visible(job_id)
                if latest is None:
                    return
                job = latest
                if _visible_state(job) != seen:
                    seen = _visible_state(job)
                    yield job
