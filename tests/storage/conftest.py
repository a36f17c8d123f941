"""Fixtures for the storage tests: a real S3 server (moto) and a real HTTP server for the
filesystem store's signed URLs, both started once per session on free loopback ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from minio import Minio
from starlette.applications import Starlette

from app.storage.base import ObjectStore
from app.storage.filesystem import FilesystemObjectStore
from app.storage.http import object_routes
from app.storage.s3 import S3ObjectStore
from app.storage.signing import UrlSigner

#: The upload limit of the HTTP server behind the filesystem store's signed URLs.
SERVER_MAX_UPLOAD_BYTES = 64 * 1024 * 1024
S3_CREDENTIALS = ("testing", "testing")


@dataclass(frozen=True)
class FilesystemServer:
    root: Path
    signer: UrlSigner


def _bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _wait_until_answering(url: str, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server process exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within 30 s")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """`host:port` of a moto S3 server running in its own process."""
    sock = _bound_socket()
    port = sock.getsockname()[1]
    sock.close()  # moto binds the port itself; the window for a clash is tiny
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-p", str(port), "-H", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        _wait_until_answering(f"http://127.0.0.1:{port}/moto-api/", process)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def fs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FilesystemServer]:
    """A uvicorn server in a thread serving `object_routes` over a filesystem store."""
    root = tmp_path_factory.mktemp("objects")
    sock = _bound_socket()
    port = sock.getsockname()[1]
    signer = UrlSigner(b"contract-suite-secret-0123456789", f"http://127.0.0.1:{port}")
    app = Starlette(
        routes=object_routes(
            FilesystemObjectStore(root, signer), signer, max_upload_bytes=SERVER_MAX_UPLOAD_BYTES
        )
    )
    # log_config=None and no log_level: uvicorn would otherwise configure the process's
    # logging (its loggers' levels and handlers) for every test that runs after this one.
    config = uvicorn.Config(
        app, log_config=None, lifespan="off", ws="none", http="h11", loop="asyncio"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        _wait_until_answering(f"http://127.0.0.1:{port}/")
        yield FilesystemServer(root, signer)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(params=["filesystem", "s3"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[ObjectStore]:
    if request.param == "filesystem":
        server: FilesystemServer = request.getfixturevalue("fs_server")
        yield FilesystemObjectStore(server.root, server.signer)
        return
    endpoint: str = request.getfixturevalue("s3_endpoint")
    s3 = S3ObjectStore(endpoint, *S3_CREDENTIALS, secure=False, region="us-east-1")
    try:
        yield s3
    finally:
        await s3.close()


@pytest.fixture
async def bucket(store: ObjectStore) -> str:
    """A fresh bucket: both servers live for the whole session, so names never repeat."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    await store.create_bucket(name)
    return name


@pytest.fixture
def s3_endpoint_if_s3(store: ObjectStore, request: pytest.FixtureRequest) -> str | None:
    """The S3 server's endpoint when the store under test is S3, for checks only it allows."""
    if isinstance(store, S3ObjectStore):
        endpoint: str = request.getfixturevalue("s3_endpoint")
        return endpoint
    return None


def raw_minio(endpoint: str) -> Minio:
    return Minio(endpoint, *S3_CREDENTIALS, secure=False, region="us-east-1")


async def pending_multipart_uploads(endpoint: str, bucket: str) -> int:
    """How many unfinished multipart uploads the S3 server holds for the bucket."""
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://{endpoint}/{bucket}?uploads")
    assert response.status_code == 200
    return response.text.count("<Upload>")
