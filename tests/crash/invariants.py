"""What must hold after the last restart, whatever the scenario: every job ended (the
scenario's own ones in SUCCESS), every ACTIVE image reads back with its checksum and with
the bytes the scenario wrote, every reference count matches what holds it, and garbage
collection leaves exactly the referenced chunk objects in every region."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from datetime import timedelta

from sqlalchemy import select

from app.compute.tables import Backup, Volume
from app.datastore.chunks import CHUNK_PREFIX
from app.datastore.tables import Chunk, Manifest, ManifestChunk
from app.db.tables import Image, Job, JobAttempt
from app.jobs.maintenance import run_once
from app.services.registry import Services
from app.storage.factory import service_bucket
from tests.crash.harness import ENDED, REGIONS, Lab


async def check_jobs(lab: Lab) -> Counter[str]:
    """Every job ended; each one a trial started succeeded (a kill costs a job one attempt of
    its three). Returns the attempts by outcome."""
    async with lab.db.uow(write=False) as uow:
        jobs = list((await uow.session.execute(select(Job))).scalars())
        outcomes = Counter(a.outcome or "OPEN" for a in (await uow.session.execute(select(JobAttempt))).scalars())
    assert {j.status for j in jobs} <= set(ENDED), {j.id: j.status for j in jobs if j.status not in ENDED}
    failed = {j.id: (j.type, j.error_code, j.error_message) for j in jobs if j.id in lab.started and j.status != "SUCCESS"}
    assert failed == {}
    assert outcomes["OPEN"] == 0, outcomes
    # The kills really interrupted running jobs: attempts were lost and taken over.
    assert outcomes["LOST"] >= 1, outcomes
    return outcomes


async def _plaintext_digest(services: Services, owner_id: str, manifest_id: str) -> str:
    manifest, _ = await services.chunks.load(manifest_id)
    key = None
    if manifest.kms_key_id is not None:
        assert manifest.wrapped_key is not None
        key = await services.key_provider.decrypt_data_key(owner_id, manifest.kms_key_id, manifest.wrapped_key)
    digest = hashlib.sha256()
    async for piece in services.chunks.read(manifest_id, data_key=key):
        digest.update(piece)
    got = f"sha256:{digest.hexdigest()}"
    assert got == manifest.checksum, manifest_id
    return got


async def check_images(lab: Lab) -> None:
    """Every ACTIVE image reads back, disk by disk, with the bytes the scenario wrote; the
    image's checksum is its first disk's; KILLED images hold no data."""
    async with lab.db.uow(write=False) as uow:
        images = list((await uow.session.execute(select(Image))).scalars())
    assert {i.id: i.disks for i in images if i.status == "KILLED" and i.disks} == {}
    active = [i for i in images if i.status == "ACTIVE"]
    assert {i.id for i in active} <= set(lab.expected), "ACTIVE images the scenario did not make"
    for image in active:
        got = [await _plaintext_digest(lab.services, image.owner_id, str(d["manifestId"])) for d in image.disks]
        assert got == lab.expected[image.id], (image.id, image.name)
        assert image.checksum == got[0], (image.id, image.name)


async def check_references(lab: Lab) -> None:
    """A manifest is referenced once per image disk, volume and backup disk that names it; a
    chunk once per manifest that lists it."""
    async with lab.db.uow(write=False) as uow:
        s = uow.session
        holders: Counter[str] = Counter()
        for image in (await s.execute(select(Image))).scalars():
            holders.update(str(d["manifestId"]) for d in image.disks if d.get("manifestId"))
        for backup in (await s.execute(select(Backup))).scalars():
            holders.update(str(d["manifestId"]) for d in backup.disks)
        holders.update(v.manifest_id for v in (await s.execute(select(Volume))).scalars())
        counted = {m.id: m.refcount for m in (await s.execute(select(Manifest))).scalars()}
        regions = {m.id: m.region for m in (await s.execute(select(Manifest))).scalars()}
        # A chunk is referenced once per manifest listing it, however many times it lists it.
        pairs = {(r.manifest_id, r.digest) for r in (await s.execute(select(ManifestChunk))).scalars() if r.digest}
        listing = Counter((regions[manifest_id], digest) for manifest_id, digest in pairs)
        chunks = {(c.region, c.digest): c.refcount for c in (await s.execute(select(Chunk))).scalars() if c.refcount}
    wrong = {m: (counted.get(m), holders[m]) for m in set(counted) | set(holders) if counted.get(m) != holders[m]}
    assert wrong == {}, f"manifests whose reference count differs from their holders (count, holders): {wrong}"
    wrong_chunks = {c: (chunks.get(c), listing.get(c)) for c in set(chunks) | set(listing) if chunks.get(c) != listing.get(c)}
    assert wrong_chunks == {}, f"chunks whose reference count differs from the manifests listing them: {wrong_chunks}"


async def check_collected(lab: Lab) -> None:
    """Collect with no grace: orphans get adopted, then deleted; referenced chunks stay, and
    every region stores exactly the chunks referenced there."""
    services = lab.services
    services.chunks.grace = timedelta(0)
    await asyncio.sleep(0.01)
    for _ in range(2):
        assert await run_once(services) is not None
    for region in REGIONS:
        store = services.chunks.stores[region]
        stored = {o.key[len(CHUNK_PREFIX):] for o in
                  await store.list_objects(service_bucket(region), prefix=CHUNK_PREFIX, limit=100000)}
        async with lab.db.uow(write=False) as uow:
            rows = {c.digest: c.refcount for c in (await uow.session.execute(
                select(Chunk).where(Chunk.region == region))).scalars()}  # type: ignore[arg-type]
        assert {d for d, n in rows.items() if n <= 0} == set(), (region, "unreferenced rows survived collection")
        assert sorted(stored - set(rows)) == [], (region, "orphan chunk objects")
        assert sorted(set(rows) - stored) == [], (region, "missing chunk objects")


async def check_workdir(lab: Lab) -> None:
    """No temporary file of a conversion outlives the restart that recovered its job."""
    work = lab.cluster.data_dir / "work"
    left = sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file() and p.name != ".lock") \
        if work.exists() else []
    assert left == [], "temporary files left behind"


async def check_all(lab: Lab) -> Counter[str]:
    outcomes = await check_jobs(lab)
    await check_images(lab)
    await check_references(lab)
    await check_collected(lab)
    await check_references(lab)
    await check_workdir(lab)
    return outcomes
