"""Names that must be unique, raced over real HTTP: the request that loses gets the typed
error a lone request gets, never a masked internal error.

On PostgreSQL (READ COMMITTED) a request checks that a name is free, inserts its row and
waits on the unique index for a concurrent winner's transaction; SQLite's BEGIN IMMEDIATE
serializes the two whole. The deterministic tests hold the winner's row uncommitted in a
transaction of the test until the request waits on it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.config import Settings
from app.db.types import new_id, utcnow
from app.db.uow import Database
from app.services.storage import StorageService
from app.storage.base import ObjectInfo
from tests.conftest import GraphQLClient
from tests.factories import make_account

CREATE_BUCKET = """mutation($n: String!) { createBucket(input: {name: $n}) {
  __typename ... on UserError { code } } }"""
CREATE_ACCOUNT = """mutation($n: String!) { createAccount(input: {name: $n}) {
  __typename ... on UserError { code } } }"""
SET_QUOTA = """mutation($a: ID!, $l: Int!) { setQuota(input: {accountId: $a, resource: PRIVATE_IMAGES, limit: $l}) {
  __typename ... on UserError { code } ... on SetQuotaSuccess { quota { limit } } } }"""
LOCK_WAITERS = "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted"


def outcome(body: dict[str, Any]) -> tuple[str, str | None]:
    assert "errors" not in body, body["errors"]
    [payload] = body["data"].values()
    return payload["__typename"], payload.get("code")


async def race(me: GraphQLClient, query: str, variables: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    responses = await asyncio.gather(*(me.raw(query, v) for v in variables))
    assert all(r.status_code == 200 for r in responses)
    return sorted(outcome(r.json()) for r in responses)


@pytest.fixture
async def winner(db: Database, settings: Settings) -> AsyncIterator[AsyncConnection]:
    """A PostgreSQL transaction of the test's own, to hold a row uncommitted."""
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL (SQLite serializes writers)")
    async with db.engine.connect() as conn:
        await conn.begin()
        yield conn


async def behind(db: Database, winner: AsyncConnection, request: Any) -> dict[str, Any]:
    """Send `request`, wait until it waits for the winner's uncommitted row, commit the
    winner; the request's answer."""
    response = await _after_winner(db, winner, request)
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


async def _after_winner(db: Database, winner: AsyncConnection, call: Any) -> Any:
    """Start `call`, wait until it waits for the winner's uncommitted row, commit the
    winner; what the call returns."""
    sent = asyncio.ensure_future(call)
    for _ in range(2000):  # a bound, not a timing
        async with db.engine.connect() as conn:
            if (await conn.execute(text(LOCK_WAITERS))).scalar_one() == 1:
                break
        assert not sent.done(), sent.result()
        await asyncio.sleep(0.005)
    else:
        raise AssertionError("the request never waited for the winner's row")
    await winner.commit()
    return await sent


async def test_concurrent_buckets_of_one_name_one_winner(gql: GraphQLClient, db: Database) -> None:
    tokens = [(await make_account(db))[1] for _ in range(6)]
    for round_ in range(3):
        name = f"raced-{round_}"
        responses = await asyncio.gather(*(gql.as_(t).raw(CREATE_BUCKET, {"n": name}) for t in tokens))
        outcomes = sorted(outcome(r.json()) for r in responses)
        assert outcomes == [("ConflictError", "BUCKET_EXISTS")] * 5 + [("CreateBucketSuccess", None)]
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM buckets WHERE name = :n"), {"n": name})).scalar_one() == 1


async def test_a_bucket_request_losing_the_race_is_bucket_exists(gql: GraphQLClient, db: Database,
                                                                 winner: AsyncConnection) -> None:
    other, _ = await make_account(db)
    _, token = await make_account(db)
    await winner.execute(text("INSERT INTO buckets (name, account_id, region, created_at) VALUES (:n, :a, :r, :t)"),
                         {"n": "contested", "a": other.id, "r": "region-1", "t": utcnow()})
    got = await behind(db, winner, gql.as_(token).raw(CREATE_BUCKET, {"n": "contested"}))
    assert outcome(got) == ("ConflictError", "BUCKET_EXISTS")
    async with db.engine.connect() as conn:
        owners = (await conn.execute(text("SELECT account_id FROM buckets WHERE name = 'contested'"))).scalars().all()
    assert owners == [other.id]


async def test_concurrent_accounts_of_one_name_one_winner(gql: GraphQLClient, db: Database) -> None:
    for round_ in range(3):
        outcomes = await race(gql, CREATE_ACCOUNT, [{"n": f"racer-{round_}"}] * 6)
        assert outcomes == [("ConflictError", "ACCOUNT_EXISTS")] * 5 + [("CreateAccountSuccess", None)]


async def test_an_account_request_losing_the_race_is_account_exists(gql: GraphQLClient, db: Database,
                                                                   winner: AsyncConnection) -> None:
    await winner.execute(text("INSERT INTO accounts (id, name, role, created_at) VALUES (:i, :n, 'USER', :t)"),
                         {"i": new_id("acc"), "n": "contested", "t": utcnow()})
    got = await behind(db, winner, gql.raw(CREATE_ACCOUNT, {"n": "contested"}))
    assert outcome(got) == ("ConflictError", "ACCOUNT_EXISTS")
    async with db.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM accounts WHERE name = 'contested'"))).scalar_one() == 1


async def test_concurrent_first_quotas_of_an_account_all_apply(gql: GraphQLClient, db: Database) -> None:
    """The first override of a resource, set by several administrators at once: each
    request succeeds, and one of their limits is the one kept."""
    for _ in range(3):
        account, _ = await make_account(db)
        outcomes = await race(gql, SET_QUOTA, [{"a": account.id, "l": limit} for limit in range(1, 7)])
        assert outcomes == [("SetQuotaSuccess", None)] * 6
        async with db.engine.connect() as conn:
            kept = (await conn.execute(text("SELECT \"limit\" FROM quotas WHERE account_id = :a"),
                                       {"a": account.id})).scalars().all()
        assert len(kept) == 1 and kept[0] in range(1, 7)


async def test_a_quota_request_losing_the_race_still_sets_its_limit(gql: GraphQLClient, db: Database,
                                                                   winner: AsyncConnection) -> None:
    account, _ = await make_account(db)
    await winner.execute(text("INSERT INTO quotas (account_id, resource, \"limit\") VALUES (:a, 'PRIVATE_IMAGES', 3)"),
                         {"a": account.id})
    got = await behind(db, winner, gql.raw(SET_QUOTA, {"a": account.id, "l": 7}))
    assert got["data"]["setQuota"] == {"__typename": "SetQuotaSuccess", "quota": {"limit": 7}}
    async with db.engine.connect() as conn:
        assert (await conn.execute(text("SELECT \"limit\" FROM quotas WHERE account_id = :a"),
                                   {"a": account.id})).scalar_one() == 7


async def test_a_checksum_recorded_while_another_process_records_it_is_kept(db: Database,
                                                                          winner: AsyncConnection) -> None:
    """Two processes record an object's checksum at once (an upload through a signed URL
    beside a listing that hashed it, or two uploads of one key): the later one waits and
    replaces the row instead of failing the upload or the listing."""
    then = utcnow()
    await winner.execute(text("INSERT INTO object_checksums (bucket, key, size, modified_at, checksum, etag) "
                              "VALUES ('b1', 'k', 1, :t, 'sha256:old', 'e1')"), {"t": then})
    service = StorageService(db, {}, "region-1")
    info = ObjectInfo("b1", "k", 2, then, "sha256:" + "a" * 64, "e2")
    await _after_winner(db, winner, service.record_checksum("b1", "k", info))
    async with db.engine.connect() as conn:
        row = (await conn.execute(text("SELECT size, checksum, etag FROM object_checksums "
                                       "WHERE bucket = 'b1' AND key = 'k'"))).one()
    assert tuple(row) == (2, "sha256:" + "a" * 64, "e2")
