"""IMS_BUCKETS_PER_ACCOUNT over HTTP: an account's buckets in every region count, one more is
BUCKET_LIMIT and leaves nothing in the store or the database, other accounts go on, and two
creations racing for the last place do not both take it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.config import Settings
from app.db.types import utcnow
from app.db.uow import Database
from tests.conftest import GraphQLClient, LiveServer
from tests.factories import make_account
from tests.pg_locks import ADVISORY_WAITERS, lock_waiters

LIMIT = 3
CREATE = """mutation($name: String!, $region: String) { createBucket(input: {name: $name, region: $region}) {
  __typename ... on CreateBucketSuccess { bucket { name region } } ... on UserError { code message } } }"""
REFUSED = {"__typename": "ConflictError", "code": "BUCKET_LIMIT",
           "message": f"An account may have at most {LIMIT} buckets, in all regions together; this one has {LIMIT}."}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, regions=("region-1", "region-2"), buckets_per_account=LIMIT)


async def create(me: GraphQLClient, name: str, region: str | None = None) -> dict[str, Any]:
    return (await me.execute(CREATE, {"name": name, "region": region}))["createBucket"]  # type: ignore[no-any-return]


async def in_store(live_server: LiveServer, region: str, name: str) -> bool:
    return await live_server.app.state.runtime.services.storage.store(region).bucket_exists(name)  # type: ignore[no-any-return]


async def rows_of(db: Database, account_id: str) -> list[str]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(text("SELECT name FROM buckets WHERE account_id = :a ORDER BY name"),
                                        {"a": account_id})).scalars())


async def test_buckets_beyond_the_limit_are_refused_counting_every_region(
    gql: GraphQLClient, db: Database, live_server: LiveServer
) -> None:
    alice, alice_token = await make_account(db)
    _, bob_token = await make_account(db)
    me = gql.as_(alice_token)
    for name, region in (("alice-1", "region-1"), ("alice-2", "region-2"), ("alice-3", None)):
        assert (await create(me, name, region))["__typename"] == "CreateBucketSuccess", name

    for region in ("region-1", "region-2"):
        assert await create(me, f"alice-4-{region}", region) == REFUSED
        assert not await in_store(live_server, region, f"alice-4-{region}")
    assert await rows_of(db, alice.id) == ["alice-1", "alice-2", "alice-3"]
    assert [b["name"] for b in (await me.execute("{ buckets { name } }"))["buckets"]] == [
        "alice-1", "alice-2", "alice-3"]
    # A name already taken is still told as such at the limit.
    assert (await create(me, "alice-2"))["code"] == "BUCKET_EXISTS"

    # Another account's buckets are its own count.
    bob = gql.as_(bob_token)
    for n in range(LIMIT):
        assert (await create(bob, f"bob-{n}"))["__typename"] == "CreateBucketSuccess"
    assert (await create(bob, "bob-more"))["code"] == "BUCKET_LIMIT"


async def test_creations_racing_for_the_last_place_make_one_bucket(
    gql: GraphQLClient, db: Database, live_server: LiveServer
) -> None:
    alice, token = await make_account(db)
    me = gql.as_(token)
    for n in range(LIMIT - 1):
        assert (await create(me, f"kept-{n}"))["__typename"] == "CreateBucketSuccess"
    names = [f"racer-{n}" for n in range(5)]
    responses = await asyncio.gather(*(me.raw(CREATE, {"name": name}) for name in names))
    payloads = [r.json()["data"]["createBucket"] for r in responses]
    assert sorted(p["__typename"] for p in payloads) == ["ConflictError"] * 4 + ["CreateBucketSuccess"]
    assert [p for p in payloads if p["__typename"] == "ConflictError"] == [REFUSED] * 4
    [won] = [p["bucket"]["name"] for p in payloads if p["__typename"] == "CreateBucketSuccess"]
    assert await rows_of(db, alice.id) == ["kept-0", "kept-1", won]
    assert [name for name in names if await in_store(live_server, "region-1", name)] == [won]


@pytest.fixture
async def winner(db: Database, settings: Settings) -> AsyncIterator[AsyncConnection]:
    """A PostgreSQL transaction of the test's own, to make a bucket that is not committed yet."""
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's advisory locks (SQLite serializes writers)")
    async with db.engine.connect() as conn:
        await conn.begin()
        yield conn


async def test_a_creation_waits_for_one_taking_the_last_place_then_is_refused(
    gql: GraphQLClient, db: Database, live_server: LiveServer, winner: AsyncConnection
) -> None:
    """Another process's creation of the last bucket, uncommitted, holds the account's lock:
    this one waits for it, then counts that bucket too (without the lock it counted what was
    committed, and both were made)."""
    alice, token = await make_account(db)
    me = gql.as_(token)
    for n in range(LIMIT - 1):
        assert (await create(me, f"kept-{n}"))["__typename"] == "CreateBucketSuccess"
    await winner.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": alice.id})
    await winner.execute(text("INSERT INTO buckets (name, account_id, region, created_at) VALUES (:n, :a, :r, :t)"),
                         {"n": "last", "a": alice.id, "r": "region-1", "t": utcnow()})
    sent = asyncio.ensure_future(me.raw(CREATE, {"name": "one-more"}))
    await lock_waiters(db, 1, ADVISORY_WAITERS, "the account's lock")
    await winner.commit()
    assert (await sent).json()["data"]["createBucket"] == REFUSED
    assert await rows_of(db, alice.id) == ["kept-0", "kept-1", "last"]
    assert not await in_store(live_server, "region-1", "one-more")
