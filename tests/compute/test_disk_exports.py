"""Exporting images made from disks: a disk's manifest holds what was written, the rest of the
disk reads as zeros, and the exported file is the whole disk (on SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from app.config import Settings
from app.db.uow import Database
from app.domain.enums import ExportFormat, ImageKind
from app.services.compute import VolumeSpec
from app.services.exports import ExportRequest
from app.services.registry import Services
from app.services.server_images import NewImage
from tests.compute.conftest import MiB, caller, load_image, run_jobs
from tests.factories import make_account, make_image_with_data

GiB = 1024 * MiB


def _qemu(*args: str) -> bytes:
    return subprocess.run(["qemu-img", *args], capture_output=True, check=True).stdout


async def test_an_image_of_a_partly_written_volume_exports_the_whole_disk(
    db: Database, settings: Settings, services: Services, tmp_path: Path
) -> None:
    owner, _ = await make_account(db)
    volume = await services.compute.create_volume(caller(owner), VolumeSpec("data", 1))
    written = hashlib.sha256(b"guest").digest() * (MiB // 32)
    await services.compute.write_volume(volume.id, 0, written)
    made = await services.server_images.from_volume(caller(owner), volume.id, NewImage("img", ImageKind.DATA_DISK))
    await run_jobs(services)
    image = await load_image(db, made.image_ids[0])
    assert image is not None
    assert (image.status, image.virtual_size_bytes, image.disks[0]["storedBytes"]) == ("ACTIVE", GiB, MiB)
    await services.storage.create_bucket(caller(owner), "exports", None)
    jobs = []
    for fmt in (ExportFormat.RAW, ExportFormat.QCOW2):  # one export of an image at a time
        await services.exports.export(caller(owner), ExportRequest(image.id, "exports", f"disk.{fmt.value}", fmt))
        jobs += await run_jobs(services)
    raw_job, qcow2_job = jobs
    store = services.storage.store(image.region)

    whole = hashlib.sha256(written)
    zeros = bytes(4 * MiB)
    for _ in range(GiB // len(zeros) - 1):
        whole.update(zeros)
    whole.update(bytes(3 * MiB))
    assert raw_job.status == "SUCCESS", raw_job.error_message
    assert raw_job.result is not None
    assert (raw_job.result["size"], raw_job.result["checksum"]) == (GiB, "sha256:" + whole.hexdigest())
    info = await store.stat("exports", "disk.RAW")
    assert info is not None and info.size == GiB

    assert qcow2_job.status == "SUCCESS", qcow2_job.error_message
    qcow2 = tmp_path / "disk.qcow2"
    qcow2.write_bytes(await store.get_bytes("exports", "disk.QCOW2"))
    assert json.loads(_qemu("info", "--output=json", "-f", "qcow2", str(qcow2)))["virtual-size"] == GiB
    back = tmp_path / "back.raw"
    _qemu("convert", "-f", "qcow2", "-O", "raw", str(qcow2), str(back))
    with back.open("rb") as fh:
        assert fh.read(MiB) == written and fh.read(MiB) == bytes(MiB)
    assert back.stat().st_size == GiB


async def test_a_raw_disk_holding_an_iso9660_filesystem_converts(
    db: Database, settings: Settings, services: Services, tmp_path: Path
) -> None:
    """Read as raw, a disk's contents name no other file: what they look like to the format
    inspector (here an ISO 9660 volume descriptor) does not stop a conversion."""
    owner, _ = await make_account(db)
    data = bytearray(8 * MiB)
    data[0x8000:0x8006] = b"\x01CD001"
    image = await make_image_with_data(db, settings, owner, bytes(data), kind="DATA_DISK", disk_format="RAW")
    await services.storage.create_bucket(caller(owner), "exports", None)
    await services.exports.export(caller(owner), ExportRequest(image.id, "exports", "d.qcow2", ExportFormat.QCOW2))
    [job] = await run_jobs(services)
    assert job.status == "SUCCESS", job.error_message
    qcow2 = tmp_path / "d.qcow2"
    qcow2.write_bytes(await services.storage.store(image.region).get_bytes("exports", "d.qcow2"))
    back = tmp_path / "back.raw"
    _qemu("convert", "-f", "qcow2", "-O", "raw", str(qcow2), str(back))
    assert back.read_bytes() == bytes(data)
