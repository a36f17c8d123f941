"""Servers, volumes and the images made from them, through the live server over HTTP.

Every refusal is checked for its exact type and code, and for leaving nothing behind.
The live server runs one job worker, so image-creation jobs really run.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from app.compute.tables import Volume
from app.config import Settings
from app.db.tables import Account
from app.db.uow import Database
from app.storage.factory import service_bucket
from tests.compute.conftest import MiB, manifest_count
from tests.conftest import GraphQLClient
from tests.factories import (
    data_plane,
    make_account,
    make_image,
    make_image_with_data,
    make_kms_key,
    share,
    unshare,
)

#: The error members of each payload union, and the extra field each error type shows.
UNIONS = {
    "createServer": ("NotFoundError", "ValidationError", "ConflictError", "NotSupportedError", "KmsKeyError"),
    "deleteServer": ("NotFoundError",),
    "stopServer": ("NotFoundError",),
    "startServer": ("NotFoundError",),
    "createVolume": ("NotFoundError", "ValidationError", "KmsKeyError"),
    "createImageFromServer": ("ValidationError", "LimitExceededError"),
    "createImageFromVolume": ("ValidationError", "LimitExceededError"),
    "deleteImages": ("ValidationError",),
}
_EXTRA = {"ValidationError": "field", "LimitExceededError": "limit"}


def errors(field: str) -> str:
    extras = " ".join(f"... on {t} {{ {_EXTRA[t]} }}" for t in UNIONS[field] if t in _EXTRA)
    return f"__typename ... on UserError {{ code }} {extras}"

VOLUME = "id name role sizeGb serverId encrypted kmsKeyId sourceImageId"
SERVER = f"id name status region sourceImageId volumes {{ {VOLUME} }}"
IMAGE = """__typename ... on ImageBase { id kind status os { type platform version bits } minDiskGb minRamMb
  encrypted kmsKeyId quickProvisioning diskFormat origin { type ref } disks { role sizeGb storedBytes }
  tags { key value } }
  ... on PrivateImage { backup { id serverId sizeBytes newBytes } }"""
JOB = f"id type status progress error {{ code message }} images {{ {IMAGE} }}"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, workers=1, job_poll_interval=0.05)


async def run(client: GraphQLClient, field: str, input: dict[str, Any], success: str) -> dict[str, Any]:
    doc = f"""mutation($input: {field[0].upper()}{field[1:]}Input!) {{
      {field}(input: $input) {{ {errors(field)} {success} }} }}"""
    return (await client.execute(doc, {"input": input}))[field]  # type: ignore[no-any-return]


async def create_server(client: GraphQLClient, **input: Any) -> dict[str, Any]:
    input.setdefault("name", "web-1")
    return await run(client, "createServer", input, f"... on CreateServerSuccess {{ server {{ {SERVER} }} }}")


async def create_volume(client: GraphQLClient, **input: Any) -> dict[str, Any]:
    input.setdefault("name", "vol-1")
    return await run(client, "createVolume", input, f"... on CreateVolumeSuccess {{ volume {{ {VOLUME} }} }}")


async def image_from_server(client: GraphQLClient, **input: Any) -> dict[str, Any]:
    input.setdefault("name", "from-server")
    return await run(client, "createImageFromServer", input,
                     f"... on ImageJobSuccess {{ job {{ {JOB} }} images {{ {IMAGE} }} }}")


async def image_from_volume(client: GraphQLClient, **input: Any) -> dict[str, Any]:
    input.setdefault("name", "from-volume")
    return await run(client, "createImageFromVolume", input,
                     f"... on ImageJobSuccess {{ job {{ {JOB} }} images {{ {IMAGE} }} }}")


async def servers(client: GraphQLClient) -> list[dict[str, Any]]:
    data = await client.execute(f"{{ servers(first: 100) {{ totalCount edges {{ node {{ {SERVER} }} }} }} }}")
    return [e["node"] for e in data["servers"]["edges"]]


async def wait_job(client: GraphQLClient, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        job = (await client.execute(f"query($id: ID!) {{ job(id: $id) {{ {JOB} }} }}", {"id": job_id}))["job"]
        if job["status"] in ("SUCCESS", "FAIL"):
            return job  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.05)


async def quick_image(db: Database, settings: Settings, owner: Account, **fields: Any) -> Any:
    return await make_image_with_data(db, settings, owner, secrets.token_bytes(5 * MiB), **fields)


def err(typename: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"__typename": typename, "code": code, **extra}


# ---------------------------------------------------------------- createServer


async def test_create_server_from_own_public_and_accepted_shared_images(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    alice, alice_t = await make_account(db)
    bob, _ = await make_account(db)
    q = gql.as_(alice_t)
    own = await quick_image(db, settings, alice, min_disk_gb=5)
    public = await quick_image(db, settings, bob, visibility="PUBLIC", os_platform="Debian")
    shared = await quick_image(db, settings, bob)
    await share(db, shared, alice, "ACCEPTED")
    data_image = await quick_image(db, settings, alice, kind="DATA_DISK", os_type=None, min_disk_gb=3)

    made = await create_server(q, imageId=own.id, systemDiskGb=20, dataDisks=[{"sizeGb": 10},
                                                                              {"sizeGb": 4, "imageId": data_image.id}])
    server = made["server"]
    assert {k: server[k] for k in ("name", "status", "region", "sourceImageId")} == {
        "name": "web-1", "status": "RUNNING", "region": "region-1", "sourceImageId": own.id}
    assert [(v["role"], v["sizeGb"], v["serverId"], v["sourceImageId"], v["encrypted"]) for v in server["volumes"]] \
        == [("SYSTEM", 20, server["id"], own.id, False), ("DATA", 10, server["id"], None, False),
            ("DATA", 4, server["id"], data_image.id, False)]
    # The default system disk is the image's minDiskGb.
    for image in (public, shared):
        other = (await create_server(q, imageId=image.id))["server"]
        assert (other["sourceImageId"], other["volumes"][0]["sizeGb"]) == (image.id, image.min_disk_gb)
    assert {s["id"] for s in await servers(q)} >= {server["id"]}
    assert len(await servers(q)) == 3


async def test_create_server_refusals_change_nothing(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    alice, alice_t = await make_account(db)
    bob, _ = await make_account(db)
    q = gql.as_(alice_t)
    pending, rejected, stranger = [await quick_image(db, settings, bob) for _ in range(3)]
    await share(db, pending, alice, "PENDING")
    await share(db, rejected, alice, "REJECTED")
    own = await quick_image(db, settings, alice, min_disk_gb=8)
    queued = await make_image(db, alice, status="QUEUED")
    killed = await make_image(db, alice, status="KILLED")
    data_disk = await quick_image(db, settings, alice, kind="DATA_DISK", os_type=None)
    iso = await make_image(db, alice, kind="ISO", disk_format="ISO")
    manifests = await manifest_count(db)

    for image in (pending, rejected, stranger):
        assert await create_server(q, imageId=image.id) == err("NotFoundError", "IMAGE_NOT_FOUND")
    assert await create_server(q, imageId="img-nothing") == err("NotFoundError", "IMAGE_NOT_FOUND")
    for image in (queued, killed):
        assert await create_server(q, imageId=image.id) == err("ConflictError", "IMAGE_NOT_ACTIVE")
    for image in (data_disk, iso):
        assert await create_server(q, imageId=image.id) == err("NotSupportedError", "IMAGE_KIND_NOT_SUPPORTED")
    assert await create_server(q, imageId=own.id, systemDiskGb=7) == err(
        "ValidationError", "DISK_SMALLER_THAN_IMAGE", field="input.systemDiskGb")
    assert await create_server(q, imageId=own.id, systemDiskGb=0) == err(
        "ValidationError", "INVALID_DISK_SIZE", field="input.systemDiskGb")
    assert await create_server(q, imageId=own.id, name=" bad") == err("ValidationError", "INVALID_NAME",
                                                                         field="input.name")
    assert await create_server(q, imageId=own.id, region="mars-1") == err("ValidationError", "INVALID_REGION",
                                                                             field="input.region")
    assert await create_server(q, imageId=own.id, dataDisks=[{"sizeGb": 1}] * 24) == err(
        "ValidationError", "TOO_MANY_DATA_DISKS", field="input.dataDisks")
    assert await create_server(q, imageId=own.id, dataDisks=[{"sizeGb": 1, "imageId": own.id}]) == err(
        "NotSupportedError", "IMAGE_KIND_NOT_SUPPORTED")
    assert await create_server(q, imageId=own.id, dataDisks=[{"sizeGb": 1}, {"sizeGb": 0}]) == err(
        "ValidationError", "INVALID_DISK_SIZE", field="input.dataDisks[1].sizeGb")
    assert await create_server(q, imageId=own.id, dataDisks=[{"sizeGb": 1, "imageId": stranger.id}]) == err(
        "NotFoundError", "IMAGE_NOT_FOUND")
    assert await servers(q) == []
    assert await manifest_count(db) == manifests


async def test_kms_keys_of_new_disks(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    alice, alice_t = await make_account(db)
    bob, _ = await make_account(db)
    q = gql.as_(alice_t)
    key = await make_kms_key(db, settings, alice)
    image_key = await make_kms_key(db, settings, alice)
    plain = await quick_image(db, settings, alice)
    sealed = await quick_image(db, settings, alice, kms_key_id=image_key)
    bobs_key = await make_kms_key(db, settings, bob)

    server = (await create_server(q, imageId=sealed.id, dataDisks=[{"sizeGb": 2}], kmsKeyId=key))["server"]
    # The image's disk keeps the image's key; the new blank disk takes the requested one.
    assert [(v["encrypted"], v["kmsKeyId"]) for v in server["volumes"]] == [(True, image_key), (True, key)]
    server = (await create_server(q, imageId=plain.id, dataDisks=[{"sizeGb": 2}]))["server"]
    assert [v["encrypted"] for v in server["volumes"]] == [False, False]

    manifests = await manifest_count(db)
    # An empty id is no key either: never a silently unencrypted disk.
    for key_id in (bobs_key, "key-missing", ""):
        refused = await create_server(q, imageId=plain.id, dataDisks=[{"sizeGb": 2}], kmsKeyId=key_id)
        assert refused == err("KmsKeyError", "KMS_KEY_NOT_FOUND")
        assert await create_volume(q, sizeGb=1, kmsKeyId=key_id) == err("KmsKeyError", "KMS_KEY_NOT_FOUND")
    await gql.as_(alice_t).execute("mutation($k: ID!) { disableKmsKey(input: {keyId: $k}) { __typename } }",
                                   {"k": image_key})
    assert await create_server(q, imageId=sealed.id) == err("KmsKeyError", "KMS_KEY_DISABLED")
    assert await create_volume(q, sizeGb=1, kmsKeyId=bobs_key) == err("KmsKeyError", "KMS_KEY_NOT_FOUND")
    assert await manifest_count(db) == manifests
    assert len(await servers(q)) == 2


async def test_a_full_ecs_image_is_under_one_kms_key(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    """The image records one key, and sharing, grants and key states are checked on it: a
    server whose disks are under two keys makes no full-ECS image (one of its system disk
    alone, yes); disks under one key and plain ones do, under that key."""
    alice, alice_t = await make_account(db)
    q = gql.as_(alice_t)
    key, image_key = await make_kms_key(db, settings, alice), await make_kms_key(db, settings, alice)
    sealed = await quick_image(db, settings, alice, kms_key_id=image_key)
    mixed = (await create_server(q, imageId=sealed.id, dataDisks=[{"sizeGb": 2}], kmsKeyId=key))["server"]
    assert [v["kmsKeyId"] for v in mixed["volumes"]] == [image_key, key]
    before = await q.execute("{ images(filter: {visibility: [PRIVATE]}) { totalCount } }")
    assert await image_from_server(q, serverId=mixed["id"], kind="FULL_ECS") == err(
        "NotSupportedError", "FULL_ECS_MIXED_KEYS")
    assert await q.execute("{ images(filter: {visibility: [PRIVATE]}) { totalCount } }") == before
    system_only = await image_from_server(q, serverId=mixed["id"])
    [system_image] = system_only["images"]
    assert (system_image["kind"], system_image["kmsKeyId"]) == ("SYSTEM_DISK", image_key)

    one_key = (await create_server(q, imageId=sealed.id, dataDisks=[{"sizeGb": 2}]))["server"]
    assert [v["kmsKeyId"] for v in one_key["volumes"]] == [image_key, None]
    full = await image_from_server(q, serverId=one_key["id"], kind="FULL_ECS")
    assert (await wait_job(q, full["job"]["id"]))["status"] == "SUCCESS"
    [full_image] = full["images"]
    assert (full_image["kind"], full_image["encrypted"], full_image["kmsKeyId"]) == ("FULL_ECS", True, image_key)


async def test_a_disabled_or_pending_key_stops_images_of_its_disks(
    gql: GraphQLClient, db: Database, settings: Settings,
) -> None:
    """Imaging reads the disks: under a disabled or pending-deletion key it is a KmsKeyError
    and makes nothing; a data disk's key does not stop an image of the system disk alone;
    re-enabling the key restores it."""
    alice, alice_t = await make_account(db)
    q = gql.as_(alice_t)
    key = await make_kms_key(db, settings, alice)
    plain = await quick_image(db, settings, alice)
    server = (await create_server(q, imageId=plain.id, dataDisks=[{"sizeGb": 2}], kmsKeyId=key))["server"]
    plain_server = (await create_server(q, imageId=plain.id))["server"]
    data_volume = (await create_volume(q, sizeGb=1, kmsKeyId=key))["volume"]
    disabling = await q.execute("mutation($k: ID!) { disableKmsKey(input: {keyId: $k}) { __typename } }", {"k": key})
    assert disabling["disableKmsKey"]["__typename"] == "KmsKeySuccess"
    before = await q.execute("{ images(filter: {visibility: [PRIVATE]}) { totalCount } }")
    disabled = err("KmsKeyError", "KMS_KEY_DISABLED")
    assert await image_from_server(q, serverId=server["id"]) == disabled
    assert await image_from_server(q, serverId=server["id"], kind="FULL_ECS") == disabled
    assert await image_from_volume(q, volumeId=server["volumes"][1]["id"]) == disabled
    assert await image_from_volume(q, volumeId=data_volume["id"]) == disabled
    await q.execute("mutation($k: ID!) { enableKmsKey(input: {keyId: $k}) { __typename } }", {"k": key})
    await q.execute("mutation($k: ID!) { scheduleKmsKeyDeletion(input: {keyId: $k, pendingDays: 7}) { __typename } }",
                    {"k": key})
    assert await image_from_volume(q, volumeId=data_volume["id"]) == err("KmsKeyError", "KMS_KEY_PENDING_DELETION")
    assert await q.execute("{ images(filter: {visibility: [PRIVATE]}) { totalCount } }") == before
    # A plain server's images are not the key's business.
    assert "job" in await image_from_server(q, serverId=plain_server["id"])
    await q.execute("mutation($k: ID!) { cancelKmsKeyDeletion(input: {keyId: $k}) { __typename } }", {"k": key})
    await q.execute("mutation($k: ID!) { enableKmsKey(input: {keyId: $k}) { __typename } }", {"k": key})
    made = await image_from_server(q, serverId=server["id"], kind="FULL_ECS")
    assert (await wait_job(q, made["job"]["id"]))["status"] == "SUCCESS"


# ---------------------------------------------------------------- queries, deleteServer, createVolume


async def test_servers_and_volumes_are_their_owners_only(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    alice, alice_t = await make_account(db)
    _, bob_t = await make_account(db)
    image = await quick_image(db, settings, alice)
    server = (await create_server(gql.as_(alice_t), imageId=image.id))["server"]
    volume_id = server["volumes"][0]["id"]
    b = gql.as_(bob_t)
    one = f"query($id: ID!) {{ server(id: $id) {{ id }} volume(id: \"{volume_id}\") {{ id }} node(id: $id) {{ id }} }}"
    assert await b.execute(one, {"id": server["id"]}) == {"server": None, "volume": None, "node": None}
    assert await servers(b) == []
    assert await run(b, "deleteServer", {"id": server["id"]}, "") == err("NotFoundError", "SERVER_NOT_FOUND")
    assert await image_from_server(b, serverId=server["id"]) == err("NotFoundError", "SERVER_NOT_FOUND")
    assert await image_from_volume(b, volumeId=volume_id) == err("NotFoundError", "VOLUME_NOT_FOUND")
    mine = await gql.as_(alice_t).execute(one, {"id": server["id"]})
    assert mine == {"server": {"id": server["id"]}, "volume": {"id": volume_id}, "node": {"id": server["id"]}}


async def test_delete_server_keeps_data_disks_when_asked(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    alice, alice_t = await make_account(db)
    q = gql.as_(alice_t)
    image = await quick_image(db, settings, alice)
    first = (await create_server(q, imageId=image.id, dataDisks=[{"sizeGb": 2}]))["server"]
    second = (await create_server(q, imageId=image.id, dataDisks=[{"sizeGb": 2}]))["server"]
    manifests = await manifest_count(db)
    deleted = await run(q, "deleteServer", {"id": first["id"]}, "... on DeleteServerSuccess { deletedId }")
    assert deleted == {"__typename": "DeleteServerSuccess", "deletedId": first["id"]}
    # Its system disk shared the image's manifest (released, not deleted) and its blank disk had its own.
    assert await manifest_count(db) == manifests - 1
    await run(q, "deleteServer", {"id": second["id"], "deleteVolumes": False}, "")
    lookup = "query($a: ID!, $b: ID!) { a: volume(id: $a) { id serverId role } b: volume(id: $b) { id } }"
    left = await q.execute(lookup, {"a": second["volumes"][1]["id"], "b": second["volumes"][0]["id"]})
    assert left == {"a": {"id": second["volumes"][1]["id"], "serverId": None, "role": "DATA"}, "b": None}
    assert await servers(q) == []
    assert (await q.execute("query($id: ID!) { image(id: $id) { __typename } }", {"id": image.id}))["image"]


async def test_create_volume_rules(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    alice, alice_t = await make_account(db)
    bob, _ = await make_account(db)
    q = gql.as_(alice_t)
    data_image = await quick_image(db, settings, alice, kind="DATA_DISK", os_type=None, min_disk_gb=3)
    stranger = await quick_image(db, settings, bob, kind="DATA_DISK", os_type=None)
    iso = await make_image(db, alice, kind="ISO", disk_format="ISO")
    system = await quick_image(db, settings, alice, min_disk_gb=1)
    blank = (await create_volume(q, sizeGb=100))["volume"]
    assert {k: blank[k] for k in ("role", "sizeGb", "serverId", "encrypted", "sourceImageId")} == {
        "role": "DATA", "sizeGb": 100, "serverId": None, "encrypted": False, "sourceImageId": None}
    filled = (await create_volume(q, sizeGb=3, imageId=data_image.id))["volume"]
    assert filled["sourceImageId"] == data_image.id
    manifests = await manifest_count(db)
    assert await create_volume(q, sizeGb=2, imageId=data_image.id) == err(
        "ValidationError", "DISK_SMALLER_THAN_IMAGE", field="input.sizeGb")
    assert await create_volume(q, sizeGb=40000) == err("ValidationError", "INVALID_DISK_SIZE", field="input.sizeGb")
    assert await create_volume(q, sizeGb=5, imageId=iso.id) == err(
        "ValidationError", "INVALID_VOLUME_IMAGE", field="input.imageId")
    assert await create_volume(q, sizeGb=5, imageId=stranger.id) == err("NotFoundError", "IMAGE_NOT_FOUND")
    # An empty id names no image: not a blank disk.
    assert await create_volume(q, sizeGb=5, imageId="") == err("NotFoundError", "IMAGE_NOT_FOUND")
    assert await create_server(q, imageId=system.id, dataDisks=[{"sizeGb": 5, "imageId": ""}]) == err(
        "NotFoundError", "IMAGE_NOT_FOUND")
    assert await manifest_count(db) == manifests
    assert await servers(q) == []
    async with db.uow(write=False) as uow:  # the two made above, no blank one
        assert (await uow.session.execute(select(func.count()).select_from(Volume))).scalar_one() == 2


async def test_an_image_whose_stored_data_fails_verification_provisions_nothing(
    gql: GraphQLClient, db: Database, settings: Settings, tmp_path: Path
) -> None:
    """A chunk of the image gone from the store: the disks that must read it (converted from
    a qcow2 image, or a plain quick image copied under a new key) are refused with the
    image's IMAGE_DATA_INVALID, not a masked internal error, and nothing is made."""
    alice, alice_t = await make_account(db)
    q = gql.as_(alice_t)
    key = await make_kms_key(db, settings, alice)
    (tmp_path / "disk.raw").write_bytes(secrets.token_bytes(MiB))
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(tmp_path / "disk.raw"),
                    str(tmp_path / "disk.qcow2")], check=True, capture_output=True)
    qcow2 = await make_image_with_data(db, settings, alice, (tmp_path / "disk.qcow2").read_bytes(),
                                       disk_format="QCOW2", quick_provisioning=False, virtual_size_bytes=MiB,
                                       min_disk_gb=1)
    plain = await quick_image(db, settings, alice, min_disk_gb=1)
    chunks, _ = data_plane(db, settings)
    for image in (qcow2, plain):
        _, refs = await chunks.load(image.disks[0]["manifestId"])
        await chunks.stores["region-1"].delete(service_bucket("region-1"), f"chunks/{refs[0].digest}")
    manifests = await manifest_count(db)
    refused = err("ValidationError", "IMAGE_DATA_INVALID", field=None)
    assert await create_server(q, imageId=qcow2.id) == refused
    assert await create_volume(q, sizeGb=1, imageId=qcow2.id) == refused
    assert await create_server(q, imageId=plain.id, kmsKeyId=key) == refused
    assert await create_volume(q, sizeGb=1, imageId=plain.id, kmsKeyId=key) == refused
    assert await servers(q) == []
    async with db.uow(write=False) as uow:
        assert (await uow.session.execute(select(func.count()).select_from(Volume))).scalar_one() == 0
    assert await manifest_count(db) == manifests
    work = settings.data_dir / "work"
    assert [p for p in work.rglob("*") if p.is_file() and p.name != ".lock"] == []


# ---------------------------------------------------------------- createImageFromServer / FromVolume


async def test_system_disk_image_from_server_runs_a_job_to_active(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    alice, alice_t = await make_account(db)
    q = gql.as_(alice_t)
    key = await make_kms_key(db, settings, alice)
    image = await quick_image(db, settings, alice, kms_key_id=key, os_platform="CentOS", boot_mode="UEFI")
    server = (await create_server(q, imageId=image.id, systemDiskGb=12))["server"]
    made = await image_from_server(q, serverId=server["id"], minRamMb=1024, tags=[{"key": "env", "value": "prod"}])
    assert made["__typename"] == "ImageJobSuccess"
    assert made["job"]["type"] == "CREATE_IMAGE_FROM_SERVER"
    assert made["images"][0]["status"] in ("QUEUED", "SAVING", "ACTIVE")
    job = await wait_job(q, made["job"]["id"])
    assert (job["status"], job["error"], job["progress"]) == ("SUCCESS", None, 1.0)
    new = job["images"][0]
    assert {k: new[k] for k in ("kind", "status", "minDiskGb", "minRamMb", "encrypted", "kmsKeyId",
                                "quickProvisioning", "diskFormat", "origin", "tags", "backup")} == {
        "kind": "SYSTEM_DISK", "status": "ACTIVE", "minDiskGb": 12, "minRamMb": 1024, "encrypted": True,
        "kmsKeyId": key, "quickProvisioning": True, "diskFormat": "RAW",
        "origin": {"type": "SERVER", "ref": server["id"]}, "tags": [{"key": "env", "value": "prod"}],
        "backup": None}
    assert new["os"] == {"type": "LINUX", "platform": "CentOS", "version": "Ubuntu 22.04 server 64bit", "bits": 64}
    assert [(d["role"], d["sizeGb"]) for d in new["disks"]] == [("SYSTEM", 12)]


async def test_full_ecs_image_has_every_disk_and_a_backup(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    alice, alice_t = await make_account(db)
    q = gql.as_(alice_t)
    image = await quick_image(db, settings, alice)
    server = (await create_server(q, imageId=image.id, dataDisks=[{"sizeGb": 3}, {"sizeGb": 4}]))["server"]
    made = await image_from_server(q, serverId=server["id"], kind="FULL_ECS")
    assert made["job"]["type"] == "CREATE_FULL_ECS_IMAGE"
    job = await wait_job(q, made["job"]["id"])
    new = job["images"][0]
    assert (job["status"], new["kind"], new["status"]) == ("SUCCESS", "FULL_ECS", "ACTIVE")
    assert [(d["role"], d["sizeGb"]) for d in new["disks"]] == [("SYSTEM", 1), ("DATA", 3), ("DATA", 4)]
    backup = new["backup"]
    assert backup["serverId"] == server["id"] and backup["sizeBytes"] == 8 * 1024**3
    assert backup["newBytes"] == 5 * MiB  # the system disk's data; blank disks store nothing
    node = await q.execute("query($id: ID!) { node(id: $id) { ... on Backup { id newBytes } } }", {"id": backup["id"]})
    assert node["node"] == {"id": backup["id"], "newBytes": 5 * MiB}
    again = await wait_job(q, (await image_from_server(q, serverId=server["id"], kind="FULL_ECS"))["job"]["id"])
    assert again["images"][0]["backup"]["newBytes"] == 0

    # deleteImages with deleteBackups removes the backup too; without, it stays.
    deleted = await run(q, "deleteImages", {"ids": [new["id"]], "deleteBackups": True}, "")
    assert deleted == {"__typename": "DeleteImagesSuccess"}
    gone = await q.execute("query($id: ID!) { node(id: $id) { id } }", {"id": backup["id"]})
    assert gone == {"node": None}
    kept = again["images"][0]["backup"]["id"]
    await run(q, "deleteImages", {"ids": [again["images"][0]["id"]]}, "")
    assert (await q.execute("query($id: ID!) { node(id: $id) { id } }", {"id": kept}))["node"] == {"id": kept}


async def test_image_from_server_refusals(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    alice, alice_t = await make_account(db)
    q = gql.as_(alice_t)
    image = await quick_image(db, settings, alice)
    server = (await create_server(q, imageId=image.id))["server"]
    big = (await create_server(q, imageId=image.id, systemDiskGb=1025))["server"]
    # Disks are allocated lazily: 1 TiB of system disk costs no more than the image's chunks.
    edge = (await create_server(q, imageId=image.id, systemDiskGb=1024))["server"]
    before = await q.execute("{ images(filter: {visibility: [PRIVATE]}) { totalCount } }")
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"kind": "DATA_DISK"}, err("ValidationError", "INVALID_IMAGE_KIND", field="input.kind")),
        ({"kind": "ISO"}, err("ValidationError", "INVALID_IMAGE_KIND", field="input.kind")),
        ({"name": ""}, err("ValidationError", "INVALID_NAME", field="input.name")),
        ({"description": "<b>"}, err("ValidationError", "INVALID_DESCRIPTION", field="input.description")),
        ({"minRamMb": 2048, "maxRamMb": 1024}, err("ValidationError", "INVALID_RAM_RANGE", field="input.minRamMb")),
        ({"maxRamMb": -1}, err("ValidationError", "INVALID_RAM_RANGE", field="input.maxRamMb")),
        ({"tags": [{"key": "a b", "value": "x"}]}, err("ValidationError", "INVALID_TAG_KEY", field="input.tags[0].key")),
        ({"tags": [{"key": "k", "value": "x"}, {"key": "k", "value": "y"}]},
         err("ValidationError", "DUPLICATE_TAG_KEY", field="input.tags[1].key")),
        ({"tags": [{"key": f"k{i}", "value": ""} for i in range(11)]}, err("LimitExceededError", "TOO_MANY_TAGS",
                                                                             limit=10)),
        ({"serverId": "srv-nothing"}, err("NotFoundError", "SERVER_NOT_FOUND")),
        ({"serverId": big["id"]}, err("LimitExceededError", "SYSTEM_DISK_TOO_LARGE", limit=1024)),
    ]
    for change, expected in cases:
        assert await image_from_server(q, **{"serverId": server["id"], **change}) == expected, change
    assert await q.execute("{ images(filter: {visibility: [PRIVATE]}) { totalCount } }") == before
    # A server whose system disk exceeds 1 TiB can still be saved whole (FULL_ECS).
    full = await image_from_server(q, serverId=big["id"], kind="FULL_ECS")
    assert (await wait_job(q, full["job"]["id"]))["status"] == "SUCCESS"
    # A system disk of exactly 1 TiB makes a SYSTEM_DISK image.
    made = await image_from_server(q, serverId=edge["id"])
    assert made["__typename"] == "ImageJobSuccess", made
    job = await wait_job(q, made["job"]["id"])
    assert (job["type"], job["status"], job["error"]) == ("CREATE_IMAGE_FROM_SERVER", "SUCCESS", None)
    [new] = job["images"]
    assert (new["kind"], new["status"], new["minDiskGb"]) == ("SYSTEM_DISK", "ACTIVE", 1024)
    assert [(d["role"], d["sizeGb"]) for d in new["disks"]] == [("SYSTEM", 1024)]


async def test_creation_quotas(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    alice, alice_t = await make_account(db)
    q = gql.as_(alice_t)
    image = await quick_image(db, settings, alice)
    server = (await create_server(q, imageId=image.id))["server"]
    quota = "mutation($i: SetQuotaInput!) { setQuota(input: $i) { __typename } }"
    await gql.execute(quota, {"i": {"accountId": alice.id, "resource": "PRIVATE_IMAGES", "limit": 1}})
    assert await image_from_server(q, serverId=server["id"]) == err("LimitExceededError", "QUOTA_PRIVATE_IMAGES",
                                                                       limit=1)
    await gql.execute(quota, {"i": {"accountId": alice.id, "resource": "PRIVATE_IMAGES", "limit": 50}})
    await gql.execute(quota, {"i": {"accountId": alice.id, "resource": "CONCURRENT_CREATIONS", "limit": 0}})
    volume_id = server["volumes"][0]["id"]
    assert await image_from_volume(q, volumeId=volume_id) == err("LimitExceededError", "QUOTA_CONCURRENT_CREATIONS",
                                                                    limit=0)
    assert (await q.execute("{ images(filter: {visibility: [PRIVATE]}) { totalCount } }"))["images"][
        "totalCount"] == 1


async def test_images_from_volumes(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    alice, alice_t = await make_account(db)
    q = gql.as_(alice_t)
    public = await quick_image(db, settings, alice, visibility="PUBLIC", os_platform="Windows", os_type="WINDOWS")
    server = (await create_server(q, imageId=public.id, dataDisks=[{"sizeGb": 3}]))["server"]
    system_volume, data_volume = (v["id"] for v in server["volumes"])
    assert await image_from_volume(q, volumeId=system_volume, kind="SYSTEM_DISK") == err(
        "ValidationError", "OS_REQUIRED", field="input.os")
    assert await image_from_volume(q, volumeId=system_volume, kind="FULL_ECS") == err(
        "ValidationError", "INVALID_IMAGE_KIND", field="input.kind")
    os_input = {"type": "WINDOWS", "platform": "Windows", "version": "Windows Server 2022", "bits": 64}
    assert await image_from_volume(q, volumeId=system_volume, kind="SYSTEM_DISK",
                                   os={**os_input, "bits": 16}) == err("ValidationError", "INVALID_OS",
                                                                      field="input.os.bits")
    made = await image_from_volume(q, volumeId=system_volume, kind="SYSTEM_DISK", os=os_input)
    job = await wait_job(q, made["job"]["id"])
    assert job["type"] == "CREATE_IMAGE_FROM_VOLUME" and job["status"] == "SUCCESS"
    new = job["images"][0]
    assert (new["kind"], new["os"], new["origin"]) == ("SYSTEM_DISK", os_input, {"type": "VOLUME",
                                                                                  "ref": system_volume})
    data = await wait_job(q, (await image_from_volume(q, volumeId=data_volume))["job"]["id"])
    assert (data["images"][0]["kind"], data["images"][0]["os"], data["images"][0]["minDiskGb"]) == (
        "DATA_DISK", None, 3)


async def test_source_image_ids_hide_images_the_owner_no_longer_sees(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    alice, alice_t = await make_account(db)
    bob, _ = await make_account(db)
    q = gql.as_(alice_t)
    shared = await quick_image(db, settings, bob, kind="SYSTEM_DISK")
    await share(db, shared, alice, "ACCEPTED")
    server = (await create_server(q, imageId=shared.id))["server"]
    assert (server["sourceImageId"], server["volumes"][0]["sourceImageId"]) == (shared.id, shared.id)
    await unshare(db, shared, alice)
    [kept] = await servers(q)
    assert (kept["id"], kept["sourceImageId"], kept["volumes"][0]["sourceImageId"]) == (server["id"], None, None)
    # The server keeps working: an image of it can still be made.
    made = await image_from_server(q, serverId=server["id"])
    assert (await wait_job(q, made["job"]["id"]))["status"] == "SUCCESS"
