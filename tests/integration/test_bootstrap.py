"""Admin bootstrap: several API processes starting at once on one database; IMS_ADMIN_TOKEN changed."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlmodel import col

from app.bootstrap import Runtime
from app.config import Settings
from app.db.tables import Account, ApiToken
from app.db.uow import Database
from app.services.accounts import AccountService, hash_token


async def test_concurrent_bootstraps_make_one_admin_with_one_working_token(db: Database, tmp_path: Path) -> None:
    # One service per "process": each bootstraps with its own sessions, all at once.
    services = [AccountService(db, "region-1") for _ in range(6)]
    admins = await asyncio.gather(
        *(s.bootstrap_admin("admin", "ims_race-token", tmp_path / f"p{i}" / "admin-token") for i, s in enumerate(services))
    )
    assert len({a.id for a in admins}) == 1
    async with db.uow(write=False) as uow:
        accounts = (await uow.session.execute(select(func.count()).select_from(Account).where(col(Account.name) == "admin"))).scalar_one()
        tokens = (await uow.session.execute(
            select(func.count()).select_from(ApiToken).where(col(ApiToken.account_id) == admins[0].id))).scalar_one()
    assert (accounts, tokens) == (1, 1)
    caller = await services[0].authenticate("ims_race-token")
    assert caller is not None and caller.account_id == admins[0].id and caller.role == "ADMIN"


async def start(settings: Settings, admin_token: str | None) -> Runtime:
    """The API process's start (admin bootstrap included) with IMS_ADMIN_TOKEN=admin_token."""
    runtime = Runtime(replace(settings, admin_token=admin_token))
    await runtime.start()
    return runtime


async def restart(settings: Settings, admin_token: str | None) -> None:
    await (await start(settings, admin_token)).stop()


async def logs_in(runtime: Runtime, token: str) -> bool:
    caller = await runtime.services.accounts.authenticate(token)
    return caller is not None and (caller.name, caller.role) == ("admin", "ADMIN")


async def test_a_changed_admin_token_revokes_the_one_the_environment_set(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    old, new = "ims_env-token-a", "ims_env-token-b"
    await restart(settings, None)  # no IMS_ADMIN_TOKEN: a generated token in the token file
    from_file = (settings.data_dir / "admin-token").read_text().strip()
    runtime = await start(settings, old)
    try:
        admin = await runtime.services.accounts.authenticate(old)
        assert admin is not None
        # Tokens the admin makes through the API, one even named as the bootstrap names its own.
        _, made = await runtime.services.accounts.create_token(admin, "ci", None)
        _, alike = await runtime.services.accounts.create_token(admin, "bootstrap", None)
    finally:
        await runtime.stop()

    caplog.set_level(logging.INFO, logger="app.services.accounts")
    runtime = await start(settings, new)
    try:
        assert not await logs_in(runtime, old)
        assert [await logs_in(runtime, t) for t in (new, made, alike, from_file)] == [True] * 4
        rotated = [r for r in caplog.records if "IMS_ADMIN_TOKEN changed" in r.getMessage()]
        assert [r.getMessage().split(" (")[0] for r in rotated] == [
            "IMS_ADMIN_TOKEN changed: revoked 1 token(s) its earlier value gave admin"]
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert all(secret not in logged for secret in (old, new, hash_token(old), hash_token(new)))
        admin = await runtime.services.accounts.authenticate(new)
        assert admin is not None
        names = sorted(t.name for t in await runtime.services.accounts.tokens(admin))
        assert names == ["IMS_ADMIN_TOKEN", "bootstrap", "bootstrap", "ci"]
    finally:
        await runtime.stop()

    caplog.clear()
    await restart(settings, new)  # the same value again: nothing to revoke
    assert not [r for r in caplog.records if "IMS_ADMIN_TOKEN changed" in r.getMessage()]


async def test_a_token_the_environment_set_before_it_was_marked_is_revoked_on_the_next_change(
    settings: Settings, db: Database
) -> None:
    """Earlier versions named the environment's token "bootstrap"; a start that still has its
    value marks it, so that the next change revokes it."""
    old, new = "ims_env-token-a", "ims_env-token-b"
    await restart(settings, None)
    async with db.uow() as uow:
        admin = await uow.accounts.get_by_name("admin")
        assert admin is not None
        await uow.accounts.add_token(AccountService._token_row(admin.id, "bootstrap", old, None))
        await uow.commit()
    await restart(settings, old)
    runtime = await start(settings, new)
    try:
        assert not await logs_in(runtime, old)
        assert await logs_in(runtime, new)
    finally:
        await runtime.stop()
