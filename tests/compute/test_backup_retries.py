"""FULL_ECS jobs that overlap (on SQLite and PostgreSQL): a job run again after an attempt that
saved the image keeps the image's backup; a backup still being saved vouches for no chunk of
a later one."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest

from app.compute.tables import Backup
from app.config import Settings
from app.datastore.chunks import CHUNK_SIZE, chunk_key
from app.db.tables import Account, Image, Job
from app.db.uow import Database
from app.domain.enums import ImageKind
from app.domain.jobs import MAX_ATTEMPTS
from app.jobs.registry import JobFailed
from app.services.registry import Services
from app.services.server_images import NewImage
from app.storage.factory import service_bucket
from tests.compute.conftest import caller, load_image, new_server, run_jobs
from tests.factories import make_account, make_image_with_data


async def _backup(db: Database, backup_id: str | None) -> Backup | None:
    async with db.uow(write=False) as uow:
        return await uow.compute.backup_any(backup_id or "")


async def _manifest_refs(db: Database, manifest_ids: list[str]) -> list[int]:
    async with db.uow(write=False) as uow:
        return [m.refcount if (m := await uow.chunks.manifest(i)) else 0 for i in manifest_ids]


async def _full_ecs_job(services: Services, db: Database, settings: Settings) -> Image:
    owner, _ = await make_account(db)
    image = await make_image_with_data(db, settings, owner, secrets.token_bytes(2 * CHUNK_SIZE))
    server = await new_server(services, owner, image, data_disks=[1])
    made = await services.server_images.from_server(caller(owner), server.id, NewImage("full", ImageKind.FULL_ECS))
    full = await load_image(db, made.image_ids[0])
    assert full is not None and full.backup_id is not None
    return full


async def _assert_saved_with_backup(db: Database, full: Image, job: Job, refs: list[int]) -> None:
    saved = await load_image(db, full.id)
    assert saved is not None and saved.status == "ACTIVE"
    backup = await _backup(db, full.backup_id)
    assert backup is not None, f"the ACTIVE image lost its backup (job {job.status} {job.error_code})"
    # The image's disks and the backup's still hold their references.
    assert await _manifest_refs(db, [d["manifestId"] for d in backup.disks]) == refs


async def test_an_exhausted_job_whose_last_attempt_saved_the_image_keeps_its_backup(
    db: Database, settings: Settings, services: Services
) -> None:
    full = await _full_ecs_job(services, db, settings)
    backup = await _backup(db, full.backup_id)
    assert backup is not None
    refs = await _manifest_refs(db, [d["manifestId"] for d in backup.disks])
    types = frozenset({"CREATE_FULL_ECS_IMAGE"})
    for n in range(MAX_ATTEMPTS):
        claim = await services.jobs.queue.claim(f"dead-{n}", 0.05, types)
        assert claim is not None and claim.attempt == n + 1
        await asyncio.sleep(0.1)  # its worker dies: the lease lapses
    # The last attempt saved the image, then its worker died before recording SUCCESS.

    async def progress(fraction: float, step: str) -> None:
        pass

    saved = await services.server_images.finish(full.id, full.backup_id, progress)
    # The next claim is past the last attempt; the images being saved, it records the result
    # that attempt would have recorded instead of failing WORKER_LOST.
    [job] = await run_jobs(services)
    assert (job.status, job.error_code, job.attempts) == ("SUCCESS", None, MAX_ATTEMPTS)
    assert job.result == saved == {"imageId": full.id, "backupId": full.backup_id,
                                   "newBytes": saved["newBytes"]}
    assert saved["newBytes"] > 0
    await _assert_saved_with_backup(db, full, job, refs)


async def test_an_attempt_overtaken_by_an_earlier_one_that_saved_the_image_succeeds(
    db: Database, settings: Settings, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = await _full_ecs_job(services, db, settings)
    backup = await _backup(db, full.backup_id)
    assert backup is not None
    refs = await _manifest_refs(db, [d["manifestId"] for d in backup.disks])
    # Attempt 1's worker stalls past its lease; attempt 2 starts while attempt 1 still runs.
    types = frozenset({"CREATE_FULL_ECS_IMAGE"})
    assert await services.jobs.queue.claim("stalled", 0.05, types) is not None
    await asyncio.sleep(0.1)
    service = services.server_images
    original = service._backup

    async def backup_overtaken(backup_id: str, progress: Any) -> int:
        # Attempt 2 has read the image SAVING; attempt 1 now saves it.
        monkeypatch.setattr(service, "_backup", original)

        async def quiet(fraction: float, step: str) -> None:
            pass

        await service.finish(full.id, full.backup_id, quiet)
        return await original(backup_id, progress)

    monkeypatch.setattr(service, "_backup", backup_overtaken)
    [job] = await run_jobs(services)
    assert (job.status, job.error_code) == ("SUCCESS", None)
    assert job.result is not None and job.result["imageId"] == full.id
    await _assert_saved_with_backup(db, full, job, refs)


async def test_a_backup_still_being_saved_does_not_vouch_for_a_later_ones_chunks(
    db: Database, settings: Settings, services: Services
) -> None:
    owner, _ = await make_account(db)
    data = secrets.token_bytes(2 * CHUNK_SIZE)
    image = await make_image_with_data(db, settings, owner, data)
    server = await new_server(services, owner, image)
    _, refs = await services.chunks.load(image.disks[0]["manifestId"])
    assert refs[1].digest is not None
    store = services.chunks.stores["region-1"]
    await store.put_bytes(service_bucket("region-1"), chunk_key(refs[1].digest), b"rotten" + data[6:CHUNK_SIZE])
    # Two full-ECS images of the server asked for at once; two workers run their jobs together:
    # the second one's differential pass runs while the first is still verifying.
    first = await services.server_images.from_server(caller(owner), server.id, NewImage("a", ImageKind.FULL_ECS))
    second = await services.server_images.from_server(caller(owner), server.id, NewImage("b", ImageKind.FULL_ECS))
    later = await load_image(db, second.image_ids[0])
    assert later is not None

    async def progress(fraction: float, step: str) -> None:
        pass

    outcome: object = None
    try:
        outcome = await services.server_images.finish(later.id, later.backup_id, progress)
    except JobFailed as exc:
        outcome = exc.code
    jobs = {j.params["imageId"]: j for j in await run_jobs(services)}
    assert (jobs[first.image_ids[0]].status, jobs[first.image_ids[0]].error_code) == ("FAIL", "BACKUP_DATA_INVALID")
    # The rotten chunk was verified by no backup: the second image must not be saved with it.
    assert outcome == "BACKUP_DATA_INVALID"


async def test_a_job_run_again_after_its_image_was_saved_and_deleted_leaves_the_kept_backup(
    db: Database, settings: Settings, services: Services
) -> None:
    full = await _full_ecs_job(services, db, settings)
    backup = await _backup(db, full.backup_id)
    assert backup is not None
    manifests = [d["manifestId"] for d in backup.disks]
    refs = await _manifest_refs(db, manifests)
    # Attempt 1 saves the image and its worker dies before recording SUCCESS.
    types = frozenset({"CREATE_FULL_ECS_IMAGE"})
    assert await services.jobs.queue.claim("dead", 0.05, types) is not None

    async def progress(fraction: float, step: str) -> None:
        pass

    saved = await services.server_images.finish(full.id, full.backup_id, progress)
    await asyncio.sleep(0.1)  # the lease lapses
    # Its owner deletes the ACTIVE image and keeps its backup (deleteBackups: false).
    owner = caller(await _owner(db, full))
    assert await services.images.delete(owner, [full.id], delete_backups=False) == [full.id]
    kept = await _backup(db, full.backup_id)
    assert kept is not None and kept.new_bytes == saved["newBytes"] > 0
    # The image's own references went with it; the backup's remain.
    assert await _manifest_refs(db, manifests) == [n - 1 for n in refs]
    # The attempt that takes the job over finds no image: whatever it records, the backup the
    # owner kept stays, with its references.
    [job] = await run_jobs(services)
    assert job.attempts == 2
    assert (job.status, job.error_code, job.error_message) == (
        "FAIL", "IMAGE_NOT_FOUND", ("The image is no longer being saved: it was deleted after an earlier attempt "
                                    "saved it, or that attempt failed."))
    assert await _backup(db, full.backup_id) is not None
    assert await _manifest_refs(db, manifests) == [n - 1 for n in refs]
    # It still vouches for the server's unchanged chunks: the next full-ECS image stores nothing new.
    assert full.origin_ref is not None
    made = await services.server_images.from_server(owner, full.origin_ref, NewImage("again", ImageKind.FULL_ECS))
    [again] = await run_jobs(services)
    assert again.status == "SUCCESS"
    assert again.result == {"imageId": made.image_ids[0], "backupId": again.params["backupId"], "newBytes": 0}


async def _owner(db: Database, image: Image) -> Account:
    async with db.uow(write=False) as uow:
        account = await uow.session.get(Account, image.owner_id)
    assert account is not None
    return account
