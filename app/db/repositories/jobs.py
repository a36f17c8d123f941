"""Durable jobs: enqueue, claim with a lease, heartbeat, progress, finish, and tenant reads.

Claiming is one transaction: pick a claimable job (INIT, or RUNNING with an expired lease) and
take it with a compare-and-set UPDATE. The pick is fair between accounts: the oldest claimable
job of the account with the fewest jobs running, so that no account's batch holds every worker. On PostgreSQL the pick is
`SELECT … FOR UPDATE SKIP LOCKED`, so concurrent workers never wait on each other's
candidate; on SQLite the writer engine's `BEGIN IMMEDIATE` already serializes the whole
transaction. Every later write of a worker carries `lease_owner = :me`: a worker that lost
its lease cannot overwrite the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.tables import Image, Job, JobAttempt, JobImage
from app.domain.enums import ImageStatus, JobStatus
from app.domain.jobs import JobQuery

_INIT = JobStatus.INIT.value
_RUNNING = JobStatus.RUNNING.value


@dataclass(frozen=True)
class Claim:
    """A job a worker now holds the lease of.

    `exhausted`: the job's lease expired after its last allowed attempt; the worker must not
    run it again but finish it as FAIL WORKER_LOST. `took_over`: an earlier worker's lease on
    it expired (not: it was released by a worker that stopped).
    """

    job: Job
    attempt: int
    exhausted: bool
    took_over: bool


def _claimable(now: datetime) -> ColumnElement[bool]:
    expired = or_(col(Job.lease_expires_at).is_(None), col(Job.lease_expires_at) < now)
    return or_(col(Job.status) == _INIT, and_(col(Job.status) == _RUNNING, expired))


class JobRepository:
    def __init__(self, session: AsyncSession, caller_id: str = "") -> None:
        self.session = session
        self.caller_id = caller_id

    @property
    def _postgres(self) -> bool:
        return self.session.bind is not None and self.session.bind.dialect.name == "postgresql"

    # ---------------------------------------------------------------- enqueue

    async def add(self, job: Job) -> None:
        """Insert a job and its image links in the caller's transaction."""
        self.session.add(job)
        for position, image_id in enumerate(dict.fromkeys(job.image_ids)):
            self.session.add(JobImage(job_id=job.id, image_id=image_id, position=position))
        await self.session.flush()

    # ---------------------------------------------------------------- tenant reads

    async def get_visible(self, job_id: str) -> Job | None:
        """The caller's job, or None (another account's job is as missing as no job)."""
        stmt = select(Job).where(col(Job.id) == job_id, col(Job.account_id) == self.caller_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    def _conditions(self, query: JobQuery) -> list[ColumnElement[bool]]:
        conds: list[ColumnElement[bool]] = [col(Job.account_id) == self.caller_id]
        if query.statuses is not None:
            conds.append(col(Job.status).in_(sorted(s.value for s in query.statuses)))
        if query.types is not None:
            conds.append(col(Job.type).in_(sorted(t.value for t in query.types)))
        if query.image_id is not None:
            conds.append(exists().where(
                col(JobImage.job_id) == col(Job.id), col(JobImage.image_id) == query.image_id
            ))
        return conds

    async def page(
        self, query: JobQuery, first: int, after: tuple[datetime, str] | None, *, with_total: bool
    ) -> tuple[list[Job], bool, int | None]:
        """Newest first: one keyset page of `first` jobs after the cursor's (created_at, id)."""
        conds = self._conditions(query)
        stmt = select(Job).where(*conds)
        if after is not None:
            created, last_id = after
            # The bare bound lets the index seek to the cursor (see catalog_sql).
            stmt = stmt.where(col(Job.created_at) <= created,
                              or_(col(Job.created_at) < created, col(Job.id) < last_id))
        stmt = stmt.order_by(col(Job.created_at).desc(), col(Job.id).desc()).limit(first + 1)
        rows = list((await self.session.execute(stmt)).scalars())
        total = await self.count(query) if with_total else None
        return rows[:first], len(rows) > first, total

    async def count(self, query: JobQuery) -> int:
        stmt = select(func.count()).select_from(Job).where(*self._conditions(query))
        return int((await self.session.execute(stmt)).scalar_one())

    async def count_for_image(self, image_id: str, types: tuple[str, ...], statuses: tuple[str, ...]) -> int:
        """Jobs of any account, of `types` in `statuses`, that work on the image."""
        stmt = (
            select(func.count()).select_from(Job).join(JobImage, col(JobImage.job_id) == col(Job.id))
            .where(col(JobImage.image_id) == image_id, col(Job.type).in_(types), col(Job.status).in_(statuses))
        )
        return int((await self.session.execute(stmt)).scalar_one())

    # ---------------------------------------------------------------- worker side

    async def claim(
        self, worker_id: str, lease_seconds: float, types: frozenset[str], now: datetime, max_attempts: int
    ) -> Claim | None:
        """Take the lease of a claimable job of `types` (the oldest of the account running the
        fewest jobs), or None when there is none."""
        if not types:
            return None
        claimable = [_claimable(now), col(Job.type).in_(sorted(types))]
        row = await self._pick(claimable, col(Job.account_id) == self._fairest_account(claimable, now))
        if row is None:  # on PostgreSQL, that account's jobs were being claimed by others
            row = await self._pick(claimable)
        if row is None:
            return None
        job_id, status, attempts, owner = row
        started = status == _RUNNING  # by a worker whose lease expired, or that released it
        took_over = started and owner is not None
        exhausted = started and attempts >= max_attempts
        attempt = attempts if exhausted else attempts + 1
        stmt = (
            update(Job)
            .where(
                col(Job.id) == job_id, _claimable(now), col(Job.attempts) == attempts,
                col(Job.lease_owner).is_not_distinct_from(owner),
            )
            .values(
                status=_RUNNING, lease_owner=worker_id, lease_expires_at=now + timedelta(seconds=lease_seconds),
                attempts=attempt, started_at=func.coalesce(col(Job.started_at), now), updated_at=now,
            )
            .returning(Job)
            .execution_options(populate_existing=True, synchronize_session=False)
        )
        job = (await self.session.execute(stmt)).scalar_one_or_none()
        if job is None:  # changed under us: cannot happen while the pick holds the row
            return None
        if took_over:
            await self._end_open_attempts(job_id, None, "LOST", now)
        if not exhausted:
            self.session.add(JobAttempt(job_id=job_id, attempt=attempt, worker_id=worker_id, started_at=now))
            await self.session.flush()
        return Claim(job, attempt, exhausted, took_over)

    @staticmethod
    def _fairest_account(claimable: list[ColumnElement[bool]], now: datetime) -> Any:
        """The account whose jobs are claimed next: of the accounts with a claimable job, the one
        with the fewest jobs running under a live lease, then the one waiting longest (its
        oldest claimable job first). Without it the queue is first come, first served, and one
        account's batch of exports holds every worker while other accounts' jobs wait behind it.
        Both groupings read the claim index; the running jobs are at most the workers."""
        running = (
            select(col(Job.account_id).label("account_id"), func.count().label("jobs"))
            .where(col(Job.status) == _RUNNING, col(Job.lease_expires_at) >= now)
            .group_by(col(Job.account_id)).subquery()
        )
        heads = (
            select(col(Job.account_id).label("account_id"), func.min(col(Job.created_at)).label("since"))
            .where(*claimable).group_by(col(Job.account_id)).subquery()
        )
        return (
            select(heads.c.account_id)
            .outerjoin(running, running.c.account_id == heads.c.account_id)
            .order_by(func.coalesce(running.c.jobs, 0), heads.c.since, heads.c.account_id)
            .limit(1).scalar_subquery()
        )

    async def _pick(self, claimable: list[ColumnElement[bool]], *more: ColumnElement[bool]) -> Any:
        """The oldest job matching, locked on PostgreSQL (`SKIP LOCKED`: a job another worker
        is claiming is passed over, never waited for); None when there is none."""
        pick = (
            select(col(Job.id), col(Job.status), col(Job.attempts), col(Job.lease_owner))
            .where(*claimable, *more)
            .order_by(col(Job.created_at), col(Job.id))
            .limit(1)
        )
        if self._postgres:
            pick = pick.with_for_update(of=Job, skip_locked=True)
        return (await self.session.execute(pick)).first()

    def _owned(self, job_id: str, worker_id: str) -> list[ColumnElement[bool]]:
        return [col(Job.id) == job_id, col(Job.lease_owner) == worker_id, col(Job.status) == _RUNNING]

    async def _update_owned(self, job_id: str, worker_id: str, values: dict[str, Any]) -> bool:
        result = await self.session.execute(
            update(Job).where(*self._owned(job_id, worker_id)).values(**values)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    async def heartbeat(self, job_id: str, worker_id: str, lease_seconds: float, now: datetime) -> bool:
        """Extend the lease if `worker_id` still holds it (not a visible change: no updated_at)."""
        return await self._update_owned(
            job_id, worker_id, {"lease_expires_at": now + timedelta(seconds=lease_seconds)}
        )

    async def progress(self, job_id: str, worker_id: str, progress: float, step: str | None,
                       now: datetime) -> bool:
        return await self._update_owned(job_id, worker_id, {"progress": progress, "step": step, "updated_at": now})

    async def finish(
        self, job_id: str, worker_id: str, status: JobStatus, now: datetime, *,
        error_code: str | None = None, error_message: str | None = None, result: dict[str, Any] | None = None,
    ) -> bool:
        """End the job as SUCCESS or FAIL if `worker_id` still holds it; close its attempt."""
        values: dict[str, Any] = {
            "status": status.value, "error_code": error_code, "error_message": error_message, "result": result,
            "finished_at": now, "updated_at": now, "lease_owner": None, "lease_expires_at": None,
        }
        if status is JobStatus.SUCCESS:
            values["progress"] = 1.0
        if not await self._update_owned(job_id, worker_id, values):
            return False
        await self._end_open_attempts(job_id, worker_id, status.value, now)
        return True

    async def release(self, job_id: str, worker_id: str, now: datetime, *, counted: bool = True) -> bool:
        """Give the lease back unfinished (graceful stop): claimable at once, the attempt not counted.
        `counted=False`: an exhausted claim, which counted no attempt, so gives none back (the
        next claim is exhausted again)."""
        values: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}
        if counted:
            values["attempts"] = col(Job.attempts) - 1
        ok = await self._update_owned(job_id, worker_id, values)
        if ok:
            await self._end_open_attempts(job_id, worker_id, "RELEASED", now)
        return ok

    async def _end_open_attempts(self, job_id: str, worker_id: str | None, outcome: str, now: datetime) -> None:
        conds = [col(JobAttempt.job_id) == job_id, col(JobAttempt.ended_at).is_(None)]
        if worker_id is not None:
            conds.append(col(JobAttempt.worker_id) == worker_id)
        await self.session.execute(
            update(JobAttempt).where(*conds).values(outcome=outcome, ended_at=now)
            .execution_options(synchronize_session=False)
        )

    async def kill_images(self, job_id: str, now: datetime) -> int:
        """Compare-and-set the job's QUEUED/SAVING images to KILLED; returns how many changed."""
        linked = select(col(JobImage.image_id)).where(col(JobImage.job_id) == job_id)
        result = await self.session.execute(
            update(Image)
            .where(
                col(Image.id).in_(linked),
                col(Image.status).in_((ImageStatus.QUEUED.value, ImageStatus.SAVING.value)),
            )
            .values(status=ImageStatus.KILLED.value, updated_at=now, version=col(Image.version) + 1)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def oldest_running_start(self, now: datetime) -> datetime | None:
        """When the job running longest under a live lease first started (None: no job runs).
        Served by the claim index (status, lease_expires_at, …)."""
        stmt = select(func.min(col(Job.started_at))).where(col(Job.status) == _RUNNING,
                                                            col(Job.lease_expires_at) > now)
        value: datetime | None = (await self.session.execute(stmt)).scalar_one()
        return value

    async def images_saved(self, job_id: str) -> bool:
        """Whether the job has images and every one of them is ACTIVE."""
        stmt = (select(col(Image.status)).join(JobImage, col(JobImage.image_id) == col(Image.id))
                .where(col(JobImage.job_id) == job_id))
        statuses = list((await self.session.execute(stmt)).scalars())
        return bool(statuses) and all(s == ImageStatus.ACTIVE.value for s in statuses)

    # ---------------------------------------------------------------- inspection

    async def get(self, job_id: str) -> Job | None:
        """Any job by id, whoever owns it: for workers and tests, never for a caller."""
        return await self.session.get(Job, job_id, populate_existing=True)

    async def attempts_of(self, job_ids: list[str]) -> list[JobAttempt]:
        stmt = select(JobAttempt).where(col(JobAttempt.job_id).in_(job_ids)).order_by(
            col(JobAttempt.job_id), col(JobAttempt.id)
        )
        return list((await self.session.execute(stmt)).scalars())


async def job_counts(session: AsyncSession) -> list[tuple[str, str, int]]:
    """(type, status, count) over every account: the jobs gauge of /metrics."""
    stmt = select(col(Job.type), col(Job.status), func.count()).group_by(col(Job.type), col(Job.status))
    return [(t, s, int(n)) for t, s, n in await session.execute(stmt)]
