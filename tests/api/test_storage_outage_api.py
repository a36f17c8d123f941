"""A mutation whose object store does not answer tells the client so: a top-level error with
`extensions.code` STORAGE_UNAVAILABLE (worth asking again later), not a masked "Internal server
error"; the failure is still logged with its traceback for an operator, and the request made
nothing. The store is a real S3 server process (moto) the test kills."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from app.config import Settings
from tests.api.test_import import IMPORT, system_input
from tests.conftest import GraphQLClient
from tests.storage.test_s3_outages import MotoProcess, moto  # noqa: F401  (the fixture)


@pytest.fixture
def settings(settings: Settings, moto: MotoProcess) -> Settings:  # noqa: F811
    return replace(settings, region_endpoints={"region-1": moto.endpoint}, s3_access_key="testing",
                   s3_secret_key="testing", s3_secure=False)


async def test_an_import_whose_store_does_not_answer_is_storage_unavailable(
    gql: GraphQLClient, moto: MotoProcess, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    made = await gql.execute('mutation { createBucket(input: {name: "uploads"}) { __typename } }')
    assert made["createBucket"]["__typename"] == "CreateBucketSuccess"
    moto.kill()
    with caplog.at_level(logging.ERROR, logger="app"):
        response = await gql.raw(IMPORT, {"input": system_input("uploads", "disk.raw")})
    body = response.json()
    assert body["data"] is None, body  # the payload is non-null: the error nulls the whole answer
    assert [(e["message"], e["extensions"], e["path"]) for e in body["errors"]] == [(
        "The object store could not be reached or written. Try again later.",
        {"code": "STORAGE_UNAVAILABLE", "classification": "UnavailableError"}, ["importImage"])]
    assert moto.endpoint not in response.text
    assert any("unexpected error" in r.getMessage() and r.exc_info for r in caplog.records)
    listed = await gql.execute("{ images(filter: {visibility: [PRIVATE]}) { totalCount } }")
    assert listed["images"]["totalCount"] == 0
