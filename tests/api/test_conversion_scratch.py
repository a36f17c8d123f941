"""A disk whose data expands far past its stored file (a compressed qcow2 of a few KiB holding
40 MiB of data, as a compression bomb would, or a large legitimate image) is converted to raw
a window at a time: provisioning, replication and a RAW export each succeed with `work/` on a
real 12 MiB filesystem, where converting the whole disk first needed its 40 MiB. The windows
are 4 MiB here (`RAW_WINDOW`, 256 MiB in production).

Mounting needs root (CI runs these tests as root); elsewhere they are skipped."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import Settings
from app.db.tables import Account, Image
from app.db.uow import Database
from app.formats import qemu
from tests.api.replication_helpers import manifest, manifest_id, read_back, replicate_and_wait, row
from tests.api.test_compute_api import create_server
from tests.api.test_disk_full import files_in, small_filesystem
from tests.api.test_export import bucket, download, export_and_wait
from tests.conftest import GraphQLClient
from tests.factories import make_account, make_image_with_data

MiB = 1024 * 1024
#: 40 distinct MiB, none of them zero, that compress to almost nothing.
RAW = b"".join((n.to_bytes(1, "big") + bytes(range(1, 256))) * 4096 for n in range(1, 41))


@pytest.fixture
def work(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setattr(qemu, "RAW_WINDOW", 4 * MiB)
    with small_filesystem(settings.data_dir / "work", 12) as path:
        yield path


async def _bomb(db: Database, settings: Settings, tmp_path: Path) -> tuple[Account, str, Image]:
    (tmp_path / "dense.raw").write_bytes(RAW)
    qcow2 = tmp_path / "dense.qcow2"
    subprocess.run(["qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", str(tmp_path / "dense.raw"), str(qcow2)],
                   check=True, capture_output=True)
    assert qcow2.stat().st_size < MiB
    alice, token = await make_account(db)
    image = await make_image_with_data(db, settings, alice, qcow2.read_bytes(), disk_format="QCOW2",
                                       quick_provisioning=False, virtual_size_bytes=len(RAW), min_disk_gb=1)
    return alice, token, image


async def test_a_server_from_an_image_expanding_past_the_scratch_space(
    gql: GraphQLClient, db: Database, settings: Settings, tmp_path: Path, work: Path
) -> None:
    alice, token, image = await _bomb(db, settings, tmp_path)
    made = await create_server(gql.as_(token), imageId=image.id)
    assert made["__typename"] == "CreateServerSuccess", made
    [volume] = made["server"]["volumes"]
    async with db.uow(write=False) as uow:
        from app.compute.tables import Volume

        stored = await uow.session.get(Volume, volume["id"])
    assert stored is not None and stored.manifest_id != manifest_id(image)
    assert await read_back(db, settings, alice, stored.manifest_id) == RAW
    assert files_in(work) == []


async def test_a_replica_of_an_image_expanding_past_the_scratch_space(
    gql: GraphQLClient, db: Database, settings: Settings, tmp_path: Path, work: Path
) -> None:
    alice, token, image = await _bomb(db, settings, tmp_path)
    job, copy = await replicate_and_wait(gql.as_(token), settings, db, image.id)
    assert (job["status"], copy["status"]) == ("SUCCESS", "ACTIVE"), job
    assert (copy["diskFormat"], copy["sizeBytes"], copy["checksum"]) == (
        "RAW", len(RAW), "sha256:" + hashlib.sha256(RAW).hexdigest())
    assert await read_back(db, settings, alice, manifest_id(await row(db, alice, copy["id"]))) == RAW
    assert files_in(work) == []


async def test_a_raw_export_of_an_image_expanding_past_the_scratch_space(
    gql: GraphQLClient, db: Database, settings: Settings, tmp_path: Path, work: Path
) -> None:
    _, token, image = await _bomb(db, settings, tmp_path)
    q = gql.as_(token)
    await bucket(q, "exports")
    job = await export_and_wait(q, settings, db, image.id, key="disk.raw", format="RAW")
    assert job["status"] == "SUCCESS", job
    assert (job["object"]["sizeBytes"], job["object"]["checksum"]) == (
        len(RAW), "sha256:" + hashlib.sha256(RAW).hexdigest())
    assert await download(job) == RAW
    assert files_in(work) == []


@pytest.mark.parametrize("fmt", ["VHD", "VMDK"])
async def test_an_export_whose_conversion_cannot_fit_is_refused_before_qemu_img_writes(
    gql: GraphQLClient, db: Database, settings: Settings, tmp_path: Path, work: Path, fmt: str
) -> None:
    """A converted file (not RAW) is written whole before its upload: `qemu-img measure` reckons
    its 40 MiB first, and the job ends INSUFFICIENT_STORAGE without writing it on the 12 MiB
    `work/` (which qemu-img filled before), keeping nothing and letting go of the image's data."""
    _, token, image = await _bomb(db, settings, tmp_path)
    q = gql.as_(token)
    await bucket(q, "exports")
    job = await export_and_wait(q, settings, db, image.id, key="disk.out", format=fmt)
    assert (job["status"], job["error"]["code"], job["object"]) == ("FAIL", "INSUFFICIENT_STORAGE", None), job
    assert job["error"]["message"].startswith(f"Converting the image to {fmt} takes about 4")
    assert job["error"]["message"].endswith(" bytes of scratch space, more than the service has free now; "
                                            "nothing was kept. Try again later.")
    assert files_in(work) == []
    found = await manifest(db, manifest_id(image))
    assert found is not None and found.refcount == 1


async def test_a_raw_export_whose_chunks_are_mostly_zeros_fits_as_qcow2(
    gql: GraphQLClient, db: Database, settings: Settings, tmp_path: Path, work: Path
) -> None:
    """A raw disk of 8 MiB whose two 4 MiB chunks each hold a few bytes among zeros (a
    server's disk: a little written in each chunk): its temporary copy keeps the zeros as holes
    finer than a chunk, so `qemu-img measure` (which counts what the file holds allocated as
    data) reckons the few KiB qemu-img writes, not 8 MiB that the 12 MiB `work/` no longer has
    after the copy. Refused INSUFFICIENT_STORAGE before."""
    raw = bytearray(8 * MiB)
    for offset in (0, 3 * MiB + 5, 4 * MiB + 4096, 8 * MiB - 1):
        raw[offset] = 0x5A
    alice, token = await make_account(db)
    image = await make_image_with_data(db, settings, alice, bytes(raw))
    q = gql.as_(token)
    await bucket(q, "exports")
    job = await export_and_wait(q, settings, db, image.id, key="disk.qcow2", format="QCOW2")
    assert job["status"] == "SUCCESS", job["error"]
    (tmp_path / "out.qcow2").write_bytes(await download(job))
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(tmp_path / "out.qcow2"),
                    str(tmp_path / "back.raw")], check=True, capture_output=True)
    assert (tmp_path / "back.raw").read_bytes() == raw
    assert files_in(work) == []


async def test_a_sparse_vhdx_exports_where_its_virtual_size_would_not_fit(
    gql: GraphQLClient, db: Database, settings: Settings, tmp_path: Path
) -> None:
    """qemu's VHDX driver reports no holes: `qemu-img measure` reckons a 1 GiB VHDX holding 1 MiB
    (a 16 MiB file) at 1 GiB. Its export is not refused for that on a 40 MiB `work/`: the
    converted file takes what its data does."""
    raw = tmp_path / "disk.raw"
    with raw.open("wb") as f:
        f.truncate(1024 * MiB)
        f.seek(512 * MiB)
        f.write(RAW[:MiB])
    vhdx = tmp_path / "disk.vhdx"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vhdx", str(raw), str(vhdx)], check=True,
                   capture_output=True)
    assert vhdx.stat().st_size <= 16 * MiB
    alice, token = await make_account(db)
    image = await make_image_with_data(db, settings, alice, vhdx.read_bytes(), disk_format="VHDX",
                                       quick_provisioning=False, virtual_size_bytes=1024 * MiB, min_disk_gb=1)
    q = gql.as_(token)
    await bucket(q, "exports")
    with small_filesystem(settings.data_dir / "work", 40) as work:
        job = await export_and_wait(q, settings, db, image.id, key="disk.qcow2", format="QCOW2")
        assert job["status"] == "SUCCESS", job
        assert files_in(work) == []
    (tmp_path / "out.qcow2").write_bytes(await download(job))
    subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(raw), str(tmp_path / "out.qcow2")],
                   check=True, capture_output=True)
