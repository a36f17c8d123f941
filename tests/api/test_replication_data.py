"""replicateImage end to end: the mutation over HTTP, the job run by a worker, and what the
copy then holds in the database and the chunk store — and that copy and source share no
fate: deleting either (and collecting garbage at once) leaves the other readable."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings
from app.db.tables import Account, Image
from app.db.uow import Database
from app.domain.enums import DiskFormat
from app.formats import convert
from app.storage.factory import service_bucket
from tests.api.ops import delete_images
from tests.api.replication_helpers import (
    DATA,
    MiB,
    collect_garbage,
    disable_key,
    get_image,
    grant,
    manifest,
    manifest_id,
    read_back,
    replicate,
    replicate_and_wait,
    row,
    running_worker,
    two_regions,
    wait_job,
)
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
from tests.hostile_files import write_vhd

CHECKSUM = "sha256:" + hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return two_regions(settings)


def succeeded(job: dict[str, Any], copy: dict[str, Any]) -> None:
    assert (job["type"], job["status"], job["progress"], job["error"]) == ("REPLICATE_IMAGE", "SUCCESS", 1.0, None)
    assert [i["id"] for i in job["images"]] == [copy["id"]]
    assert copy["status"] == "ACTIVE" and copy["quickProvisioning"] is True


async def delete(client: GraphQLClient, image_id: str) -> None:
    assert (await delete_images(client, [image_id]))["__typename"] == "DeleteImagesSuccess"


async def survives_the_other(
    db: Database, settings: Settings, client: GraphQLClient, owner: Account, keep: Image, drop: str, expected: bytes
) -> None:
    """Deleting `drop` and collecting garbage at once leaves `keep`'s data intact."""
    await delete(client, drop)
    await collect_garbage(db, settings)
    assert await read_back(db, settings, owner, manifest_id(keep)) == expected


# ---------------------------------------------------------------- same region, plain


async def test_plain_copy_in_the_region_shares_the_manifest(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    alice, token = await make_account(db)
    source = await make_image_with_data(db, settings, alice, DATA, tags={"env": "prod"}, min_ram_mb=512,
                                        licensed_platform="Ubuntu", boot_mode="UEFI")
    q = gql.as_(token)
    job, copy = await replicate_and_wait(q, settings, db, source.id, name="web copy", description="for tests")
    succeeded(job, copy)
    assert {k: copy[k] for k in ("name", "description", "region", "kind", "diskFormat", "encrypted", "kmsKeyId",
                                 "checksum", "sizeBytes", "minDiskGb", "minRamMb", "bootMode", "tags")} == {
        "name": "web copy", "description": "for tests", "region": "region-1", "kind": "SYSTEM_DISK",
        "diskFormat": "RAW", "encrypted": False, "kmsKeyId": None, "checksum": CHECKSUM, "sizeBytes": len(DATA),
        "minDiskGb": source.min_disk_gb, "minRamMb": 512, "bootMode": "UEFI", "tags": []}
    assert copy["origin"] == {"type": "IMAGE", "ref": source.id}
    assert copy["os"] == {"type": "LINUX", "platform": "Ubuntu", "version": "Ubuntu 22.04 server 64bit", "bits": 64}
    stored = await row(db, alice, copy["id"])
    assert stored.licensed_platform == "Ubuntu" and stored.backup_id is None
    # O(1): the copy holds the source's manifest, which now has two references.
    assert manifest_id(stored) == manifest_id(source)
    found = await manifest(db, manifest_id(source))
    assert found is not None and found.refcount == 2
    await survives_the_other(db, settings, q, alice, stored, source.id, DATA)
    found = await manifest(db, manifest_id(source))
    assert found is not None and found.refcount == 1


async def test_deleting_the_copy_leaves_the_source(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    alice, token = await make_account(db)
    source = await make_image_with_data(db, settings, alice, DATA)
    q = gql.as_(token)
    _, copy = await replicate_and_wait(q, settings, db, source.id)
    await survives_the_other(db, settings, q, alice, source, copy["id"], DATA)


async def test_deleting_the_source_before_the_job_runs_leaves_the_copy_whole(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    """The copy holds references to the source's data from the moment it is accepted."""
    alice, token = await make_account(db)
    key = await make_kms_key(db, settings, alice)
    plain = await make_image_with_data(db, settings, alice, DATA)
    q = gql.as_(token)
    kept = await replicate(q, plain.id)
    sealed = await replicate(q, plain.id, kmsKeyId=key)
    assert (await delete_images(q, [kept["images"][0]["id"]]))["code"] == "IMAGE_BUSY"
    await delete(q, plain.id)
    await collect_garbage(db, settings)
    async with running_worker(settings, db):
        for payload in (kept, sealed):
            assert (await wait_job(q, payload["job"]["id"]))["status"] == "SUCCESS"
    for payload in (kept, sealed):
        stored = await row(db, alice, payload["images"][0]["id"])
        assert await read_back(db, settings, alice, manifest_id(stored)) == DATA


# ---------------------------------------------------------------- keys


async def test_plain_to_encrypted(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    alice, token = await make_account(db)
    key = await make_kms_key(db, settings, alice)
    source = await make_image_with_data(db, settings, alice, DATA)
    q = gql.as_(token)
    job, copy = await replicate_and_wait(q, settings, db, source.id, kmsKeyId=key)
    succeeded(job, copy)
    assert (copy["encrypted"], copy["kmsKeyId"], copy["checksum"], copy["sizeBytes"]) == (True, key, CHECKSUM,
                                                                                          len(DATA))
    stored = await row(db, alice, copy["id"])
    sealed = await manifest(db, manifest_id(stored))
    assert sealed is not None and (sealed.kms_key_id, sealed.refcount) == (key, 1) and sealed.wrapped_key
    assert copy["disks"][0]["storedBytes"] == sealed.stored_bytes == 5 * MiB + 7 + 2 * 28
    assert (await manifest(db, manifest_id(source))).refcount == 1  # type: ignore[union-attr]
    await survives_the_other(db, settings, q, alice, stored, source.id, DATA)


async def test_encrypted_to_plain(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    alice, token = await make_account(db)
    key = await make_kms_key(db, settings, alice)
    source = await make_image_with_data(db, settings, alice, DATA, kms_key_id=key)
    q = gql.as_(token)
    job, copy = await replicate_and_wait(q, settings, db, source.id)
    succeeded(job, copy)
    assert (copy["encrypted"], copy["kmsKeyId"], copy["checksum"]) == (False, None, CHECKSUM)
    stored = await row(db, alice, copy["id"])
    plain = await manifest(db, manifest_id(stored))
    assert plain is not None and plain.kms_key_id is None and plain.wrapped_key is None
    await survives_the_other(db, settings, q, alice, stored, source.id, DATA)


async def test_key_a_to_key_b_and_to_the_default_key(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    alice, token = await make_account(db)
    key_a, key_b = await make_kms_key(db, settings, alice), await make_kms_key(db, settings, alice)
    source = await make_image_with_data(db, settings, alice, DATA, kms_key_id=key_a)
    q = gql.as_(token)
    _, to_b = await replicate_and_wait(q, settings, db, source.id, name="to b", kmsKeyId=key_b)
    _, to_default = await replicate_and_wait(q, settings, db, source.id, name="to default",
                                             encryptWithDefaultKey=True)
    keys = (await q.execute("{ kmsKeys { edges { node { id alias } } } }"))["kmsKeys"]["edges"]
    default_key = next(e["node"]["id"] for e in keys if e["node"]["alias"] == "ims/default")
    assert (to_b["kmsKeyId"], to_default["kmsKeyId"]) == (key_b, default_key)
    for copy, key in ((to_b, key_b), (to_default, default_key)):
        stored = await row(db, alice, copy["id"])
        sealed = await manifest(db, manifest_id(stored))
        assert sealed is not None and sealed.kms_key_id == key and copy["checksum"] == CHECKSUM
        # Sealed chunks are never shared: every stored byte of the copy is its own.
        assert sealed.new_bytes == sealed.stored_bytes
    await delete(q, source.id)
    # Key A may even go: the copies no longer need it.
    await disable_key(db, settings, alice, key_a)
    await collect_garbage(db, settings)
    for copy in (to_b, to_default):
        assert await read_back(db, settings, alice, manifest_id(await row(db, alice, copy["id"]))) == DATA


async def test_a_key_disabled_before_the_job_runs_fails_it_and_kills_the_copy(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    alice, token = await make_account(db)
    key = await make_kms_key(db, settings, alice)
    source = await make_image_with_data(db, settings, alice, DATA)
    q = gql.as_(token)
    payload = await replicate(q, source.id, kmsKeyId=key)
    assert (await manifest(db, manifest_id(source))).refcount == 2  # type: ignore[union-attr]
    await disable_key(db, settings, alice, key)
    async with running_worker(settings, db):
        job = await wait_job(q, payload["job"]["id"])
    assert (job["status"], job["error"]["code"]) == ("FAIL", "KMS_KEY_DISABLED")
    copy = await get_image(q, payload["images"][0]["id"])
    assert copy is not None and copy["status"] == "KILLED"
    # The killed copy let go of the source's data, and can be deleted.
    assert (await manifest(db, manifest_id(source))).refcount == 1  # type: ignore[union-attr]
    assert "manifestId" not in (await row(db, alice, copy["id"])).disks[0]
    await delete(q, copy["id"])
    assert (await manifest(db, manifest_id(source))).refcount == 1  # type: ignore[union-attr]
    assert await read_back(db, settings, alice, manifest_id(source)) == DATA


@pytest.mark.parametrize("copy", ["re-encrypted", "cross-region"])
async def test_a_source_whose_stored_data_fails_verification_fails_the_job_and_kills_the_copy(
    gql: GraphQLClient, db: Database, settings: Settings, copy: str
) -> None:
    """A chunk of the source gone from the store while its data is copied: the job fails
    with REPLICATE_SOURCE_INVALID (the data is damaged: a retry cannot help), not a masked
    INTERNAL_ERROR, and the copy is KILLED, holding nothing."""
    alice, token = await make_account(db)
    key = await make_kms_key(db, settings, alice)
    source = await make_image_with_data(db, settings, alice, DATA)
    chunks, _ = data_plane(db, settings)
    _, refs = await chunks.load(manifest_id(source))
    await chunks.stores["region-1"].delete(service_bucket("region-1"), f"chunks/{refs[-1].digest}")
    q = gql.as_(token)
    asked = {"kmsKeyId": key} if copy == "re-encrypted" else {"region": "region-2"}
    job, killed = await replicate_and_wait(q, settings, db, source.id, **asked)
    assert (job["status"], job["error"]["code"]) == ("FAIL", "REPLICATE_SOURCE_INVALID")
    assert job["error"]["message"].startswith("The source image's stored data failed verification (chunk ")
    assert killed["status"] == "KILLED"
    assert "manifestId" not in (await row(db, alice, killed["id"])).disks[0]
    assert (await manifest(db, manifest_id(source))).refcount == 1  # type: ignore[union-attr]


# ---------------------------------------------------------------- shared sources


async def test_an_accepted_member_makes_its_own_copy(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    alice, alice_t = await make_account(db)
    bob, bob_t = await make_account(db)
    plain = await make_image_with_data(db, settings, alice, DATA)
    alice_key = await make_kms_key(db, settings, alice)
    sealed = await make_image_with_data(db, settings, alice, DATA, kms_key_id=alice_key)
    bob_key = await make_kms_key(db, settings, bob)
    await grant(db, settings, alice, alice_key, bob)
    for image in (plain, sealed):
        await share(db, image, bob)
    q = gql.as_(bob_t)
    _, plain_copy = await replicate_and_wait(q, settings, db, plain.id, name="bobs plain")
    _, sealed_copy = await replicate_and_wait(q, settings, db, sealed.id, name="bobs sealed", kmsKeyId=bob_key)
    for copy in (plain_copy, sealed_copy):
        assert (copy["owner"]["id"], copy["checksum"]) == (bob.id, CHECKSUM)
    assert sealed_copy["kmsKeyId"] == bob_key
    # Unsharing, deleting the sources and revoking nothing else: bob's copies stay his.
    for image in (plain, sealed):
        await unshare(db, image, bob)
        await delete(gql.as_(alice_t), image.id)
    await collect_garbage(db, settings)
    for copy in (plain_copy, sealed_copy):
        stored = await row(db, bob, copy["id"])
        assert await read_back(db, settings, bob, manifest_id(stored)) == DATA


# ---------------------------------------------------------------- across regions


async def test_cross_region_copy_lives_in_the_target_region(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    alice, token = await make_account(db)
    source = await make_image_with_data(db, settings, alice, DATA)
    q = gql.as_(token)
    job, copy = await replicate_and_wait(q, settings, db, source.id, region="region-2")
    succeeded(job, copy)
    assert (copy["region"], copy["checksum"], copy["sizeBytes"]) == ("region-2", CHECKSUM, len(DATA))
    stored = await row(db, alice, copy["id"])
    moved = await manifest(db, manifest_id(stored))
    assert moved is not None and moved.region == "region-2" and moved.stored_bytes == len(DATA) - 4 * MiB
    chunks, _ = data_plane(db, settings)
    _, refs = await chunks.load(moved.id)
    store = chunks.stores["region-2"]
    assert [r.digest is None for r in refs] == [False, True, False]
    for ref in refs:
        if ref.digest is not None:
            assert await store.stat(service_bucket("region-2"), f"chunks/{ref.digest}") is not None
    # Listed in region-2's catalog, not region-1's.
    listed = await q.execute('{ images(filter: {region: "region-2"}) { edges { node { ... on ImageBase { id } } } } }')
    assert [e["node"]["id"] for e in listed["images"]["edges"]] == [copy["id"]]
    await survives_the_other(db, settings, q, alice, stored, source.id, DATA)


async def test_full_ecs_image_copies_every_disk_across_regions(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    alice, token = await make_account(db)
    chunks, _ = data_plane(db, settings)
    second = secrets.token_bytes(3 * MiB)
    system = await make_image_with_data(db, settings, alice, DATA)

    async def pieces() -> Any:
        yield second

    data_manifest = await chunks.write("region-1", pieces())
    await chunks.retain(manifest_id(system))  # the full-ECS image's own reference
    disks = [system.disks[0], {"role": "DATA", "sizeGb": 1, "storedBytes": data_manifest.stored_bytes,
                               "manifestId": data_manifest.id}]
    source = await make_image(db, alice, kind="FULL_ECS", disks=disks, backup_id="bak-source", checksum=None,
                              size_bytes=None)
    await delete(gql.as_(token), system.id)  # its manifest lives on in the full-ECS image
    q = gql.as_(token)
    job, copy = await replicate_and_wait(q, settings, db, source.id, region="region-2")
    succeeded(job, copy)
    assert copy["kind"] == "FULL_ECS" and [d["role"] for d in copy["disks"]] == ["SYSTEM", "DATA"]
    stored = await row(db, alice, copy["id"])
    assert stored.backup_id is None
    for index, expected in enumerate((DATA, second)):
        moved = await manifest(db, manifest_id(stored, index))
        assert moved is not None and moved.region == "region-2" and moved.id != manifest_id(source, index)
        assert copy["disks"][index]["storedBytes"] == moved.stored_bytes
    await delete(q, source.id)
    await collect_garbage(db, settings)
    for index, expected in enumerate((DATA, second)):
        assert await read_back(db, settings, alice, manifest_id(stored, index)) == expected


# ---------------------------------------------------------------- quick copies of non-raw imports


async def test_a_qcow2_import_yields_a_quick_raw_copy(
    gql: GraphQLClient, db: Database, settings: Settings, tmp_path: Path
) -> None:
    raw = secrets.token_bytes(2 * MiB) + bytes(5 * MiB) + secrets.token_bytes(MiB)
    raw_file, qcow2_file = tmp_path / "disk.raw", tmp_path / "disk.qcow2"
    raw_file.write_bytes(raw)
    await convert(raw_file, DiskFormat.RAW, qcow2_file, DiskFormat.QCOW2)
    alice, token = await make_account(db)
    key = await make_kms_key(db, settings, alice)
    source = await make_image_with_data(db, settings, alice, qcow2_file.read_bytes(), disk_format="QCOW2",
                                        quick_provisioning=False, virtual_size_bytes=len(raw))
    q = gql.as_(token)
    for fields in ({}, {"kmsKeyId": key}):
        job, copy = await replicate_and_wait(q, settings, db, source.id, **fields)
        succeeded(job, copy)
        assert (copy["diskFormat"], copy["sizeBytes"], copy["virtualSizeBytes"], copy["checksum"]) == (
            "RAW", len(raw), len(raw), "sha256:" + hashlib.sha256(raw).hexdigest())
        stored = await row(db, alice, copy["id"])
        assert manifest_id(stored) != manifest_id(source)
        assert await read_back(db, settings, alice, manifest_id(stored)) == raw
    assert (await manifest(db, manifest_id(source))).refcount == 1  # type: ignore[union-attr]


async def test_a_stored_file_larger_than_its_recorded_size_is_not_replicated(
    gql: GraphQLClient, db: Database, settings: Settings, tmp_path: Path
) -> None:
    """A VHD recorded at the 2 MiB of its original size (as imports recorded VHDs before they
    read the size qemu-img reads) whose current size makes it a 129 GiB disk: the inspection
    before the conversion finds the real size, and the job fails REPLICATE_TOO_LARGE instead of
    converting 129 GiB into a quick copy over the 128 GiB limit."""
    size = 129 * 1024 * MiB
    vhd = write_vhd(tmp_path / "h.vhd", original=2 * MiB, current=size, creator=b"win ")
    alice, token = await make_account(db)
    source = await make_image_with_data(db, settings, alice, vhd.read_bytes(), kind="DATA_DISK", disk_format="VHD",
                                        quick_provisioning=False, virtual_size_bytes=2 * MiB)
    job, copy = await replicate_and_wait(gql.as_(token), settings, db, source.id)
    assert (job["status"], job["error"]["code"]) == ("FAIL", "REPLICATE_TOO_LARGE"), job
    assert job["error"]["message"] == (f"The image's disk is {size} bytes: over {128 * 1024 * MiB} bytes, "
                                       "it cannot be replicated.")
    assert copy["status"] == "KILLED"
    assert (await manifest(db, manifest_id(source))).refcount == 1  # type: ignore[union-attr]
    assert [p for p in (settings.data_dir / "work").rglob("*") if p.is_file() and p.name != ".lock"] == []


async def test_a_copy_converted_to_a_larger_disk_than_recorded_records_that_disk(
    gql: GraphQLClient, db: Database, settings: Settings, tmp_path: Path
) -> None:
    """A system disk VHD recorded at the 2 MiB of its original size (as imports recorded VHDs
    before they read the size qemu-img reads) whose current size makes it a 3 GiB disk: its
    quick copy is that 3 GiB raw disk, and records it as the import rules do — its disk of
    3 GiB and minDiskGb at least that — not the 1 GiB of the stale record, from which no server
    could be made with the copy's own minDiskGb."""
    size = 3 * 1024 * MiB
    vhd = write_vhd(tmp_path / "h.vhd", original=2 * MiB, current=size, creator=b"win ")
    alice, token = await make_account(db)
    source = await make_image_with_data(db, settings, alice, vhd.read_bytes(), disk_format="VHD",
                                        quick_provisioning=False, virtual_size_bytes=2 * MiB, min_disk_gb=1)
    job, copy = await replicate_and_wait(gql.as_(token), settings, db, source.id)
    succeeded(job, copy)
    assert (copy["virtualSizeBytes"], copy["sizeBytes"]) == (size, size)
    assert (copy["minDiskGb"], [d["sizeGb"] for d in copy["disks"]]) == (3, [3])
