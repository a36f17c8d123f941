"""exportImage over HTTP: every rule answers with its exact error type and code and leaves
nothing behind; accepted exports run in a worker and write a file that qemu-img reads back
to the image's bytes, with a checksum and a download URL that work."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.db.tables import Account, Image
from app.db.uow import Database
from app.domain.enums import DiskFormat
from app.formats import Inspection, convert, create, inspect_file_async
from app.jobs.handlers import export_image
from app.storage.factory import service_bucket
from tests.api.ops import delete_images, error, without_message
from tests.api.replication_helpers import (
    collect_garbage,
    footprint,
    manifest,
    manifest_id,
    running_worker,
    two_regions,
    wait_job,
)
from tests.conftest import GraphQLClient
from tests.factories import (
    admin_account,
    data_plane,
    make_account,
    make_image,
    make_image_with_data,
    make_kms_key,
    share,
)
from tests.hostile_files import write_vhd

MiB = 1024 * 1024
#: Sector-aligned, as disks are: a random chunk, a zero chunk, a random MiB.
DATA = secrets.token_bytes(4 * MiB) + bytes(4 * MiB) + secrets.token_bytes(MiB)
CHECKSUM = "sha256:" + hashlib.sha256(DATA).hexdigest()

EXPORT = """mutation($input: ExportImageInput!) { exportImage(input: $input) {
  __typename
  ... on UserError { code message }
  ... on ValidationError { field }
  ... on NotFoundError { resourceId }
  ... on ExportJobSuccess { job { id type status images { __typename ... on ImageBase { id } } } }
} }"""
JOB = """query($id: ID!) { job(id: $id) { id type status progress step error { code message }
  images { __typename ... on ImageBase { id } }
  object { bucket key sizeBytes checksum downloadUrl(expiresInSeconds: 600) } } }"""


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return two_regions(settings)


async def bucket(client: GraphQLClient, name: str, region: str = "region-1") -> None:
    made = await client.execute(
        'mutation($n: String!, $r: String) { createBucket(input: {name: $n, region: $r}) { __typename } }',
        {"n": name, "r": region})
    assert made["createBucket"]["__typename"] == "CreateBucketSuccess", made


async def export(client: GraphQLClient, image_id: str, bucket_name: str = "exports", key: str = "disk.img",
                 **fields: Any) -> dict[str, Any]:
    data = await client.execute(EXPORT, {"input": {"imageId": image_id, "bucket": bucket_name, "key": key, **fields}})
    return data["exportImage"]  # type: ignore[no-any-return]


async def refused(client: GraphQLClient, db: Database, account: Account, image: Image | None, image_id: str,
                  expected: dict[str, Any], **fields: Any) -> None:
    """The export is refused with `expected`: no job, no reference taken on the image's data."""
    before = await footprint(db, account, image)
    assert without_message(await export(client, image_id, **fields)) == expected
    assert await footprint(db, account, image) == before


async def job_of(client: GraphQLClient, job_id: str) -> dict[str, Any]:
    return (await client.execute(JOB, {"id": job_id}))["job"]  # type: ignore[no-any-return]


async def export_and_wait(client: GraphQLClient, settings: Settings, db: Database, image_id: str,
                          **fields: Any) -> dict[str, Any]:
    payload = await export(client, image_id, **fields)
    assert payload["__typename"] == "ExportJobSuccess", payload
    assert payload["job"]["type"] == "EXPORT_IMAGE" and payload["job"]["status"] == "INIT"
    async with running_worker(settings, db):
        await wait_job(client, payload["job"]["id"])
    return await job_of(client, payload["job"]["id"])


async def download(job: dict[str, Any]) -> bytes:
    async with httpx.AsyncClient() as plain:
        response = await plain.get(job["object"]["downloadUrl"])
    assert response.status_code == 200, response.text
    return response.content


def qemu_info(path: Path) -> dict[str, Any]:
    out = subprocess.run(["qemu-img", "info", "--output=json", str(path)], check=True, capture_output=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


# ---------------------------------------------------------------- rules


async def test_only_the_owner_exports_and_others_learn_nothing(gql: GraphQLClient, db: Database,
                                                               settings: Settings) -> None:
    alice, alice_t = await make_account(db)
    bob, bob_t = await make_account(db)
    image = await make_image_with_data(db, settings, alice, DATA)
    await bucket(gql.as_(alice_t), "exports")
    await bucket(gql.as_(bob_t), "bobs")
    # A stranger and an administrator do not see the image at all.
    await refused(gql.as_(bob_t), db, bob, image, image.id,
                  error("NotFoundError", "IMAGE_NOT_FOUND", resourceId=image.id), bucket="bobs")
    admin = await admin_account(db)
    await refused(gql, db, admin, image, image.id, error("NotFoundError", "IMAGE_NOT_FOUND", resourceId=image.id))
    # A member sees it, and may not export it, whatever the membership's status.
    for status in ("ACCEPTED", "PENDING", "REJECTED"):
        member, member_t = await make_account(db)
        await share(db, image, member, status)
        await refused(gql.as_(member_t), db, member, image, image.id, error("ForbiddenError", "NOT_OWNER"))
    # Another account's bucket is not told apart from a missing one.
    await refused(gql.as_(alice_t), db, alice, image, image.id,
                  error("NotFoundError", "BUCKET_NOT_FOUND", resourceId="bobs"), bucket="bobs")
    await refused(gql.as_(alice_t), db, alice, None, "img-missing",
                  error("NotFoundError", "IMAGE_NOT_FOUND", resourceId="img-missing"))


async def test_public_images_are_not_exported(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    admin = await admin_account(db)
    alice, alice_t = await make_account(db)
    public = await make_image_with_data(db, settings, admin, DATA, visibility="PUBLIC")
    await bucket(gql.as_(alice_t), "exports")
    await refused(gql.as_(alice_t), db, alice, public, public.id, error("ForbiddenError", "NOT_OWNER"))
    await bucket(gql, "admin-exports")
    await refused(gql, db, admin, public, public.id, error("NotSupportedError", "EXPORT_NOT_SUPPORTED"),
                  bucket="admin-exports")


@pytest.mark.parametrize("fields", [
    {"kind": "FULL_ECS"},
    {"kind": "ISO", "disk_format": "ISO", "quick_provisioning": False},
    {"licensed_platform": "Windows"},
    {"licensed_platform": "Red Hat"},
], ids=["full-ecs", "iso", "licensed-windows", "licensed-red-hat"])
async def test_kinds_and_licensed_origins_are_not_exported(gql: GraphQLClient, db: Database, settings: Settings,
                                                           fields: dict[str, Any]) -> None:
    alice, token = await make_account(db)
    image = await make_image_with_data(db, settings, alice, DATA, **fields)
    await bucket(gql.as_(token), "exports")
    await refused(gql.as_(token), db, alice, image, image.id, error("NotSupportedError", "EXPORT_NOT_SUPPORTED"))


async def test_encrypted_images_are_not_exported(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    alice, token = await make_account(db)
    key = await make_kms_key(db, settings, alice)
    image = await make_image_with_data(db, settings, alice, DATA, kms_key_id=key)
    await bucket(gql.as_(token), "exports")
    result = await export(gql.as_(token), image.id)
    assert without_message(result) == error("NotSupportedError", "EXPORT_NOT_SUPPORTED")
    assert "replicate to an unencrypted copy" in result["message"]


@pytest.mark.parametrize("status", ["QUEUED", "SAVING", "KILLED"])
async def test_only_active_images_are_exported(gql: GraphQLClient, db: Database, status: str) -> None:
    alice, token = await make_account(db)
    image = await make_image(db, alice, status=status)
    await bucket(gql.as_(token), "exports")
    await refused(gql.as_(token), db, alice, image, image.id, error("ConflictError", "IMAGE_NOT_ACTIVE"))


async def test_one_tib_and_more_is_too_large(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    alice, token = await make_account(db)
    await bucket(gql.as_(token), "exports")
    too_large = await make_image(db, alice, virtual_size_bytes=1024**4)
    await refused(gql.as_(token), db, alice, too_large, too_large.id, error("NotSupportedError", "EXPORT_TOO_LARGE"))
    just_below = await make_image_with_data(db, settings, alice, DATA, virtual_size_bytes=1024**4 - 512)
    assert (await export(gql.as_(token), just_below.id))["__typename"] == "ExportJobSuccess"


async def test_bucket_region_and_key_are_checked(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    alice, token = await make_account(db)
    image = await make_image_with_data(db, settings, alice, DATA)
    q = gql.as_(token)
    await bucket(q, "exports")
    await bucket(q, "far-away", region="region-2")
    await refused(q, db, alice, image, image.id,
                  error("ValidationError", "BUCKET_REGION_MISMATCH", field="input.bucket"), bucket="far-away")
    for key in ("", "a/../b", "x" * 1025, "d/" + "x" * 256, "bell\x07"):
        await refused(q, db, alice, image, image.id,
                      error("ValidationError", "INVALID_OBJECT_KEY", field="input.key"), key=key)


async def test_a_key_colliding_with_objects_of_the_bucket_is_refused(gql: GraphQLClient, db: Database,
                                                                      settings: Settings) -> None:
    """No store of files (the filesystem store, MinIO) holds both `a` and `a/b`: an export
    there would convert the whole disk and then fail to write it. The request is refused."""
    alice, token = await make_account(db)
    image = await make_image_with_data(db, settings, alice, DATA)
    q = gql.as_(token)
    await bucket(q, "exports")
    store = data_plane(db, settings)[0].stores["region-1"]
    await store.put_bytes("exports", "disks/web.raw", b"x")
    await store.put_bytes("exports", "old.raw", b"x")
    for key in ("disks", "old.raw/new.raw", "disks/web.raw/new.raw"):
        await refused(q, db, alice, image, image.id,
                      error("ValidationError", "OBJECT_KEY_COLLISION", field="input.key"), key=key, format="RAW")
    # An existing object is replaced; a sibling key, or one whose prefix is only a prefix, is free.
    for key in ("old.raw", "disks/other.raw", "disks-2"):
        job = await export_and_wait(q, settings, db, image.id, key=key, format="RAW")
        assert (job["status"], job["object"]["key"]) == ("SUCCESS", key), job
    assert await store.get_bytes("exports", "old.raw") == DATA
    # The first 16 parents of a key are looked up (a store call each): one past them is left to
    # the job, which fails writing there, keeping nothing.
    deep = "/".join(f"d{n}" for n in range(20))
    await store.put_bytes("exports", deep, b"x")
    await refused(q, db, alice, image, image.id, error("ValidationError", "OBJECT_KEY_COLLISION", field="input.key"),
                  key="old.raw/" + "/".join(f"e{n}" for n in range(30)), format="RAW")
    job = await export_and_wait(q, settings, db, image.id, key=deep + "/x.raw", format="RAW")
    assert (job["status"], job["error"]["code"]) == ("FAIL", "EXPORT_WRITE_FAILED"), job


async def test_one_export_per_image_at_a_time(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    alice, token = await make_account(db)
    image = await make_image_with_data(db, settings, alice, DATA)
    other = await make_image_with_data(db, settings, alice, DATA)
    q = gql.as_(token)
    await bucket(q, "exports")
    first = await export(q, image.id, key="first.qcow2")
    assert first["__typename"] == "ExportJobSuccess"
    await refused(q, db, alice, image, image.id, error("ConflictError", "EXPORT_IN_PROGRESS"), key="second.qcow2")
    # Another image is not held up.
    assert (await export(q, other.id, key="other.qcow2"))["__typename"] == "ExportJobSuccess"
    async with running_worker(settings, db):
        await wait_job(q, first["job"]["id"])
    # Once it ended, the image is exported again.
    assert (await export(q, image.id, key="second.qcow2"))["__typename"] == "ExportJobSuccess"


# ---------------------------------------------------------------- the files


async def test_raw_export_streams_the_image_bytes(gql: GraphQLClient, db: Database, settings: Settings,
                                                  tmp_path: Path) -> None:
    alice, token = await make_account(db)
    image = await make_image_with_data(db, settings, alice, DATA)
    q = gql.as_(token)
    await bucket(q, "exports")
    before = await manifest(db, manifest_id(image))
    job = await export_and_wait(q, settings, db, image.id, key="disks/web.raw", format="RAW")
    assert (job["type"], job["status"], job["progress"], job["error"]) == ("EXPORT_IMAGE", "SUCCESS", 1.0, None)
    assert [i["id"] for i in job["images"]] == [image.id]
    assert {k: job["object"][k] for k in ("bucket", "key", "sizeBytes", "checksum")} == {
        "bucket": "exports", "key": "disks/web.raw", "sizeBytes": len(DATA), "checksum": CHECKSUM}
    assert await download(job) == DATA
    # The object is listed in the bucket, with the same checksum.
    listed = await q.execute('{ buckets { name objects { edges { node { key sizeBytes checksum } } } } }')
    [exports] = [b for b in listed["buckets"] if b["name"] == "exports"]
    assert exports["objects"]["edges"] == [{"node": {"key": "disks/web.raw", "sizeBytes": len(DATA),
                                                     "checksum": CHECKSUM}}]
    # The job let go of the reference it held on the image's data; no work file is left.
    after = await manifest(db, manifest_id(image))
    assert before is not None and after is not None and after.refcount == before.refcount == 1
    work = settings.data_dir / "work"  # no temporary file left (the process's scratch lock stays)
    assert [p for p in work.rglob("*") if p.is_file() and p.name != ".lock"] == []


@pytest.mark.parametrize("fmt,qemu_format", [("QCOW2", "qcow2"), ("VMDK", "vmdk"), ("VHD", "vpc")])
async def test_converted_exports_read_back_as_the_image(gql: GraphQLClient, db: Database, settings: Settings,
                                                        tmp_path: Path, fmt: str, qemu_format: str) -> None:
    alice, token = await make_account(db)
    image = await make_image_with_data(db, settings, alice, DATA)
    q = gql.as_(token)
    await bucket(q, "exports")
    job = await export_and_wait(q, settings, db, image.id, key=f"web.{fmt.lower()}", format=fmt)
    assert job["status"] == "SUCCESS", job
    body = await download(job)
    assert job["object"]["sizeBytes"] == len(body)
    assert job["object"]["checksum"] == "sha256:" + hashlib.sha256(body).hexdigest()
    exported = tmp_path / f"web.{fmt.lower()}"
    exported.write_bytes(body)
    info = qemu_info(exported)
    # VHD keeps the exact size (force_size), not a CHS-rounded one.
    assert (info["format"], info["virtual-size"]) == (qemu_format, len(DATA))
    back = tmp_path / "back.raw"
    await convert(exported, DiskFormat[fmt], back, DiskFormat.RAW)
    assert back.read_bytes() == DATA
    assert [p for p in (settings.data_dir / "work").rglob("*") if p.is_file() and p.name != ".lock"] == []


async def test_a_qcow2_import_exports_as_stored_or_converted(gql: GraphQLClient, db: Database, settings: Settings,
                                                             tmp_path: Path) -> None:
    """A non-quick image keeps the file it was imported from: QCOW2 streams it unchanged, RAW converts it."""
    raw, qcow2 = tmp_path / "src.raw", tmp_path / "src.qcow2"
    raw.write_bytes(DATA)
    await convert(raw, DiskFormat.RAW, qcow2, DiskFormat.QCOW2)
    stored = qcow2.read_bytes()
    alice, token = await make_account(db)
    image = await make_image_with_data(db, settings, alice, stored, disk_format="QCOW2", quick_provisioning=False,
                                       virtual_size_bytes=len(DATA))
    q = gql.as_(token)
    await bucket(q, "exports")
    as_qcow2 = await export_and_wait(q, settings, db, image.id, key="same.qcow2", format="QCOW2")
    assert await download(as_qcow2) == stored
    as_raw = await export_and_wait(q, settings, db, image.id, key="converted.raw", format="RAW")
    assert (as_raw["object"]["sizeBytes"], as_raw["object"]["checksum"]) == (len(DATA), CHECKSUM)
    assert await download(as_raw) == DATA


async def test_a_stored_file_larger_than_its_recorded_size_is_not_exported(
    gql: GraphQLClient, db: Database, settings: Settings, tmp_path: Path
) -> None:
    """A VHD recorded at the 2 MiB of its original size (as imports recorded VHDs before they
    read the size qemu-img reads) whose current size makes it a 1.5 TiB disk: the inspection
    before the conversion finds the real size, and the job fails EXPORT_TOO_LARGE instead of
    writing a 1.5 TiB disk into the bucket."""
    vhd = write_vhd(tmp_path / "h.vhd", original=2 * MiB, current=1536 * 1024 * MiB, creator=b"win ")
    alice, token = await make_account(db)
    image = await make_image_with_data(db, settings, alice, vhd.read_bytes(), kind="DATA_DISK", disk_format="VHD",
                                       quick_provisioning=False, virtual_size_bytes=2 * MiB)
    q = gql.as_(token)
    await bucket(q, "exports")
    job = await export_and_wait(q, settings, db, image.id, key="big.qcow2", format="QCOW2")
    assert (job["status"], job["error"]["code"], job["object"]) == ("FAIL", "EXPORT_TOO_LARGE", None), job
    assert job["error"]["message"] == (f"The image's disk is {1536 * 1024 * MiB} bytes: images of {1024 * 1024 * MiB} "
                                       "bytes or more cannot be exported.")
    assert (await manifest(db, manifest_id(image))).refcount == 1  # type: ignore[union-attr]  # released
    assert [p for p in (settings.data_dir / "work").rglob("*") if p.is_file() and p.name != ".lock"] == []


async def test_a_file_qemu_img_reads_larger_than_inspection_did_is_not_converted(
    gql: GraphQLClient, db: Database, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """qemu-img is asked how it reads the file before it converts it (`qemu.confirm`): an
    inspection that read the disk smaller than qemu-img does (as one of a VMDK's footer and
    one of a VHD's sizes once did) is simulated by halving the size inspection reports; the
    job fails and writes nothing."""
    source = tmp_path / "disk.qcow2"
    await create(source, DiskFormat.QCOW2, 8 * MiB)
    alice, token = await make_account(db)
    image = await make_image_with_data(db, settings, alice, source.read_bytes(), kind="DATA_DISK",
                                       disk_format="QCOW2", quick_provisioning=False, virtual_size_bytes=8 * MiB)
    real = inspect_file_async

    async def misread(*args: Any, **kwargs: Any) -> Inspection:
        found = await real(*args, **kwargs)
        return dataclasses.replace(found, virtual_size=found.virtual_size // 2)

    monkeypatch.setattr(export_image, "inspect_file_async", misread)
    q = gql.as_(token)
    await bucket(q, "exports")
    job = await export_and_wait(q, settings, db, image.id, key="disk.vmdk", format="VMDK")
    assert (job["status"], job["error"]["code"], job["object"]) == ("FAIL", "EXPORT_CONVERSION_FAILED", None), job
    assert job["error"]["message"] == (
        "Converting the image to VMDK failed: qemu-img reads the file otherwise than inspection did: it finds a "
        f"virtual size of {8 * MiB} bytes where inspection read {4 * MiB}.")
    chunks, _ = data_plane(db, settings)
    assert await chunks.stores["region-1"].stat("exports", "disk.vmdk") is None
    assert [p for p in (settings.data_dir / "work").rglob("*") if p.is_file() and p.name != ".lock"] == []


async def test_deleting_the_image_during_the_export_keeps_its_data_until_the_end(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    alice, token = await make_account(db)
    image = await make_image_with_data(db, settings, alice, DATA)
    q = gql.as_(token)
    await bucket(q, "exports")
    payload = await export(q, image.id, format="RAW")
    assert (await delete_images(q, [image.id]))["__typename"] == "DeleteImagesSuccess"
    await collect_garbage(db, settings)
    async with running_worker(settings, db):
        await wait_job(q, payload["job"]["id"])
    job = await job_of(q, payload["job"]["id"])
    assert job["status"] == "SUCCESS" and job["images"] == []
    assert await download(job) == DATA
    # The export's reference was the last one: the data goes with the next collection.
    found = await manifest(db, manifest_id(image))
    assert found is None or found.refcount == 0
    assert await collect_garbage(db, settings) == 2  # the two random chunks


async def test_a_damaged_chunk_fails_the_export_and_releases_the_data(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    alice, token = await make_account(db)
    image = await make_image_with_data(db, settings, alice, DATA)
    q = gql.as_(token)
    await bucket(q, "exports")
    chunks, _ = data_plane(db, settings)
    _, refs = await chunks.load(manifest_id(image))
    digest = next(r.digest for r in refs if r.digest is not None)
    store = chunks.stores["region-1"]
    [info] = [i for i in await store.list_objects(service_bucket("region-1"), limit=100) if digest in i.key]
    body = bytearray(await store.get_bytes(service_bucket("region-1"), info.key))
    body[100] ^= 0xFF
    await store.put_bytes(service_bucket("region-1"), info.key, bytes(body))
    job = await export_and_wait(q, settings, db, image.id, key="broken.raw", format="RAW")
    assert (job["status"], job["error"]["code"], job["object"]) == ("FAIL", "EXPORT_SOURCE_GONE", None)
    assert await store.stat("exports", "broken.raw") is None
    found = await manifest(db, manifest_id(image))
    assert found is not None and found.refcount == 1
