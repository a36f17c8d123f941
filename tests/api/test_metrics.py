"""/metrics in Prometheus format: operations, jobs, bytes moved, chunk store size."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.db.uow import Database
from tests.api.test_import import IMPORT, finished, system_input, upload
from tests.conftest import GraphQLClient
from tests.factories import make_account

MiB = 1024 * 1024


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, workers=1, job_poll_interval=0.05)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_report_operations_jobs_bytes_and_store(gql: GraphQLClient, http: httpx.AsyncClient,
                                                               db: Database) -> None:
    _, token = await make_account(db)
    me = gql.as_(token)
    await me.execute("query Probe { health { ok } }")
    await me.execute("query Probe { health { ok } }")
    data = b"\x05" * (5 * MiB)
    await upload(me, "imports", "d.raw", data)
    got = (await me.execute(IMPORT, {"input": system_input("imports", "d.raw")}))["importImage"]
    assert (await finished(me, got["job"]["id"]))["status"] == "SUCCESS"
    await asyncio.sleep(0.1)
    response = await http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    m = samples(response.text)
    assert m[("ims_graphql_requests_total", (("operation", "Probe"), ("outcome", "ok")))] == 2
    assert m[("ims_graphql_request_seconds_count", (("operation", "Probe"),))] == 2
    assert m[("ims_jobs", (("status", "SUCCESS"), ("type", "IMPORT_IMAGE")))] == 1
    assert m[("ims_job_duration_seconds_count", (("status", "SUCCESS"), ("type", "IMPORT_IMAGE")))] == 1
    assert m[("ims_bytes_moved_total", (("direction", "in"),))] == len(data)
    # 5 MiB of one byte value: a full chunk and a 1 MiB tail, both stored.
    assert m[("ims_chunk_store_chunks", (("region", "region-1"),))] == 2
    assert m[("ims_chunk_store_bytes", (("region", "region-1"),))] == len(data)
