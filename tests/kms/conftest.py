"""Fixtures of the KeyProvider contract suite: adapters, an injectable clock, callers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.db.tables import Account
from app.db.uow import Database
from app.domain.images import Caller
from app.kms.envelope import load_root_key
from app.kms.local import LocalKeyProvider
from app.kms.port import KeyProvider
from tests.factories import make_account

ADAPTERS = ["local"]


class Clock:
    """An injectable `now` that tests move by hand."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def root_key_file(tmp_path: Path) -> Path:
    return tmp_path / "kms" / "root.key"


@pytest.fixture(params=ADAPTERS)
def provider(request: pytest.FixtureRequest, db: Database, clock: Clock, root_key_file: Path) -> KeyProvider:
    assert request.param == "local"
    return LocalKeyProvider(db, load_root_key(root_key_file), now=clock)


def as_caller(account: Account) -> Caller:
    return Caller(account.id, account.name, account.role)


async def new_caller(db: Database) -> Caller:
    account, _ = await make_account(db)
    return as_caller(account)
