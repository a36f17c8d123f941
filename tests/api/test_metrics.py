"""/metrics in Prometheus format: operations, jobs, bytes moved, chunk store size."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from graphql import OperationDefinitionNode, parse
from prometheus_client.parser import text_string_to_metric_families

from app.api.schema import build_schema
from app.config import Settings
from app.db.uow import Database
from app.metrics import operation_names
from tests.api.test_import import IMPORT, finished, system_input, upload
from tests.conftest import GraphQLClient
from tests.factories import make_account

MiB = 1024 * 1024
OPERATIONS = Path(__file__).resolve().parents[2] / "graphql" / "operations"


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
    await me.execute("query Health { health { ok } }")
    await me.execute("query Health { health { ok } }")
    data = b"\x05" * (5 * MiB)
    await upload(me, "imports", "d.raw", data)
    got = (await me.execute(IMPORT, {"input": system_input("imports", "d.raw")}))["importImage"]
    assert (await finished(me, got["job"]["id"]))["status"] == "SUCCESS"
    await asyncio.sleep(0.1)
    response = await http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    m = samples(response.text)
    assert m[("ims_graphql_requests_total", (("operation", "Health"), ("outcome", "ok")))] == 2
    assert m[("ims_graphql_request_seconds_count", (("operation", "Health"),))] == 2
    assert m[("ims_jobs", (("status", "SUCCESS"), ("type", "IMPORT_IMAGE")))] == 1
    assert m[("ims_job_duration_seconds_count", (("status", "SUCCESS"), ("type", "IMPORT_IMAGE")))] == 1
    assert m[("ims_bytes_moved_total", (("direction", "in"),))] == len(data)
    # 5 MiB of one byte value: a full chunk and a 1 MiB tail, both stored.
    assert m[("ims_chunk_store_chunks", (("region", "region-1"),))] == 2
    assert m[("ims_chunk_store_bytes", (("region", "region-1"),))] == len(data)


def operation_labels(m: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> set[str]:
    return {dict(labels)["operation"] for name, labels in m if name.startswith("ims_graphql_")}


async def test_client_chosen_operation_names_do_not_become_labels(gql: GraphQLClient,
                                                                  http: httpx.AsyncClient) -> None:
    """Names are the client's choice, and anyone may send `health`: one label per name would
    let any caller grow the registry without bound."""
    anonymous = gql.as_(None)
    for i in range(100):
        assert await anonymous.execute(f"query Op{i} {{ health {{ ok }} }}") == {"health": {"ok": True}}
    await anonymous.execute("query Health { health { ok } }")
    await anonymous.execute("query health { health { ok } }")
    await anonymous.execute("{ health { ok } }")

    m = samples((await http.get("/metrics")).text)
    assert operation_labels(m) == {"other", "Health", "health", "anonymous"}
    requests = {labels: n for (name, labels), n in m.items() if name == "ims_graphql_requests_total"}
    assert requests == {
        (("operation", "other"), ("outcome", "ok")): 100,
        (("operation", "Health"), ("outcome", "ok")): 1,
        (("operation", "health"), ("outcome", "ok")): 1,
        (("operation", "anonymous"), ("outcome", "ok")): 1,
    }
    assert m[("ims_graphql_request_seconds_count", (("operation", "other"),))] == 100


def test_every_operation_of_the_project_keeps_its_name() -> None:
    """The documents in graphql/operations (which the generated clients send) are labelled by
    their own names."""
    names = {d.name.value for path in OPERATIONS.glob("*.graphql")
             for d in parse(path.read_text()).definitions
             if isinstance(d, OperationDefinitionNode) and d.name is not None}
    assert len(names) > 40
    assert names <= operation_names(build_schema())
    assert "Op1" not in operation_names(build_schema())
