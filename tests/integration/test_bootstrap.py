"""Admin bootstrap when several API processes start at once on one database."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import func, select

from app.db.tables import Account, ApiToken
from app.db.uow import Database
from app.services.accounts import AccountService


async def test_concurrent_bootstraps_make_one_admin_with_one_working_token(db: Database, tmp_path: Path) -> None:
    # One service per "process": each bootstraps with its own sessions, all at once.
    services = [AccountService(db, "region-1") for _ in range(6)]
    admins = await asyncio.gather(
        *(s.bootstrap_admin("admin", "ims_race-token", tmp_path / f"p{i}" / "admin-token") for i, s in enumerate(services))
    )
    assert len({a.id for a in admins}) == 1
    async with db.uow(write=False) as uow:
        accounts = (await uow.session.execute(select(func.count()).select_from(Account).where(Account.name == "admin"))).scalar_one()
        tokens = (await uow.session.execute(
            select(func.count()).select_from(ApiToken).where(ApiToken.account_id == admins[0].id))).scalar_one()
    assert (accounts, tokens) == (1, 1)
    caller = await services[0].authenticate("ims_race-token")
    assert caller is not None and caller.account_id == admins[0].id and caller.role == "ADMIN"
