"""A deployment whose regions use different stores: the default region on S3 (its own
endpoint), another on the filesystem store. The server signs and serves `/objects/…` URLs
for the filesystem store's buckets, whichever region is the default."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import replace
from urllib.parse import quote

import httpx
import pytest

from app.config import Settings
from app.db.uow import Database
from app.storage.factory import service_bucket
from tests.api.test_storage_api import LIST, UPLOAD
from tests.conftest import GraphQLClient, LiveServer
from tests.factories import make_account

CREATE = """mutation($n: String!, $r: String) { createBucket(input: {name: $n, region: $r}) {
  __typename ... on CreateBucketSuccess { bucket { name region } } } }"""


@pytest.fixture
def settings(settings: Settings, s3_endpoint: str) -> Settings:
    return replace(settings, regions=("region-1", "region-2"), region_endpoints={"region-1": s3_endpoint},
                   s3_access_key="testing", s3_secret_key="testing", s3_secure=False)


async def test_signed_urls_of_a_filesystem_region_beside_an_s3_default_region(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    _, token = await make_account(db)
    me = gql.as_(token)
    made = (await me.execute(CREATE, {"n": "fs-bucket", "r": "region-2"}))["createBucket"]
    assert made == {"__typename": "CreateBucketSuccess", "bucket": {"name": "fs-bucket", "region": "region-2"}}
    url = (await me.execute(UPLOAD, {"b": "fs-bucket", "k": "dir/disk.raw"}))["createUploadUrl"]["url"]
    body = b"\x02" * 50_000
    async with httpx.AsyncClient() as plain:
        assert (await plain.put(url, content=body)).status_code == 200
        assert (settings.data_dir / "objects" / "fs-bucket" / "dir" / "disk.raw").read_bytes() == body
        [listed] = (await me.execute(LIST))["buckets"]
        [obj] = [e["node"] for e in listed["objects"]["edges"]]
        assert (obj["sizeBytes"], obj["checksum"]) == (len(body), "sha256:" + hashlib.sha256(body).hexdigest())
        got = await plain.get(obj["downloadUrl"])
        assert (got.status_code, got.content) == (200, body)
    # The default region's service bucket is on S3, not on the filesystem.
    assert not (settings.data_dir / "objects" / service_bucket("region-1")).exists()
    assert (settings.data_dir / "objects" / service_bucket("region-2")).is_dir()


async def test_an_s3_object_under_a_longer_key_segment_stays_listed_and_readable(
    gql: GraphQLClient, db: Database, live_server: LiveServer
) -> None:
    """The service makes no object under a key segment over 255 bytes (no file could hold
    it), but an S3 bucket may hold one put there from outside: it is listed with its checksum
    and a working download URL, and can be imported."""
    _, token = await make_account(db)
    me = gql.as_(token)
    # A name of its own: the S3 server lives for the whole session, and a bucket left with
    # objects by the other database backend's run is not adopted.
    name = f"s3-bucket-{uuid.uuid4().hex[:12]}"
    made = (await me.execute(CREATE, {"n": name, "r": "region-1"}))["createBucket"]
    assert made == {"__typename": "CreateBucketSuccess", "bucket": {"name": name, "region": "region-1"}}
    key = "dir/" + "x" * 256
    body = b"\x03" * 1000
    await live_server.app.state.runtime.stores["region-1"].put_bytes(name, key, body)
    refused = (await me.execute(UPLOAD, {"b": name, "k": key}))["createUploadUrl"]
    assert refused == {"__typename": "ValidationError", "code": "INVALID_OBJECT_KEY"}
    [listed] = (await me.execute(LIST))["buckets"]
    [obj] = [e["node"] for e in listed["objects"]["edges"]]
    assert (obj["key"], obj["sizeBytes"], obj["checksum"]) == (key, len(body), "sha256:" + hashlib.sha256(body).hexdigest())
    async with httpx.AsyncClient() as plain:
        got = await plain.get(obj["downloadUrl"])
    assert (got.status_code, got.content) == (200, body)


async def test_s3_objects_under_keys_the_service_cannot_address_are_not_listed(
    gql: GraphQLClient, db: Database, s3_endpoint: str
) -> None:
    """Objects put into an S3 bucket from outside under keys no store call takes (a folder
    marker `dir/` as S3 consoles make, `a//b`, a backslash, a control character) are left out
    of the listing, as the filesystem store leaves out files of such names. They were listed,
    and their downloadUrl (or checksum) failed InvalidNameError: masked, and since the fields
    are non-null the whole `buckets` answer was null, every other object with it."""
    _, token = await make_account(db)
    me = gql.as_(token)
    name = f"s3-bucket-{uuid.uuid4().hex[:12]}"
    made = (await me.execute(CREATE, {"n": name, "r": "region-1"}))["createBucket"]
    assert made["__typename"] == "CreateBucketSuccess"
    body = b"\x04" * 100
    async with httpx.AsyncClient() as plain:
        url = (await me.execute(UPLOAD, {"b": name, "k": "dir/disk.raw"}))["createUploadUrl"]["url"]
        assert (await plain.put(url, content=body)).status_code == 200
        for key in ("dir/", "dir//x", "dir/a\\b", "dir/c\x01d"):
            # The S3 server takes unsigned requests: as an operator's tool would put them.
            put = await plain.put(f"http://{s3_endpoint}/{name}/{quote(key, safe='/')}", content=b"x")
            assert put.status_code == 200, key
        [listed] = (await me.execute(LIST))["buckets"]
        assert listed["objects"]["totalCount"] == 1
        [obj] = [e["node"] for e in listed["objects"]["edges"]]
        assert (obj["key"], obj["sizeBytes"], obj["checksum"]) == (
            "dir/disk.raw", len(body), "sha256:" + hashlib.sha256(body).hexdigest())
        got = await plain.get(obj["downloadUrl"])
    assert (got.status_code, got.content) == (200, body)
