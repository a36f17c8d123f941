"""Deleting images takes its locks in one order whatever the batches hold (PostgreSQL): two
concurrent deleteImages requests used to deadlock, and PostgreSQL aborted one (a masked
internal error). Each test holds a row in a transaction of its own until both requests
queue, so that they meet in the order that deadlocked."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text

from app.config import Settings
from app.db.tables import Account, Image
from app.db.uow import Database
from tests.conftest import GraphQLClient
from tests.factories import make_account, make_image, make_image_with_data, share
from tests.pg_locks import lock_waiters

DELETE = """mutation($ids: [ID!]!) { deleteImages(input: {ids: $ids}) { __typename ... on UserError { code } } }"""


@pytest.fixture(autouse=True)
def postgres_only(settings: Settings) -> None:
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's row locks (SQLite serializes writers)")


async def _queued(db: Database, hold: str, params: dict[str, Any], first: Any, second: Any) -> list[Any]:
    """Send `first`, then `second`, each once the one before waits for the row that `hold`
    selects FOR UPDATE in a transaction of the test; then let them go, in that order."""
    async with db.engine.connect() as holder:
        await holder.begin()
        assert (await holder.execute(text(hold), params)).all()
        one = asyncio.ensure_future(first)
        await lock_waiters(db, 1)
        two = asyncio.ensure_future(second)
        await lock_waiters(db, 2)
        await holder.rollback()
    return list(await asyncio.gather(one, two))


async def test_batches_of_mixed_kinds_both_delete(gql: GraphQLClient, db: Database) -> None:
    """The owner's counters (one per image kind) are taken by the triggers in the order the
    images go, which is their id order: a batch of a system then a data disk image and one
    of a data then a system disk image each held one counter and waited for the other."""
    owner, token = await make_account(db)
    me = gql.as_(token)
    kinds = ["SYSTEM_DISK", "DATA_DISK", "DATA_DISK", "SYSTEM_DISK"]
    images = [await make_image(db, owner, id=f"img-{n}-{owner.id}", kind=kind) for n, kind in enumerate(kinds)]
    results = await _queued(
        db, "SELECT n FROM image_counts WHERE account_id = :a AND kind = 'SYSTEM_DISK' FOR UPDATE", {"a": owner.id},
        me.execute(DELETE, {"ids": [images[0].id, images[1].id]}),
        me.execute(DELETE, {"ids": [images[2].id, images[3].id]}),
    )
    assert [r["deleteImages"]["__typename"] for r in results] == ["DeleteImagesSuccess"] * 2
    async with db.engine.connect() as conn:
        counts = (await conn.execute(text("SELECT kind, n FROM image_counts WHERE account_id = :a ORDER BY kind"),
                                     {"a": owner.id})).all()
    assert [tuple(r) for r in counts] == [("DATA_DISK", 0), ("SYSTEM_DISK", 0)]


async def test_batches_of_owners_sharing_members_both_delete(gql: GraphQLClient, db: Database) -> None:
    """Two owners delete images shared with the same member, of both kinds, in opposite
    orders: the member's SHARED counters were taken in each batch's order."""
    member, _ = await make_account(db)
    batches = []
    for n, kinds in enumerate((["SYSTEM_DISK", "DATA_DISK"], ["DATA_DISK", "SYSTEM_DISK"])):
        owner, token = await make_account(db)
        images = [await make_image(db, owner, id=f"img-{n}{i}-{owner.id}", kind=kind) for i, kind in enumerate(kinds)]
        for image in images:
            await share(db, image, member)
        batches.append(gql.as_(token).execute(DELETE, {"ids": [i.id for i in images]}))
    results = await _queued(
        db, "SELECT n FROM image_counts WHERE account_id = :a AND kind = 'SYSTEM_DISK' FOR UPDATE", {"a": member.id},
        *batches,
    )
    assert [r["deleteImages"]["__typename"] for r in results] == ["DeleteImagesSuccess"] * 2
    async with db.engine.connect() as conn:
        counts = (await conn.execute(text("SELECT kind, n FROM image_counts WHERE account_id = :a ORDER BY kind"),
                                     {"a": member.id})).all()
    assert [tuple(r) for r in counts] == [("DATA_DISK", 0), ("SYSTEM_DISK", 0)]


async def _holding(db: Database, owner: Account, image: Image) -> Image:
    """An image of `owner` holding `image`'s manifest, as a copy of it does."""
    copy = await make_image(db, owner, disks=[dict(d) for d in image.disks])
    async with db.uow() as uow:
        assert await uow.chunks.retain(image.disks[0]["manifestId"])
        await uow.commit()
    return copy


async def test_an_owner_and_a_member_deleting_images_sharing_data_both_delete(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    """The data went back image by image in request order: an owner deleting two images
    while a member deleted its copies of them in the other order each held one manifest and
    waited for the other. The test holds a chunk that only a third image of the owner's
    batch lets go of, between the two manifests."""
    owner, token = await make_account(db)
    member, member_token = await make_account(db)
    first, second = [await make_image_with_data(db, settings, owner, bytes([n]) * 40_000) for n in (1, 2)]
    first_copy, second_copy = [await _holding(db, member, image) for image in (first, second)]
    alone = await make_image_with_data(db, settings, owner, b"\x03" * 40_000)
    async with db.uow(write=False) as uow:
        [(_, digest, _)] = await uow.chunks.chunk_list(alone.disks[0]["manifestId"])
    results = await _queued(
        db, "SELECT digest FROM chunks WHERE digest = :d FOR UPDATE", {"d": digest},
        gql.as_(token).execute(DELETE, {"ids": [first.id, alone.id, second.id]}),
        gql.as_(member_token).execute(DELETE, {"ids": [second_copy.id, first_copy.id]}),
    )
    assert [r["deleteImages"]["__typename"] for r in results] == ["DeleteImagesSuccess"] * 2
    async with db.uow(write=False) as uow:
        for image in (first, second, alone):
            assert await uow.chunks.manifest(image.disks[0]["manifestId"]) is None
        refcount = (await uow.session.execute(text("SELECT refcount FROM chunks WHERE digest = :d"),
                                              {"d": digest})).scalar_one()
    assert refcount == 0
