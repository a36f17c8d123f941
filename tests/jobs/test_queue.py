"""The job table's claim/lease protocol, at the repository, with a controlled clock."""

from __future__ import annotations

from datetime import datetime, timedelta

from app.db.repositories.jobs import Claim
from app.db.types import utcnow
from app.db.uow import Database
from app.domain.enums import JobStatus
from app.domain.jobs import MAX_ATTEMPTS
from app.services.registry import Services
from tests.factories import make_account, make_image
from tests.jobs.conftest import attempts, enqueue, load
from tests.jobs.handlers import ECHO, STEPS

TYPES = frozenset({ECHO})
LEASE = 30.0


async def claim(db: Database, worker: str, now: datetime, types: frozenset[str] = TYPES) -> Claim | None:
    async with db.uow() as uow:
        got = await uow.jobs.claim(worker, LEASE, types, now, MAX_ATTEMPTS)
        await uow.commit()
    return got


async def test_enqueue_is_part_of_the_callers_transaction(services: Services, db: Database) -> None:
    alice, _ = await make_account(db)
    async with db.uow(alice.id) as uow:
        job = await services.jobs.enqueue(uow, alice.id, ECHO)
        # no commit: the job goes with the rest of the transaction
    async with db.uow(write=False) as uow:
        assert await uow.jobs.get(job.id) is None
    assert await claim(db, "w1", utcnow()) is None


async def test_claim_takes_the_oldest_job_and_opens_an_attempt(services: Services, db: Database) -> None:
    alice, _ = await make_account(db)
    first = await enqueue(services, alice, ECHO)
    second = await enqueue(services, alice, ECHO)
    now = utcnow()
    got = await claim(db, "w1", now)
    assert got is not None
    assert (got.job.id, got.attempt, got.exhausted, got.took_over) == (first.id, 1, False, False)
    job = await load(db, first.id)
    assert (job.status, job.lease_owner, job.attempts) == ("RUNNING", "w1", 1)
    assert job.started_at == now and job.lease_expires_at == now + timedelta(seconds=LEASE)
    [attempt] = await attempts(db, [first.id])
    assert (attempt.attempt, attempt.worker_id, attempt.outcome, attempt.ended_at) == (1, "w1", None, None)
    got2 = await claim(db, "w2", now)
    assert got2 is not None and got2.job.id == second.id
    assert await claim(db, "w3", now) is None  # both leased


async def test_claim_is_fair_between_accounts(services: Services, db: Database) -> None:
    """The next job is the oldest of the account running the fewest jobs, then of the account
    waiting longest: one account's batch does not hold every worker while another waits."""
    alice, _ = await make_account(db)
    bob, _ = await make_account(db)
    carol, _ = await make_account(db)
    a1, a2, a3 = [await enqueue(services, alice, ECHO) for _ in range(3)]
    b1, b2 = [await enqueue(services, bob, ECHO) for _ in range(2)]
    c1 = await enqueue(services, carol, ECHO)
    now = utcnow()
    taken = []
    for n in range(6):
        got = await claim(db, f"w{n}", now)
        assert got is not None
        taken.append(got.job.id)
    # alice first (oldest), then bob and carol (none running), then one each again by age
    assert taken == [a1.id, b1.id, c1.id, a2.id, b2.id, a3.id]
    assert await claim(db, "w9", now) is None


async def test_a_lone_account_still_gets_every_worker(services: Services, db: Database) -> None:
    alice, _ = await make_account(db)
    jobs = [await enqueue(services, alice, ECHO) for _ in range(3)]
    now = utcnow()
    got = [await claim(db, f"w{n}", now) for n in range(3)]
    assert [g.job.id if g else None for g in got] == [j.id for j in jobs]


async def test_a_job_whose_lease_expired_does_not_count_as_running(services: Services, db: Database) -> None:
    alice, _ = await make_account(db)
    bob, _ = await make_account(db)
    a1 = await enqueue(services, alice, ECHO)
    a2 = await enqueue(services, alice, ECHO)
    t0 = utcnow()
    assert (got := await claim(db, "w1", t0)) is not None and got.job.id == a1.id
    b1 = await enqueue(services, bob, ECHO)
    later = t0 + timedelta(seconds=LEASE + 1)
    # a1's worker is gone: alice runs nothing, so her older jobs come before bob's
    assert (got := await claim(db, "w2", later)) is not None and (got.job.id, got.took_over) == (a1.id, True)
    assert (got := await claim(db, "w3", later)) is not None and got.job.id == b1.id
    assert (got := await claim(db, "w4", later)) is not None and got.job.id == a2.id


async def test_claim_only_takes_types_the_worker_handles(services: Services, db: Database) -> None:
    alice, _ = await make_account(db)
    await enqueue(services, alice, STEPS)
    assert await claim(db, "w1", utcnow(), frozenset({ECHO})) is None
    assert await claim(db, "w1", utcnow(), frozenset()) is None
    assert await claim(db, "w1", utcnow(), frozenset({STEPS})) is not None


async def test_only_the_lease_owner_may_write(services: Services, db: Database) -> None:
    alice, _ = await make_account(db)
    job = await enqueue(services, alice, ECHO)
    t0 = utcnow()
    await claim(db, "w1", t0)
    async with db.uow() as uow:
        assert not await uow.jobs.heartbeat(job.id, "w2", LEASE, t0)
        assert not await uow.jobs.progress(job.id, "w2", 0.5, "x", t0)
        assert not await uow.jobs.finish(job.id, "w2", JobStatus.SUCCESS, t0)
        assert await uow.jobs.progress(job.id, "w1", 0.25, "copying", t0)
        assert await uow.jobs.heartbeat(job.id, "w1", LEASE, t0 + timedelta(seconds=10))
        await uow.commit()
    stored = await load(db, job.id)
    assert (stored.status, stored.progress, stored.step) == ("RUNNING", 0.25, "copying")
    assert stored.lease_expires_at == t0 + timedelta(seconds=10 + LEASE)


async def test_expired_lease_is_taken_over_and_fences_the_old_owner(services: Services, db: Database) -> None:
    alice, _ = await make_account(db)
    job = await enqueue(services, alice, ECHO)
    t0 = utcnow()
    await claim(db, "w1", t0)
    assert await claim(db, "w2", t0 + timedelta(seconds=LEASE - 1)) is None  # still leased
    got = await claim(db, "w2", t0 + timedelta(seconds=LEASE + 1))
    assert got is not None and (got.attempt, got.took_over, got.exhausted) == (2, True, False)
    async with db.uow() as uow:
        assert not await uow.jobs.heartbeat(job.id, "w1", LEASE, t0)
        assert not await uow.jobs.finish(job.id, "w1", JobStatus.SUCCESS, t0)
        assert await uow.jobs.finish(job.id, "w2", JobStatus.SUCCESS, t0, result={"ok": True})
        await uow.commit()
    stored = await load(db, job.id)
    assert (stored.status, stored.progress, stored.result, stored.lease_owner) == ("SUCCESS", 1.0, {"ok": True}, None)
    outcomes = [(a.attempt, a.worker_id, a.outcome) for a in await attempts(db, [job.id])]
    assert outcomes == [(1, "w1", "LOST"), (2, "w2", "SUCCESS")]


async def test_lease_expiring_after_the_last_attempt_is_exhausted(services: Services, db: Database) -> None:
    alice, _ = await make_account(db)
    job = await enqueue(services, alice, ECHO)
    t = utcnow()
    for n in range(1, MAX_ATTEMPTS + 1):
        got = await claim(db, f"w{n}", t)
        assert got is not None and got.attempt == n and not got.exhausted
        t += timedelta(seconds=LEASE + 1)
    got = await claim(db, "w-last", t)
    assert got is not None and got.exhausted and got.attempt == MAX_ATTEMPTS
    stored = await load(db, job.id)
    assert (stored.attempts, stored.lease_owner) == (MAX_ATTEMPTS, "w-last")
    assert [a.outcome for a in await attempts(db, [job.id])] == ["LOST"] * MAX_ATTEMPTS


async def test_release_returns_the_job_without_counting_the_attempt(services: Services, db: Database) -> None:
    alice, _ = await make_account(db)
    job = await enqueue(services, alice, ECHO)
    t0 = utcnow()
    await claim(db, "w1", t0)
    async with db.uow() as uow:
        assert await uow.jobs.release(job.id, "w1", t0)
        await uow.commit()
    stored = await load(db, job.id)
    assert (stored.status, stored.attempts, stored.lease_owner) == ("RUNNING", 0, None)
    got = await claim(db, "w2", t0)  # at once, no lease to wait for
    assert got is not None and (got.attempt, got.took_over, got.exhausted) == (1, False, False)
    outcomes = [(a.worker_id, a.outcome) for a in await attempts(db, [job.id])]
    assert outcomes == [("w1", "RELEASED"), ("w2", None)]


async def test_kill_images_only_touches_images_still_being_written(services: Services, db: Database) -> None:
    alice, _ = await make_account(db)
    queued = await make_image(db, alice, status="QUEUED")
    saving = await make_image(db, alice, status="SAVING")
    active = await make_image(db, alice, status="ACTIVE")
    job = await enqueue(services, alice, ECHO, image_ids=[queued.id, saving.id, active.id])
    async with db.uow() as uow:
        assert await uow.jobs.kill_images(job.id, utcnow()) == 2
        await uow.commit()
    async with db.uow(alice.id, write=False) as uow:
        found = await uow.images.get_many_visible([queued.id, saving.id, active.id])
    assert {i: v.image.status for i, v in found.items()} == {
        queued.id: "KILLED", saving.id: "KILLED", active.id: "ACTIVE"
    }
    assert found[queued.id].image.version == queued.version + 1
