"""The read path (DESIGN §4): `images(first: 50)` with tags and members on a large catalog.

* throughput of the query through the service and the database, as a ratio to the same query
  shape served by the same Strawberry schema from in-memory objects (target ≥ 0.7);
* SQL statements per request (target ≤ 4, authentication excluded here: it is one more);
* keyset pagination: the page after 50,000 images costs ≤ 1.5× the first page;
* p50/p99 of the query over real HTTP with 10 concurrent connections (a real `ims serve`,
  uvicorn on loopback, no job worker), with the same query sent one at a time for context.

    python -m tests.bench.bench_catalog [--images 100000] [--quick]

SQLite in a temporary directory; PostgreSQL too when IMS_TEST_DATABASE_URL is set (in a
database `<that database>_bench` created next to it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, insert, text

from app.api.context import Context
from app.api.schema import build_schema
from app.bootstrap import build_database, build_services
from app.config import Settings
from app.db.engine import sync_url
from app.db.migrate import upgrade
from app.db.tables import Account, ApiToken, Image, ImageMember, ImageTag
from app.domain.images import Caller
from app.domain.pagination import encode_cursor
from app.runtime import freeze_startup_objects
from tests.bench.common import Figure, free_port, percentile, postgres_bench_url, served

QUERY = """query Catalog($after: String) { images(first: 50, after: $after) { totalCount
  pageInfo { endCursor hasNextPage }
  edges { cursor node { __typename ... on ImageBase { id name status kind sizeBytes tags { key value } }
    ... on PrivateImage { members { totalCount edges { node { account { name } status } } } }
    ... on SharedImage { owner { name } membership { status } } } } } }"""
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def populate(url: str, images: int) -> tuple[str, list[tuple[datetime, str]]]:
    """Bulk-insert the catalog; returns the viewer id and the (created_at, id) of what it sees."""
    engine = create_engine(sync_url(url))
    accounts = [{"id": f"acc-{i:05d}", "name": f"user{i:05d}", "role": "USER", "created_at": T0} for i in range(50)]
    viewer = accounts[0]["id"]
    rows, tags, members, visible = [], [], [], []
    for i in range(images):
        owner = accounts[i % 50]["id"]
        public = i % 3 == 0
        created = T0 + timedelta(seconds=i)
        image_id = f"img-{i:07d}"
        rows.append({
            "id": image_id, "owner_id": owner, "visibility": "PUBLIC" if public else "PRIVATE", "region": "region-1",
            "name": f"image {i}", "description": "", "kind": "SYSTEM_DISK", "status": "ACTIVE", "disk_format": "RAW",
            "os_type": "LINUX", "os_platform": "Debian", "os_version": "Debian 12", "os_bits": 64, "min_disk_gb": 10,
            "min_ram_mb": 0, "size_bytes": i * 1000, "boot_mode": "BIOS", "nic_multi_queue": False,
            "sriov_driver": False, "quick_provisioning": True, "protected": False, "origin_type": "NONE",
            "disks": [], "version": 1, "created_at": created, "updated_at": created,
        })
        tags += [{"image_id": image_id, "key": "env", "value": "prod"}, {"image_id": image_id, "key": "n", "value": str(i)}]
        if not public and owner == viewer:
            members += [{"image_id": image_id, "account_id": accounts[k]["id"], "status": "ACCEPTED",
                         "created_at": created, "updated_at": created} for k in (1, 2, 3)]
        if not public and i % 7 == 1 and owner != viewer:
            members.append({"image_id": image_id, "account_id": viewer, "status": "ACCEPTED",
                            "created_at": created, "updated_at": created})
        if public or owner == viewer or (i % 7 == 1):
            visible.append((created, image_id))
    with engine.begin() as conn:
        conn.execute(insert(Account), accounts)
        for start in range(0, len(rows), 5000):
            conn.execute(insert(Image), rows[start : start + 5000])
        for start in range(0, len(tags), 10000):
            conn.execute(insert(ImageTag), tags[start : start + 10000])
        if members:
            conn.execute(insert(ImageMember), members)
    if engine.dialect.name == "postgresql":
        # As autovacuum would soon after such a load: the image_counts rows the triggers
        # updated 100,000 times are otherwise read through as many dead versions.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    return str(viewer), sorted(visible, reverse=True)


class MemoryImages:
    """The image service's list, answered from objects already in memory."""

    def __init__(self, real: Any, page: Any) -> None:
        self.real = real
        self.page = page

    def check_region(self, region: str | None, field: str = "") -> str:
        return self.real.check_region(region, field)  # type: ignore[no-any-return]

    async def list(self, *args: Any, **kwargs: Any) -> Any:
        return self.page


class MemoryContext(Context):
    preloaded_tags: dict[str, Any]
    preloaded_members: dict[str, Any]

    async def _load_tags(self, image_ids: list[str]) -> list[Any]:
        return [self.preloaded_tags[i] for i in image_ids]

    async def _load_members(self, image_ids: list[str]) -> list[Any]:
        return [self.preloaded_members[i] for i in image_ids]


async def measure(url: str, data_dir: Path, images: int, rounds: int) -> list[Figure]:
    viewer, visible = await asyncio.to_thread(populate, url, images)
    settings = Settings(data_dir=data_dir, database_url=url, workers=0, auto_migrate=False)
    db = build_database(settings)
    services = build_services(settings, db)
    schema = build_schema()
    caller = Caller(viewer, "user00000", "USER")
    label = "PostgreSQL" if "postgresql" in url else "SQLite"

    statements = 0

    def count(*_a: Any) -> None:
        nonlocal statements
        statements += 1

    engines = {db.engine.sync_engine, db.write_engine.sync_engine, *db.reads.sync_engines}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", count)

    async def run_db(after: str | None = None, who: Caller = caller) -> float:
        start = time.perf_counter()
        result = await schema.execute(QUERY, variable_values={"after": after},
                                      context_value=Context(services=services, caller=who, request_id="bench"))
        assert result.errors is None, result.errors
        return time.perf_counter() - start

    await run_db()
    statements = 0
    await run_db()
    per_request = statements
    # The in-memory baseline: the same page, tags and members, already loaded.
    page = await services.images.list(caller, *_default_query(services), 50, None, with_total=True)
    ids = [v.image.id for v in page.items]
    async with db.uow(viewer, write=False) as uow:
        tags = await uow.images.tag_fields_of(ids)
        members = await uow.images.members_of(ids)
    memory_services = type("S", (), {})()
    memory_services.__dict__.update(services.__dict__)
    memory_services.images = MemoryImages(services.images, page)

    async def run_memory() -> float:
        ctx = MemoryContext(services=memory_services, caller=caller, request_id="bench")
        ctx.preloaded_tags, ctx.preloaded_members = tags, members
        start = time.perf_counter()
        result = await schema.execute(QUERY, variable_values={"after": None}, context_value=ctx)
        assert result.errors is None, result.errors
        return time.perf_counter() - start

    for _ in range(3):
        await run_memory()
    # As `ims serve` does once started: what is built by now stays out of the cyclic GC's
    # collections, which would otherwise walk the schema, the modules and the catalog's
    # generation data again and again (both sides of the ratio alike).
    freeze_startup_objects()
    # Interleaved, so that the machine's drift (a noisy neighbour, frequency changes) weighs on
    # both sides of the ratio alike.
    db_times, mem_times = [], []
    for _ in range(rounds):
        db_times.append(await run_db())
        mem_times.append(await run_memory())
    db_rate, mem_rate = 1 / statistics.median(db_times), 1 / statistics.median(mem_times)
    deep = min(len(visible) - 60, 50_000)
    created, last_id = visible[deep]
    cursor = encode_cursor("CREATED_AT:DESC", created, last_id)
    firsts, deeps = [], []
    for _ in range(rounds):  # interleaved too
        firsts.append(await run_db())
        deeps.append(await run_db(cursor))
    first_page, deep_page = statistics.median(firsts), statistics.median(deeps)
    # A caller with no memberships at all (most accounts): its SHARED arm finds nothing, which
    # a plan must find out from the memberships, not by walking every private image.
    loner = Caller("acc-00049", "user00049", "USER")
    viewer_pages, loner_pages = [], []
    for _ in range(rounds):  # interleaved too
        viewer_pages.append(await run_db())
        loner_pages.append(await run_db(who=loner))
    viewer_page, loner_page = statistics.median(viewer_pages), statistics.median(loner_pages)
    await db.dispose()
    http = await asyncio.to_thread(over_http, url, data_dir, viewer, 100 if rounds < 40 else 300)
    return [
        Figure(f"images(first: 50) throughput, {images:,} images, {label}",
               f"in-memory {mem_rate:.0f} q/s", db_rate / mem_rate, "≥ 0.7×", db_rate / mem_rate >= 0.7),
        Figure(f"SQL statements per images(first: 50) request, {label}", "-", per_request,
               "≤ 3 (+1 auth)", per_request <= 3, unit="statements"),
        Figure(f"keyset page after {deep:,} images vs page 1, {label}", f"page 1 {first_page * 1000:.1f} ms",
               deep_page / first_page, "≤ 1.5×", deep_page / first_page <= 1.5),
        Figure(f"page 1 for a caller without memberships vs the viewer's, {label}",
               f"viewer's page 1 {viewer_page * 1000:.1f} ms", loner_page / viewer_page, "(context)", None),
        Figure(f"images(first: 50) over HTTP, 10 connections, p50 / p99, {label}",
               f"1 connection p50 {http['single_p50']:.1f} ms", http["p50"], f"p99 {http['p99']:.1f} ms, "
               f"{http['rate']:.0f} q/s", None, unit="ms"),
    ]


def over_http(url: str, data_dir: Path, viewer: str, per_connection: int) -> dict[str, float]:
    """The catalog query through a real `ims serve` (uvicorn, loopback, no job worker) on the
    benchmark's database: one connection, then 10 at once."""
    import httpx

    from app.services.accounts import hash_token, new_token

    token = new_token()
    engine = create_engine(sync_url(url))
    with engine.begin() as conn:
        conn.execute(insert(ApiToken), [{"id": f"tok-bench-{os.getpid()}", "account_id": viewer, "name": "bench",
                                         "token_hash": hash_token(token), "created_at": T0}])
    engine.dispose()
    port = free_port()
    env = {**os.environ, "IMS_DATA_DIR": str(data_dir), "IMS_DATABASE_URL": url, "IMS_WORKERS": "0",
           "IMS_AUTO_MIGRATE": "false", "IMS_ADMIN_TOKEN": "ims_bench-catalog-admin", "IMS_LOG_LEVEL": "WARNING",
           "IMS_PUBLIC_URL": f"http://127.0.0.1:{port}"}
    with served(env, port, data_dir / "server.log") as base:

        async def clients() -> dict[str, float]:
            headers = {"authorization": f"Bearer {token}"}
            body = {"query": QUERY, "variables": {"after": None}}

            async def one(client: httpx.AsyncClient) -> float:
                started = time.perf_counter()
                response = await client.post("/graphql", json=body)
                elapsed = time.perf_counter() - started
                assert response.status_code == 200 and "errors" not in response.json(), response.text[:500]
                return elapsed

            async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
                for _ in range(20):
                    await one(client)
                single = [await one(client) for _ in range(per_connection)]

            async def connection() -> list[float]:
                async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as own:
                    await one(own)
                    return [await one(own) for _ in range(per_connection)]

            started = time.perf_counter()
            samples = [t for batch in await asyncio.gather(*(connection() for _ in range(10))) for t in batch]
            wall = time.perf_counter() - started
            return {"single_p50": statistics.median(single) * 1000, "p50": statistics.median(samples) * 1000,
                    "p99": percentile(samples, 0.99) * 1000, "rate": len(samples) / wall}

        return asyncio.run(clients())


def _default_query(services: Any) -> tuple[Any, Any]:
    from app.domain.images import ImageOrder, ImageQuery

    return ImageQuery(region="region-1"), ImageOrder()


def figures(quick: bool) -> list[Figure]:
    images = 5_000 if quick else 100_000
    rounds = 10 if quick else 40

    async def run() -> list[Figure]:
        out: list[Figure] = []
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite+aiosqlite:///{tmp}/bench.db"
            await asyncio.to_thread(upgrade, url)
            out += await measure(url, Path(tmp), images, rounds)
            pg = await asyncio.to_thread(postgres_bench_url)
            if pg:
                await asyncio.to_thread(upgrade, pg)
                out += await measure(pg, Path(tmp), images, rounds)
        return out

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    for f in figures(args.quick):
        print(" | ".join(f.cells()))


if __name__ == "__main__":
    main()
