"""The job event bus: "job X changed" notifications for `jobUpdated` subscribers.

    EventBus (port)
    ├── InProcessEventBus    one process (the embedded SQLite default): asyncio, after commit
    └── PostgresEventBus     many processes: LISTEN/NOTIFY (app.jobs.events_pg)

A notification carries only the job id; a subscriber re-reads the job, so notifications may
be coalesced or duplicated without harm. They are published inside the transaction that
changed the job and delivered only when it commits. Subscribers also re-read after a quiet
period (`Subscription.wait(timeout)` returning False), which covers notifications that cannot
reach them (a worker process beside a SQLite server, a dropped LISTEN connection).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.uow import Database

#: The LISTEN/NOTIFY channel.
CHANNEL = "ims_jobs"
_PENDING_KEY = "ims_job_events"


class Subscription:
    """Notifications of one job for one subscriber, coalesced: many changes wake it once."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self._changed = asyncio.Event()

    def notify(self) -> None:
        self._changed.set()

    async def wait(self, timeout: float | None = None) -> bool:
        """True when the job changed since the last wait; False after `timeout` seconds of quiet."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            return False
        self._changed.clear()
        return True


class EventBus(Protocol):
    """Port: publish job changes transactionally, subscribe to one job's changes."""

    async def publish(self, session: AsyncSession, job_id: str) -> None:
        """Announce a change of `job_id` made in `session`'s transaction. Subscribers hear of it
        once that transaction commits, and never if it rolls back."""

    def subscribe(self, job_id: str) -> AbstractAsyncContextManager[Subscription]:
        """Notifications of `job_id` while the context is open."""

    async def close(self) -> None:
        """Release connections; subscriptions stop hearing anything."""


class Hub:
    """The subscribers of this process, by job id. Everything runs on one event loop."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[Subscription]] = {}

    def notify(self, job_id: str) -> None:
        for sub in self._subscribers.get(job_id, ()):
            sub.notify()

    def notify_all(self) -> None:
        for subs in self._subscribers.values():
            for sub in subs:
                sub.notify()

    @contextlib.asynccontextmanager
    async def subscription(self, job_id: str) -> AsyncIterator[Subscription]:
        sub = Subscription(job_id)
        self._subscribers.setdefault(job_id, set()).add(sub)
        try:
            yield sub
        finally:
            subs = self._subscribers.get(job_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subscribers[job_id]

    def __len__(self) -> int:
        return sum(len(s) for s in self._subscribers.values())


class InProcessEventBus:
    """Delivers to subscribers of this process when the publishing session commits, and to
    `forward` (the `ims serve` that runs this process's workers: app.jobs.process)."""

    def __init__(self, forward: Callable[[str], None] | None = None) -> None:
        self.hub = Hub()
        self.forward = forward

    async def publish(self, session: AsyncSession, job_id: str) -> None:
        pending: set[str] | None = session.info.get(_PENDING_KEY)
        if pending is None:
            pending = session.info[_PENDING_KEY] = set()
            sync_session = session.sync_session
            event.listen(sync_session, "after_commit", self._delivered)
            event.listen(sync_session, "after_rollback", self._dropped)
        pending.add(job_id)

    def _delivered(self, sync_session: Any) -> None:
        # Runs in the event loop's thread (SQLAlchemy's greenlet), so touching asyncio
        # events directly is safe.
        for job_id in sync_session.info.pop(_PENDING_KEY, set()):
            self.hub.notify(job_id)
            if self.forward is not None:
                self.forward(job_id)
        sync_session.info[_PENDING_KEY] = set()

    @staticmethod
    def _dropped(sync_session: Any) -> None:
        sync_session.info[_PENDING_KEY] = set()

    def subscribe(self, job_id: str) -> AbstractAsyncContextManager[Subscription]:
        return self.hub.subscription(job_id)

    async def close(self) -> None:
        self.hub.notify_all()


def event_bus_for(db: Database) -> EventBus:
    """LISTEN/NOTIFY on PostgreSQL (many processes), in-process broadcast otherwise."""
    if db.dialect == "postgresql":
        from app.jobs.events_pg import PostgresEventBus

        return PostgresEventBus(db)
    return InProcessEventBus()
