"""Compute figures of DESIGN §4: quick provisioning and differential full-ECS backups.

    python -m tests.bench.bench_compute [--ecs-mib 1024] [--repeat 3] [--database-url postgresql://…]

1. createServer from a quick 8 GiB image against the same from a quick 8 MiB image (target:
   ≤ 2× the time). Both are used by reference, so the cost must not follow the size. The
   8 GiB image's manifest is built cheaply: 2048 chunk positions of which the first 8 hold
   random data and the rest are zero chunks (not stored), which is what a freshly installed
   system disk mostly looks like; its checksum is computed honestly over the 8 GiB.
2. A FULL_ECS image of a server whose system disk holds `--ecs-mib` MiB of random data,
   then again after 1% of its 4 MiB blocks changed (64 KiB written into each): the second
   backup's stored bytes and time against the first's (targets: ≤ 2% and ≤ 10%). Each
   measurement is the service call plus the job run to ACTIVE. Each of `--repeat` rounds uses
   a new server (a server's first backup happens once).

Runs on a throw-away SQLite database and filesystem store in a temporary directory (or on
the PostgreSQL database given, which it empties first).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from app.bootstrap import build_database, build_services
from app.config import Settings, normalize_database_url
from app.datastore.chunks import CHUNK_SIZE
from app.datastore.tables import Manifest
from app.db.engine import sync_url
from app.db.migrate import upgrade
from app.db.types import new_id, utcnow
from app.domain.enums import ImageKind
from app.domain.images import Caller
from app.jobs.worker import Worker
from app.runtime import tune_allocator
from app.services.compute import ServerSpec
from app.services.registry import Services
from app.services.server_images import NewImage
from app.storage.factory import service_bucket
from tests.bench.common import Figure
from tests.factories import make_account, make_image, make_image_with_data

MiB = 1024 * 1024
GiB = 1024 * MiB


async def big_sparse_image(services: Services, owner: Any, size: int, data_chunks: int) -> Any:
    """A quick image of `size` bytes whose first `data_chunks` chunks hold random data."""
    head = await services.chunks.write("region-1", _pieces(secrets.token_bytes(data_chunks * CHUNK_SIZE)))
    _, refs = await services.chunks.load(head.id)
    count = size // CHUNK_SIZE
    chunk_list = [(r.index, r.digest, r.length) for r in refs] + [(i, None, CHUNK_SIZE) for i in range(data_chunks, count)]
    data = b"".join([p async for p in services.chunks.read(head.id)])
    checksum = await asyncio.to_thread(_sparse_checksum, data, size)
    manifest = Manifest(id=new_id("man"), region="region-1", size=size, checksum=checksum, new_bytes=0,
                        stored_bytes=head.stored_bytes, refcount=1, created_at=utcnow())
    async with services.db.uow() as uow:
        await uow.chunks.add_manifest(manifest, chunk_list, {}, utcnow())
        await uow.commit()
    await services.chunks.release(head.id)
    return await make_image(services.db, owner, min_disk_gb=max(1, -(-size // GiB)), size_bytes=head.stored_bytes,
                            virtual_size_bytes=size, checksum=checksum,
                            disks=[{"role": "SYSTEM", "sizeGb": max(1, -(-size // GiB)), "storedBytes": head.stored_bytes,
                                    "manifestId": manifest.id}])


def _sparse_checksum(head: bytes, size: int) -> str:
    digest = hashlib.sha256(head)
    zero = bytes(CHUNK_SIZE)
    for _ in range((size - len(head)) // CHUNK_SIZE):
        digest.update(zero)
    return "sha256:" + digest.hexdigest()


async def _pieces(data: bytes) -> Any:
    for i in range(0, len(data), CHUNK_SIZE):
        yield data[i : i + CHUNK_SIZE]


async def time_create_server(services: Services, me: Caller, image_ids: list[str], repeat: int) -> list[list[float]]:
    """Times of createServer from each image, interleaved (so drift in the database's
    state, e.g. its write-ahead log, weighs on every image alike)."""
    times: list[list[float]] = [[] for _ in image_ids]
    for i in range(repeat):
        for k, image_id in enumerate(image_ids):
            started = time.perf_counter()
            await services.compute.create_server(me, ServerSpec(name=f"bench-{i}", image_id=image_id))
            times[k].append(time.perf_counter() - started)
    return times


async def timed_full_ecs(services: Services, me: Caller, server_id: str) -> tuple[float, int]:
    started = time.perf_counter()
    made = await services.server_images.from_server(me, server_id, NewImage("bench", ImageKind.FULL_ECS))
    assert await Worker(services, "bench").run_once()
    elapsed = time.perf_counter() - started
    async with services.db.uow(write=False) as uow:
        job = await uow.jobs.get(made.job.id)
    assert job is not None
    assert job.status == "SUCCESS", job.error_message
    assert job.result is not None and job.result["imageId"] == made.image_ids[0]
    return elapsed, int(job.result["newBytes"])


async def bench(settings: Settings, ecs_mib: int, repeat: int, large: int = 8 * GiB,
                servers: int = 40) -> dict[str, float]:
    db = build_database(settings)
    services = build_services(settings, db)
    await services.chunks.stores["region-1"].create_bucket(service_bucket("region-1"))
    owner, _ = await make_account(db)
    me = Caller(owner.id, owner.name, owner.role)
    try:
        small = await make_image_with_data(db, settings, owner, secrets.token_bytes(8 * MiB))
        big = await big_sparse_image(services, owner, large, 8)
        await time_create_server(services, me, [small.id, big.id], 3)  # warm-up
        t_small, t_big = (statistics.median(t) for t in await time_create_server(services, me, [small.id, big.id], servers))
        print(f"createServer, quick image:  8 MiB {t_small * 1000:7.1f} ms   {_size(large)} {t_big * 1000:7.1f} ms   "
              f"ratio {t_big / t_small:.2f} (target <= 2)")

        image = await make_image_with_data(db, settings, owner, secrets.token_bytes(ecs_mib * MiB))
        chunks = ecs_mib * MiB // CHUNK_SIZE
        changed = math.ceil(chunks / 100)  # at least 1% of the blocks
        rounds = []
        for r in range(repeat):
            server = await services.compute.create_server(me, ServerSpec(name=f"ecs-{r}", image_id=image.id))
            first = await timed_full_ecs(services, me, server.id)
            [system] = (await services.compute.volumes_of(me, [server.id]))[server.id]
            for k in range(changed):
                index = (k * chunks) // changed + r
                await services.compute.write_volume(system.id, index * CHUNK_SIZE + 4096, secrets.token_bytes(65536))
            second = await timed_full_ecs(services, me, server.id)
            rounds.append((first, second))
            print(f"full-ECS round {r + 1}: first {first[0] * 1000:8.1f} ms {first[1] / MiB:8.1f} MiB new;  "
                  f"after {changed}/{chunks} blocks changed {second[0] * 1000:6.1f} ms {second[1] / MiB:6.1f} MiB new")
        bytes_ratio = statistics.median(s[1] / f[1] for f, s in rounds)
        time_ratio = statistics.median(s[0] / f[0] for f, s in rounds)
        print(f"full-ECS after 1% changed: stored bytes ratio {bytes_ratio:.4f} (target <= 0.02), "
              f"time ratio {time_ratio:.4f} (target <= 0.10)")
        return {"create_server_ratio": t_big / t_small, "ecs_bytes_ratio": bytes_ratio, "ecs_time_ratio": time_ratio,
                "create_server_small_ms": t_small * 1000, "ecs_first_ms": statistics.median(f[0] for f, _ in rounds) * 1000,
                "ecs_first_mib": statistics.median(f[1] for f, _ in rounds) / MiB}
    finally:
        await services.close()
        await db.dispose()


def _size(size: int) -> str:
    return f"{size // GiB} GiB" if size >= GiB else f"{size // MiB} MiB"


def _measure(ecs_mib: int, repeat: int, database_url: str = "", large: int = 8 * GiB,
             servers: int = 40) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-compute-") as tmp:
        settings = Settings(data_dir=Path(tmp), workers=0, auto_migrate=False)
        if database_url:
            url = normalize_database_url(database_url)
            engine = create_engine(sync_url(url))
            with engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
            engine.dispose()
            settings = replace(settings, database_url=url)
        upgrade(settings.effective_database_url)
        return asyncio.run(bench(settings, ecs_mib, repeat, large, servers))


def figures(quick: bool) -> list[Figure]:
    """SQLite and a filesystem store; quick: a 64 MiB "large" image, a 256 MiB ECS disk (1% is then one chunk)."""
    large, ecs_mib = (64 * MiB, 256) if quick else (8 * GiB, 1024)
    got = _measure(ecs_mib, 1 if quick else 3, large=large, servers=10 if quick else 40)
    return [
        Figure(f"createServer, quick image {_size(large)} / 8 MiB", f"8 MiB {got['create_server_small_ms']:.1f} ms",
               got["create_server_ratio"], "≤ 2×", got["create_server_ratio"] <= 2),
        Figure(f"full-ECS after 1% changed, {_size(ecs_mib * MiB)} disk: stored bytes / first",
               f"first {got['ecs_first_mib']:.0f} MiB", got["ecs_bytes_ratio"] * 100, "≤ 2%",
               got["ecs_bytes_ratio"] <= 0.02, unit="%"),
        Figure(f"full-ECS after 1% changed, {_size(ecs_mib * MiB)} disk: time / first",
               f"first {got['ecs_first_ms']:.0f} ms", got["ecs_time_ratio"] * 100, "≤ 10%",
               got["ecs_time_ratio"] <= 0.1, unit="%"),
    ]


def main(argv: list[str] | None = None) -> int:
    tune_allocator()  # as the product's serve and worker processes do
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ecs-mib", type=int, default=1024, help="data on the full-ECS server's system disk")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", default="", help="a PostgreSQL database to use (it is emptied)")
    args = parser.parse_args(argv)
    figures = _measure(args.ecs_mib, args.repeat, args.database_url)
    ok = figures["create_server_ratio"] <= 2 and figures["ecs_bytes_ratio"] <= 0.02 and figures["ecs_time_ratio"] <= 0.1
    print("all targets met" if ok else "TARGET MISSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
