"""Singleton duties: one process at a time acts; garbage collection really reclaims; API
tokens expired for longer than the retention are deleted, in batches, and no others."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

from sqlalchemy import text

from app.bootstrap import build_database, build_services
from app.config import Settings
from app.datastore.chunks import CHUNK_PREFIX
from app.db.types import utcnow
from app.db.uow import Database
from app.jobs.maintenance import run_once, singleton
from app.services.accounts import AccountService
from app.storage.factory import service_bucket
from tests.conftest import GraphQLClient
from tests.factories import make_account, make_token


async def _stream(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_exactly_one_process_acts(settings: Settings, db: Database) -> None:
    first = build_services(settings, db)
    other_db = build_database(settings)  # a second "process": its own engine and connections
    second = build_services(settings, other_db)
    await first.chunks.stores["region-1"].create_bucket(service_bucket("region-1"))
    try:
        async with singleton(first) as mine:
            assert mine is True
            assert await run_once(second) is None
        report = await run_once(second)
        assert report is not None and report.chunks_deleted == 0
    finally:
        await first.close()
        await second.close()
        await other_db.dispose()


async def test_maintenance_collects_released_chunks(settings: Settings, db: Database) -> None:
    services = build_services(settings, db)
    try:
        store = services.chunks.stores["region-1"]
        await store.create_bucket(service_bucket("region-1"))
        manifest = await services.chunks.write("region-1", _stream(secrets.token_bytes(70_000)))
        await services.chunks.release(manifest.id)
        report = await run_once(services)
        assert report is not None and report.chunks_deleted == 0  # inside the grace period
        services.chunks.grace = timedelta(0)
        report = await run_once(services)
        assert report is not None and report.chunks_deleted == 1
        assert await store.list_objects(service_bucket("region-1"), prefix=CHUNK_PREFIX) == []
    finally:
        await services.close()


VIEWER_TOKENS = "{ viewer { apiTokens { name } } }"


async def token_names(db: Database) -> list[str]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(text("SELECT name FROM api_tokens ORDER BY name"))).scalars())


async def test_maintenance_deletes_tokens_expired_longer_than_the_retention(
    settings: Settings, db: Database, gql: GraphQLClient
) -> None:
    """The default retention, 30 days: a token expired 31 days ago goes, one expired 29 days
    ago stays listed (and still authenticates nothing), live ones stay."""
    services = build_services(settings, db)
    try:
        await services.chunks.stores["region-1"].create_bucket(service_bucket("region-1"))
        alice, alice_token = await make_account(db, "alice")  # its first token, "t", never expires
        now = utcnow()
        await make_token(db, alice, "gone", now - timedelta(days=31))
        _, stale = await make_token(db, alice, "stale", now - timedelta(days=29))
        _, live = await make_token(db, alice, "live", now + timedelta(days=1))
        me = gql.as_(alice_token)
        listed = (await me.execute(VIEWER_TOKENS))["viewer"]["apiTokens"]
        assert sorted(t["name"] for t in listed) == ["gone", "live", "stale", "t"]

        report = await run_once(services)

        assert report is not None and report.tokens_deleted == 1
        listed = (await me.execute(VIEWER_TOKENS))["viewer"]["apiTokens"]
        assert sorted(t["name"] for t in listed) == ["live", "stale", "t"]
        assert await services.accounts.authenticate(stale) is None
        caller = await services.accounts.authenticate(live)
        assert caller is not None and caller.account_id == alice.id
        report = await run_once(services)
        assert report is not None and report.tokens_deleted == 0
    finally:
        await services.close()


async def test_maintenance_honours_the_retention_setting(settings: Settings, db: Database) -> None:
    services = build_services(replace(settings, expired_token_retention=3600.0), db)
    try:
        await services.chunks.stores["region-1"].create_bucket(service_bucket("region-1"))
        alice, _ = await make_account(db, "alice")
        now = utcnow()
        await make_token(db, alice, "two-hours", now - timedelta(hours=2))
        await make_token(db, alice, "half-an-hour", now - timedelta(minutes=30))
        report = await run_once(services)
        assert report is not None and report.tokens_deleted == 1
        assert await token_names(db) == ["half-an-hour", "t"]
    finally:
        await services.close()


async def test_expired_tokens_of_every_account_go_in_batches(settings: Settings, db: Database) -> None:
    """Five tokens past a zero retention, two per transaction: every one goes, the live stay."""
    accounts = AccountService(db, settings.default_region, expired_token_retention=timedelta(0))
    alice, _ = await make_account(db, "alice")
    bob, _ = await make_account(db, "bob")
    now = utcnow()
    for n in range(3):
        await make_token(db, alice, f"alice-{n}", now - timedelta(minutes=n + 1))
    for n in range(2):
        await make_token(db, bob, f"bob-{n}", now - timedelta(days=n + 1))
    await make_token(db, bob, "bob-live", now + timedelta(minutes=5))

    assert await accounts.prune_expired_tokens(batch=2) == 5
    assert await token_names(db) == ["bob-live", "t", "t"]
    assert await accounts.prune_expired_tokens(batch=2) == 0
