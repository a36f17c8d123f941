from __future__ import annotations

import os

import pytest

from app.datastore import Opener, Sealer
from tests.datastore.memstore import MemoryStore

BUCKET = "region-1-service"


@pytest.fixture
async def store() -> MemoryStore:
    store = MemoryStore()
    await store.create_bucket(BUCKET)
    return store


@pytest.fixture
def data_key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def sealer(data_key: bytes) -> Sealer:
    return Sealer(data_key, "key-1")


@pytest.fixture
def opener(data_key: bytes) -> Opener:
    return Opener(data_key, "key-1")
