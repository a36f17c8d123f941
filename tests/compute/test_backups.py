"""Full-ECS images and their differential backups (on SQLite and PostgreSQL)."""

from __future__ import annotations

import secrets

from app.compute.tables import Backup
from app.config import Settings
from app.datastore.chunks import CHUNK_SIZE, chunk_key
from app.db.uow import Database
from app.domain.enums import ImageKind
from app.services.registry import Services
from app.services.server_images import NewImage
from app.storage.factory import service_bucket
from tests.compute.conftest import caller, load_image, manifest_count, new_server, run_jobs, volumes
from tests.factories import make_account, make_image_with_data, make_kms_key

CHUNKS = 100


async def _backup(db: Database, backup_id: str | None) -> Backup | None:
    async with db.uow(write=False) as uow:
        return await uow.compute.backup_any(backup_id or "")


async def full_ecs(services: Services, owner: object, server_id: str) -> Backup:
    made = await services.server_images.from_server(caller(owner), server_id,  # type: ignore[arg-type]
                                                    NewImage("full", ImageKind.FULL_ECS))
    [job] = await run_jobs(services)
    assert job.status == "SUCCESS", (job.error_code, job.error_message)
    image = await load_image(services.db, made.image_ids[0])
    assert image is not None and image.status == "ACTIVE"
    backup = await _backup(services.db, image.backup_id)
    assert backup is not None
    assert job.result == {"imageId": image.id, "backupId": backup.id, "newBytes": backup.new_bytes}
    return backup


async def test_a_second_backup_stores_only_the_changed_chunks(
    db: Database, settings: Settings, services: Services
) -> None:
    owner, _ = await make_account(db)
    image = await make_image_with_data(db, settings, owner, secrets.token_bytes(CHUNKS * CHUNK_SIZE))
    server = await new_server(services, owner, image, data_disks=[1])
    system, data = await volumes(services, owner, server)
    await services.compute.write_volume(data.id, 0, secrets.token_bytes(CHUNK_SIZE))

    first = await full_ecs(services, owner, server.id)
    assert first.new_bytes == (CHUNKS + 1) * CHUNK_SIZE
    assert [d["newBytes"] for d in first.disks] == [CHUNKS * CHUNK_SIZE, CHUNK_SIZE]
    assert first.size_bytes == 2 * 1024**3 and first.server_id == server.id

    # 1% of the system disk's blocks change: 64 KiB inside one chunk.
    await services.compute.write_volume(system.id, 37 * CHUNK_SIZE + 4096, secrets.token_bytes(65536))
    second = await full_ecs(services, owner, server.id)
    assert second.new_bytes == CHUNK_SIZE
    assert [d["newBytes"] for d in second.disks] == [CHUNK_SIZE, 0]

    # Nothing changed: nothing new, and a chunk that comes back is held by an earlier backup.
    assert (await full_ecs(services, owner, server.id)).new_bytes == 0
    original = secrets.token_bytes(CHUNK_SIZE)
    await services.compute.write_volume(data.id, 0, original)
    await services.compute.write_volume(data.id, 0, secrets.token_bytes(CHUNK_SIZE))
    assert (await full_ecs(services, owner, server.id)).new_bytes == CHUNK_SIZE
    await services.compute.write_volume(data.id, 0, original)
    assert (await full_ecs(services, owner, server.id)).new_bytes == CHUNK_SIZE  # `original` was never backed up


async def test_encrypted_disks_count_their_sealed_bytes(db: Database, settings: Settings, services: Services) -> None:
    owner, _ = await make_account(db)
    key = await make_kms_key(db, settings, owner)
    image = await make_image_with_data(db, settings, owner, secrets.token_bytes(3 * CHUNK_SIZE), kms_key_id=key)
    server = await new_server(services, owner, image)
    backup = await full_ecs(services, owner, server.id)
    assert backup.new_bytes == 3 * (CHUNK_SIZE + 28)
    made = await load_image(db, (await services.server_images.from_server(
        caller(owner), server.id, NewImage("s", ImageKind.SYSTEM_DISK))).image_ids[0])
    assert made is not None and made.kms_key_id == key


async def test_a_backup_whose_new_data_fails_verification_fails_and_keeps_nothing(
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
    manifests = await manifest_count(db)
    made = await services.server_images.from_server(caller(owner), server.id, NewImage("f", ImageKind.FULL_ECS))
    [job] = await run_jobs(services)
    assert (job.status, job.error_code) == ("FAIL", "BACKUP_DATA_INVALID")
    image_row = await load_image(db, made.image_ids[0])
    assert image_row is not None and image_row.status == "KILLED"
    assert await _backup(db, image_row.backup_id) is None
    # The backup's references went with it; the KILLED image's go when it is deleted.
    assert await manifest_count(db) == manifests
    await services.images.delete(caller(owner), [image_row.id])
    assert await manifest_count(db) == manifests


async def test_a_full_ecs_image_provisions_every_disk_by_reference(
    db: Database, settings: Settings, services: Services
) -> None:
    owner, _ = await make_account(db)
    image = await make_image_with_data(db, settings, owner, secrets.token_bytes(CHUNK_SIZE))
    server = await new_server(services, owner, image, data_disks=[3])
    _, data = await volumes(services, owner, server)
    await services.compute.write_volume(data.id, 0, b"data disk")
    made = await services.server_images.from_server(caller(owner), server.id, NewImage("f", ImageKind.FULL_ECS))
    await run_jobs(services)
    full = await load_image(db, made.image_ids[0])
    assert full is not None and full.status == "ACTIVE"
    copy = await new_server(services, owner, full, data_disks=[1])
    disks = await volumes(services, owner, copy)
    assert [(v.role, v.size_gb) for v in disks] == [("SYSTEM", 1), ("DATA", 3), ("DATA", 1)]
    assert [v.manifest_id for v in disks[:2]] == [d["manifestId"] for d in full.disks]
