"""Chunk-store throughput against single-core SHA-256 over the same bytes (DESIGN §4).

    python -m tests.bench.bench_chunks --size-mib 1024

Writes a generated stream through `ChunkWriter` to the product's filesystem store (atomic,
fsynced writes) in a temporary directory and reads it back with `read_stream`, plain and sealed, then re-seals the sealed
copy under another key (replication with re-encryption). Each rate is a ratio to the rate of
`hashlib.sha256` over the same bytes in the same run (the faster of a measurement before
and one after). Each phase runs `--repeat` times; the best and the worst run are shown.
Targets: plain ≥ 0.5, sealed ≥ 0.4. Peak RSS is the process's `ru_maxrss` after the phase.

`--store memory` keeps objects in a dict instead, to measure the pipeline without the
filesystem.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from app.datastore import ChunkWriter, Opener, Sealer, WriteResult, read_stream, reseal
from app.datastore.chunks import CHUNK_SIZE
from app.runtime import tune_allocator
from app.storage.base import ObjectStore
from app.storage.filesystem import FilesystemObjectStore
from app.storage.signing import UrlSigner
from tests.bench.common import Figure
from tests.datastore.memstore import MemoryStore

MiB = 1024 * 1024
POOL = 32 * MiB  # distinct offsets (a 4099-byte stride) for streams up to 8 GiB
BUCKET = "bench"
TARGETS = {"plain": 0.5, "sealed": 0.4, "bound": 0.0}


def generate(pool: bytes, total: int, piece: int) -> Iterator[bytes]:
    """Distinct pieces (slices of a random pool at distinct offsets), one memcpy each."""
    produced = 0
    number = 0
    while produced < total:
        size = min(piece, total - produced)
        start = (number * 4099) % POOL
        yield pool[start : start + size]
        produced += size
        number += 1


async def source(pool: bytes, total: int, piece: int) -> AsyncIterator[bytes]:
    for data in generate(pool, total, piece):
        yield data


def sha256_rate(pool: bytes, total: int, piece: int) -> float:
    """MiB/s of hashlib.sha256 over the bytes `source` yields, timing only the hashing."""
    digest = hashlib.sha256()
    elapsed = 0.0
    for data in generate(pool, total, piece):
        started = time.perf_counter()
        digest.update(data)
        elapsed += time.perf_counter() - started
    return total / MiB / elapsed


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Phase:
    kind: str
    size: int
    #: (seconds, CPU seconds) of each run.
    runs: list[tuple[float, float]] = field(default_factory=list)
    peak_rss: float = 0.0

    def rate(self, seconds: float) -> float:
        return self.size / MiB / seconds


@dataclass
class Bench:
    pool: bytes
    size: int
    piece: int
    store: ObjectStore
    writer: ChunkWriter
    read_ahead: int
    phases: dict[str, Phase] = field(default_factory=dict)

    async def timed(
        self, name: str, kind: str, work: Callable[[], Awaitable[WriteResult]]
    ) -> WriteResult:
        started, cpu = time.perf_counter(), cpu_seconds()
        result = await work()
        phase = self.phases.setdefault(name, Phase(kind, self.size))
        phase.runs.append((time.perf_counter() - started, cpu_seconds() - cpu))
        phase.peak_rss = peak_rss_mib()
        return result

    async def write(self, sealer: Sealer | None) -> WriteResult:
        return await self.writer.write_stream(
            source(self.pool, self.size, self.piece), store=self.store, bucket=BUCKET, seal=sealer
        )

    async def read(self, stored: WriteResult, opener: Opener | None) -> WriteResult:
        received = 0
        async for data in read_stream(
            stored.chunks,
            store=self.store,
            bucket=BUCKET,
            opener=opener,
            total_size=stored.size,
            read_ahead=self.read_ahead,
        ):
            received += len(data)
        assert received == stored.size
        return stored

    async def reseal(self, stored: WriteResult, opener: Opener, sealer: Sealer) -> WriteResult:
        return await reseal(
            stored.chunks,
            opener,
            sealer,
            src_store=self.store,
            src_bucket=BUCKET,
            total_size=stored.size,
            checksum=stored.checksum,
            writer=self.writer,
            read_ahead=self.read_ahead,
        )

    async def store_alone(self) -> None:
        """The store's own durable writes (put, fsync) of as many distinct chunks, as many at
        once as the writer uploads, digests given: what storing costs without the chunk
        store around it (on the filesystem store, about the disk's durable write rate)."""
        count = -(-self.size // CHUNK_SIZE)
        starts = [i * 4099 % POOL for i in range(min(count, 8))]
        chunks = [self.pool[start : start + CHUNK_SIZE] for start in starts]
        slots = asyncio.Semaphore(self.writer.upload_concurrency)

        async def put(number: int) -> None:
            async with slots:
                await self.store.put_bytes(BUCKET, f"alone/{number}", chunks[number % len(chunks)],
                                           sha256=hashlib.sha256(b"%d" % number).hexdigest())

        started, cpu = time.perf_counter(), cpu_seconds()
        async with asyncio.TaskGroup() as group:
            for number in range(count):
                group.create_task(put(number))
        phase = self.phases.setdefault("store alone", Phase("bound", count * CHUNK_SIZE))
        phase.runs.append((time.perf_counter() - started, cpu_seconds() - cpu))
        for number in range(count):
            await self.store.delete(BUCKET, f"alone/{number}")

    async def delete(self, *results: WriteResult) -> None:
        for result in results:
            for ref in result.chunks:
                if ref.key is not None:
                    await self.store.delete(BUCKET, ref.key)

    async def run_once(self) -> None:
        first, second = os.urandom(32), os.urandom(32)
        plain = await self.timed("write plain", "plain", lambda: self.write(None))
        await self.timed("read plain", "plain", lambda: self.read(plain, None))
        await self.delete(plain)
        sealed = await self.timed("write sealed", "sealed", lambda: self.write(Sealer(first, "1")))
        await self.timed("read sealed", "sealed", lambda: self.read(sealed, Opener(first, "1")))
        copy = await self.timed(
            "reseal", "sealed", lambda: self.reseal(sealed, Opener(first, "1"), Sealer(second, "2"))
        )
        await self.delete(sealed, copy)
        assert plain.checksum == sealed.checksum == copy.checksum
        await self.store_alone()


def report(bench: Bench, baseline: float) -> int:
    print(
        f"{'phase':<13} {'MiB/s best':>11} {'ratio best':>11} {'worst':>6} {'target':>7}"
        f" {'CPU s/GiB':>10} {'peak RSS MiB':>13}"
    )
    missed = 0
    for name, phase in bench.phases.items():
        best, best_cpu = min(phase.runs)
        worst = max(phase.runs)[0]
        ratio = phase.rate(best) / baseline
        target = TARGETS[phase.kind]
        missed += ratio < target
        print(
            f"{name:<13} {phase.rate(best):>11.0f} {ratio:>11.2f}"
            f" {phase.rate(worst) / baseline:>6.2f} {target:>7.2f}"
            f" {best_cpu / (phase.size / 1024 / MiB):>10.2f} {phase.peak_rss:>13.0f}"
            + ("" if ratio >= target else "  MISSED")
        )
    return missed


def measure(
    size: int, piece: int = MiB, in_flight: int = 4, repeat: int = 3, store_kind: str = "file",
    parent: Path | None = None,
) -> tuple[Bench, float, float]:
    """Runs the phases `repeat` times; returns the bench and SHA-256's rate before and after."""
    pool = os.urandom(POOL + piece)
    before = sha256_rate(pool, size, piece)
    print(
        f"RSS before the phases (interpreter, libraries, {len(pool) // MiB} MiB source pool):"
        f" {peak_rss_mib():.0f} MiB"
    )
    root = Path(tempfile.mkdtemp(prefix="bench-chunks-", dir=parent))
    try:
        store: ObjectStore = (
            MemoryStore() if store_kind == "memory"
            else FilesystemObjectStore(root, UrlSigner(b"b" * 32, "http://127.0.0.1"))
        )
        bench = Bench(pool, size, piece, store, ChunkWriter(max_in_flight=in_flight), in_flight)

        async def run() -> None:
            await store.create_bucket(BUCKET)
            for _ in range(repeat):
                await bench.run_once()

        asyncio.run(run())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return bench, before, sha256_rate(pool, size, piece)


def figures(quick: bool) -> list[Figure]:
    """The table's rows: each phase's best rate against SHA-256, and the peak RSS."""
    size_mib = 64 if quick else 1024
    bench, before, after = measure(size_mib * MiB, repeat=2 if quick else 3)
    baseline = max(before, after)
    report(bench, baseline)
    size = f"{size_mib} MiB" if size_mib < 1024 else f"{size_mib // 1024} GiB"
    out = []
    for name, phase in bench.phases.items():
        ratio = phase.rate(min(phase.runs)[0]) / baseline
        target = TARGETS[phase.kind]
        if phase.kind == "bound":
            out.append(Figure(f"object store's durable chunk writes alone, {size} / SHA-256",
                              f"SHA-256 {baseline:.0f} MiB/s", ratio, "(context)", None))
            continue
        out.append(Figure(f"chunk store {name}, {size} / SHA-256", f"SHA-256 {baseline:.0f} MiB/s",
                          ratio, f"≥ {target}×", ratio >= target))
    rss = max(phase.peak_rss for phase in bench.phases.values())
    out.append(Figure(f"peak RSS of the chunk store phases, {size}", "-", rss, "≤ 200 MB",
                      rss * MiB <= 200e6, unit="MiB"))
    return out


def main(argv: list[str] | None = None) -> int:
    tune_allocator()  # as the product's serve and worker processes do
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--piece-kib", type=int, default=1024, help="source piece size")
    parser.add_argument("--in-flight", type=int, default=4, help="chunks in flight, read-ahead")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--store", choices=["file", "memory"], default="file")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the file store")
    args = parser.parse_args(argv)
    size, piece = args.size_mib * MiB, args.piece_kib * 1024
    print(
        f"{args.size_mib} MiB in {args.piece_kib} KiB pieces, {args.in_flight} chunks in flight,"
        f" {args.store} store, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    bench, before, after = measure(size, piece, args.in_flight, args.repeat, args.store, args.dir)
    baseline = max(before, after)
    print(
        f"sha256, one core: {before:.0f} then {after:.0f} MiB/s; ratios against {baseline:.0f}"
        f" ({1024 / baseline:.2f} CPU s/GiB); load {os.getloadavg()[0]:.1f}"
    )
    missed = report(bench, baseline)
    print(f"peak RSS {peak_rss_mib():.0f} MiB")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
