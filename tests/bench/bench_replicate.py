"""Replication figures of DESIGN §4, each as a ratio measured in the same run.

    python -m tests.bench.bench_replicate [--large-gib 8] [--small-mib 8] [--sealed-mib 1024]

Each run goes through the service and a job worker, as a request does: `replicate` (rules,
the enqueuing transaction), then `Worker.run_once` (claim, the REPLICATE_IMAGE handler, the
activating transaction, success), on SQLite (or `--database-url`) and a filesystem store in
a temporary directory.

* plain, same region: an 8 GiB image against an 8 MiB one (target ≤ 2×: a metadata
  operation). The 8 GiB image is written cheaply as mostly-zero chunks (one random chunk in
  every 256; zero chunks are not stored): what is measured, the copy, does not read the data.
* re-encryption, key A → key B: 1 GiB of random data, as a rate against single-core SHA-256
  of the same bytes (target ≥ 0.4×).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from app.bootstrap import build_database, build_services
from app.config import Settings
from app.datastore.chunks import CHUNK_SIZE, zeros
from app.datastore.store import DataKey
from app.db.migrate import upgrade
from app.db.tables import Account, Image
from app.db.types import new_id
from app.domain.images import Caller
from app.jobs.worker import Worker
from app.runtime import tune_allocator
from app.services.registry import Services
from app.services.replication import ReplicationRequest
from app.storage.factory import create_service_buckets
from tests.bench.bench_chunks import POOL, generate, sha256_rate
from tests.bench.common import Figure
from tests.factories import make_account, make_image

MiB = 1024 * 1024
GiB = 1024 * MiB
TARGETS = {"plain 8 GiB / 8 MiB": 2.0, "re-encrypt / SHA-256": 0.4}


@dataclass
class Env:
    services: Services
    owner: Account
    caller: Caller


async def mostly_zero(size: int) -> AsyncIterator[bytes]:
    for index in range(size // CHUNK_SIZE):
        yield os.urandom(CHUNK_SIZE) if index % 256 == 0 else zeros(CHUNK_SIZE)


async def pool_stream(pool: bytes, size: int) -> AsyncIterator[bytes]:
    for piece in generate(pool, size, MiB):
        yield piece


async def image_of(env: Env, source: AsyncIterator[bytes], key_id: str | None = None) -> Image:
    data_key = None
    if key_id is not None:
        plaintext, wrapped = await env.services.key_provider.generate_data_key(env.owner.id, key_id)
        data_key = DataKey(key_id, new_id("dk"), plaintext, wrapped)
    manifest = await env.services.chunks.write("region-1", source, key=data_key)
    gib = max(1, -(-manifest.size // GiB))
    return await make_image(
        env.services.db, env.owner, size_bytes=manifest.size, virtual_size_bytes=manifest.size,
        checksum=manifest.checksum, min_disk_gb=gib, kms_key_id=key_id,
        disks=[{"role": "SYSTEM", "sizeGb": gib, "storedBytes": manifest.stored_bytes, "manifestId": manifest.id}],
    )


async def replicate(env: Env, image: Image, kms_key_id: str | None = None) -> float:
    """Seconds from the request to the job's success; the copy is deleted afterwards."""
    worker = Worker(env.services, "bench", poll_interval=0.01)
    started = time.perf_counter()
    done = await env.services.replication.replicate(
        env.caller, ReplicationRequest(image.id, "copy", kms_key_id=kms_key_id))
    assert await worker.run_once()
    elapsed = time.perf_counter() - started
    job = await env.services.jobs.get(env.caller, done.job.id)
    copy = await env.services.images.get(env.caller, done.copy.image.id)
    assert job.status == "SUCCESS" and copy.image.status == "ACTIVE", (job.error_code, job.error_message)
    assert copy.image.checksum == image.checksum
    await env.services.images.delete(env.caller, [copy.image.id])
    return elapsed


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def line(name: str, runs: list[float], ratio: float, unit: str, target: float, at_most: bool) -> bool:
    met = ratio <= target if at_most else ratio >= target
    print(f"{name:<22} {ratio:>7.2f} {target:>7.2f}  {'yes' if met else 'NO':<4} "
          f"median {statistics.median(runs):.4f} s, best {min(runs):.4f} s {unit}")
    return met


def _size(size: int) -> str:
    return f"{size // GiB} GiB" if size >= GiB else f"{size // MiB} MiB"


@dataclass
class Sizes:
    large: int = 8 * GiB
    small: int = 8 * MiB
    sealed: int = GiB
    repeat: int = 3
    plain_repeat: int = 9


async def run(sizes: Sizes, root: Path, database_url: str | None = None) -> list[Figure]:
    settings = Settings(data_dir=root / "data", database_url=database_url or "", workers=0,
                        auto_migrate=False, admin_token="ims_bench")
    settings.data_dir.mkdir(parents=True)
    await asyncio.to_thread(upgrade, settings.effective_database_url)
    db = build_database(settings)
    services = build_services(settings, db)
    await create_service_buckets(services.chunks.stores)
    owner, _ = await make_account(db)
    env = Env(services, owner, Caller(owner.id, owner.name, owner.role))
    out = []
    try:
        started = time.perf_counter()
        small = await image_of(env, mostly_zero(sizes.small))
        large = await image_of(env, mostly_zero(sizes.large))
        print(f"set-up: {_size(sizes.large)} mostly-zero image written in {time.perf_counter() - started:.1f} s")
        small_runs, large_runs = [], []
        for _ in range(sizes.plain_repeat):
            small_runs.append(await replicate(env, small))
            large_runs.append(await replicate(env, large))
        name = f"plain {_size(sizes.large)} / {_size(sizes.small)}"
        ratio = statistics.median(large_runs) / statistics.median(small_runs)
        met = line(name, large_runs, ratio, f"({_size(sizes.small)}: median {statistics.median(small_runs):.4f} s)",
                   TARGETS["plain 8 GiB / 8 MiB"], at_most=True)
        out.append(Figure(f"replicate plain, same region, {name.removeprefix('plain ')}",
                          f"{_size(sizes.small)} {statistics.median(small_runs) * 1000:.0f} ms", ratio, "≤ 2×", met))

        key_a = (await services.key_provider.create_key(env.caller, "bench-a")).id
        key_b = (await services.key_provider.create_key(env.caller, "bench-b")).id
        pool = os.urandom(POOL + MiB)
        size = sizes.sealed
        sealed = await image_of(env, pool_stream(pool, size), key_a)
        baseline = sha256_rate(pool, size, MiB)
        cpu = cpu_seconds()
        runs = [await replicate(env, sealed, key_b) for _ in range(sizes.repeat)]
        cpu_per_gib = (cpu_seconds() - cpu) / sizes.repeat / (size / GiB)
        baseline = max(baseline, sha256_rate(pool, size, MiB))
        rate = size / MiB / min(runs)
        met = line("re-encrypt / SHA-256", runs, rate / baseline,
                   f"({rate:.0f} MiB/s best, {cpu_per_gib:.2f} CPU s/GiB; SHA-256 {baseline:.0f} MiB/s, "
                   f"{GiB / MiB / baseline:.2f} CPU s/GiB)", TARGETS["re-encrypt / SHA-256"], at_most=False)
        out.append(Figure(f"replicate with re-encryption key A → B, {_size(size)} / SHA-256",
                          f"SHA-256 {baseline:.0f} MiB/s", rate / baseline, "≥ 0.4×", met))
    finally:
        await services.close()
        await db.dispose()
    return out


def figures(quick: bool) -> list[Figure]:
    """SQLite and a filesystem store; quick: a 64 MiB "large" image and 64 MiB re-encrypted."""
    sizes = Sizes(64 * MiB, 8 * MiB, 64 * MiB, 2, 5) if quick else Sizes()
    with tempfile.TemporaryDirectory() as root:
        return asyncio.run(run(sizes, Path(root)))


def main(argv: list[str] | None = None) -> int:
    tune_allocator()  # as the product's serve and worker processes do
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--large-gib", type=int, default=8)
    parser.add_argument("--small-mib", type=int, default=8)
    parser.add_argument("--sealed-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3, help="re-encryption runs")
    parser.add_argument("--plain-repeat", type=int, default=9, help="runs of each plain size")
    parser.add_argument("--database-url", default=None, help="default: SQLite in the temporary directory")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temporary directory")
    args = parser.parse_args(argv)
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"{'figure':<22} {'ratio':>7} {'target':>7}  met")
    sizes = Sizes(args.large_gib * GiB, args.small_mib * MiB, args.sealed_mib * MiB, args.repeat, args.plain_repeat)
    with tempfile.TemporaryDirectory(dir=args.dir) as root:
        got = asyncio.run(run(sizes, Path(root), args.database_url))
    return 0 if all(f.met for f in got) else 1


if __name__ == "__main__":
    sys.exit(main())
