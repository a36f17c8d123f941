"""The crash scenarios, one row each: `setup` makes what the jobs need (once, the cluster
running), `start` runs one trial's mutations and returns their jobs (recording in
`lab.expected` the bytes each new image must hold), and `check` adds the scenario's own
invariants to the common ones (tests/crash/invariants.py) after the last restart.

A new scenario is one more class with these three methods in SCENARIOS."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sqlalchemy import select

from app.compute.tables import Backup
from app.datastore.chunks import CHUNK_SIZE
from app.datastore.crypto import SEAL_OVERHEAD
from app.db.tables import Image
from tests.crash.harness import REGIONS, Lab, MiB, create_key, image_job, import_image, sha, upload


class Scenario(Protocol):
    name: str

    async def setup(self, lab: Lab) -> None: ...

    async def start(self, lab: Lab, trial: int) -> list[str]: ...

    async def check(self, lab: Lab) -> None: ...


async def _activated(lab: Lab, started: list[tuple[str, str]]) -> list[str]:
    """Wait for setup jobs (no kill) and return their image ids."""
    jobs = await lab.wait_ended([job_id for job_id, _ in started])
    assert {j.id: j.status for j in jobs.values()} == {job_id: "SUCCESS" for job_id, _ in started}
    return [image_id for _, image_id in started]


# ---------------------------------------------------------------- imports


@dataclass
class Imports:
    """Three imports of 24 MiB files per trial: two plain (their chunks deduplicate with the
    earlier trials'), one sealed with a KMS key (sealed chunks are new every time)."""

    name: str = "imports"
    files: list[bytes] = field(default_factory=list)
    key_id: str = ""

    async def setup(self, lab: Lab) -> None:
        await lab.gql('mutation { createBucket(input: {name: "crash-files"}) { __typename } }')
        self.key_id = await create_key(lab, "crash-key")
        for i in range(3):
            self.files.append(lab.rng.randbytes(24 * MiB))
            await upload(lab, "crash-files", f"f{i}.raw", self.files[i])

    async def start(self, lab: Lab, trial: int) -> list[str]:
        jobs = []
        for i, body in enumerate(self.files):
            sealed = {"kmsKeyId": self.key_id} if i == 2 else {}
            job_id, image_id = await import_image(lab, "crash-files", f"f{i}.raw", f"t{trial} f{i}", **sealed)
            lab.expected[image_id] = [sha(body)]
            jobs.append(job_id)
        return jobs

    async def check(self, lab: Lab) -> None:
        pass


# ---------------------------------------------------------------- replication


def _qcow2(raw: bytes, workdir: Path) -> bytes:
    src, dst = workdir / "source.raw", workdir / "source.qcow2"
    src.write_bytes(raw)
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(src), str(dst)], check=True)
    return dst.read_bytes()


@dataclass
class Replication:
    """Five replications per trial, one per way a copy is made: plain → plain in the region
    (the copy shares the source's manifest), plain → sealed, sealed → sealed under another
    key (re-encryption), a qcow2 import (not quick) → raw, and plain → another region."""

    name: str = "replication"
    plain: str = ""
    sealed: str = ""
    qcow2: str = ""
    key_b: str = ""
    data: dict[str, bytes] = field(default_factory=dict)

    async def setup(self, lab: Lab) -> None:
        await lab.gql('mutation { createBucket(input: {name: "crash-src"}) { __typename } }')
        key_a = await create_key(lab, "crash-key-a")
        self.key_b = await create_key(lab, "crash-key-b")
        plain, raw = lab.rng.randbytes(16 * MiB), lab.rng.randbytes(16 * MiB)
        qcow2 = await asyncio.to_thread(_qcow2, raw, lab.cluster.root)
        await upload(lab, "crash-src", "plain.raw", plain)
        await upload(lab, "crash-src", "disk.qcow2", qcow2)
        made = await _activated(lab, [
            await import_image(lab, "crash-src", "plain.raw", "plain"),
            await import_image(lab, "crash-src", "plain.raw", "sealed", kmsKeyId=key_a),
            await import_image(lab, "crash-src", "disk.qcow2", "qcow2", diskFormat="QCOW2"),
        ])
        self.plain, self.sealed, self.qcow2 = made
        lab.expected.update({self.plain: [sha(plain)], self.sealed: [sha(plain)], self.qcow2: [sha(qcow2)]})
        self.data = {self.plain: plain, self.sealed: plain, self.qcow2: raw}

    async def start(self, lab: Lab, trial: int) -> list[str]:
        copies = [
            (self.plain, {}),
            (self.plain, {"kmsKeyId": self.key_b}),
            (self.sealed, {"kmsKeyId": self.key_b}),
            (self.qcow2, {}),
            (self.plain, {"region": REGIONS[1]}),
        ]
        jobs = []
        for n, (source, how) in enumerate(copies):
            job_id, image_id = await image_job(lab, "replicateImage",
                                               {"imageId": source, "name": f"t{trial} copy {n}", **how})
            lab.expected[image_id] = [sha(self.data[source])]
            jobs.append(job_id)
        return jobs

    async def check(self, lab: Lab) -> None:
        """Each copy is what its way makes: region, key, and raw quick data."""
        async with lab.db.uow(write=False) as uow:
            copies = list((await uow.session.execute(
                select(Image).where(Image.name.like("t% copy %")))).scalars())  # type: ignore[attr-defined]
        shape = sorted((i.region, i.kms_key_id == self.key_b, i.quick_provisioning, i.disk_format) for i in copies)
        trials = len(copies) // 5
        assert shape == sorted([(REGIONS[0], False, True, "RAW"), (REGIONS[0], True, True, "RAW"),
                                (REGIONS[0], True, True, "RAW"), (REGIONS[0], False, True, "RAW"),
                                (REGIONS[1], False, True, "RAW")] * trials)


# ---------------------------------------------------------------- full-ECS images


def _chunk_of(token: bytes) -> bytes:
    """A chunk's bytes from its 32-byte token: distinct per token, made on demand, so the test
    keeps tokens rather than hundreds of MiB of disk contents."""
    return (token * (CHUNK_SIZE // len(token) + 1))[:CHUNK_SIZE]


@dataclass
class Disk:
    """A server's disk as the test wrote it: its volume, its initial bytes, the token of each
    chunk written since (also the chunk's identity, to know which chunks a backup newly
    holds), and its length."""

    volume_id: str
    base: bytes
    chunks: dict[int, object] = field(default_factory=dict)
    written: dict[int, bytes] = field(default_factory=dict)
    length: int = 0

    def digest(self) -> str:
        """SHA-256 of the disk's bytes as the test wrote them (zeros where nothing was)."""
        h = hashlib.sha256()
        for index in range(-(-self.length // CHUNK_SIZE)):
            if index in self.written:
                piece = _chunk_of(self.written[index])
            else:
                piece = self.base[index * CHUNK_SIZE:(index + 1) * CHUNK_SIZE]
                piece += bytes(min(CHUNK_SIZE, self.length - index * CHUNK_SIZE) - len(piece))
            h.update(piece)
        return "sha256:" + h.hexdigest()


@dataclass
class Machine:
    server_id: str
    sealed: bool
    disks: list[Disk]
    #: The identities of the chunks its earlier backups hold.
    backed_up: set[object] = field(default_factory=set)

    def digests(self) -> list[str]:
        return [d.digest() for d in self.disks]


#: Fresh chunks written into every disk per trial, within its first WRITE_SPAN chunks: enough
#: data for each backup job to verify that a kill can land while it runs.
CHUNKS_PER_TRIAL, WRITE_SPAN = 24, 40


@dataclass
class FullEcs:
    """Two servers made with createServer from a raw image, each with a blank data disk, one
    of them with every disk sealed under a KMS key. Each trial writes fresh chunks into
    every disk (through ComputeService.write_volume, as a guest would) and makes a FULL_ECS
    image of each server: its job verifies the chunks no earlier backup holds."""

    name: str = "full-ecs"
    machines: list[Machine] = field(default_factory=list)
    new_bytes: dict[str, list[int]] = field(default_factory=dict)

    async def setup(self, lab: Lab) -> None:
        await lab.gql('mutation { createBucket(input: {name: "crash-os"}) { __typename } }')
        key = await create_key(lab, "crash-disks")
        system = lab.rng.randbytes(3 * CHUNK_SIZE)
        await upload(lab, "crash-os", "os.raw", system)
        [image_id] = await _activated(lab, [await import_image(lab, "crash-os", "os.raw", "os")])
        lab.expected[image_id] = [sha(system)]
        for n, sealed in enumerate((False, True)):
            spec = {"imageId": image_id, "name": f"vm-{n}", "dataDisks": [{"sizeGb": 1}],
                    **({"kmsKeyId": key} if sealed else {})}
            server = (await lab.ok(
                "mutation($s: CreateServerInput!) { createServer(input: $s) { __typename "
                "... on CreateServerSuccess { server { id volumes { id role } } } } }", {"s": spec},
                success="CreateServerSuccess"))["server"]
            [root, data] = server["volumes"]
            assert (root["role"], data["role"]) == ("SYSTEM", "DATA")
            disks = [Disk(root["id"], system, {i: object() for i in range(3)}, length=len(system)),
                     Disk(data["id"], b"")]
            self.machines.append(Machine(server["id"], sealed, disks))

    async def _write(self, lab: Lab, disk: Disk, count: int) -> None:
        """Write `count` fresh chunks at a random chunk-aligned place of the disk's first
        WRITE_SPAN chunks."""
        first = lab.rng.randrange(WRITE_SPAN - count)
        tokens = [lab.rng.randbytes(32) for _ in range(count)]
        await lab.services.compute.write_volume(disk.volume_id, first * CHUNK_SIZE,
                                                b"".join(_chunk_of(token) for token in tokens))
        disk.length = max(disk.length, (first + count) * CHUNK_SIZE)
        disk.written.update({first + n: token for n, token in enumerate(tokens)})
        disk.chunks.update({first + n: token for n, token in enumerate(tokens)})

    async def start(self, lab: Lab, trial: int) -> list[str]:
        for machine in self.machines:  # every write first: the jobs then start together
            for disk in machine.disks:
                await self._write(lab, disk, CHUNKS_PER_TRIAL)
        # Hashed before the jobs start, off the loop: a blocked loop could not watch for kills.
        digests = [await asyncio.to_thread(m.digests) for m in self.machines]
        jobs = []
        for machine, expected in zip(self.machines, digests, strict=True):
            job_id, image_id = await image_job(lab, "createImageFromServer",
                                               {"serverId": machine.server_id, "name": f"t{trial} full",
                                                "kind": "FULL_ECS"})
            lab.expected[image_id] = expected
            self.new_bytes[image_id] = self._newly_held(machine)
            jobs.append(job_id)
        return jobs

    @staticmethod
    def _newly_held(machine: Machine) -> list[int]:
        """Stored bytes of the chunks of each disk that no earlier backup (nor an earlier
        disk of this one) holds: what the backup's differential pass must find."""
        per_chunk = CHUNK_SIZE + (SEAL_OVERHEAD if machine.sealed else 0)
        found = []
        for disk in machine.disks:
            new = set(disk.chunks.values()) - machine.backed_up
            machine.backed_up |= new
            found.append(len(new) * per_chunk)
        return found

    async def check(self, lab: Lab) -> None:
        """Every FULL_ECS image has its backup (a failed one's is discarded), and each backup
        counts exactly the chunks no earlier backup of its server holds, retried or not."""
        async with lab.db.uow(write=False) as uow:
            images = {i.id: i for i in (await uow.session.execute(
                select(Image).where(Image.kind == "FULL_ECS"))).scalars()}  # type: ignore[arg-type]
            backups = {b.id: b for b in (await uow.session.execute(select(Backup))).scalars()}
        assert {i.backup_id for i in images.values()} == set(backups), "a backup without its image, or the reverse"
        got = {image_id: [int(d["newBytes"]) for d in backups[str(image.backup_id)].disks]
               for image_id, image in images.items()}
        assert got == self.new_bytes


# ---------------------------------------------------------------- exports


def _raw_of_qcow2(body: bytes, workdir: Path, name: str) -> bytes:
    src, dst = workdir / f"{name}.qcow2", workdir / f"{name}.raw"
    src.write_bytes(body)
    subprocess.run(["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", str(src), str(dst)], check=True)
    try:
        return dst.read_bytes()
    finally:
        src.unlink()
        dst.unlink()


@dataclass
class Exports:
    """Four exports per trial, one per way a file is made: a raw image as RAW (streamed) and
    as QCOW2 (converted), a qcow2 import as QCOW2 (streamed as stored) and as RAW (converted).
    Four source images, since an image has one export at a time."""

    name: str = "exports"
    sources: list[tuple[str, str]] = field(default_factory=list)  # (image id, export format)
    raw: dict[str, bytes] = field(default_factory=dict)
    exports: dict[str, tuple[str, str]] = field(default_factory=dict)  # job id → (image id, key)

    async def setup(self, lab: Lab) -> None:
        await lab.gql('mutation { createBucket(input: {name: "crash-in"}) { __typename } }')
        await lab.gql('mutation { createBucket(input: {name: "crash-out"}) { __typename } }')
        plain, inner = lab.rng.randbytes(16 * MiB), lab.rng.randbytes(16 * MiB)
        qcow2 = await asyncio.to_thread(_qcow2, inner, lab.cluster.root)
        await upload(lab, "crash-in", "plain.raw", plain)
        await upload(lab, "crash-in", "disk.qcow2", qcow2)
        made = await _activated(lab, [
            await import_image(lab, "crash-in", "plain.raw", "raw a"),
            await import_image(lab, "crash-in", "plain.raw", "raw b"),
            await import_image(lab, "crash-in", "disk.qcow2", "qcow2 a", diskFormat="QCOW2"),
            await import_image(lab, "crash-in", "disk.qcow2", "qcow2 b", diskFormat="QCOW2"),
        ])
        for image_id, body in zip(made, (plain, plain, qcow2, qcow2), strict=True):
            lab.expected[image_id] = [sha(body)]
        self.raw = {made[0]: plain, made[1]: plain, made[2]: inner, made[3]: inner}
        self.sources = list(zip(made, ("RAW", "QCOW2", "QCOW2", "RAW"), strict=True))

    async def start(self, lab: Lab, trial: int) -> list[str]:
        jobs = []
        for n, (image_id, fmt) in enumerate(self.sources):
            key = f"t{trial}/{n}.{fmt.lower()}"
            payload = await lab.ok(
                "mutation($s: ExportImageInput!) { exportImage(input: $s) { __typename "
                "... on UserError { code message } ... on ExportJobSuccess { job { id } } } }",
                {"s": {"imageId": image_id, "bucket": "crash-out", "key": key, "format": fmt}},
                success="ExportJobSuccess")
            self.exports[payload["job"]["id"]] = (image_id, key)
            jobs.append(payload["job"]["id"])
        return jobs

    async def check(self, lab: Lab) -> None:
        """Every export is in the bucket, with the size and checksum its job reported, and reads
        back (through qemu-img for QCOW2) as its source's disk."""
        jobs = await lab.jobs(self.exports)
        store = lab.services.storage.store(REGIONS[0])
        for job_id, (image_id, key) in self.exports.items():
            result = jobs[job_id].result
            assert result is not None and (result["bucket"], result["key"]) == ("crash-out", key), (job_id, result)
            body = await store.get_bytes("crash-out", key)
            assert (result["size"], result["checksum"]) == (len(body), sha(body)), (job_id, key)
            if key.endswith(".qcow2"):
                body = await asyncio.to_thread(_raw_of_qcow2, body, lab.cluster.root, job_id)
            assert body == self.raw[image_id], (job_id, key)


SCENARIOS: list[Callable[[], Scenario]] = [Imports, Replication, FullEcs, Exports]
