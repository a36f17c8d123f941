"""Quota checks shared by every feature that creates images (import, from server/volume)."""

from __future__ import annotations

from app.db.uow import UnitOfWork
from app.domain.enums import CREATION_JOB_TYPES, QuotaResource
from app.domain.rules import DEFAULT_QUOTAS
from app.errors import LimitExceeded


async def quota_limit(uow: UnitOfWork, account_id: str, resource: QuotaResource) -> int:
    overrides = await uow.accounts.quota_overrides(account_id)
    return overrides.get(resource.value, DEFAULT_QUOTAS[resource])


async def lock_quotas_first(uow: UnitOfWork, account_id: str) -> None:
    """Take the account's quota lock before any row lock of a transaction that will check
    its quotas: every such transaction takes the account first, then rows (replicateImage
    locks the source image and retains its manifests under it). An image made from a disk
    retained the disk's manifest, shared with the image the disk came from, and asked for
    the account after: racing a replication of that image, each waited for the other and
    PostgreSQL aborted one as a deadlock. Held until the transaction ends; taking it again
    (`check_creation_quotas`) is free."""
    await uow.accounts.lock_account(account_id)


async def check_creation_quotas(uow: UnitOfWork, account_id: str, region: str, new_images: int = 1, *,
                                lock: bool = True) -> None:
    """Refuse a creation that would exceed PRIVATE_IMAGES (in the region) or
    CONCURRENT_CREATIONS. Locks the account until the transaction ends, so two concurrent
    creations cannot both take the last place: call it in the transaction that adds the
    images and the job (after `lock_quotas_first` if that transaction locks rows first;
    `lock=False`: a check asked earlier, before a step that changes something, which that
    transaction makes again). `new_images=0` (an administrator's public import, which makes
    no private image of theirs) checks CONCURRENT_CREATIONS only."""
    if lock:
        await uow.accounts.lock_account(account_id)
    if new_images:
        limit = await quota_limit(uow, account_id, QuotaResource.PRIVATE_IMAGES)
        if await uow.accounts.count_private_images(account_id, region) + new_images > limit:
            raise LimitExceeded("QUOTA_PRIVATE_IMAGES", limit=limit)
    limit = await quota_limit(uow, account_id, QuotaResource.CONCURRENT_CREATIONS)
    running = await uow.accounts.count_active_jobs(account_id, frozenset(t.value for t in CREATION_JOB_TYPES))
    if running + 1 > limit:
        raise LimitExceeded("QUOTA_CONCURRENT_CREATIONS", limit=limit)
