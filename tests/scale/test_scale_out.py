"""Scale-out (DESIGN §2 production shape): two `ims serve` and two `ims worker` processes on
one PostgreSQL and one S3 server. 20 concurrent jobs through both APIs — imports, and RAW and
QCOW2 exports — each followed by a subscription on the *other* API process; one worker is
killed with SIGKILL midway.

Then: every job ran to SUCCESS exactly once (the attempt log), every subscriber saw its job
finish, every export is in its bucket with its reported checksum and reads back as its
source, every manifest is held by its image alone, no referenced chunk is missing and no
chunk object is unknown to the database, and a quota raced through both APIs holds exactly.
Last, the same batch of imports with one worker and then two gives the throughput figure of
the README's "Running at scale"."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websocket
from minio import Minio
from sqlalchemy import create_engine, text

from app.config import normalize_database_url
from app.db.engine import sync_url
from app.storage.factory import service_bucket

PG = os.environ.get("IMS_TEST_DATABASE_URL")
pytestmark = pytest.mark.skipif(not PG, reason="scale-out runs on PostgreSQL (IMS_TEST_DATABASE_URL)")
ADMIN = "ims_scale-admin-token"
MiB = 1024 * 1024
IMPORTS = 20


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    apis: list[str]
    workers: list[subprocess.Popen[bytes]]
    db_url: str
    s3: str
    logs: Path
    #: Starts another `ims worker --concurrency 2` process named `name`.
    start_worker: Any = None


@pytest.fixture
def cluster(s3_endpoint: str, tmp_path: Path) -> Iterator[Cluster]:
    assert PG
    admin_url = sync_url(normalize_database_url(PG))
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP DATABASE IF EXISTS ims_scale WITH (FORCE)"))
        conn.execute(text("CREATE DATABASE ims_scale"))
    engine.dispose()
    db_url = PG.rsplit("/", 1)[0] + "/ims_scale"
    base = {
        **os.environ, "IMS_DATABASE_URL": db_url, "IMS_S3_ENDPOINT": s3_endpoint, "IMS_S3_ACCESS_KEY": "testing",
        "IMS_S3_SECRET_KEY": "testing", "IMS_URL_SECRET": "scale-test-shared-url-secret-0123456789",
        "IMS_ADMIN_TOKEN": ADMIN, "IMS_KMS_ROOT_KEY_FILE": str(tmp_path / "kms-root.key"),
        "IMS_JOB_LEASE_SECONDS": "2", "IMS_JOB_POLL_INTERVAL": "0.1", "IMS_AUTO_MIGRATE": "false",
        "IMS_MAINTENANCE_INTERVAL": "0",
    }
    subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env={**base, "IMS_DATA_DIR": str(tmp_path / "m")},
                   check=True, capture_output=True)
    processes: list[subprocess.Popen[bytes]] = []
    apis = []
    logs = tmp_path / "logs"
    logs.mkdir()

    def start(name: str, args: list[str], extra: dict[str, str]) -> subprocess.Popen[bytes]:
        env = {**base, "IMS_DATA_DIR": str(tmp_path / name), **extra}
        with open(logs / f"{name}.log", "wb") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen([sys.executable, "-m", "app.cli", *args], env=env, stdout=out, stderr=out)
        processes.append(proc)
        return proc

    try:
        for i in range(2):
            port = _port()
            start(f"api{i}", ["serve", "--port", str(port)],
                  {"IMS_WORKERS": "0", "IMS_PUBLIC_URL": f"http://127.0.0.1:{port}"})
            apis.append(f"http://127.0.0.1:{port}")
        workers = [start(f"worker{i}", ["worker", "--concurrency", "2"], {}) for i in range(2)]
        for i, api in enumerate(apis):
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{api}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, (logs / f"api{i}.log").read_text()[-3000:]
                time.sleep(0.1)
        def start_worker(name: str) -> None:
            """Another worker process, returning once it runs its workers."""
            workers.append(start(name, ["worker", "--concurrency", "2"], {}))
            deadline = time.monotonic() + 30
            while "job worker(s) running" not in (logs / f"{name}.log").read_text():
                assert time.monotonic() < deadline, (logs / f"{name}.log").read_text()[-3000:]
                time.sleep(0.05)

        yield Cluster(apis, workers, db_url, s3_endpoint, logs, start_worker)
    finally:
        # Also when start-up failed: no process outlives the test.
        for proc in processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in processes:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def gql(api: str, token: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    r = httpx.post(f"{api}/graphql", json={"query": query, "variables": variables or {}},
                   headers={"authorization": f"Bearer {token}"}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert "errors" not in body, body
    return body["data"]  # type: ignore[no-any-return]


def follow(api: str, token: str, job_id: str, seen: dict[str, list[str]]) -> None:
    """Subscribe to jobUpdated on `api` and record every status until the subscription ends."""
    ws = websocket.create_connection(api.replace("http", "ws", 1) + "/graphql", subprotocols=["graphql-transport-ws"],
                                     timeout=120)
    try:
        ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}))
        assert json.loads(ws.recv())["type"] == "connection_ack"
        ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
            "query": "subscription($id: ID!) { jobUpdated(id: $id) { status progress } }", "variables": {"id": job_id}}}))
        while True:
            message = json.loads(ws.recv())
            if message["type"] == "next":
                seen.setdefault(job_id, []).append(message["payload"]["data"]["jobUpdated"]["status"])
            elif message["type"] in ("complete", "error"):
                return
    finally:
        ws.close()


IMPORT = """mutation($input: ImportImageInput!) { importImage(input: $input) { __typename
  ... on ImageJobSuccess { job { id } images { ... on ImageBase { id } } } ... on UserError { code } } }"""
EXPORT = """mutation($input: ExportImageInput!) { exportImage(input: $input) { __typename
  ... on ExportJobSuccess { job { id } } ... on UserError { code } } }"""
UPLOAD = """mutation($k: String!) { createUploadUrl(input: {bucket: "scale-files", key: $k}) {
  ... on CreateUploadUrlSuccess { url } } }"""
#: Files: distinct bytes each, 6 MiB (a 4 MiB chunk and a 2 MiB tail).
SOURCES, IMPORTS, EXPORTS, THROUGHPUT_JOBS = 10, 10, 10, 12
FILES = SOURCES + IMPORTS + 2 * THROUGHPUT_JOBS


def content(i: int) -> bytes:
    return bytes([i + 1]) * (6 * MiB)


def import_spec(i: int, name: str | None = None) -> dict[str, Any]:
    return {"bucket": "scale-files", "key": f"disk-{i}.raw", "name": name or f"scale {i}", "minDiskGb": 1,
            "os": {"type": "LINUX", "platform": "Debian", "version": "12"}}


def start_import(api: str, token: str, i: int) -> tuple[str, str]:
    """(job id, image id)"""
    got = gql(api, token, IMPORT, {"input": import_spec(i)})["importImage"]
    assert got["__typename"] == "ImageJobSuccess", got
    return str(got["job"]["id"]), str(got["images"][0]["id"])


def wait_jobs(engine: Any, job_ids: list[str], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            done = conn.execute(text("SELECT count(*) FROM jobs WHERE id = ANY(:ids) AND status IN ('SUCCESS', 'FAIL')"),
                                {"ids": job_ids}).scalar_one()
        if done == len(job_ids):
            return
        assert time.monotonic() < deadline, f"{len(job_ids) - done} job(s) did not end"
        time.sleep(0.05)


def test_two_apis_two_workers_one_killed(cluster: Cluster, tmp_path: Path) -> None:
    a, b = cluster.apis
    made = gql(a, ADMIN, 'mutation { createAccount(input: {name: "scale"}) { ... on CreateAccountSuccess { account { id } token } } }')
    account, token = made["createAccount"]["account"]["id"], made["createAccount"]["token"]
    gql(a, ADMIN, 'mutation($a: ID!) { setQuota(input: {accountId: $a, resource: PRIVATE_IMAGES, limit: 100}) { __typename } }',
        {"a": account})
    gql(b, token, 'mutation { createBucket(input: {name: "scale-files"}) { __typename } }')
    gql(a, token, 'mutation { createBucket(input: {name: "scale-exports"}) { __typename } }')
    for i in range(FILES):
        url = gql(cluster.apis[i % 2], token, UPLOAD, {"k": f"disk-{i}.raw"})["createUploadUrl"]["url"]
        assert httpx.put(url, content=content(i), timeout=60).status_code == 200
    engine = create_engine(sync_url(normalize_database_url(cluster.db_url)))

    # The images the exports read.
    sources = [start_import(cluster.apis[i % 2], token, i) for i in range(SOURCES)]
    wait_jobs(engine, [j for j, _ in sources])

    # 20 jobs at once through both APIs — imports of new files and exports of the sources, RAW
    # and QCOW2 — each followed by a subscription on the other API process.
    def start(n: int) -> str:
        api = cluster.apis[n % 2]
        if n < IMPORTS:
            return start_import(api, token, SOURCES + n)[0]
        i = n - IMPORTS
        fmt = "RAW" if i % 2 == 0 else "QCOW2"
        got = gql(api, token, EXPORT, {"input": {"imageId": sources[i][1], "bucket": "scale-exports",
                                                 "key": f"export-{i}.{fmt.lower()}", "format": fmt}})["exportImage"]
        assert got["__typename"] == "ExportJobSuccess", got
        return str(got["job"]["id"])

    seen: dict[str, list[str]] = {}
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=(IMPORTS + EXPORTS) * 2) as pool:
        job_ids = list(pool.map(start, range(IMPORTS + EXPORTS)))
        followers = [pool.submit(follow, cluster.apis[(n + 1) % 2], token, job_id, seen)
                     for n, job_id in enumerate(job_ids)]
        # Kill a worker as soon as it holds a job.
        victim = cluster.workers[0]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                running = conn.execute(text(
                    "SELECT count(*) FROM jobs WHERE status = 'RUNNING' AND lease_owner LIKE :p"),
                    {"p": f"%:{victim.pid}:%"}).scalar_one()
            if running:
                break
            time.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
        for f in followers:
            f.result(timeout=180)
    elapsed = time.monotonic() - started

    everything = [j for j, _ in sources] + job_ids
    with engine.connect() as conn:
        statuses: dict[str, str] = dict(conn.execute(text("SELECT id, status FROM jobs")).all())
        successes: dict[str, int] = dict(conn.execute(text(
            "SELECT job_id, count(*) FROM job_attempts WHERE outcome = 'SUCCESS' GROUP BY job_id")).all())
        lost = conn.execute(text("SELECT count(*) FROM job_attempts WHERE outcome = 'LOST'")).scalar_one()
        results: dict[str, Any] = dict(conn.execute(text("SELECT id, result FROM jobs WHERE type = 'EXPORT_IMAGE'")).all())
        referenced = {r[0] for r in conn.execute(text("SELECT digest FROM chunks WHERE refcount > 0"))}
        known = {r[0] for r in conn.execute(text("SELECT digest FROM chunks"))}
        active = conn.execute(text("SELECT count(*) FROM images WHERE status = 'ACTIVE'")).scalar_one()
        # Each manifest is held by its image alone: every export let go of its reference once.
        refcounts = [r[0] for r in conn.execute(text("SELECT refcount FROM manifests"))]
    assert statuses == {j: "SUCCESS" for j in everything}
    assert successes == {j: 1 for j in everything}
    assert {j: seen.get(j, [])[-1:] for j in job_ids} == {j: ["SUCCESS"] for j in job_ids}
    assert active == SOURCES + IMPORTS
    assert refcounts == [1] * (SOURCES + IMPORTS)
    s3 = Minio(cluster.s3, "testing", "testing", secure=False)
    stored = {o.object_name.split("/", 1)[1] for o in s3.list_objects(service_bucket("region-1"), prefix="chunks/")}
    assert referenced - stored == set(), "referenced chunks missing"
    assert stored - known == set(), "chunk objects no row knows"
    assert len(referenced) == 2 * (SOURCES + IMPORTS)  # a distinct 4 MiB chunk and tail per file
    # Every export is in the bucket with the checksum its job reported; RAW ones are the source.
    assert len(results) == EXPORTS
    for i in range(EXPORTS):
        fmt = "raw" if i % 2 == 0 else "qcow2"
        body = s3.get_object("scale-exports", f"export-{i}.{fmt}").read()
        [result] = [r for r in results.values() if r["key"] == f"export-{i}.{fmt}"]
        assert result["checksum"] == "sha256:" + hashlib.sha256(body).hexdigest()
        if fmt == "raw":
            assert body == content(i)
        else:
            path = tmp_path / f"export-{i}.qcow2"
            path.write_bytes(body)
            subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(path), str(path) + ".raw"],
                           check=True, capture_output=True)
            assert Path(str(path) + ".raw").read_bytes() == content(i)
    print(f"\nscale-out: {IMPORTS} imports and {EXPORTS} exports of 6 MiB through 2 APIs and 2 workers "
          f"(one SIGKILLed, {lost} attempt(s) lost and retried) in {elapsed:.2f} s")

    # A quota raced through both API processes holds exactly.
    gql(a, ADMIN, 'mutation($a: ID!) { setQuota(input: {accountId: $a, resource: PRIVATE_IMAGES, limit: 26}) { __typename } }',
        {"a": account})

    def attempt(i: int) -> str:
        got = gql(cluster.apis[i % 2], token, IMPORT, {"input": import_spec(0, f"extra {i}")})["importImage"]
        return str(got["__typename"])

    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = list(pool.map(attempt, range(10)))
    assert sorted(outcomes).count("ImageJobSuccess") == 6
    assert sorted(outcomes).count("LimitExceededError") == 4
    with engine.connect() as conn:
        extra = [r[0] for r in conn.execute(text("SELECT id FROM jobs WHERE status NOT IN ('SUCCESS', 'FAIL')"))]
    wait_jobs(engine, extra)

    # Throughput: the same batch of imports with the one worker left, then with a second one.
    gql(a, ADMIN, 'mutation($a: ID!) { setQuota(input: {accountId: $a, resource: PRIVATE_IMAGES, limit: 100}) { __typename } }',
        {"a": account})
    rates = []
    for phase in range(2):
        if phase == 1:
            cluster.start_worker("worker2")
        first = SOURCES + IMPORTS + phase * THROUGHPUT_JOBS
        began = time.monotonic()
        batch = [start_import(cluster.apis[i % 2], token, i)[0] for i in range(first, first + THROUGHPUT_JOBS)]
        wait_jobs(engine, batch)
        rates.append(THROUGHPUT_JOBS / (time.monotonic() - began))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM jobs WHERE id = ANY(:ids) AND status = 'SUCCESS'"),
                                {"ids": batch}).scalar_one() == THROUGHPUT_JOBS
    print(f"scale-out throughput, {THROUGHPUT_JOBS} imports of 6 MiB: 1 worker {rates[0]:.2f} jobs/s, "
          f"2 workers {rates[1]:.2f} jobs/s ({rates[1] / rates[0]:.2f}×)")
