"""PostgreSQL LISTEN/NOTIFY adapter of the job event bus.

Publishing is `SELECT pg_notify('ims_jobs', :job_id)` in the changing transaction:
PostgreSQL delivers it to every listening process at commit, and drops it on rollback.
Each process that has subscribers keeps one dedicated asyncpg connection (outside the
pool) that LISTENs and wakes the local subscribers. If that connection drops, it is
reopened with backoff and every local subscriber is woken to re-read what it may have missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.uow import Database
from app.jobs.events import CHANNEL, Hub, Subscription

log = logging.getLogger(__name__)

RECONNECT_MIN_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 10.0


def asyncpg_dsn(db: Database) -> str:
    """The plain libpq URL of the database's engine (asyncpg does not take SQLAlchemy's)."""
    return db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresEventBus:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.hub = Hub()
        self._conn: Any = None
        self._lock = asyncio.Lock()
        self._reconnect: asyncio.Task[None] | None = None
        self._closed = False

    async def publish(self, session: AsyncSession, job_id: str) -> None:
        await session.execute(text("SELECT pg_notify(:channel, :job_id)"), {"channel": CHANNEL, "job_id": job_id})

    @asynccontextmanager
    async def _subscription(self, job_id: str) -> AsyncIterator[Subscription]:
        async with self.hub.subscription(job_id) as sub:
            await self._ensure_listening()
            yield sub

    def subscribe(self, job_id: str) -> AbstractAsyncContextManager[Subscription]:
        return self._subscription(job_id)

    async def _ensure_listening(self) -> None:
        if self._conn is not None or self._closed or self._reconnect is not None:
            return
        async with self._lock:
            if self._conn is not None or self._closed or self._reconnect is not None:
                return
            try:
                await self._connect()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("job events: cannot LISTEN (%s); subscribers fall back to polling", exc)
                self._reconnect = asyncio.create_task(self._reconnect_loop())

    async def _connect(self) -> None:
        conn = await asyncpg.connect(asyncpg_dsn(self.db))
        await conn.add_listener(CHANNEL, self._on_notify)
        conn.add_termination_listener(self._on_lost)
        self._conn = conn

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.hub.notify(payload)

    def _on_lost(self, _conn: Any) -> None:
        self._conn = None
        if not self._closed and self._reconnect is None:
            log.warning("job events: LISTEN connection lost; reconnecting")
            self._reconnect = asyncio.get_running_loop().create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        delay = RECONNECT_MIN_SECONDS
        try:
            while not self._closed:
                await asyncio.sleep(delay)
                try:
                    await self._connect()
                except (OSError, asyncpg.PostgresError) as exc:
                    log.warning("job events: reconnect failed (%s)", exc)
                    delay = min(delay * 2, RECONNECT_MAX_SECONDS)
                    continue
                self.hub.notify_all()  # whatever happened meanwhile: re-read
                return
        finally:
            self._reconnect = None

    async def close(self) -> None:
        self._closed = True
        if self._reconnect is not None:
            self._reconnect.cancel()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.remove_termination_listener(self._on_lost)
            await conn.close()
        self.hub.notify_all()

    @property
    def listening(self) -> bool:
        return self._conn is not None
