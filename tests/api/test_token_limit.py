"""IMS_TOKENS_PER_ACCOUNT over HTTP: an account's live API tokens, its first included, count;
one more is TOO_MANY_TOKENS and makes nothing, a revoked or expired token frees a place, other
accounts go on, creations racing for the last place make one token, and the bootstrap admin's
token is never refused."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from app.config import Settings
from app.db.tables import ApiToken
from app.db.types import new_id, utcnow
from app.db.uow import Database
from app.services.accounts import AccountService, hash_token
from tests.conftest import GraphQLClient, LiveServer
from tests.factories import make_account

LIMIT = 3
CREATE = """mutation($name: String!) { createApiToken(input: {name: $name}) {
  __typename ... on CreateApiTokenSuccess { token apiToken { id name } } ... on ValidationError { code message field } } }"""
REVOKE = "mutation($id: ID!) { revokeApiToken(input: {id: $id}) { __typename } }"
REFUSED = {"__typename": "ValidationError", "code": "TOO_MANY_TOKENS",
           "message": f"An account may have at most {LIMIT} live API tokens: "
                      "revoke one with revokeApiToken to make another.",
           "field": "input"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, tokens_per_account=LIMIT)


async def create(me: GraphQLClient, name: str) -> dict[str, Any]:
    return (await me.execute(CREATE, {"name": name}))["createApiToken"]  # type: ignore[no-any-return]


async def names_of(db: Database, account_id: str) -> list[str]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(text("SELECT name FROM api_tokens WHERE account_id = :a ORDER BY name"),
                                        {"a": account_id})).scalars())


async def test_tokens_beyond_the_limit_are_refused_until_one_is_revoked(gql: GraphQLClient, db: Database) -> None:
    alice, alice_token = await make_account(db)  # its first token, "t", counts
    _, bob_token = await make_account(db)
    me = gql.as_(alice_token)
    made = [await create(me, name) for name in ("ci-1", "ci-2")]
    assert [m["__typename"] for m in made] == ["CreateApiTokenSuccess"] * 2

    assert await create(me, "ci-3") == REFUSED
    assert await names_of(db, alice.id) == ["ci-1", "ci-2", "t"]
    listed = (await me.execute("{ viewer { apiTokens { name } } }"))["viewer"]["apiTokens"]
    assert sorted(t["name"] for t in listed) == ["ci-1", "ci-2", "t"]

    # Another account's tokens are its own count.
    bob = gql.as_(bob_token)
    assert [(await create(bob, f"bob-{n}"))["__typename"] for n in range(LIMIT - 1)] == ["CreateApiTokenSuccess"] * 2
    assert await create(bob, "bob-more") == REFUSED

    # A revoked token frees its place, for one more only.
    assert (await me.execute(REVOKE, {"id": made[0]["apiToken"]["id"]}))["revokeApiToken"] == {
        "__typename": "RevokeApiTokenSuccess"}
    assert (await create(me, "ci-3"))["__typename"] == "CreateApiTokenSuccess"
    assert await create(me, "ci-4") == REFUSED
    assert await names_of(db, alice.id) == ["ci-2", "ci-3", "t"]


async def test_an_expired_token_does_not_count(gql: GraphQLClient, db: Database) -> None:
    alice, token = await make_account(db)
    async with db.uow() as uow:
        for n in range(LIMIT):
            await uow.accounts.add_token(ApiToken(
                id=new_id("tok"), account_id=alice.id, name=f"old-{n}", token_hash=hash_token(f"ims_old-{alice.id}-{n}"),
                created_at=utcnow() - timedelta(days=2), expires_at=utcnow() - timedelta(days=1)))
        await uow.commit()
    me = gql.as_(token)
    assert [(await create(me, f"ci-{n}"))["__typename"] for n in range(LIMIT - 1)] == ["CreateApiTokenSuccess"] * 2
    assert await create(me, "ci-more") == REFUSED
    assert await names_of(db, alice.id) == ["ci-0", "ci-1", "old-0", "old-1", "old-2", "t"]


async def test_creations_racing_for_the_last_place_make_one_token(gql: GraphQLClient, db: Database) -> None:
    alice, token = await make_account(db)
    me = gql.as_(token)
    assert (await create(me, "kept"))["__typename"] == "CreateApiTokenSuccess"
    names = [f"racer-{n}" for n in range(5)]
    responses = await asyncio.gather(*(me.raw(CREATE, {"name": name}) for name in names))
    payloads = [r.json()["data"]["createApiToken"] for r in responses]
    assert [p for p in payloads if p["__typename"] != "CreateApiTokenSuccess"] == [REFUSED] * 4
    [won] = [p["apiToken"]["name"] for p in payloads if p["__typename"] == "CreateApiTokenSuccess"]
    assert await names_of(db, alice.id) == sorted(["kept", won, "t"])


async def test_the_bootstrap_admins_token_is_never_refused(
    gql: GraphQLClient, db: Database, live_server: LiveServer, tmp_path: Path
) -> None:
    """The admin at the limit (its IMS_ADMIN_TOKEN token and two of its own) still gets the
    token a start writes to the token file: a start never fails on the limit."""
    assert [(await create(gql, f"admin-{n}"))["__typename"] for n in range(LIMIT - 1)] == [
        "CreateApiTokenSuccess"] * 2
    assert await create(gql, "admin-more") == REFUSED
    settings = live_server.settings
    # The server's own service, built on this test's event loop (its database connections are
    # the loop's).
    accounts = AccountService(db, settings.default_region, tokens_per_account=settings.tokens_per_account)
    admin = await accounts.bootstrap_admin(settings.admin_name, None, tmp_path / "admin-token")
    written = (tmp_path / "admin-token").read_text().strip()
    viewer = "{ viewer { account { id } } }"
    assert (await gql.as_(written).execute(viewer))["viewer"]["account"]["id"] == admin.id
    assert await names_of(db, admin.id) == ["IMS_ADMIN_TOKEN", "admin-0", "admin-1", "bootstrap"]
