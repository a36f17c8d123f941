"""updateImageMembership changes a member's memberships in one order whatever the request's
(PostgreSQL): two batches of one member naming the same images in opposite orders each
held one membership row and waited for the other's, and PostgreSQL aborted one (a masked
internal error). It locks the images before their memberships, as the owner's changes do."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from app.config import Settings
from app.db.uow import Database
from tests.conftest import GraphQLClient
from tests.factories import make_account, make_image, member_rows, share
from tests.pg_locks import lock_waiters

ANSWER = """mutation($ids: [ID!]!) { updateImageMembership(input: {imageIds: $ids, status: ACCEPTED}) {
  __typename ... on UserError { code } } }"""


async def test_a_members_batches_in_opposite_orders_both_answer(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's row locks (SQLite serializes writers)")
    owner, _ = await make_account(db)
    member, token = await make_account(db)
    me = gql.as_(token)
    images = [await make_image(db, owner) for _ in range(2)]
    for image in images:
        await share(db, image, member, "PENDING")
    ids = [i.id for i in images]
    # A transaction of the test holds the member's PENDING counter: the first batch waits
    # there holding its first membership, the second takes its own first one meanwhile.
    async with db.engine.connect() as holder:
        await holder.begin()
        await holder.execute(text("SELECT n FROM image_counts WHERE account_id = :a AND member_status = 'PENDING' "
                                  "FOR UPDATE"), {"a": member.id})
        one = asyncio.ensure_future(me.execute(ANSWER, {"ids": ids}))
        await lock_waiters(db, 1)
        two = asyncio.ensure_future(me.execute(ANSWER, {"ids": ids[::-1]}))
        await lock_waiters(db, 2)
        await holder.rollback()
    results = await asyncio.gather(one, two)
    assert [r["updateImageMembership"]["__typename"] for r in results] == ["UpdateImageMembershipSuccess"] * 2
    for image in images:
        assert await member_rows(db, image.id) == [(member.id, "ACCEPTED")]


async def test_a_members_answer_waits_for_the_image_before_it_holds_its_membership(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    """An owner's unshare or delete locks the image, then its memberships. A member's answer
    changes the image row too (its CSV text, by trigger): it must queue on the image first,
    holding no membership meanwhile, or the two wait for each other."""
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's row locks (SQLite serializes writers)")
    owner, _ = await make_account(db)
    member, token = await make_account(db)
    image = await make_image(db, owner)
    await share(db, image, member, "PENDING")
    async with db.engine.connect() as holder:
        await holder.begin()
        await holder.execute(text("SELECT id FROM images WHERE id = :i FOR UPDATE"), {"i": image.id})
        answer = asyncio.ensure_future(gql.as_(token).execute(ANSWER, {"ids": [image.id]}))
        await lock_waiters(db, 1)
        # As an owner's unshare would next: the membership is free (NOWAIT raises if held).
        held = await holder.execute(text("SELECT status FROM image_members WHERE image_id = :i AND account_id = :a "
                                         "FOR UPDATE NOWAIT"), {"i": image.id, "a": member.id})
        assert held.scalar_one() == "PENDING"
        await holder.rollback()
    assert (await answer)["updateImageMembership"]["__typename"] == "UpdateImageMembershipSuccess"
    assert await member_rows(db, image.id) == [(member.id, "ACCEPTED")]
