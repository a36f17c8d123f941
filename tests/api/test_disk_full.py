"""A full disk under the data directory, for real: a small tmpfs mounted where the jobs write
(the conversions' `work/` directory, the filesystem object store's `objects/`). A job that
runs out of space ends FAIL with a code that says so and keeps nothing: no temporary file,
no partial object, no reference to the image's data, and an import's image KILLED.

Mounting needs root (CI runs these tests as root); elsewhere they are skipped."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from app.db.uow import Database
from app.jobs.handlers import export_image
from app.storage.factory import service_bucket
from tests.api.replication_helpers import manifest, manifest_id, running_worker, wait_job
from tests.api.test_export import bucket, export
from tests.api.test_import import IMPORT, system_input, upload
from tests.conftest import GraphQLClient
from tests.factories import data_plane, make_account, make_image_with_data

MiB = 1024 * 1024
#: Incompressible, and all of it stored: a temporary copy costs its full 6 MiB.
DATA = secrets.token_bytes(6 * MiB)


def _mount_tmpfs(path: Path, size_mib: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(path)],
                          check=False, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")


@contextlib.contextmanager
def small_filesystem(path: Path, size_mib: int) -> Iterator[Path]:
    _mount_tmpfs(path, size_mib)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def full_dir(settings: Settings, request: pytest.FixtureRequest) -> Iterator[Path]:
    """`work/` under the data directory, on a filesystem of `request.param` MiB (4 unless
    parametrized)."""
    with small_filesystem(settings.data_dir / "work", getattr(request, "param", 4)) as path:
        yield path


def files_in(path: Path) -> list[Path]:
    """Files left under `path`, but for the scratch directories' lock files."""
    return [p for p in path.rglob("*") if p.is_file() and p.name != ".lock"]


async def test_an_export_that_fills_the_disk_fails_with_a_code_and_keeps_nothing(
    gql: GraphQLClient, db: Database, settings: Settings, full_dir: Path
) -> None:
    """The temporary copy of the image (6 MiB) does not fit on the 4 MiB `work/`."""
    alice, token = await make_account(db)
    image = await make_image_with_data(db, settings, alice, DATA)
    q = gql.as_(token)
    await bucket(q, "exports")
    payload = await export(q, image.id, key="disk.qcow2", format="QCOW2")
    async with running_worker(settings, db):
        job = await wait_job(q, payload["job"]["id"])
    assert (job["status"], job["error"]["code"]) == ("FAIL", "INSUFFICIENT_STORAGE"), job["error"]
    assert str(settings.data_dir) not in job["error"]["message"]
    assert files_in(full_dir) == []
    chunks, _ = data_plane(db, settings)
    assert await chunks.stores["region-1"].stat("exports", "disk.qcow2") is None
    found = await manifest(db, manifest_id(image))
    assert found is not None and found.refcount == 1  # the export's reference is let go of


@pytest.mark.parametrize("full_dir", [6], indirect=True)
@pytest.mark.parametrize("fmt", ["QCOW2", "VHD", "VMDK"])
async def test_qemu_img_filling_the_disk_fails_the_export_with_the_same_code(
    gql: GraphQLClient, db: Database, settings: Settings, full_dir: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temporary copy fits on the 6 MiB `work/`; qemu-img's output does not (its stderr
    says so, or it aborts after saying so: VMDK). The check of the space a conversion takes
    is told there is plenty, as when another writer fills the disk right after it."""
    monkeypatch.setattr(export_image, "free_bytes", lambda _: 1 << 50)
    alice, token = await make_account(db)
    image = await make_image_with_data(db, settings, alice, DATA)
    q = gql.as_(token)
    await bucket(q, "exports")
    payload = await export(q, image.id, key="disk.out", format=fmt)
    async with running_worker(settings, db):
        job = await wait_job(q, payload["job"]["id"])
    assert (job["status"], job["error"]["code"]) == ("FAIL", "INSUFFICIENT_STORAGE"), job["error"]
    assert files_in(full_dir) == []
    found = await manifest(db, manifest_id(image))
    assert found is not None and found.refcount == 1


async def test_an_import_that_fills_the_object_store_kills_the_image_and_keeps_nothing(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    """The filesystem object store on 10 MiB: the 6 MiB upload fits, its chunks do not."""
    with small_filesystem(settings.data_dir / "objects", 10) as objects:
        chunks, _ = data_plane(db, settings)
        await chunks.stores["region-1"].create_bucket(service_bucket("region-1"))  # hidden by the mount
        _, token = await make_account(db)
        q = gql.as_(token)
        await upload(q, "uploads", "disk.raw", DATA)
        payload = (await q.execute(IMPORT, {"input": system_input("uploads", "disk.raw")}))["importImage"]
        assert payload["__typename"] == "ImageJobSuccess", payload
        async with running_worker(settings, db):
            job = await wait_job(q, payload["job"]["id"])
        assert (job["status"], job["error"]["code"]) == ("FAIL", "INSUFFICIENT_STORAGE"), job["error"]
        assert [i["status"] for i in job["images"]] == ["KILLED"]
        # No half-written object; the chunks that fitted are unreferenced, for garbage collection.
        assert files_in(objects / ".tmp") == []


async def test_an_export_on_a_filesystem_remounted_read_only_fails_storage_unavailable(
    gql: GraphQLClient, db: Database, settings: Settings, full_dir: Path
) -> None:
    """`work/` remounted read-only, as ext4 does after a disk error (errors=remount-ro): the
    service's storage cannot be written, which is not the image's fault nor a masked internal
    error; the job keeps nothing and the image's data is released."""
    alice, token = await make_account(db)
    image = await make_image_with_data(db, settings, alice, DATA[: MiB])
    q = gql.as_(token)
    await bucket(q, "exports")
    done = subprocess.run(["mount", "-o", "remount,ro", str(full_dir)], check=False, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"remounting read-only is not permitted here: {done.stderr.strip()}")
    payload = await export(q, image.id, key="disk.qcow2", format="QCOW2")
    async with running_worker(settings, db):
        job = await wait_job(q, payload["job"]["id"])
    assert (job["status"], job["error"]["code"]) == ("FAIL", "STORAGE_UNAVAILABLE"), job["error"]
    assert str(settings.data_dir) not in job["error"]["message"]
    chunks, _ = data_plane(db, settings)
    assert await chunks.stores["region-1"].stat("exports", "disk.qcow2") is None
    found = await manifest(db, manifest_id(image))
    assert found is not None and found.refcount == 1


async def test_a_server_whose_conversion_fills_the_disk_is_insufficient_storage(
    gql: GraphQLClient, db: Database, settings: Settings, full_dir: Path, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """createServer converts a non-raw image in the request: its 6 MiB qcow2 does not fit on
    the 4 MiB `work/`. The client is told so by a top-level error it can act on (asking again
    later), not a masked internal error; it is logged for an operator, and nothing is made."""
    (tmp_path / "disk.raw").write_bytes(DATA)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(tmp_path / "disk.raw"),
                    str(tmp_path / "disk.qcow2")], check=True, capture_output=True)
    alice, token = await make_account(db)
    image = await make_image_with_data(db, settings, alice, (tmp_path / "disk.qcow2").read_bytes(),
                                       disk_format="QCOW2", quick_provisioning=False, virtual_size_bytes=len(DATA),
                                       min_disk_gb=1)
    q = gql.as_(token)
    with caplog.at_level(logging.ERROR, logger="app"):
        response = await q.raw('mutation($i: ID!) { createServer(input: {name: "web", imageId: $i}) { __typename } }',
                               {"i": image.id})
    body = response.json()
    assert body["data"] is None, body
    assert [(e["message"], e["extensions"], e["path"]) for e in body["errors"]] == [(
        "The service's storage is full; nothing was made. Try again later.",
        {"code": "INSUFFICIENT_STORAGE", "classification": "UnavailableError"}, ["createServer"])]
    assert str(settings.data_dir) not in response.text
    assert any("unexpected error" in r.getMessage() and r.exc_info for r in caplog.records)
    listed = await q.execute("{ servers(first: 10) { totalCount } }")
    assert listed["servers"]["totalCount"] == 0
    assert files_in(full_dir) == []


async def test_an_upload_to_a_full_object_store_is_507_and_keeps_nothing(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    """The filesystem object store on 4 MiB: a 6 MiB upload through its signed URL answers 507
    Insufficient Storage (the service's disk, not the request; a client may try again later),
    and no partial object is left."""
    with small_filesystem(settings.data_dir / "objects", 4) as objects:
        _, token = await make_account(db)
        q = gql.as_(token)
        made = await q.execute('mutation { createBucket(input: {name: "uploads"}) { __typename } }')
        assert made["createBucket"]["__typename"] == "CreateBucketSuccess"
        url = (await q.execute('mutation { createUploadUrl(input: {bucket: "uploads", key: "disk.raw"}) '
                               '{ ... on CreateUploadUrlSuccess { url } } }'))["createUploadUrl"]["url"]
        async with httpx.AsyncClient() as plain:
            response = await plain.put(url, content=DATA)
        assert (response.status_code, response.text) == (507, "insufficient storage: the object was not stored")
        chunks, _ = data_plane(db, settings)
        assert await chunks.stores["region-1"].stat("uploads", "disk.raw") is None
        assert files_in(objects / ".tmp") == []
