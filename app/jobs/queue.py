"""The worker side of the job table: each operation is one transaction that also publishes
the change on the event bus (delivered when it commits)."""

from __future__ import annotations

import logging
from typing import Any

from app.db.repositories.jobs import Claim
from app.db.types import utcnow
from app.db.uow import Database
from app.domain.enums import JobStatus
from app.domain.jobs import ERROR_MESSAGE_MAX, MAX_ATTEMPTS
from app.jobs.events import EventBus
from app.jobs.registry import JobContext, OnFail

log = logging.getLogger(__name__)


class JobQueue:
    def __init__(self, db: Database, events: EventBus, *, max_attempts: int = MAX_ATTEMPTS) -> None:
        self.db = db
        self.events = events
        self.max_attempts = max_attempts

    async def claim(self, worker_id: str, lease_seconds: float, types: frozenset[str]) -> Claim | None:
        """The lease of the next claimable job of `types`, fair between accounts (see JobRepository.claim)."""
        async with self.db.uow() as uow:
            claim = await uow.jobs.claim(worker_id, lease_seconds, types, utcnow(), self.max_attempts)
            if claim is None:
                return None
            await self.events.publish(uow.session, claim.job.id)
            await uow.commit()
        return claim

    async def heartbeat(self, job_id: str, worker_id: str, lease_seconds: float) -> bool:
        async with self.db.uow() as uow:
            ok = await uow.jobs.heartbeat(job_id, worker_id, lease_seconds, utcnow())
            await uow.commit()
        return ok

    async def progress(self, job_id: str, worker_id: str, progress: float, step: str | None) -> bool:
        async with self.db.uow() as uow:
            ok = await uow.jobs.progress(job_id, worker_id, progress, step, utcnow())
            if ok:
                await self.events.publish(uow.session, job_id)
                await uow.commit()
        return ok

    async def succeed(
        self, job_id: str, worker_id: str, result: dict[str, Any] | None, *,
        ctx: JobContext | None = None, on_finish: OnFail | None = None,
    ) -> bool:
        """End the job SUCCESS (and run `on_finish` with `ctx`), in one transaction; False (and
        nothing changed) when the worker no longer holds the job."""
        async with self.db.uow() as uow:
            ok = await uow.jobs.finish(job_id, worker_id, JobStatus.SUCCESS, utcnow(), result=result)
            if ok:
                if on_finish is not None and ctx is not None:
                    await on_finish(ctx, uow)
                await self.events.publish(uow.session, job_id)
                await uow.commit()
        return ok

    async def fail(
        self, ctx: JobContext, worker_id: str, code: str, message: str, on_fail: OnFail | None,
        on_finish: OnFail | None = None,
    ) -> bool:
        """End the job FAIL and run its `on_fail` then `on_finish` hooks, in one transaction;
        False (and nothing changed) when the worker no longer holds the job."""
        async with self.db.uow() as uow:
            ok = await uow.jobs.finish(
                ctx.job_id, worker_id, JobStatus.FAIL, utcnow(),
                error_code=code[:64], error_message=message[:ERROR_MESSAGE_MAX],
            )
            if not ok:
                return False
            if on_fail is not None:
                await on_fail(ctx, uow)
            if on_finish is not None:
                await on_finish(ctx, uow)
            await self.events.publish(uow.session, ctx.job_id)
            await uow.commit()
        return True

    async def release(self, job_id: str, worker_id: str, *, counted: bool = True) -> bool:
        """Give the lease back unfinished; `counted`: the claim counted an attempt (one that
        was exhausted did not), which is then given back."""
        async with self.db.uow() as uow:
            ok = await uow.jobs.release(job_id, worker_id, utcnow(), counted=counted)
            await uow.commit()
        return ok
