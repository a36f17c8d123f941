"""The S3 adapter when its endpoint fails mid-operation: a moto server of the test's own,
killed while a request runs, or a port where nothing listens."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing
from dataclasses import replace
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from app.bootstrap import build_services
from app.config import Settings
from app.datastore.chunks import CHUNK_PREFIX, CHUNK_SIZE
from app.db.tables import Job
from app.db.uow import Database
from app.domain.enums import DiskFormat, ImageKind, ImageVisibility
from app.domain.images import Caller
from app.jobs.maintenance import run_once
from app.jobs.worker import Worker
from app.services.imports import ImportRequest
from app.services.registry import Services
from app.storage.base import READ_PIECE_BYTES, StorageError
from app.storage.factory import service_bucket
from app.storage.s3 import S3ObjectStore
from tests.factories import built_services, make_account
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


@pytest.fixture
def s3_settings(settings: Settings, moto: MotoProcess) -> Settings:
    return replace(settings, region_endpoints={"region-1": moto.endpoint}, s3_access_key="testing",
                   s3_secret_key="testing", s3_secure=False)


@pytest.fixture
async def services(s3_settings: Settings, db: Database) -> AsyncIterator[Services]:
    async with built_services(s3_settings, db) as built:
        yield built


async def _job(db: Database, account_id: str, job_id: str) -> Job:
    async with db.uow(account_id, write=False) as uow:
        job = await uow.jobs.get(job_id)
    assert job is not None
    return job


async def test_an_image_list_export_to_a_dead_endpoint_fails_naming_no_endpoint(
    db: Database, services: Services, moto: MotoProcess
) -> None:
    owner, _ = await make_account(db)
    me = Caller(owner.id, owner.name, owner.role)
    await services.storage.create_bucket(me, "lists", None)
    queued = await services.image_list.export_list(me, ImageVisibility.PRIVATE, None, "lists")
    moto.kill()
    assert await Worker(services, "w").run_once()
    job = await _job(db, owner.id, queued.id)
    assert (job.status, job.error_code) == ("FAIL", "EXPORT_WRITE_FAILED")
    assert job.error_message is not None and "lists/" in job.error_message
    assert str(moto.port) not in job.error_message and "127.0.0.1" not in job.error_message


async def test_an_import_from_a_dead_endpoint_fails_with_a_registered_code(
    db: Database, services: Services, moto: MotoProcess
) -> None:
    owner, _ = await make_account(db)
    me = Caller(owner.id, owner.name, owner.role)
    bucket = await services.storage.create_bucket(me, "imports", None)
    await services.storage.store(bucket.region).put_bytes(bucket.name, "disk.raw", secrets.token_bytes(CHUNK_SIZE))
    queued, image = await services.imports.import_image(me, ImportRequest(
        bucket="imports", key="disk.raw", name="disk", min_disk_gb=1, kind=ImageKind.DATA_DISK,
        disk_format=DiskFormat.RAW,
    ))
    moto.kill()
    assert await Worker(services, "w").run_once()
    job = await _job(db, owner.id, queued.id)
    assert (job.status, job.error_code) == ("FAIL", "STORAGE_UNAVAILABLE")
    assert job.error_message is not None and str(moto.port) not in job.error_message
    async with db.uow(owner.id, write=False) as uow:
        view = await uow.images.get_visible(image.id)
    assert view is not None and view.image.status == "KILLED"


async def test_a_dead_endpoint_in_one_region_leaves_the_other_regions_collected(
    settings: Settings, db: Database, moto: MotoProcess
) -> None:
    two = replace(settings, regions=("region-1", "region-2"), region_endpoints={"region-1": moto.endpoint},
                  s3_access_key="testing", s3_secret_key="testing", s3_secure=False)
    services = build_services(two, db)
    try:
        for region, chunk_store in services.chunks.stores.items():
            await chunk_store.create_bucket(service_bucket(region))
        manifest = await services.chunks.write("region-2", _once(secrets.token_bytes(70_000)))
        await services.chunks.release(manifest.id)
        services.chunks.grace = timedelta(0)
        moto.kill()
        report = await run_once(services)
        assert report is not None and report.chunks_deleted == 1
        assert await services.chunks.stores["region-2"].list_objects(service_bucket("region-2"), prefix=CHUNK_PREFIX) == []
    finally:
        await services.close()


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_a_silent_endpoint_fails_after_the_timeouts_instead_of_holding_the_call() -> None:
    """An endpoint that accepts connections and never answers: the call fails
    StorageUnavailableError once the read timeout has passed on every try (here 0.2 s and one
    retry; CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS and RETRIES bound it in service)."""
    from app.storage.base import StorageUnavailableError
    from app.storage.s3 import READ_TIMEOUT_SECONDS, RETRIES

    assert READ_TIMEOUT_SECONDS * (RETRIES + 1) <= 300  # minio's own defaults held it 30 minutes
    silent = _bound_socket()
    silent.listen(8)
    try:
        store = S3ObjectStore(f"127.0.0.1:{silent.getsockname()[1]}", *S3_CREDENTIALS, secure=False,
                              connect_timeout=0.2, read_timeout=0.2, retries=1)
        try:
            with pytest.raises(StorageUnavailableError):
                await store.stat("bucket", "key")
        finally:
            await store.close()
    finally:
        silent.close()


class _Gateway(BaseHTTPRequestHandler):
    """A proxy before the S3 server that answers every request with an HTML error page of
    its own (nginx's 413 for a part over its client_max_body_size, say)."""

    status = 413

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        page = b"<html><body><h1>Request Entity Too Large</h1></body></html>"
        self.send_response(self.status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(page)

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize("status", [413, 400, 501])
async def test_an_answer_that_is_not_s3s_is_a_storage_error(status: int) -> None:
    """A non-XML error answer (a gateway's own page) was minio's InvalidResponseError
    (ServerError for some), outside the port's error tree: a job failed INTERNAL_ERROR instead
    of its own code (EXPORT_WRITE_FAILED), and a maintenance round, which catches a region's
    StorageError to go on with the other regions and the key purges, stopped. It is a
    StorageError (not an unavailable store: asking again gets the same answer)."""
    from app.storage.base import StorageUnavailableError

    handler = type("Gateway", (_Gateway,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    store = S3ObjectStore(f"127.0.0.1:{server.server_address[1]}", *S3_CREDENTIALS, secure=False, retries=0)
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "put_bytes": lambda: store.put_bytes("bucket", "key", b"data"),
        "stat": lambda: store.stat("bucket", "key"),
        "list_objects": lambda: store.list_objects("bucket"),
        "get_bytes": lambda: store.get_bytes("bucket", "key"),
        "create_bucket": lambda: store.create_bucket("bucket"),
    }
    try:
        for name, call in calls.items():
            with pytest.raises(StorageError) as raised:
                await call()
            assert not isinstance(raised.value, StorageUnavailableError), name
            assert str(server.server_address[1]) not in str(raised.value), name
    finally:
        await store.close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
