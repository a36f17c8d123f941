"""Singleton duties: chunk garbage collection, KMS key purges and the deletion of API tokens
expired for longer than IMS_EXPIRED_TOKEN_RETENTION.

Every process may try; exactly one acts at a time. On PostgreSQL the duty runs under a
session advisory lock (`pg_try_advisory_lock`) held on one connection for its duration;
on SQLite (one machine by construction) under an exclusive `flock` on a file beside the
database. A process that does not get the lock skips the round.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text

from app.storage.base import StorageError

if TYPE_CHECKING:
    from app.services.registry import Services

log = logging.getLogger(__name__)

#: The advisory lock key of the maintenance duty (any constant shared by all processes).
ADVISORY_KEY = 0x1A5_6C0


@dataclass(frozen=True)
class MaintenanceReport:
    chunks_deleted: int
    orphans_adopted: int
    keys_purged: int
    tokens_deleted: int


@contextlib.asynccontextmanager
async def singleton(services: Services) -> AsyncIterator[bool]:
    """Yields True in the one process that holds the maintenance lock now, else False."""
    db = services.db
    if db.dialect == "postgresql":
        async with db.engine.connect() as conn:
            got = bool((await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY})).scalar())
            try:
                yield got
            finally:
                if got:
                    await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_KEY})
                await conn.commit()
        return
    path = Path(services.settings.data_dir) / "maintenance.lock"
    fd = await asyncio.to_thread(os.open, path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


async def run_once(services: Services) -> MaintenanceReport | None:
    """One round of every duty, or None when another process holds the lock."""
    async with singleton(services) as mine:
        if not mine:
            return None
        deleted = adopted = 0
        for region in services.settings.regions:
            try:
                report = await services.chunks.collect(region)
            except StorageError:  # one region's store down must not stop the others, nor purges
                log.exception("maintenance: collecting region %s failed; the next round retries", region)
                continue
            deleted += report.chunks_deleted
            adopted += report.orphans_adopted
        purged = await services.key_provider.purge_due()
        tokens = await services.accounts.prune_expired_tokens()
    if deleted or adopted or purged or tokens:
        log.info("maintenance: %d chunk(s) deleted, %d orphan(s) adopted, %d key(s) purged, "
                 "%d expired token(s) deleted", deleted, adopted, purged, tokens)
    return MaintenanceReport(deleted, adopted, purged, tokens)


async def run_forever(services: Services, interval: float) -> None:
    """Run the duties every `interval` seconds until cancelled; a failing round is logged."""
    while True:
        try:
            await run_once(services)
        except asyncio.CancelledError:
            raise
        except Exception:  # the next round retries; the error is logged
            log.exception("maintenance round failed")
        await asyncio.sleep(interval)
