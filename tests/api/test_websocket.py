"""GraphQL over the websocket (graphql-transport-ws): the limits and checks of the HTTP edge
hold there too."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from app.config import Settings
from app.http import MAX_BODY_BYTES
from tests.api.ws import socket
from tests.bench.common import served
from tests.conftest import free_port

JOB_UPDATED = "subscription($id: ID!) { jobUpdated(id: $id) { id status } }"


@pytest.fixture
def ims_serve(settings: Settings, tmp_path: Path) -> Iterator[str]:
    """A real `ims serve` process (the production launch path), without job workers."""
    port = free_port()
    settings = replace(settings, workers=0, maintenance_interval=0, public_url=f"http://127.0.0.1:{port}")
    with served({**os.environ, **settings.to_env()}, port, tmp_path / "server.log") as url:
        yield url


def _subscribe_frame(size: int) -> str:
    """A subscribe message of exactly `size` bytes: the document padded with spaces."""
    frame = json.dumps({"id": "1", "type": "subscribe",
                        "payload": {"query": JOB_UPDATED, "variables": {"id": "job-nothing"}}})
    return frame.replace(JOB_UPDATED, JOB_UPDATED + " " * (size - len(frame)))


async def test_a_websocket_message_over_the_body_limit_closes_the_socket(ims_serve: str, settings: Settings) -> None:
    assert settings.admin_token
    assert MAX_BODY_BYTES == 1024 * 1024
    async with socket(ims_serve, settings.admin_token) as ws:
        at_limit = _subscribe_frame(MAX_BODY_BYTES)
        assert len(at_limit.encode()) == MAX_BODY_BYTES
        await ws.send_text(at_limit)
        # Read and run: the subscription answers that there is no such job.
        assert await ws.until_done("1") == [
            {"id": "1", "type": "next", "payload": {"data": None, "errors": [{
                "message": "No job with this id is visible to the caller.",
                "extensions": {"code": "JOB_NOT_FOUND", "resourceId": "job-nothing"}}]}},
            {"id": "1", "type": "complete"},
        ]
    for size in (MAX_BODY_BYTES + 1, 2 * MAX_BODY_BYTES):
        async with socket(ims_serve, settings.admin_token) as ws:
            await ws.send_text(_subscribe_frame(size))
            # Closed as "message too big" before anything is read from it: no answer to it.
            assert await ws.recv() is None
            assert ws.close_code == 1009
