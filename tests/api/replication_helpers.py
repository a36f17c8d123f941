"""What the replication tests share: the mutation, job polling, an in-test worker, and reads
of what the database and the chunk store hold."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

from app.bootstrap import build_services
from app.config import Settings
from app.datastore.store import ChunkStore
from app.datastore.tables import Manifest
from app.db.tables import Account, Image
from app.db.uow import Database
from app.domain.images import Caller
from app.domain.jobs import JobQuery
from app.jobs.worker import Worker
from app.kms.port import DEFAULT_KEY_ALIAS, GrantOperation
from app.services.registry import Services
from tests.conftest import GraphQLClient
from tests.factories import data_plane

REGIONS = ("region-1", "region-2")
MiB = 1024 * 1024
#: Two random chunks around an all-zero one, and a short tail.
DATA = secrets.token_bytes(4 * MiB) + bytes(4 * MiB) + secrets.token_bytes(MiB + 7)

_IMAGE = """__typename ... on ImageBase { id name description status region kind diskFormat quickProvisioning
  encrypted kmsKeyId checksum sizeBytes virtualSizeBytes minDiskGb minRamMb maxRamMb bootMode
  origin { type ref } os { type platform version bits } tags { key value } disks { role sizeGb storedBytes } }
  ... on PrivateImage { owner { id } }"""

REPLICATE = f"""mutation($input: ReplicateImageInput!) {{ replicateImage(input: $input) {{
  __typename
  ... on UserError {{ code message }}
  ... on ValidationError {{ field }}
  ... on LimitExceededError {{ limit }}
  ... on NotFoundError {{ resourceId }}
  ... on KmsKeyError {{ keyId }}
  ... on ImageJobSuccess {{ job {{ id type status }} images {{ {_IMAGE} }} }}
}} }}"""

JOB = f"""query($id: ID!) {{ job(id: $id) {{ id type status progress step error {{ code message }}
  images {{ {_IMAGE} }} }} }}"""

IMAGE = f"query($id: ID!) {{ image(id: $id) {{ {_IMAGE} }} }}"


def two_regions(settings: Settings) -> Settings:
    return replace(settings, regions=REGIONS)


async def replicate(client: GraphQLClient, image_id: str, name: str = "copy", **fields: Any) -> dict[str, Any]:
    data = await client.execute(REPLICATE, {"input": {"imageId": image_id, "name": name, **fields}})
    return data["replicateImage"]  # type: ignore[no-any-return]


async def get_image(client: GraphQLClient, image_id: str) -> dict[str, Any] | None:
    return (await client.execute(IMAGE, {"id": image_id}))["image"]  # type: ignore[no-any-return]


async def wait_job(client: GraphQLClient, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll `job(id)` over HTTP until it ends."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = (await client.execute(JOB, {"id": job_id}))["job"]
        if job["status"] in ("SUCCESS", "FAIL"):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} did not end: {job}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, db: Database) -> AsyncIterator[Services]:
    """A job worker on the test's loop, with services of its own over the server's database
    and data directory (the live server itself runs none: settings.workers is 0)."""
    services = build_services(settings, db)
    worker = Worker(services, "test-worker", poll_interval=0.02)
    task = asyncio.create_task(worker.run())
    try:
        yield services
    finally:
        await worker.stop(10)
        await task
        await services.close()


async def replicate_and_wait(client: GraphQLClient, settings: Settings, db: Database, image_id: str,
                             **fields: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Replicate, run the job to its end; (job as the API shows it, the copy now)."""
    payload = await replicate(client, image_id, **fields)
    assert payload["__typename"] == "ImageJobSuccess", payload
    assert payload["images"][0]["status"] == "QUEUED" and payload["job"]["status"] == "INIT"
    async with running_worker(settings, db):
        job = await wait_job(client, payload["job"]["id"])
    copy = await get_image(client, payload["images"][0]["id"])
    assert copy is not None
    return job, copy


# ---------------------------------------------------------------- what is stored


async def row(db: Database, owner: Account, image_id: str) -> Image:
    async with db.uow(owner.id, write=False) as uow:
        view = await uow.images.get_visible(image_id)
    assert view is not None, image_id
    return view.image


async def manifest(db: Database, manifest_id: str) -> Manifest | None:
    async with db.uow(write=False) as uow:
        return await uow.chunks.manifest(manifest_id)


def manifest_id(image: Image, disk: int = 0) -> str:
    return str(image.disks[disk]["manifestId"])


async def read_back(db: Database, settings: Settings, account: Account, manifest_id: str) -> bytes:
    """The manifest's plaintext, every chunk verified (unwrapping its data key as `account`)."""
    chunks, kms = data_plane(db, settings)
    found, _ = await chunks.load(manifest_id)
    data_key = None
    if found.kms_key_id is not None:
        assert found.wrapped_key is not None
        data_key = await kms.decrypt_data_key(account.id, found.kms_key_id, found.wrapped_key)
    return b"".join([p async for p in chunks.read(manifest_id, data_key=data_key)])


async def collect_garbage(db: Database, settings: Settings) -> int:
    """Garbage collection with no grace period: whatever nothing references goes now."""
    chunks, _ = data_plane(db, settings)
    store = ChunkStore(db, chunks.stores, grace=timedelta(0))
    return sum([(await store.collect(region)).chunks_deleted for region in settings.regions])


async def footprint(db: Database, account: Account, source: Image | None = None) -> dict[str, Any]:
    """What a refused replication must leave as it was: the caller's jobs and private images
    in every region, the references to the source's data, and whether the caller has a
    default KMS key (made on first use, and a refused request is none)."""
    async with db.uow(account.id, write=False) as uow:
        jobs = await uow.jobs.count(JobQuery())
        default_key = await uow.kms.get_by_alias(account.id, DEFAULT_KEY_ALIAS) is not None
        images = {r: await uow.accounts.count_private_images(account.id, r) for r in REGIONS}
        refs = []
        for disk in source.disks if source else []:
            if disk.get("manifestId"):
                found = await uow.chunks.manifest(disk["manifestId"])
                refs.append(found.refcount if found else None)
    return {"jobs": jobs, "images": images, "refs": refs, "default_key": default_key}


# ---------------------------------------------------------------- keys


def caller(account: Account) -> Caller:
    return Caller(account.id, account.name, account.role)


async def disable_key(db: Database, settings: Settings, owner: Account, key_id: str) -> None:
    _, kms = data_plane(db, settings)
    await kms.disable_key(caller(owner), key_id)


async def grant(db: Database, settings: Settings, owner: Account, key_id: str, grantee: Account,
                *operations: GrantOperation) -> None:
    _, kms = data_plane(db, settings)
    await kms.create_grant(caller(owner), key_id, grantee.id, operations or (GrantOperation.DECRYPT_DATA_KEY,))

