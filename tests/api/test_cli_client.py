"""`ims upload --import` and `ims jobs watch` against a live server, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from app.config import Settings
from app.db.uow import Database
from tests.conftest import GraphQLClient, LiveServer, free_port
from tests.factories import make_account


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, workers=1, job_poll_interval=0.05)


def ims(*args: str, url: str, token: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IMS_URL": url, "IMS_TOKEN": token, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


async def test_upload_import_and_watch(gql: GraphQLClient, db: Database, live_server: LiveServer,
                                       tmp_path: Path) -> None:
    _, token = await make_account(db)
    me = gql.as_(token)
    await me.execute('mutation { createBucket(input: {name: "cli-bucket"}) { __typename } }')
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"\x09" * (3 * 1024 * 1024))
    done = ims("upload", str(disk), "--bucket", "cli-bucket", "--import", "from cli", "--os-platform", "Debian",
               url=live_server.url, token=token)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "uploaded cli-bucket/disk.raw" in done.stdout
    assert "SUCCESS: from cli (" in done.stdout and "ACTIVE)" in done.stdout
    images = (await me.execute("{ images(filter: {visibility: [PRIVATE]}) { edges { node { ... on PrivateImage { name status sizeBytes } } } } jobs { edges { node { id } } } }"))
    assert [e["node"] for e in images["images"]["edges"]] == [{"name": "from cli", "status": "ACTIVE", "sizeBytes": 3 * 1024 * 1024}]
    job_id = images["jobs"]["edges"][0]["node"]["id"]
    watched = ims("jobs", "watch", job_id, url=live_server.url, token=token)
    assert watched.returncode == 0 and f"job {job_id} SUCCESS" in watched.stdout, watched.stdout + watched.stderr


async def test_upload_to_someone_elses_bucket_fails(gql: GraphQLClient, db: Database, live_server: LiveServer,
                                                    tmp_path: Path) -> None:
    _, alice = await make_account(db)
    _, bob = await make_account(db)
    await gql.as_(alice).execute('mutation { createBucket(input: {name: "alices"}) { __typename } }')
    disk = tmp_path / "d"
    disk.write_bytes(b"x")
    result = ims("upload", str(disk), "--bucket", "alices", url=live_server.url, token=bob)
    assert result.returncode == 1 and "NotFoundError BUCKET_NOT_FOUND" in result.stderr
    bad = ims("jobs", "watch", "job-nothere", url=live_server.url, token=bob)
    assert bad.returncode == 1


def assert_one_line_error(result: subprocess.CompletedProcess[str], message: str) -> None:
    """The CLI's failure: exit status 1 and exactly `message` on stderr, no traceback."""
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert (result.returncode, result.stderr) == (1, message + "\n")


def test_unreachable_server_is_one_line(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    disk = tmp_path / "d"
    disk.write_bytes(b"x")
    refused = f"cannot reach {closed}: [Errno 111] Connection refused"
    assert_one_line_error(ims("jobs", "watch", "job-x", url=closed, token="ims_any"), refused)
    assert_one_line_error(ims("upload", str(disk), "--bucket", "b", url=closed, token="ims_any"), refused)


async def test_bad_token_is_one_line(live_server: LiveServer, tmp_path: Path) -> None:
    disk = tmp_path / "d"
    disk.write_bytes(b"x")
    watched = ims("jobs", "watch", "job-x", url=live_server.url, token="badtoken")
    assert_one_line_error(watched, "the server refused the websocket connection (token?)")
    uploaded = ims("upload", str(disk), "--bucket", "b", url=live_server.url, token="badtoken")
    assert_one_line_error(
        uploaded,
        'HTTP 401: {"errors": [{"message": "authentication required: Authorization: Bearer <token>"}]}',
    )


async def test_watch_of_a_refused_subscription_fails(live_server: LiveServer, db: Database) -> None:
    """A subscription the server refuses before it runs (an `error` message, no job state) is a
    failure: it printed "job None None" and exited 0. An id that is not valid UTF-8 (an
    unpaired surrogate once decoded) is refused INVALID_CHARACTER."""
    _, token = await make_account(db)
    env = {**os.environ, "IMS_URL": live_server.url, "IMS_TOKEN": token, "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "app.cli", "jobs", "watch", b"job-\xff"], env=env,
                            capture_output=True, timeout=120, check=False)
    assert b"Traceback" not in result.stdout + result.stderr, result.stderr
    assert (result.returncode, result.stderr) == (
        1, b"unpaired surrogates are not accepted: text must be valid Unicode\n"), result.stdout


@pytest.mark.parametrize("url", ["localhost:8000", "ftp://127.0.0.1", "http://[::1", "http://127.0.0.1:port", "http://"])
def test_a_malformed_server_url_is_a_usage_error(url: str, tmp_path: Path) -> None:
    """A server URL that is not http(s)://HOST[:PORT] is bad usage (status 2, no traceback):
    httpx and websocket-client raised ValueError on it."""
    disk = tmp_path / "d"
    disk.write_bytes(b"x")
    for args in (("jobs", "watch", "job-x"), ("upload", str(disk), "--bucket", "b")):
        result = ims(*args, url=url, token="ims_any")
        assert "Traceback" not in result.stdout + result.stderr, result.stderr
        assert result.returncode == 2, result.stderr
        assert "the server URL must be http://HOST[:PORT]" in result.stderr
