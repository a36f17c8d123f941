"""`ims demo`: a handful of real public images, so every feature can be tried at once.

Small disks are generated here (a recognizable boot sector and some data, the rest
sparse), uploaded to the admin's `demo-images` bucket, and imported as PUBLIC images
through the ordinary import path (inspection, chunk store, job).
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from app.domain.compute import OsSpec
from app.domain.enums import DiskFormat, ImageKind, JobStatus, OsType
from app.domain.images import Caller
from app.errors import Conflict
from app.formats.qemu import convert
from app.services.imports import ImportRequest
from app.services.registry import Services

MiB = 1024 * 1024
DEMO_BUCKET = "demo-images"


@dataclass(frozen=True)
class DemoImage:
    name: str
    os: OsSpec | None
    kind: ImageKind
    fmt: DiskFormat
    size_mib: int


DEMO_IMAGES = (
    DemoImage("Ubuntu 22.04 server 64bit", OsSpec(OsType.LINUX, "Ubuntu", "Ubuntu 22.04 server 64bit"),
              ImageKind.SYSTEM_DISK, DiskFormat.RAW, 64),
    DemoImage("Debian 12 64bit", OsSpec(OsType.LINUX, "Debian", "Debian 12 64bit"),
              ImageKind.SYSTEM_DISK, DiskFormat.QCOW2, 64),
    DemoImage("Windows Server 2022 Datacenter 64bit",
              OsSpec(OsType.WINDOWS, "Windows", "Windows Server 2022 Datacenter 64bit"),
              ImageKind.SYSTEM_DISK, DiskFormat.QCOW2, 96),
    DemoImage("Empty data disk 32 MiB", None, ImageKind.DATA_DISK, DiskFormat.RAW, 32),
)


def _raw_disk(path: Path, seed: str, size_mib: int) -> None:
    """A sparse raw disk with an MBR signature and 1 MiB of seeded data at a few offsets."""
    with open(path, "wb") as fh:
        fh.truncate(size_mib * MiB)
        # An MBR with one Linux partition from 1 MiB to the end (a signature without a
        # partition table is refused as unsafe by the inspector, rightly).
        boot = bytearray(512)
        sectors = size_mib * MiB // 512
        boot[446:462] = bytes([0x80, 0, 0, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little") + (
            sectors - 2048).to_bytes(4, "little")
        boot[510:512] = b"\x55\xaa"
        fh.write(boot)
        block = hashlib.sha256(seed.encode()).digest() * (MiB // 32)
        for offset in (MiB, size_mib * MiB // 2):
            fh.seek(offset)
            fh.write(block)


async def _file_bytes(path: Path) -> AsyncIterator[bytes]:
    with await asyncio.to_thread(open, path, "rb") as fh:
        while piece := await asyncio.to_thread(fh.read, MiB):
            yield piece


async def _wait(services: Services, caller: Caller, job_ids: list[str], timeout: float) -> list[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        jobs = [await services.jobs.get(caller, j) for j in job_ids]
        if all(j.status in (JobStatus.SUCCESS.value, JobStatus.FAIL.value) for j in jobs):
            return [j.status for j in jobs]
        if loop.time() > deadline:
            raise TimeoutError("demo imports did not finish")
        await asyncio.sleep(0.2)


async def create_demo_images(services: Services, admin: Caller, *, timeout: float = 300) -> list[str]:
    """Upload and import the demo images as PUBLIC; returns each job's final status."""
    try:
        await services.storage.create_bucket(admin, DEMO_BUCKET, None)
    except Conflict as exc:
        if exc.code != "BUCKET_EXISTS":  # BUCKET_LIMIT: the imports would find no bucket
            raise
    store = services.storage.store(services.settings.default_region)
    job_ids = []
    with tempfile.TemporaryDirectory() as tmp:
        for image in DEMO_IMAGES:
            raw = Path(tmp) / "disk.raw"
            _raw_disk(raw, image.name, image.size_mib)
            path = raw
            if image.fmt is not DiskFormat.RAW:
                path = Path(tmp) / f"disk.{image.fmt.value.lower()}"
                await convert(raw, DiskFormat.RAW, path, image.fmt)
            key = f"{image.name.lower().replace(' ', '-')}.{image.fmt.value.lower()}"
            await store.put_stream(DEMO_BUCKET, key, _file_bytes(path))
            job, _ = await services.imports.import_image(admin, ImportRequest(
                bucket=DEMO_BUCKET, key=key, name=image.name, min_disk_gb=1, kind=image.kind,
                disk_format=image.fmt, os=image.os, public=True,
                description=f"Demo {image.fmt.value} image made by `ims demo`.",
            ))
            job_ids.append(job.id)
    return await _wait(services, admin, job_ids, timeout)
