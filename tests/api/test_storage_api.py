"""Buckets, signed upload URLs and object listing over HTTP, end to end."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from app.db.tables import Bucket
from app.db.types import utcnow
from app.db.uow import Database
from app.services import storage as storage_service
from tests.conftest import GraphQLClient, LiveServer
from tests.factories import make_account

CREATE = """mutation($name: String!) { createBucket(input: {name: $name}) {
  __typename ... on CreateBucketSuccess { bucket { name region } } ... on UserError { code } } }"""
UPLOAD = """mutation($b: String!, $k: String!, $e: Int) { createUploadUrl(input: {bucket: $b, key: $k, expiresInSeconds: $e}) {
  __typename ... on CreateUploadUrlSuccess { url expiresAt } ... on UserError { code } } }"""
UPLOAD_FIELD = """mutation($b: String!, $k: String!) { createUploadUrl(input: {bucket: $b, key: $k}) {
  __typename ... on CreateUploadUrlSuccess { url } ... on UserError { code } ... on ValidationError { field } } }"""
COUNT = "{ buckets { objects { totalCount } } }"
LIST = """{ buckets { name objects(prefix: "dir/") { totalCount edges { node {
  key sizeBytes checksum downloadUrl(expiresInSeconds: 60) } } } } }"""


async def bucket_with_objects(me: GraphQLClient, keys: list[str]) -> None:
    """The caller's bucket `my-bucket`, with a one-byte object put under each key through its
    signed upload URL."""
    await me.execute(CREATE, {"name": "my-bucket"})
    async with httpx.AsyncClient() as plain:
        for key in keys:
            url = (await me.execute(UPLOAD, {"b": "my-bucket", "k": key}))["createUploadUrl"]["url"]
            assert (await plain.put(url, content=b"x")).status_code == 200


async def test_upload_list_and_download_through_signed_urls(gql: GraphQLClient, db: Database) -> None:
    _, token = await make_account(db)
    me = gql.as_(token)
    assert (await me.execute(CREATE, {"name": "my-bucket"}))["createBucket"] == {
        "__typename": "CreateBucketSuccess", "bucket": {"name": "my-bucket", "region": "region-1"}}
    payload = (await me.execute(UPLOAD, {"b": "my-bucket", "k": "dir/disk.raw"}))["createUploadUrl"]
    assert payload["__typename"] == "CreateUploadUrlSuccess"
    body = b"\x01" * 100_000 + b"tail"
    async with httpx.AsyncClient() as plain:
        put = await plain.put(payload["url"], content=body)
        assert put.status_code == 200
        listed = (await me.execute(LIST))["buckets"]
        [obj] = [e["node"] for e in listed[0]["objects"]["edges"]]
        assert obj["key"] == "dir/disk.raw"
        assert obj["sizeBytes"] == len(body)
        assert obj["checksum"] == "sha256:" + hashlib.sha256(body).hexdigest()
        got = await plain.get(obj["downloadUrl"])
        assert got.status_code == 200 and got.content == body
        # A download URL does not allow uploads.
        assert (await plain.put(obj["downloadUrl"], content=b"x")).status_code == 403


async def test_bucket_rules_and_isolation(gql: GraphQLClient, db: Database) -> None:
    _, alice = await make_account(db)
    _, bob = await make_account(db)
    assert (await gql.as_(alice).execute(CREATE, {"name": "shared-name"}))["createBucket"]["__typename"] == "CreateBucketSuccess"
    assert (await gql.as_(bob).execute(CREATE, {"name": "shared-name"}))["createBucket"] == {
        "__typename": "ConflictError", "code": "BUCKET_EXISTS"}
    for bad in ("ab", "UPPER", "ims-mine", "a..b", "x" * 64, "amzn-s3-demo-mine", "mine--table-s3"):
        assert (await gql.as_(bob).execute(CREATE, {"name": bad}))["createBucket"] == {
            "__typename": "ValidationError", "code": "INVALID_BUCKET_NAME"}, bad
    # The message says which rule the name breaks, and shows no more than 64 characters of it.
    message = 'mutation($name: String!) { createBucket(input: {name: $name}) { ... on UserError { message } } }'
    said = await gql.as_(bob).execute(message, {"name": "mine.mrap"})
    assert said["createBucket"]["message"] == (
        "Invalid bucket name 'mine.mrap': S3 reserves the prefixes xn--, sthree-, amzn-s3-demo- and the "
        "suffixes -s3alias, --ol-s3, .mrap, --x-s3, --table-s3.")
    said = await gql.as_(bob).execute(message, {"name": "Y" * 100_000})
    assert said["createBucket"]["message"] == (
        f"Invalid bucket name '{'Y' * 62}…: 3-63 lowercase letters, digits, '-' or '.', "
        "starting and ending with a letter or digit.")
    # An empty region names none (not the default one), as an unknown one.
    for region in ("", "mars-1"):
        made = await gql.as_(bob).execute(
            'mutation($r: String) { createBucket(input: {name: "bobs", region: $r}) { __typename '
            '... on UserError { code } ... on ValidationError { field } } }', {"r": region})
        assert made["createBucket"] == {"__typename": "ValidationError", "code": "INVALID_REGION",
                                        "field": "input.region"}, region
    assert (await gql.as_(bob).execute("{ buckets { name } }"))["buckets"] == []
    # Bob cannot get an upload URL for Alice's bucket: it does not exist for him.
    assert (await gql.as_(bob).execute(UPLOAD, {"b": "shared-name", "k": "f"}))["createUploadUrl"] == {
        "__typename": "NotFoundError", "code": "BUCKET_NOT_FOUND"}
    assert (await gql.as_(alice).execute(UPLOAD, {"b": "shared-name", "k": "../etc/passwd"}))["createUploadUrl"] == {
        "__typename": "ValidationError", "code": "INVALID_OBJECT_KEY"}
    assert (await gql.as_(alice).execute(UPLOAD, {"b": "shared-name", "k": "f", "e": 0}))["createUploadUrl"] == {
        "__typename": "ValidationError", "code": "INVALID_URL_EXPIRY"}
    assert (await gql.as_(bob).execute("{ buckets { name } }"))["buckets"] == []


async def test_a_bucket_named_before_its_form_was_reserved_stays_usable(
    gql: GraphQLClient, db: Database, live_server: LiveServer
) -> None:
    """`logs.mrap` was a good name until S3's later reserved forms were refused: a bucket made
    with it then is still written through its signed URLs, listed and read; only new buckets
    are refused that name."""
    alice, token = await make_account(db)
    me = gql.as_(token)
    await live_server.app.state.runtime.services.storage.store("region-1").create_bucket("logs.mrap")
    async with db.uow() as uow:
        uow.session.add(Bucket(name="logs.mrap", account_id=alice.id, region="region-1", created_at=utcnow()))
        await uow.commit()
    payload = (await me.execute(UPLOAD, {"b": "logs.mrap", "k": "dir/a.log"}))["createUploadUrl"]
    assert payload["__typename"] == "CreateUploadUrlSuccess"
    async with httpx.AsyncClient() as plain:
        assert (await plain.put(payload["url"], content=b"line")).status_code == 200
        listed = (await me.execute(LIST))["buckets"]
        assert [(b["name"], [e["node"]["key"] for e in b["objects"]["edges"]]) for b in listed] == [
            ("logs.mrap", ["dir/a.log"])]
        got = await plain.get(listed[0]["objects"]["edges"][0]["node"]["downloadUrl"])
        assert got.status_code == 200 and got.content == b"line"
    assert (await me.execute(CREATE, {"name": "more.mrap"}))["createBucket"] == {
        "__typename": "ValidationError", "code": "INVALID_BUCKET_NAME"}


async def test_upload_urls_only_for_keys_every_store_can_hold(gql: GraphQLClient, db: Database) -> None:
    """A key segment over 255 bytes (a filesystem's NAME_MAX) is refused up front: the URL
    could never be used."""
    _, token = await make_account(db)
    me = gql.as_(token)
    await me.execute(CREATE, {"name": "my-bucket"})
    for key in ("s" * 256, "dir/" + "s" * 256, "dir/" + "é" * 128 + "/x"):
        payload = (await me.execute(UPLOAD_FIELD, {"b": "my-bucket", "k": key}))["createUploadUrl"]
        assert payload == {"__typename": "ValidationError", "code": "INVALID_OBJECT_KEY", "field": "input.key"}, key
    assert (await me.execute(COUNT))["buckets"] == [{"objects": {"totalCount": 0}}]

    for key in ("s" * 255, "dir/" + "é" * 127 + "s"):
        payload = (await me.execute(UPLOAD_FIELD, {"b": "my-bucket", "k": key}))["createUploadUrl"]
        assert payload["__typename"] == "CreateUploadUrlSuccess", key
        async with httpx.AsyncClient() as plain:
            assert (await plain.put(payload["url"], content=b"data")).status_code == 200
    listed = (await me.execute("{ buckets { objects { edges { node { key sizeBytes } } } } }"))["buckets"]
    assert [e["node"] for e in listed[0]["objects"]["edges"]] == [
        {"key": "dir/" + "é" * 127 + "s", "sizeBytes": 4}, {"key": "s" * 255, "sizeBytes": 4}]


OBJECTS = """query($first: Int, $after: String, $prefix: String) { buckets { objects(first: $first, after: $after,
  prefix: $prefix) { totalCount pageInfo { hasNextPage endCursor } edges { node { key } } } } }"""


async def test_objects_total_counts_every_object_paging_reaches(gql: GraphQLClient, db: Database,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """totalCount is the number of objects under the prefix, as in every connection, not the
    length of the page asked for (it was: 1 on each page of `first: 1`)."""
    monkeypatch.setattr(storage_service, "COUNT_PAGE", 2, raising=False)  # the count walks the listing in pages
    _, token = await make_account(db)
    me = gql.as_(token)
    keys = ["a/1", "a/2", "a/3", "b", "c", "d"]
    await bucket_with_objects(me, keys)
    for prefix, expected in ((None, keys), ("a/", keys[:3]), ("z", [])):
        seen: list[str] = []
        after = None
        while True:
            [bucket] = (await me.execute(OBJECTS, {"first": 1, "after": after, "prefix": prefix}))["buckets"]
            page = bucket["objects"]
            assert page["totalCount"] == len(expected), prefix
            seen += [e["node"]["key"] for e in page["edges"]]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        assert seen == expected


async def test_objects_cursor_is_the_listings_own(gql: GraphQLClient, db: Database) -> None:
    """An object listing's cursor is opaque and refused when it is not its own, as every
    connection's: it was the bare key, so any text (another list's cursor, a typo) was taken
    for a place among the keys and the listing went on from there, with hasPreviousPage."""
    from app.domain.pagination import encode_cursor

    _, token = await make_account(db)
    me = gql.as_(token)
    await bucket_with_objects(me, ["k0", "k1"])
    images_cursor = encode_cursor("CREATED_AT:DESC", "2020-01-01T00:00:00+00:00", "img-1")
    for after in ("garbage!!", "k0", images_cursor, encode_cursor("objects:key:ASC", "k0", "k1")):
        body = (await me.raw(OBJECTS, {"first": 1, "after": after})).json()
        assert body["data"] is None, after
        [err] = body["errors"]
        assert (err["path"], err["extensions"]) == (["buckets", 0, "objects"], {
            "code": "INVALID_CURSOR", "classification": "ValidationError", "field": "after"}), after
    first = (await me.execute(OBJECTS, {"first": 1, "after": ""}))["buckets"][0]["objects"]
    assert [e["node"]["key"] for e in first["edges"]] == ["k0"]
    rest = (await me.execute(OBJECTS, {"first": 1, "after": first["pageInfo"]["endCursor"]}))["buckets"][0]["objects"]
    assert ([e["node"]["key"] for e in rest["edges"]], rest["pageInfo"]["hasNextPage"]) == (["k1"], False)


async def test_upload_url_refused_for_a_key_no_store_can_hold_beside_the_buckets_objects(
    gql: GraphQLClient, db: Database
) -> None:
    """An upload URL for `a/b` beside an object `a`, or for `a` beside `a/b`, could never be
    used (a filesystem, and MinIO, holds no such pair: the PUT failed 400 only once the bytes
    were sent): OBJECT_KEY_COLLISION up front, as for an export. Replacing an object keeps
    working."""
    _, token = await make_account(db)
    me = gql.as_(token)
    await bucket_with_objects(me, ["a", "d/e/f"])
    async with httpx.AsyncClient() as plain:
        for key in ("a/b", "a/b/c", "d", "d/e", "d/e/f/g"):
            payload = (await me.execute(UPLOAD_FIELD, {"b": "my-bucket", "k": key}))["createUploadUrl"]
            assert payload == {"__typename": "ValidationError", "code": "OBJECT_KEY_COLLISION",
                               "field": "input.key"}, key
        for key in ("a", "d/e/f", "d/e/g", "ab", "d/x"):
            payload = (await me.execute(UPLOAD, {"b": "my-bucket", "k": key}))["createUploadUrl"]
            assert payload["__typename"] == "CreateUploadUrlSuccess", key
            assert (await plain.put(payload["url"], content=b"yy")).status_code == 200, key
    listed = (await me.execute("{ buckets { objects { edges { node { key sizeBytes } } } } }"))["buckets"]
    assert [(e["node"]["key"], e["node"]["sizeBytes"]) for e in listed[0]["objects"]["edges"]] == [
        ("a", 2), ("ab", 2), ("d/e/f", 2), ("d/e/g", 2), ("d/x", 2)]
