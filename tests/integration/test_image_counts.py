"""The `image_counts` rows (migration 0002's triggers) against a count of the rows they stand
for, after random changes of images and memberships made by SQL, cascades included; and
`totalCount` of unfiltered shapes served from them."""

from __future__ import annotations

import itertools
import random
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, update
from sqlmodel import col

from app.db.tables import Account, Image, ImageCount, ImageMember
from app.db.types import new_id, utcnow
from app.db.uow import Database
from app.domain.enums import ImageKind, ImageVisibility, MemberStatus
from app.domain.images import ImageOrder, ImageQuery

REGIONS = ("region-1", "region-2")
KINDS = ("SYSTEM_DISK", "DATA_DISK", "ISO")
STATUSES = ("PENDING", "ACCEPTED", "REJECTED")


def _image(owner: str, n: int, rng: random.Random) -> dict[str, Any]:
    now = utcnow() + timedelta(microseconds=n)
    return dict(
        id=new_id("img"), owner_id=owner, visibility=rng.choice(("PUBLIC", "PRIVATE", "PRIVATE")),
        region=rng.choice(REGIONS), name=f"i{n}", description="", kind=rng.choice(KINDS), status="ACTIVE",
        disk_format="RAW", min_disk_gb=1, min_ram_mb=0, boot_mode="BIOS", nic_multi_queue=False,
        sriov_driver=False, quick_provisioning=False, protected=False, origin_type="NONE", disks=[], version=1,
        created_at=now, updated_at=now,
    )


def expected_total(images: list[Any], members: list[Any], caller: str, region: str,
                   visibility: frozenset[str], statuses: frozenset[str], kinds: frozenset[str] | None) -> int:
    """What the listing's branches select, counted in Python from the rows themselves."""
    by_id = {i.id: i for i in images}
    total = 0
    for i in images:
        if i.region != region or (kinds is not None and i.kind not in kinds):
            continue
        if (i.visibility == "PUBLIC" and "PUBLIC" in visibility) or (
            i.visibility == "PRIVATE" and i.owner_id == caller and "PRIVATE" in visibility
        ):
            total += 1
    if "SHARED" in visibility:
        for m in members:
            i = by_id[m.image_id]
            if (m.account_id == caller and m.status in statuses and i.visibility == "PRIVATE"
                    and i.owner_id != caller and i.region == region and (kinds is None or i.kind in kinds)):
                total += 1
    return total


async def _check(db: Database, accounts: list[str]) -> int:
    async with db.uow(write=False) as uow:
        images = list((await uow.session.execute(select(Image.__table__))).all())  # type: ignore[attr-defined]
        members = list((await uow.session.execute(select(ImageMember.__table__))).all())  # type: ignore[attr-defined]
    checked = 0
    for caller, region in itertools.product(accounts, REGIONS):
        for visibility in ({"PUBLIC", "PRIVATE", "SHARED"}, {"PRIVATE"}, {"SHARED"}, {"PUBLIC", "SHARED"}):
            for statuses, kinds in (({"ACCEPTED"}, None), ({"PENDING", "REJECTED"}, {"ISO", "DATA_DISK"}),
                                    (set(STATUSES), {"SYSTEM_DISK"})):
                query = ImageQuery(
                    region=region, visibility=frozenset(ImageVisibility(v) for v in visibility),
                    member_statuses=frozenset(MemberStatus(s) for s in statuses),
                    kinds=None if kinds is None else frozenset(ImageKind(k) for k in kinds),
                )
                async with db.uow(caller, write=False) as uow:
                    counted = await uow.images.count(query)
                    _, _, total = await uow.images.page(query, ImageOrder(), 1, None, with_total=True)
                want = expected_total(images, members, caller, region, frozenset(visibility),
                                      frozenset(statuses), None if kinds is None else frozenset(kinds))
                assert (counted, total) == (want, want), (caller, region, visibility, statuses, kinds)
                checked += 1
    return checked


@pytest.mark.parametrize("seed", [1, 2])
async def test_counters_follow_every_change_of_images_and_memberships(db: Database, seed: int) -> None:
    rng = random.Random(seed)
    seq = itertools.count()
    now = utcnow()
    accounts = [new_id("acc") for _ in range(5)]
    async with db.uow() as uow:
        await uow.session.execute(insert(Account), [
            {"id": a, "name": f"counts-{seed}-{k}", "role": "USER", "created_at": now} for k, a in enumerate(accounts)
        ])
        await uow.commit()
    images: list[str] = []
    operations: dict[str, int] = {}
    for step in range(160):
        op = rng.choice(("create", "create", "create_many", "share", "share", "share_many", "status", "unshare",
                         "unshare_many", "publish", "reprivate", "kind", "delete", "delete_many",
                         "drop_member_account"))
        async with db.uow() as uow:
            s = uow.session
            if op in ("create", "create_many") or not images:
                rows = [_image(rng.choice(accounts[:4]), next(seq), rng) for _ in range(3 if op == "create_many" else 1)]
                await s.execute(insert(Image), rows)
                op = "create" if op not in ("create", "create_many") else op
            elif op == "share":
                image = rng.choice(images)
                # Any account, the owner and members of public images included: those never count.
                taken = set((await s.execute(select(col(ImageMember.account_id)).where(
                    col(ImageMember.image_id) == image))).scalars())
                free = [a for a in accounts if a not in taken]
                if free:
                    await s.execute(insert(ImageMember), [{
                        "image_id": image, "account_id": a, "status": rng.choice(STATUSES), "created_at": now,
                        "updated_at": now} for a in rng.sample(free, min(len(free), rng.randint(1, 3)))])
            elif op == "share_many":
                # One statement, one account and status, several images: rows of one counter
                # key (PostgreSQL's statement triggers, 0011, must group them).
                account, status = rng.choice(accounts), rng.choice(STATUSES)
                taken = set((await s.execute(select(col(ImageMember.image_id)).where(
                    col(ImageMember.account_id) == account))).scalars())
                free = [i for i in images if i not in taken]
                if free:
                    await s.execute(insert(ImageMember), [{
                        "image_id": i, "account_id": account, "status": status, "created_at": now,
                        "updated_at": now} for i in rng.sample(free, min(len(free), rng.randint(2, 6)))])
            elif op == "status":
                await s.execute(update(ImageMember).where(col(ImageMember.image_id) == rng.choice(images))
                                .values(status=rng.choice(STATUSES)))
            elif op == "unshare":
                await s.execute(delete(ImageMember).where(col(ImageMember.image_id) == rng.choice(images),
                                                          col(ImageMember.account_id) == rng.choice(accounts)))
            elif op == "unshare_many":
                await s.execute(delete(ImageMember).where(col(ImageMember.account_id) == rng.choice(accounts)))
            elif op in ("publish", "reprivate"):
                await s.execute(update(Image).where(col(Image.id) == rng.choice(images))
                                .values(visibility="PUBLIC" if op == "publish" else "PRIVATE"))
            elif op == "kind":
                await s.execute(update(Image).where(col(Image.id) == rng.choice(images)).values(kind=rng.choice(KINDS)))
            elif op in ("delete", "delete_many"):
                gone = rng.sample(images, min(len(images), 1 if op == "delete" else 3))
                # Memberships go by the foreign key's cascade.
                await s.execute(delete(Image).where(Image.id.in_(gone)))  # type: ignore[attr-defined]
            elif op == "drop_member_account":
                # An account without images: its memberships go by cascade.
                spare = accounts[4]
                await s.execute(delete(Account).where(col(Account.id) == spare))
                await s.execute(insert(Account), [{"id": spare, "name": f"counts-{seed}-4", "role": "USER",
                                                   "created_at": now}])
            if rng.random() < 0.9:  # else the unit of work rolls back: so must the counters
                await uow.commit()
        async with db.uow(write=False) as uow:
            images = list((await uow.session.execute(select(col(Image.id)).order_by(col(Image.id)))).scalars())
        operations[op] = operations.get(op, 0) + 1
        if step % 40 == 39:
            assert await _check(db, accounts) == 5 * 2 * 4 * 3
    assert {"create", "share", "share_many", "status", "unshare", "unshare_many", "publish", "delete",
            "delete_many", "drop_member_account"} <= set(operations)
    async with db.uow(write=False) as uow:
        counters = (await uow.session.execute(select(ImageCount.__table__))).all()  # type: ignore[attr-defined]
    assert all(r.n >= 0 for r in counters)
    assert sum(r.n for r in counters if r.scope in ("PUBLIC", "OWNED")) == len(images)


async def test_filtered_totals_still_count_rows(db: Database) -> None:
    """A filter the counters do not key on (status) counts the rows themselves."""
    now = utcnow()
    async with db.uow() as uow:
        await uow.session.execute(insert(Account), [{"id": "acc-f", "name": "f", "role": "USER", "created_at": now}])
        rows = [_image("acc-f", n, random.Random(n)) | {"visibility": "PRIVATE", "region": "region-1",
                                                        "status": "ACTIVE" if n % 2 else "KILLED"} for n in range(7)]
        await uow.session.execute(insert(Image), rows)
        await uow.commit()
    async with db.uow("acc-f", write=False) as uow:
        from app.domain.enums import ImageStatus

        killed = ImageQuery(region="region-1", statuses=frozenset({ImageStatus.KILLED}))
        assert await uow.images.count(killed) == 4
        assert await uow.images.count(ImageQuery(region="region-1")) == 7


def test_migration_counts_the_images_already_there(tmp_path: Any) -> None:
    """Upgrading a database that holds images and memberships fills the counters from them."""
    from sqlalchemy import create_engine, text

    from app.db.migrate import upgrade

    url = f"sqlite+aiosqlite:///{tmp_path}/old.db"
    upgrade(url, "0001")
    engine = create_engine(f"sqlite:///{tmp_path}/old.db")
    rng = random.Random(7)
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(insert(Account), [{"id": f"acc-{k}", "name": f"a{k}", "role": "USER", "created_at": now}
                                       for k in range(3)])
        rows = [_image(f"acc-{n % 3}", n, rng) for n in range(30)]
        conn.execute(insert(Image), rows)
        conn.execute(insert(ImageMember), [
            {"image_id": r["id"], "account_id": f"acc-{(n + 1) % 3}", "status": STATUSES[n % 3], "created_at": now,
             "updated_at": now} for n, r in enumerate(rows)])
    upgrade(url)
    with engine.begin() as conn:
        images = list(conn.execute(select(Image.__table__)).all())  # type: ignore[attr-defined]
        members = list(conn.execute(select(ImageMember.__table__)).all())  # type: ignore[attr-defined]
        counters = {(r.region, r.scope, r.account_id, r.member_status, r.kind): r.n
                    for r in conn.execute(text("SELECT * FROM image_counts")).all()}
    engine.dispose()
    for k, region, status, kind in itertools.product(range(3), REGIONS, STATUSES, KINDS):
        kinds = frozenset({kind})
        assert counters.get((region, "OWNED", f"acc-{k}", "", kind), 0) == expected_total(
            images, members, f"acc-{k}", region, frozenset({"PRIVATE"}), frozenset(), kinds)
        assert counters.get((region, "SHARED", f"acc-{k}", status, kind), 0) == expected_total(
            images, members, f"acc-{k}", region, frozenset({"SHARED"}), frozenset({status}), kinds)
        assert counters.get((region, "PUBLIC", "", "", kind), 0) == expected_total(
            images, members, "nobody", region, frozenset({"PUBLIC"}), frozenset(), kinds)
    assert sum(counters.values()) == len(images) + sum(
        1 for m in members for i in images if i.id == m.image_id and i.visibility == "PRIVATE")
