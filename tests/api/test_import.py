"""importImage end to end over HTTP: upload through a signed URL, import, follow the job,
and check the stored bytes; every up-front rule with its exact error type and code."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.db.uow import Database
from app.services import ingest
from tests.conftest import GraphQLClient, LiveServer
from tests.factories import data_plane, make_account, make_kms_key
from tests.hostile_files import (
    add_vmdk_footer,
    qemu_img,
    set_vmdk_footer_capacity,
    write_iso,
    write_raw,
    write_vhd,
)

MiB = 1024 * 1024
GiB = 1024 * MiB


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """This module's server runs a job worker, polling fast."""
    return replace(settings, workers=1, job_poll_interval=0.05)


IMPORT = """mutation($input: ImportImageInput!) { importImage(input: $input) {
  __typename
  ... on ImageJobSuccess { job { id status type } images { __typename ... on PrivateImage { id status kind encrypted kmsKeyId } } }
  ... on UserError { code }
  ... on ValidationError { field }
  ... on LimitExceededError { limit }
} }"""
JOB = """query($id: ID!) { job(id: $id) { status progress error { code message }
  images { __typename ... on ImageBase { id kind status diskFormat sizeBytes virtualSizeBytes checksum quickProvisioning
    encrypted kmsKeyId minDiskGb disks { role sizeGb storedBytes } origin { type ref } tags { key value } } } } }"""


async def upload(me: GraphQLClient, bucket: str, key: str, data: bytes) -> None:
    made = await me.execute('mutation($n: String!) { createBucket(input: {name: $n}) { __typename } }', {"n": bucket})
    assert made["createBucket"]["__typename"] in ("CreateBucketSuccess", "ConflictError")
    url = (await me.execute(
        'mutation($b: String!, $k: String!) { createUploadUrl(input: {bucket: $b, key: $k}) { ... on CreateUploadUrlSuccess { url } } }',
        {"b": bucket, "k": key},
    ))["createUploadUrl"]["url"]
    async with httpx.AsyncClient() as plain:
        assert (await plain.put(url, content=data)).status_code == 200


def system_input(bucket_name: str, object_key: str, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"bucket": bucket_name, "key": object_key, "name": "my image", "kind": "SYSTEM_DISK", "minDiskGb": 1,
                            "os": {"type": "LINUX", "platform": "Debian", "version": "Debian 12 64bit"}}
    base.update(over)
    return base


async def finished(me: GraphQLClient, job_id: str) -> dict[str, Any]:
    for _ in range(600):
        job = (await me.execute(JOB, {"id": job_id}))["job"]
        if job["status"] in ("SUCCESS", "FAIL"):
            return job  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError("job did not finish")


async def test_raw_import_end_to_end(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    _, token = await make_account(db)
    me = gql.as_(token)
    data = bytes(4 * MiB) + hashlib.sha256(b"x").digest() * 40000 + bytes(3 * MiB)
    await upload(me, "imports", "disk.raw", data)
    got = (await me.execute(IMPORT, {"input": system_input("imports", "disk.raw", diskFormat="RAW",
                                                          tags=[{"key": "env", "value": "prod"}])}))["importImage"]
    assert got["__typename"] == "ImageJobSuccess"
    assert got["job"]["type"] == "IMPORT_IMAGE"
    [image] = got["images"]
    assert image["status"] in ("QUEUED", "SAVING") and image["encrypted"] is False
    job = await finished(me, got["job"]["id"])
    assert job["status"] == "SUCCESS" and job["progress"] == 1.0, job
    [done] = job["images"]
    assert done["status"] == "ACTIVE"
    assert done["diskFormat"] == "RAW" and done["quickProvisioning"] is True
    assert done["sizeBytes"] == len(data) == done["virtualSizeBytes"]
    assert done["checksum"] == "sha256:" + hashlib.sha256(data).hexdigest()
    assert done["origin"] == {"type": "FILE", "ref": "imports:disk.raw"}
    assert done["tags"] == [{"key": "env", "value": "prod"}]
    # Zero chunks are not stored: of the three 4 MiB chunks only the middle one holds data.
    assert done["disks"][0]["storedBytes"] == 4 * MiB


async def test_qcow2_import_keeps_its_format(gql: GraphQLClient, db: Database, tmp_path: Path) -> None:
    _, token = await make_account(db)
    me = gql.as_(token)
    raw = tmp_path / "d.raw"
    raw.write_bytes(b"\x07" * MiB + bytes(MiB))
    qcow = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow)], check=True)
    await upload(me, "imports", "d.qcow2", qcow.read_bytes())
    got = (await me.execute(IMPORT, {"input": system_input("imports", "d.qcow2")}))["importImage"]
    job = await finished(me, got["job"]["id"])
    [done] = job["images"]
    assert (done["status"], done["diskFormat"], done["quickProvisioning"]) == ("ACTIVE", "QCOW2", False)
    assert done["virtualSizeBytes"] == 2 * MiB


async def test_hostile_and_mismatched_files_kill_the_image(gql: GraphQLClient, db: Database, tmp_path: Path) -> None:
    _, token = await make_account(db)
    me = gql.as_(token)
    bad = tmp_path / "b.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", str(bad), "1M"],
                   check=True)
    await upload(me, "imports", "backing.qcow2", bad.read_bytes())
    await upload(me, "imports", "plain.raw", b"\x01" * MiB)
    await upload(me, "imports", "disk.gz", b"\x1f\x8b\x08\x00" + b"\x00" * 5000)
    for key, declared, code in (("backing.qcow2", None, "UNSAFE_IMAGE_FILE"), ("plain.raw", "QCOW2", "FORMAT_MISMATCH"),
                                ("disk.gz", None, "UNSUPPORTED_FORMAT")):
        extra = {"diskFormat": declared} if declared else {}
        got = (await me.execute(IMPORT, {"input": system_input("imports", key, **extra)}))["importImage"]
        job = await finished(me, got["job"]["id"])
        assert job["status"] == "FAIL" and job["error"]["code"] == code, (key, job)
        assert [i["status"] for i in job["images"]] == ["KILLED"]


async def test_system_disk_min_disk_covers_the_virtual_size(gql: GraphQLClient, db: Database, tmp_path: Path) -> None:
    """A SYSTEM_DISK image's minDiskGb is at least its file's virtual size in GiB: the job,
    which alone knows that size, refuses a smaller one and kills the image."""
    _, token = await make_account(db)
    me = gql.as_(token)
    qcow = tmp_path / "big.qcow2"  # 2 GiB virtual, a few hundred KiB on disk
    await asyncio.to_thread(subprocess.run, ["qemu-img", "create", "-q", "-f", "qcow2", str(qcow), "2G"], check=True)
    await upload(me, "imports", "big.qcow2", qcow.read_bytes())
    small = (await me.execute(IMPORT, {"input": system_input("imports", "big.qcow2", minDiskGb=1)}))["importImage"]
    assert small["__typename"] == "ImageJobSuccess", small
    job = await finished(me, small["job"]["id"])
    assert job["status"] == "FAIL" and job["error"]["code"] == "MIN_DISK_TOO_SMALL", job
    assert [i["status"] for i in job["images"]] == ["KILLED"]
    enough = (await me.execute(IMPORT, {"input": system_input("imports", "big.qcow2", minDiskGb=2)}))["importImage"]
    job = await finished(me, enough["job"]["id"])
    assert (job["status"], job["error"]) == ("SUCCESS", None), job
    [done] = job["images"]
    assert (done["status"], done["diskFormat"], done["virtualSizeBytes"], done["minDiskGb"]) == (
        "ACTIVE", "QCOW2", 2 * GiB, 2)
    assert [(d["role"], d["sizeGb"]) for d in done["disks"]] == [("SYSTEM", 2)]


def qemu_virtual_size(path: Path, driver: str) -> int:
    out = subprocess.run(["qemu-img", "info", "--output=json", "-f", driver, str(path)], check=True,
                         capture_output=True, timeout=60).stdout
    return int(json.loads(out)["virtual-size"])


async def test_a_vmdk_whose_footer_claims_another_size_is_refused(gql: GraphQLClient, db: Database,
                                                                 tmp_path: Path) -> None:
    """qemu-img takes a streamOptimized VMDK's header from its footer: a file whose first
    header says 2 MiB and whose footer says 4 TiB is a 4 TiB disk to every conversion. Taken
    at the first header's word it would pass minDiskGb 1, then the export (< 1 TiB) and
    replication (<= 128 GiB) limits, and make qemu-img write terabytes."""
    _, token = await make_account(db)
    me = gql.as_(token)
    raw = write_raw(tmp_path / "d.raw", 2 * MiB)
    stream = tmp_path / "s.vmdk"
    qemu_img("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, stream)
    hostile = set_vmdk_footer_capacity(add_vmdk_footer(stream, tmp_path / "f.vmdk"), 4 << 40)
    assert qemu_virtual_size(hostile, "vmdk") == 4 << 40
    await upload(me, "imports", "f.vmdk", hostile.read_bytes())
    got = (await me.execute(IMPORT, {"input": system_input("imports", "f.vmdk", diskFormat="VMDK")}))["importImage"]
    job = await finished(me, got["job"]["id"])
    assert (job["status"], job["error"]["code"]) == ("FAIL", "UNSAFE_IMAGE_FILE"), job
    assert "VMDK footer gives another capacity than its header" in job["error"]["message"]
    assert [(i["status"], i["sizeBytes"]) for i in job["images"]] == [("KILLED", None)]


async def test_a_vhd_is_sized_as_qemu_img_reads_it(gql: GraphQLClient, db: Database, tmp_path: Path) -> None:
    """A VHD footer holds an original size (which oslo reads), a current size and a geometry
    (which qemu-img reads, by creator). A 3 MiB Hyper-V VHD ('win ') whose original size says
    2 MiB and whose current size says 1.5 TiB is a 1.5 TiB disk: a SYSTEM_DISK with minDiskGb
    1 is refused, a DATA_DISK is recorded at 1.5 TiB, and export (< 1 TiB) and replication
    (<= 128 GiB) refuse it up front instead of converting 1.5 TiB."""
    _, token = await make_account(db)
    me = gql.as_(token)
    hostile = write_vhd(tmp_path / "h.vhd", original=2 * MiB, current=1536 * GiB, creator=b"win ")
    assert qemu_virtual_size(hostile, "vpc") == 1536 * GiB
    await upload(me, "imports", "h.vhd", hostile.read_bytes())
    system = (await me.execute(IMPORT, {"input": system_input("imports", "h.vhd", diskFormat="VHD")}))["importImage"]
    job = await finished(me, system["job"]["id"])
    assert (job["status"], job["error"]["code"]) == ("FAIL", "MIN_DISK_TOO_SMALL"), job
    data = (await me.execute(IMPORT, {"input": system_input("imports", "h.vhd", kind="DATA_DISK", os=None)}))
    job = await finished(me, data["importImage"]["job"]["id"])
    [done] = job["images"]
    assert (job["status"], done["diskFormat"], done["virtualSizeBytes"]) == ("SUCCESS", "VHD", 1536 * GiB), job
    assert [(d["role"], d["sizeGb"]) for d in done["disks"]] == [("DATA", 1536)]
    exported = await me.execute(
        'mutation($i: ID!) { exportImage(input: {imageId: $i, bucket: "imports", key: "x.qcow2", format: QCOW2}) '
        "{ __typename ... on UserError { code } } }", {"i": done["id"]})
    assert exported["exportImage"] == {"__typename": "NotSupportedError", "code": "EXPORT_TOO_LARGE"}
    copied = await me.execute('mutation($i: ID!) { replicateImage(input: {imageId: $i, name: "c"}) '
                              "{ __typename ... on UserError { code } } }", {"i": done["id"]})
    assert copied["replicateImage"] == {"__typename": "LimitExceededError", "code": "REPLICATE_TOO_LARGE"}


async def test_iso_images_need_iso_files(gql: GraphQLClient, db: Database, tmp_path: Path) -> None:
    """ISO images are made from ISO files only, and ISO files make ISO images only: both
    mismatches fail the job with FORMAT_MISMATCH and kill the image."""
    _, token = await make_account(db)
    me = gql.as_(token)
    iso = write_iso(tmp_path / "cd.iso")
    await upload(me, "imports", "cd.iso", iso.read_bytes())
    await upload(me, "imports", "plain.raw", b"\x01" * MiB)
    for key, kind in (("plain.raw", "ISO"), ("cd.iso", "SYSTEM_DISK")):
        got = (await me.execute(IMPORT, {"input": system_input("imports", key, kind=kind)}))["importImage"]
        assert got["__typename"] == "ImageJobSuccess", (key, got)
        job = await finished(me, got["job"]["id"])
        assert job["status"] == "FAIL" and job["error"]["code"] == "FORMAT_MISMATCH", (key, job)
        assert [(i["kind"], i["status"]) for i in job["images"]] == [(kind, "KILLED")]
    got = (await me.execute(IMPORT, {"input": system_input("imports", "cd.iso", kind="ISO")}))["importImage"]
    job = await finished(me, got["job"]["id"])
    assert (job["status"], job["error"]) == ("SUCCESS", None), job
    [done] = job["images"]
    assert (done["__typename"], done["kind"], done["status"], done["diskFormat"], done["quickProvisioning"]) == (
        "PrivateImage", "ISO", "ACTIVE", "ISO", False)
    assert done["sizeBytes"] == done["virtualSizeBytes"] == iso.stat().st_size == 64 * 1024


async def test_file_too_large_or_empty_creates_nothing(gql: GraphQLClient, db: Database,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Files of at most MAX_IMPORT_BYTES (128 GiB) are imported; a larger one is refused up
    front and nothing is created. The limit is lowered to 1 MiB where it is read: by the
    service (its own name, imported from ingest) and by the job's ingest."""
    assert ingest.MAX_IMPORT_BYTES == 128 * GiB
    monkeypatch.setattr("app.services.imports.MAX_IMPORT_BYTES", MiB)
    monkeypatch.setattr(ingest, "MAX_IMPORT_BYTES", MiB)
    _, token = await make_account(db)
    me = gql.as_(token)
    await upload(me, "imports", "over.raw", b"\x06" * (MiB + 1))
    got = (await me.execute(IMPORT, {"input": system_input("imports", "over.raw")}))["importImage"]
    # `limit` is in whole GiB, as the 128 GiB limit is reported: 1 MiB rounds down to 0.
    assert got == {"__typename": "LimitExceededError", "code": "FILE_TOO_LARGE", "limit": 0}
    assert (await me.execute("{ images(filter: {visibility: [PRIVATE]}) { totalCount } jobs { totalCount } }")) == {
        "images": {"totalCount": 0}, "jobs": {"totalCount": 0}}
    # An empty file holds no disk: refused as well, nothing created.
    await upload(me, "imports", "empty.raw", b"")
    got = (await me.execute(IMPORT, {"input": system_input("imports", "empty.raw")}))["importImage"]
    assert got == {"__typename": "ValidationError", "code": "INVALID_IMAGE_FILE", "field": "input.key"}
    assert (await me.execute("{ images(filter: {visibility: [PRIVATE]}) { totalCount } jobs { totalCount } }")) == {
        "images": {"totalCount": 0}, "jobs": {"totalCount": 0}}
    # Exactly at the limit is allowed, by the service and by the job.
    await upload(me, "imports", "limit.raw", b"\x06" * MiB)
    got = (await me.execute(IMPORT, {"input": system_input("imports", "limit.raw")}))["importImage"]
    assert got["__typename"] == "ImageJobSuccess", got
    job = await finished(me, got["job"]["id"])
    assert (job["status"], [(i["status"], i["sizeBytes"]) for i in job["images"]]) == ("SUCCESS", [("ACTIVE", MiB)])


async def test_encrypted_import_reads_back_only_with_the_key(gql: GraphQLClient, db: Database,
                                                             live_server: LiveServer) -> None:
    owner, token = await make_account(db)
    me = gql.as_(token)
    key_id = await make_kms_key(db, live_server.settings, owner)
    data = hashlib.sha256(b"secret").digest() * 200_000
    await upload(me, "imports", "secret.raw", data)
    got = (await me.execute(IMPORT, {"input": system_input("imports", "secret.raw", kmsKeyId=key_id)}))["importImage"]
    job = await finished(me, got["job"]["id"])
    [done] = job["images"]
    assert (done["status"], done["encrypted"], done["kmsKeyId"]) == ("ACTIVE", True, key_id)
    chunks, kms = data_plane(db, live_server.settings)
    async with db.uow(owner.id, write=False) as uow:
        view = await uow.images.get_visible(done["id"])
    assert view is not None
    manifest, _ = await chunks.load(view.image.disks[0]["manifestId"])
    plaintext = await kms.decrypt_data_key(owner.id, key_id, manifest.wrapped_key)
    assert b"".join([p async for p in chunks.read(manifest.id, data_key=plaintext)]) == data


async def test_default_key_is_created_on_first_use(gql: GraphQLClient, db: Database) -> None:
    _, token = await make_account(db)
    me = gql.as_(token)
    await upload(me, "imports", "d.raw", b"\x02" * MiB)
    got = (await me.execute(IMPORT, {"input": system_input("imports", "d.raw", encryptWithDefaultKey=True)}))["importImage"]
    [image] = got["images"]
    keys = (await me.execute("{ kmsKeys { edges { node { id alias isDefault } } } }"))["kmsKeys"]["edges"]
    assert [k["node"]["alias"] for k in keys] == ["ims/default"]
    assert image["kmsKeyId"] == keys[0]["node"]["id"]
    assert (await finished(me, got["job"]["id"]))["status"] == "SUCCESS"


@pytest.mark.parametrize(
    ("over", "typename", "code", "field"),
    [
        ({"os": None}, "ValidationError", "OS_REQUIRED", "input.os"),
        # The field names the value at fault, as for bits.
        ({"os": {"type": "LINUX", "platform": " ", "version": "12"}}, "ValidationError", "INVALID_OS",
         "input.os.platform"),
        ({"os": {"type": "LINUX", "platform": "Debian", "version": "v" * 129}}, "ValidationError", "INVALID_OS",
         "input.os.version"),
        ({"os": {"type": "LINUX", "platform": "Debian", "version": "12", "bits": 16}}, "ValidationError",
         "INVALID_OS", "input.os.bits"),
        ({"minDiskGb": 0}, "ValidationError", "INVALID_MIN_DISK", "input.minDiskGb"),
        ({"minDiskGb": 1025}, "ValidationError", "INVALID_MIN_DISK", "input.minDiskGb"),
        ({"kind": "DATA_DISK", "os": None, "minDiskGb": 2049}, "ValidationError", "INVALID_MIN_DISK", "input.minDiskGb"),
        ({"kind": "FULL_ECS"}, "NotSupportedError", "IMPORT_KIND_NOT_SUPPORTED", None),
        ({"kind": "ISO", "diskFormat": "QCOW2"}, "ValidationError", "FORMAT_MISMATCH", "input.diskFormat"),
        # A declared ISO file makes ISO images only: known before any job reads the file.
        ({"diskFormat": "ISO"}, "ValidationError", "FORMAT_MISMATCH", "input.diskFormat"),
        ({"kind": "DATA_DISK", "os": None, "diskFormat": "ISO"}, "ValidationError", "FORMAT_MISMATCH",
         "input.diskFormat"),
        ({"name": " lead"}, "ValidationError", "INVALID_NAME", "input.name"),
        ({"minRamMb": 10, "maxRamMb": 5}, "ValidationError", "INVALID_RAM_RANGE", "input.minRamMb"),
        ({"maxRamMb": 1_048_577}, "ValidationError", "INVALID_RAM_RANGE", "input.maxRamMb"),
        ({"public": True}, "ForbiddenError", "ADMIN_REQUIRED", None),
        ({"key": "missing.raw"}, "NotFoundError", "OBJECT_NOT_FOUND", None),
        ({"key": "s" * 256}, "NotFoundError", "OBJECT_NOT_FOUND", None),  # no file has such a name
        ({"bucket": "nobody-has-it"}, "NotFoundError", "BUCKET_NOT_FOUND", None),
        ({"kmsKeyId": "key-doesnotexist"}, "KmsKeyError", "KMS_KEY_NOT_FOUND", None),
        # An empty id is no key either: never a silently unencrypted (or default-key) image.
        ({"kmsKeyId": ""}, "KmsKeyError", "KMS_KEY_NOT_FOUND", None),
        ({"kmsKeyId": "", "encryptWithDefaultKey": True}, "KmsKeyError", "KMS_KEY_NOT_FOUND", None),
    ],
)
async def test_refusals_create_nothing(gql: GraphQLClient, db: Database, over: dict[str, Any], typename: str,
                                       code: str, field: str | None) -> None:
    _, token = await make_account(db)
    me = gql.as_(token)
    await upload(me, "imports", "d.raw", b"\x03" * MiB)
    got = (await me.execute(IMPORT, {"input": system_input("imports", "d.raw", **over)}))["importImage"]
    assert got["__typename"] == typename and got["code"] == code, got
    if typename == "ValidationError":
        assert got["field"] == field
    assert (await me.execute("{ images(filter: {visibility: [PRIVATE]}) { totalCount } jobs { totalCount } }")) == {
        "images": {"totalCount": 0}, "jobs": {"totalCount": 0}}


async def test_private_image_quota(gql: GraphQLClient, db: Database) -> None:
    account, token = await make_account(db)
    me = gql.as_(token)
    await upload(me, "imports", "d.raw", b"\x04" * MiB)
    set_quota = """mutation($a: ID!) { setQuota(input: {accountId: $a, resource: PRIVATE_IMAGES, limit: 1}) { __typename } }"""
    assert (await gql.execute(set_quota, {"a": account.id}))["setQuota"]["__typename"] == "SetQuotaSuccess"
    first = (await me.execute(IMPORT, {"input": system_input("imports", "d.raw")}))["importImage"]
    assert first["__typename"] == "ImageJobSuccess"
    second = (await me.execute(IMPORT, {"input": system_input("imports", "d.raw")}))["importImage"]
    assert second == {"__typename": "LimitExceededError", "code": "QUOTA_PRIVATE_IMAGES", "limit": 1}
    # The account's default key is made on first use, and a refused import is none.
    sealed = (await me.execute(IMPORT, {"input": system_input("imports", "d.raw", encryptWithDefaultKey=True)}))
    assert sealed["importImage"] == {"__typename": "LimitExceededError", "code": "QUOTA_PRIVATE_IMAGES", "limit": 1}
    assert (await me.execute("{ kmsKeys { totalCount } }"))["kmsKeys"]["totalCount"] == 0


async def test_public_imports_by_an_administrator(gql: GraphQLClient, db: Database) -> None:
    """Public images cannot be encrypted; a public import makes no private image of the
    administrator's, so their PRIVATE_IMAGES quota does not stand in its way."""
    await upload(gql, "admin-imports", "pub.raw", b"\x05" * MiB)
    refused = (await gql.execute(IMPORT, {"input": system_input("admin-imports", "pub.raw", public=True,
                                                                 encryptWithDefaultKey=True)}))["importImage"]
    assert refused == {"__typename": "NotSupportedError", "code": "PUBLIC_NOT_ENCRYPTED"}
    admin_id = (await gql.execute("{ viewer { account { id } } }"))["viewer"]["account"]["id"]
    set_quota = """mutation($a: ID!) { setQuota(input: {accountId: $a, resource: PRIVATE_IMAGES, limit: 1}) { __typename } }"""
    assert (await gql.execute(set_quota, {"a": admin_id}))["setQuota"]["__typename"] == "SetQuotaSuccess"
    private = (await gql.execute(IMPORT, {"input": system_input("admin-imports", "pub.raw")}))["importImage"]
    assert private["__typename"] == "ImageJobSuccess"
    over = (await gql.execute(IMPORT, {"input": system_input("admin-imports", "pub.raw")}))["importImage"]
    assert over == {"__typename": "LimitExceededError", "code": "QUOTA_PRIVATE_IMAGES", "limit": 1}
    public = (await gql.execute(IMPORT, {"input": system_input("admin-imports", "pub.raw", public=True)}))["importImage"]
    assert public["__typename"] == "ImageJobSuccess", public
    # Until its job makes it public, the image of a public import is no private image of the
    # administrator's: it takes no PRIVATE_IMAGES place (and does not once KILLED either).
    set_two = set_quota.replace("limit: 1", "limit: 2")
    assert (await gql.execute(set_two, {"a": admin_id}))["setQuota"]["__typename"] == "SetQuotaSuccess"
    used = (await gql.execute("{ viewer { quotas { resource used } } }"))["viewer"]["quotas"][0]
    assert used == {"resource": "PRIVATE_IMAGES", "used": 1}
    second = (await gql.execute(IMPORT, {"input": system_input("admin-imports", "pub.raw")}))["importImage"]
    assert second["__typename"] == "ImageJobSuccess", second
    job = await finished(gql, public["job"]["id"])
    assert job["status"] == "SUCCESS" and [i["__typename"] for i in job["images"]] == ["PublicImage"]


async def test_a_name_typed_with_combining_accents_is_stored_composed(gql: GraphQLClient, db: Database) -> None:
    _, token = await make_account(db)
    me = gql.as_(token)
    await upload(me, "imports", "disk.raw", bytes(MiB))
    got = (await me.execute(IMPORT, {"input": system_input("imports", "disk.raw", name="Cafe\u0301 server")}))
    [image] = got["importImage"]["images"]
    named = await me.execute("query($id: ID!) { image(id: $id) { ... on ImageBase { name } } }", {"id": image["id"]})
    assert named["image"]["name"] == "Caf\u00e9 server"
