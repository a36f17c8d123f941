"""The S3 adapter when its endpoint fails mid-operation: a moto server of the test's own,
killed while a request runs, or a port where nothing listens."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing

import pytest

from app.storage.base import READ_PIECE_BYTES, StorageError
from app.storage.s3 import S3ObjectStore
from tests.storage.conftest import S3_CREDENTIALS, _bound_socket, _wait_until_answering

MiB = 1024 * 1024


class MotoProcess:
    """A moto S3 server in its own process, which a test may kill."""

    def __init__(self) -> None:
        sock = _bound_socket()
        self.port = sock.getsockname()[1]
        sock.close()
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-p", str(self.port), "-H", "127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
        _wait_until_answering(f"http://127.0.0.1:{self.port}/moto-api/", self.process)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def moto() -> Iterator[MotoProcess]:
    server = MotoProcess()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
async def store(moto: MotoProcess) -> AsyncIterator[S3ObjectStore]:
    s3 = S3ObjectStore(moto.endpoint, *S3_CREDENTIALS, secure=False)
    try:
        yield s3
    finally:
        await s3.close()


async def test_an_endpoint_dying_during_a_read_is_a_storage_error(moto: MotoProcess, store: S3ObjectStore) -> None:
    await store.create_bucket("reads")
    await store.put_bytes("reads", "big", secrets.token_bytes(48 * MiB))
    with pytest.raises(StorageError):
        async with aclosing(store.open_stream("reads", "big")) as stream:
            async for piece in stream:
                assert len(piece) <= READ_PIECE_BYTES
                moto.kill()

