"""A stopping `ims serve` lets requests in flight finish for IMS_HTTP_STOP_GRACE, then cancels
them and exits. Before, a client that stalled (a slow download, an upload that stopped
sending) held the process, and the job workers it stops after, for as long as the client
kept its connection open. The cancelled upload leaves no object and no temporary file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.bench.common import free_port, served_process

TOKEN = "ims_admin_stop_test"


def _graphql(base: str, query: str, variables: dict[str, str]) -> dict[str, object]:
    answer = httpx.post(f"{base}/graphql", json={"query": query, "variables": variables},
                        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    body: dict[str, object] = answer.json()
    assert answer.status_code == 200 and "errors" not in body, body
    return body


def test_a_stalled_upload_does_not_hold_a_stopping_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {**os.environ, "IMS_DATA_DIR": str(data_dir), "IMS_ADMIN_TOKEN": TOKEN, "IMS_WORKERS": "0",
           "IMS_HTTP_STOP_GRACE": "1", "IMS_MAINTENANCE_INTERVAL": "0"}
    env.pop("IMS_DATABASE_URL", None)
    port = free_port()
    log = tmp_path / "serve.log"
    with served_process(env, port, log) as (base, server):
        _graphql(base, 'mutation($n: String!) { createBucket(input: {name: $n}) { __typename } }', {"n": "uploads"})
        made = _graphql(base, 'mutation($b: String!, $k: String!) { createUploadUrl(input: {bucket: $b, key: $k}) '
                              '{ ... on CreateUploadUrlSuccess { url } } }', {"b": "uploads", "k": "disk.raw"})
        url = urlsplit(made["data"]["createUploadUrl"]["url"])  # type: ignore[index]
        with socket.create_connection(("127.0.0.1", port)) as client:
            # 64 MiB announced, 1 KiB sent: the upload's handler waits for the rest.
            client.sendall(f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           f"Content-Length: {64 << 20}\r\n\r\n".encode() + b"x" * 1024)
            deadline = time.monotonic() + 10
            while not list((data_dir / "objects").rglob(".tmp/*")):  # the upload has begun
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.02)
            server.send_signal(signal.SIGTERM)
            try:
                code = server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                raise AssertionError("the server waited for the stalled upload past its grace") from None
    # uvicorn ends by raising the signal it caught again: killed by SIGTERM, after a clean stop.
    assert code == -signal.SIGTERM, log.read_text()[-3000:]
    assert "Application shutdown complete" in log.read_text()
    assert "timeout graceful shutdown exceeded" in log.read_text()
    assert [p for p in (data_dir / "objects").rglob("*") if p.is_file() and "uploads" in p.parts] == []
    assert [p for p in (data_dir / "objects").rglob(".tmp/*") if p.is_file()] == []
