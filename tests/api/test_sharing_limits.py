"""Member limits of shareImages: 256 per system/data/ISO image, 10 per full-ECS image, kept
also when shares race each other."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from app.db.tables import Account, Image, ImageMember
from app.db.types import new_id, utcnow
from app.db.uow import Database
from tests.api.ops import error
from tests.api.test_sharing import pairs, refused_share, share_images, users
from tests.conftest import GraphQLClient
from tests.factories import make_image, member_rows

_seq = itertools.count(1)


async def bulk_accounts(db: Database, n: int) -> list[str]:
    """`n` accounts (no tokens) in one transaction; their ids."""
    now = utcnow()
    accounts = [Account(id=new_id("acc"), name=f"bulk-{next(_seq):06d}", role="USER", created_at=now)
                for _ in range(n)]
    async with db.uow() as uow:
        uow.session.add_all(accounts)
        await uow.commit()
    return [a.id for a in accounts]


async def bulk_members(db: Database, image: Image, account_ids: list[str], status: str = "ACCEPTED") -> None:
    now = utcnow()
    async with db.uow() as uow:
        uow.session.add_all([ImageMember(image_id=image.id, account_id=a, status=status, created_at=now,
                                         updated_at=now) for a in account_ids])
        await uow.commit()


@pytest.mark.parametrize("kind", ["SYSTEM_DISK", "DATA_DISK", "ISO", "FULL_ECS"])
async def test_member_limit_per_kind(kind: str, gql: GraphQLClient, db: Database) -> None:
    limit = 10 if kind == "FULL_ECS" else 256
    (alice, a), = await users(db, gql, 1)
    image = await make_image(db, alice, kind=kind)
    members = await bulk_accounts(db, limit - 1)
    await bulk_members(db, image, members)
    spare = await bulk_accounts(db, 2)
    full = error("LimitExceededError", "SHARE_LIMIT", limit=limit)

    await refused_share(a, db, [image], spare, full)  # one over: nobody is added
    assert pairs(await share_images(a, [image.id], spare[:1])) == [(image.id, spare[0], "PENDING")]
    assert len(await member_rows(db, image.id)) == limit
    await refused_share(a, db, [image], spare[1:], full)
    # Existing members do not count twice: sharing with them again at the limit is fine.
    again = await share_images(a, [image.id], [members[0], spare[0]])
    assert pairs(again) == [(image.id, members[0], "ACCEPTED"), (image.id, spare[0], "PENDING")]


async def test_the_limit_counts_every_membership_status(gql: GraphQLClient, db: Database) -> None:
    (alice, a), = await users(db, gql, 1)
    image = await make_image(db, alice, kind="FULL_ECS")
    accounts = await bulk_accounts(db, 11)
    await bulk_members(db, image, accounts[:4], "PENDING")
    await bulk_members(db, image, accounts[4:7], "REJECTED")
    await bulk_members(db, image, accounts[7:10], "ACCEPTED")
    await refused_share(a, db, [image], accounts[10:], error("LimitExceededError", "SHARE_LIMIT", limit=10))


async def test_a_batch_over_the_limit_on_one_image_changes_no_image(gql: GraphQLClient, db: Database) -> None:
    (alice, a), = await users(db, gql, 1)
    roomy = await make_image(db, alice)
    crowded = await make_image(db, alice, kind="FULL_ECS")
    await bulk_members(db, crowded, await bulk_accounts(db, 9))
    await refused_share(a, db, [roomy, crowded], await bulk_accounts(db, 2),
                        error("LimitExceededError", "SHARE_LIMIT", limit=10))


async def test_concurrent_shares_never_exceed_the_limit(gql: GraphQLClient, db: Database) -> None:
    """Six requests race for the two free places of a full-ECS image: two win, four are
    refused, and the image ends with exactly ten members (the image rows are locked before
    the members are counted)."""
    (alice, a), = await users(db, gql, 1)
    image = await make_image(db, alice, kind="FULL_ECS")
    await bulk_members(db, image, await bulk_accounts(db, 8))
    racers = await bulk_accounts(db, 6)
    results = await asyncio.gather(*(share_images(a, [image.id], [r]) for r in racers))
    outcomes = sorted(r["__typename"] for r in results)
    assert outcomes == ["LimitExceededError"] * 4 + ["ShareImagesSuccess"] * 2
    assert all(r["code"] == "SHARE_LIMIT" for r in results if r["__typename"] == "LimitExceededError")
    assert len(await member_rows(db, image.id)) == 10


async def test_concurrent_batches_over_shared_images_all_finish(gql: GraphQLClient, db: Database) -> None:
    """Batches naming the same images in opposite orders all succeed: each locks the image
    rows in id order, whatever the request order, so they queue instead of deadlocking."""
    (alice, a), = await users(db, gql, 1)
    images = [(await make_image(db, alice)).id for _ in range(4)]
    accounts = await bulk_accounts(db, 8)
    results = await asyncio.gather(*(
        share_images(a, images if i % 2 else images[::-1], [accounts[i]]) for i in range(8)
    ))
    assert {r["__typename"] for r in results} == {"ShareImagesSuccess"}
    for image_id in images:
        assert {m for m, _ in await member_rows(db, image_id)} == set(accounts)
