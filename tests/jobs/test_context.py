"""JobContext progress reports: rate-limited, immediate on a new step, fenced by the lease."""

from __future__ import annotations

from typing import Any, cast

import pytest

from app.db.tables import Job
from app.db.types import utcnow
from app.domain.jobs import PROGRESS_INTERVAL_SECONDS
from app.jobs.registry import JobContext, JobRegistry, LeaseLost, build_registry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_ctx(
    writes: list[tuple[float, str | None]], ok: bool = True, attempt: int = 1, clock: Clock | None = None,
    progress: float = 0.0,
) -> JobContext:
    """A context of attempt `attempt` of a job whose progress is `progress` as it begins."""
    job = Job(id="job-x", account_id="acc-x", type="T", status="RUNNING", progress=progress, step="old",
              params={"a": 1}, image_ids=["img-1"], created_at=utcnow(), updated_at=utcnow())

    async def write(progress: float, step: str | None) -> bool:
        writes.append((progress, step))
        return ok

    return JobContext(job, attempt, cast(Any, None), write, clock=clock or Clock())


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_progress_is_written_at_most_every_interval_unless_the_step_changes(clock: Clock) -> None:
    writes: list[tuple[float, str | None]] = []
    ctx = make_ctx(writes, clock=clock)
    await ctx.progress(0.1, "copy")
    await ctx.progress(0.2)  # same step, too soon
    clock.now += 0.2
    await ctx.progress(0.3)
    assert writes == [(0.1, "copy")]
    clock.now += PROGRESS_INTERVAL_SECONDS
    await ctx.progress(0.4)
    await ctx.progress(0.45, "verify")  # a new step is written at once
    assert writes == [(0.1, "copy"), (0.4, "copy"), (0.45, "verify")]
    await ctx.progress(0.5)
    await ctx.flush()  # the heartbeat persists what was held back
    await ctx.flush()
    assert writes[-1] == (0.5, "verify") and len(writes) == 4


async def test_progress_is_clamped_and_the_step_truncated(clock: Clock) -> None:
    writes: list[tuple[float, str | None]] = []
    ctx = make_ctx(writes, clock=clock)
    await ctx.progress(7.0, "x" * 1000)
    await ctx.progress(float("nan"), "y")
    assert writes == [(1.0, "x" * 256), (0.0, "y")]


async def test_progress_without_the_lease_raises_lease_lost(clock: Clock) -> None:
    ctx = make_ctx([], ok=False, clock=clock)
    with pytest.raises(LeaseLost):
        await ctx.progress(0.5, "copy")


def test_resumed_progress_is_what_an_earlier_attempt_persisted() -> None:
    assert make_ctx([], attempt=1).resumed_progress == 0.0
    assert make_ctx([], attempt=2, progress=0.3).resumed_progress == 0.3


async def test_a_later_attempt_never_reports_less_than_an_earlier_one_persisted(clock: Clock) -> None:
    """A job taken over runs its handler again from the start; the progress its watchers see
    stays where the lost attempt left it (0.3) until the new one passes it."""
    writes: list[tuple[float, str | None]] = []
    ctx = make_ctx(writes, attempt=2, clock=clock, progress=0.3)
    await ctx.progress(0.0, "copy")
    clock.now += PROGRESS_INTERVAL_SECONDS
    await ctx.progress(0.2)
    clock.now += PROGRESS_INTERVAL_SECONDS
    await ctx.progress(0.6)
    assert writes == [(0.3, "copy"), (0.6, "copy")]
    released: list[tuple[float, str | None]] = []  # a lease given back at a graceful stop
    await make_ctx(released, attempt=1, clock=clock, progress=0.3).progress(0.1, "copy")
    assert released == [(0.3, "copy")]


def test_registry_refuses_a_second_handler_for_a_type() -> None:
    registry = build_registry(["tests.jobs.handlers"])
    assert {"TEST_ECHO", "EXPORT_IMAGE_LIST"} <= registry.types()
    with pytest.raises(ValueError, match="already registered"):
        registry.register("TEST_ECHO", cast(Any, None))
    assert JobRegistry().types() == frozenset()
