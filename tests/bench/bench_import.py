"""Import (DESIGN §4): a raw file and a qcow2 file ingested from the filesystem object store
into the chunk store — inspection, hashing, zero elision, storing — as ratios to single-core
SHA-256 of the same bytes in the same run (target ≥ 0.5), the raw file again sealed under a
data key as an encrypted import stores it (target ≥ 0.4), with the peak RSS (≤ 200 MB).

For context, the disk work of the raw import alone: the upload read as an import reads it and
its pieces stored as durable objects, as many at once as the chunk writer uploads, nothing
hashed. An import reads and writes every byte on the same disk; where that disk is slower
than two cores' hashing, this figure bounds the import's.

    python -m tests.bench.bench_import [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import timedelta
from pathlib import Path

from app.bootstrap import build_database
from app.config import Settings
from app.datastore.store import ChunkStore, DataKey
from app.datastore.writer import DEFAULT_SYNC_CONCURRENCY, ChunkWriter
from app.db.migrate import upgrade
from app.db.types import new_id
from app.formats import DiskFormat
from app.runtime import tune_allocator
from app.services.ingest import ingest
from app.storage.base import ObjectStore
from app.storage.factory import service_bucket
from app.storage.filesystem import FilesystemObjectStore
from app.storage.signing import UrlSigner
from tests.bench.common import Figure, peak_rss_mib

MiB = 1024 * 1024


def make_files(directory: Path, size_mib: int) -> dict[str, Path]:
    """A raw disk of random data (nothing to elide) and its qcow2 conversion."""
    raw = directory / "disk.raw"
    with open(raw, "wb") as fh:
        block = os.urandom(4 * MiB)
        fh.writelines(hashlib.sha256(str(i).encode()).digest() + block[32:] for i in range(size_mib // 4))
    qcow = directory / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow)], check=True)
    return {"RAW": raw, "QCOW2": qcow}


def sha256_rate(path: Path) -> float:
    digest = hashlib.sha256()
    size = path.stat().st_size
    start = time.perf_counter()
    with open(path, "rb") as fh:
        while piece := fh.read(MiB):
            digest.update(piece)
    return size / MiB / (time.perf_counter() - start)


async def _file(path: Path) -> AsyncIterator[bytes]:
    with open(path, "rb") as fh:
        while piece := await asyncio.to_thread(fh.read, MiB):
            yield piece


async def _noop(_f: float, _s: str) -> None:
    return None


async def disk_alone(store: ObjectStore, key: str, bucket: str) -> tuple[int, float]:
    """Bytes and seconds to read the upload `uploads/key` as `ingest` does (`open_stream`) and
    store each piece in `bucket` as the chunk writer stores a chunk: as many uploads at once,
    each slot free once the store has the bytes, then made durable beside the next ones (as
    many syncs at once); digests given, nothing hashed. The objects are deleted afterwards."""
    slots = asyncio.Semaphore(ChunkWriter().upload_concurrency)
    syncs = asyncio.Semaphore(DEFAULT_SYNC_CONCURRENCY)
    names: list[str] = []
    size = 0

    async def put(name: str, piece: bytes) -> None:
        try:
            await store.put_bytes(bucket, name, piece, sha256=hashlib.sha256(name.encode()).hexdigest(),
                                  durable=False)
        finally:
            slots.release()
        async with syncs:
            await store.sync(bucket, name)

    start = time.perf_counter()
    async with asyncio.TaskGroup() as group, aclosing(store.open_stream("uploads", key)) as pieces:
        async for piece in pieces:
            await slots.acquire()
            names.append(f"alone/{len(names)}")
            size += len(piece)
            group.create_task(put(names[-1], piece))
    seconds = time.perf_counter() - start
    for name in names:
        await store.delete(bucket, name)
    return size, seconds


async def measure(size_mib: int) -> list[Figure]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = make_files(root, size_mib)
        url = f"sqlite+aiosqlite:///{root / 'ims.db'}"
        await asyncio.to_thread(upgrade, url)
        db = build_database(Settings(data_dir=root, workers=0, auto_migrate=False))
        store = FilesystemObjectStore(root / "objects", UrlSigner(b"b" * 32, "http://127.0.0.1"))
        await store.create_bucket(service_bucket("region-1"))
        await store.create_bucket("uploads")
        # An encrypted import (DESIGN §4: ≥ 0.4×) stores the same raw file sealed under a data key.
        sealed = DataKey("kms-bench", new_id("dk"), os.urandom(32), b"wrapped")
        runs = [("RAW", files["RAW"], None), ("RAW encrypted", files["RAW"], sealed), ("QCOW2", files["QCOW2"], None)]
        for path in files.values():
            await store.put_stream("uploads", path.name, _file(path))
        for name, path, data_key in runs:
            chunks = ChunkStore(db, {"region-1": store}, grace=timedelta(hours=1))
            baseline = max(sha256_rate(path), sha256_rate(path))
            start = time.perf_counter()
            got = await ingest(store, "uploads", path.name, declared=DiskFormat(name.split()[0]), chunks=chunks,
                               region="region-1", data_key=data_key, progress=_noop)
            seconds = time.perf_counter() - start
            rate = got.manifest.size / MiB / seconds
            target = 0.4 if data_key else 0.5
            out.append(Figure(f"import {name} {size_mib} MiB / SHA-256", f"SHA-256 {baseline:.0f} MiB/s",
                              rate / baseline, f"≥ {target}×", rate / baseline >= target))
            if name == "RAW":
                size, seconds = await disk_alone(store, path.name, service_bucket("region-1"))
                assert size == path.stat().st_size
                out.append(Figure(f"import RAW's disk work alone (read the upload, durable writes, nothing "
                                  f"hashed), {size_mib} MiB / SHA-256", f"SHA-256 {baseline:.0f} MiB/s",
                                  size / MiB / seconds / baseline, "(context)", None))
        await db.dispose()
    rss = peak_rss_mib()
    out.append(Figure(f"peak RSS during the {size_mib} MiB imports", "-", rss, "≤ 200 MB", rss * MiB <= 200e6,
                      unit="MiB"))
    return out


def figures(quick: bool) -> list[Figure]:
    return asyncio.run(measure(64 if quick else 1024))


def main() -> None:
    tune_allocator()  # as the product's serve and worker processes do
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    for f in figures(args.quick):
        print(" | ".join(f.cells()))


if __name__ == "__main__":
    main()
