"""Sharing batches (README "Performance", migration 0008): one `shareImages` of 100 images with
100 accounts, on images that already have 156 members each (the member limit then reached),
then its `unshareImages`, through the sharing service; against the same memberships written by
bare statements (one multi-row INSERT, one DELETE) into a table of the same columns and indexes
without triggers, in the same database: what writing the rows costs alone. On SQLite, and on
PostgreSQL when IMS_TEST_DATABASE_URL is set. Figures for context: no target of DESIGN §4.

    python -m tests.bench.bench_sharing [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import bindparam, text

from app.bootstrap import build_database, build_services
from app.config import Settings
from app.db.migrate import upgrade
from app.db.types import utcnow
from app.db.uow import Database
from app.domain.images import Caller
from app.runtime import tune_allocator
from tests.bench.common import Figure, postgres_bench_url
from tests.factories import make_account, make_image

#: The bare table: image_members' columns, key and indexes, no trigger.
BARE = [
    ("CREATE TABLE bench_members (image_id VARCHAR(40) NOT NULL, account_id VARCHAR(40) NOT NULL, "
     "status VARCHAR(8) NOT NULL, created_at VARCHAR(40) NOT NULL, updated_at VARCHAR(40) NOT NULL, "
     "PRIMARY KEY (image_id, account_id))"),
    "CREATE INDEX ix_bench_members_account_status ON bench_members (account_id, status, image_id)",
    "CREATE INDEX ix_bench_members_image_cover ON bench_members (image_id, account_id, status)",
]


async def bare_batch(db: Database, pairs: list[tuple[str, str]]) -> tuple[float, float]:
    """Seconds to insert `pairs` into the bare table in one statement and commit, then to
    delete them and commit."""
    now = utcnow().isoformat()
    rows = [{"i": i, "a": a, "s": "PENDING", "t": now} for i, a in pairs]
    started = time.perf_counter()
    async with db.uow() as uow:
        await uow.session.execute(text("INSERT INTO bench_members VALUES (:i, :a, :s, :t, :t)"), rows)
        await uow.commit()
    inserted = time.perf_counter()
    images = sorted({i for i, _ in pairs})
    accounts = sorted({a for _, a in pairs})
    async with db.uow() as uow:
        await uow.session.execute(
            text("DELETE FROM bench_members WHERE image_id IN :images AND account_id IN :accounts")
            .bindparams(bindparam("images", expanding=True), bindparam("accounts", expanding=True)),
            {"images": images, "accounts": accounts})
        await uow.commit()
    return inserted - started, time.perf_counter() - inserted


async def bench(settings: Settings, images: int, accounts: int, members: int, repeat: int) -> dict[str, float]:
    await asyncio.to_thread(upgrade, settings.effective_database_url)
    db = build_database(settings)
    services = build_services(settings, db)
    try:
        owner, _ = await make_account(db)
        others = [(await make_account(db))[0].id for _ in range(members + accounts)]
        made = [(await make_image(db, owner)).id for _ in range(images)]
        async with db.uow() as uow:
            await uow.sharing.add([(i, a) for i in made for a in others[:members]], "ACCEPTED", utcnow())
            for statement in BARE:
                await uow.session.execute(text(statement))
            await uow.session.execute(text(
                "INSERT INTO bench_members SELECT image_id, account_id, status, created_at, updated_at "
                "FROM image_members"))
            await uow.commit()
        caller = Caller(owner.id, owner.name, owner.role)
        batch = others[members:]
        share, unshare, bare_in, bare_out = [], [], [], []
        for _ in range(repeat):
            started = time.perf_counter()
            await services.sharing.share(caller, made, batch)
            shared = time.perf_counter()
            await services.sharing.unshare(caller, made, batch)
            share.append(shared - started)
            unshare.append(time.perf_counter() - shared)
            written, deleted = await bare_batch(db, [(i, a) for i in made for a in batch])
            bare_in.append(written)
            bare_out.append(deleted)
        return {"share": min(share), "unshare": min(unshare), "bare_in": min(bare_in), "bare_out": min(bare_out)}
    finally:
        await services.close()
        await db.dispose()


async def run_all(images: int, accounts: int, members: int, repeat: int, root: Path) -> list[Figure]:
    label = f"{images} images × {accounts} accounts, images of {members} members"
    backends = [("SQLite", Settings(data_dir=root / "sqlite", workers=0, auto_migrate=False))]
    url = await asyncio.to_thread(postgres_bench_url)
    if url is not None:
        backends.append(("PostgreSQL", Settings(data_dir=root / "postgres", database_url=url, workers=0,
                                                auto_migrate=False)))
    out = []
    for name, settings in backends:
        settings.data_dir.mkdir(parents=True)
        got = await bench(settings, images, accounts, members, repeat)
        out += [
            Figure(f"shareImages, {label}, {name}", f"bare INSERT of the rows {got['bare_in'] * 1000:.0f} ms",
                   got["share"], "(context)", None, unit="s"),
            Figure(f"unshareImages of them, {name}", f"bare DELETE of the rows {got['bare_out'] * 1000:.0f} ms",
                   got["unshare"], "(context)", None, unit="s"),
        ]
    return out


def figures(quick: bool) -> list[Figure]:
    """Quick: 20 images × 20 accounts on images of 20 members; full: 100 × 100 on 156 (best of 3)."""
    images, accounts, members, repeat = (20, 20, 20, 1) if quick else (100, 100, 156, 3)
    with tempfile.TemporaryDirectory(prefix="bench-sharing-") as root:
        return asyncio.run(run_all(images, accounts, members, repeat, Path(root)))


def main(argv: list[str] | None = None) -> int:
    tune_allocator()  # as the product's serve and worker processes do
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    for f in figures(args.quick):
        print(" | ".join(f.cells()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
