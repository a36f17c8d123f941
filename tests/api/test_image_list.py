"""exportImageList over HTTP: the job writes the CSV of DESIGN §1 (columns, file name, quoting,
CSV-injection guard) into the caller's bucket or the service's, and it downloads."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.db.types import utcnow
from app.db.uow import Database
from app.services import image_list
from app.services.image_list import PRIVATE_COLUMNS, PUBLIC_COLUMNS, guard
from tests.api.ops import error, without_message
from tests.api.replication_helpers import running_worker, two_regions, wait_job
from tests.conftest import GraphQLClient
from tests.factories import admin_account, make_account, make_image, make_kms_key, share

EXPORT_LIST = """mutation($input: ExportImageListInput!) { exportImageList(input: $input) {
  __typename
  ... on UserError { code message }
  ... on ValidationError { field }
  ... on NotFoundError { resourceId }
  ... on ExportJobSuccess { job { id type status } }
} }"""
JOB = """query($id: ID!) { job(id: $id) { status progress error { code message }
  object { bucket key sizeBytes checksum downloadUrl } } }"""


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return two_regions(settings)


async def export_list(client: GraphQLClient, **fields: Any) -> dict[str, Any]:
    return (await client.execute(EXPORT_LIST, {"input": fields}))["exportImageList"]  # type: ignore[no-any-return]


async def listed(client: GraphQLClient, settings: Settings, db: Database, **fields: Any) -> tuple[dict[str, Any], bytes]:
    """Run the export to its end: (the job's object, the file's bytes via its download URL)."""
    payload = await export_list(client, **fields)
    assert payload["__typename"] == "ExportJobSuccess", payload
    assert payload["job"]["type"] == "EXPORT_IMAGE_LIST"
    async with running_worker(settings, db):
        await wait_job(client, payload["job"]["id"])
    job = (await client.execute(JOB, {"id": payload["job"]["id"]}))["job"]
    assert (job["status"], job["progress"], job["error"]) == ("SUCCESS", 1.0, None), job
    async with httpx.AsyncClient() as plain:
        response = await plain.get(job["object"]["downloadUrl"])
    assert response.status_code == 200
    assert job["object"]["sizeBytes"] == len(response.content)
    return job["object"], response.content


def rows(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode())))


async def test_private_list_has_the_owners_images_with_every_column(gql: GraphQLClient, db: Database,
                                                                    settings: Settings) -> None:
    alice, token = await make_account(db)
    bob, _ = await make_account(db, "bob")
    carol, _ = await make_account(db, "carol")
    key = await make_kms_key(db, settings, alice)
    base = utcnow().replace(microsecond=0)
    web = await make_image(db, alice, name="web", tags={"team": "-ops", "env": "prod"}, size_bytes=123,
                           created_at=base, disks=[{"role": "SYSTEM", "sizeGb": 20}])
    sealed = await make_image(db, alice, name="-sealed", kms_key_id=key, kind="DATA_DISK", os_version=None,
                              size_bytes=None, created_at=base + timedelta(seconds=1),
                              disks=[{"role": "DATA", "sizeGb": 0}], min_disk_gb=7)
    await share(db, web, carol, "PENDING")
    await share(db, web, bob, "ACCEPTED")
    # Not in the list: another region, another owner, public images, images shared with alice.
    await make_image(db, alice, region="region-2")
    theirs = await make_image(db, bob)
    await share(db, theirs, alice)
    await make_image(db, await admin_account(db), visibility="PUBLIC")

    q = gql.as_(token)
    await q.execute('mutation { createBucket(input: {name: "lists"}) { __typename } }')
    obj, body = await listed(q, settings, db, visibility="PRIVATE", bucket="lists")
    assert obj["bucket"] == "lists"
    assert re.fullmatch(r"private-images-region-1-\d{14}\.csv", obj["key"]), obj["key"]
    assert rows(body) == [
        list(PRIVATE_COLUMNS),
        ["web", web.id, "ACTIVE", "Ubuntu 22.04 server 64bit", "SYSTEM_DISK", base.strftime("%Y-%m-%dT%H:%M:%SZ"),
         "20", "123", "false", "", "bob:ACCEPTED;carol:PENDING", "env=prod;team=-ops"],
        ["'-sealed", sealed.id, "ACTIVE", "", "DATA_DISK",
         (base + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ"), "7", "", "true", key, "", ""],
    ]
    # Every field is quoted, the header too.
    assert body.startswith(b'"name","id","status"')
    assert body.count(b"\r\n") == 3 and all(line.startswith(b'"') for line in body.split(b"\r\n") if line)


async def test_public_list_goes_to_the_service_bucket(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    admin = await admin_account(db)
    alice, token = await make_account(db)
    base = utcnow().replace(microsecond=0)
    ubuntu = await make_image(db, admin, visibility="PUBLIC", name="Ubuntu 22.04", min_disk_gb=40, min_ram_mb=1024,
                              created_at=base)
    hostile = await make_image(db, admin, visibility="PUBLIC", name="x", os_version='=HYPERLINK("http://evil")',
                               created_at=base + timedelta(seconds=1))
    await make_image(db, alice)  # private: not in a PUBLIC list
    await make_image(db, admin, visibility="PUBLIC", region="region-2")
    obj, body = await listed(gql.as_(token), settings, db, visibility="PUBLIC")
    assert obj["bucket"] == "ims-svc-region-1"
    assert re.fullmatch(rf"image-lists/{alice.id}/lst-[a-z0-9]+/public-images-region-1-\d{{14}}\.csv", obj["key"])
    assert rows(body) == [
        list(PUBLIC_COLUMNS),
        ["Ubuntu 22.04", ubuntu.id, "ACTIVE", "Ubuntu 22.04 server 64bit", "SYSTEM_DISK",
         base.strftime("%Y-%m-%dT%H:%M:%SZ"), "40", "1024"],
        ["x", hostile.id, "ACTIVE", "'=HYPERLINK(\"http://evil\")", "SYSTEM_DISK",
         (base + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ"), "10", "0"],
    ]


async def test_timestamps_are_utc_seconds_cut_not_rounded(gql: GraphQLClient, db: Database,
                                                           settings: Settings) -> None:
    alice, token = await make_account(db)
    at = datetime(2026, 3, 4, 5, 6, 7, 999_999, tzinfo=UTC)
    await make_image(db, alice, name="late", created_at=at)
    _, body = await listed(gql.as_(token), settings, db, visibility="PRIVATE", region="region-1")
    assert rows(body)[1][5] == "2026-03-04T05:06:07Z"


async def test_a_list_longer_than_a_page_keeps_every_row_in_order(
    gql: GraphQLClient, db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(image_list, "PAGE_ROWS", 4)
    alice, token = await make_account(db)
    same_time = utcnow()
    # Ten images with one creation time: the keyset's id breaks the tie across pages.
    made = [await make_image(db, alice, created_at=same_time) for _ in range(10)]
    made += [await make_image(db, alice) for _ in range(3)]
    _, body = await listed(gql.as_(token), settings, db, visibility="PRIVATE", region="region-1")
    ids = [r[1] for r in rows(body)[1:]]
    assert ids == sorted(i.id for i in made[:10]) + [i.id for i in made[10:]]


async def test_any_text_survives_the_page_encoding(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    """Names, tags and members with quotes, backslashes, separators, line breaks and
    characters beyond ASCII come out as stored (SQLite reads pages as one JSON value)."""
    alice, token = await make_account(db)
    odd_member, _ = await make_account(db, 'zoë "z"')
    name = 'a "quoted", \\back\\slashed\nmulti-line name: 日本語 \u00e9 \U0001f600 \\u0041'
    image = await make_image(db, alice, name=name, os_version="\\N",
                             tags={"k;=1": 'v "2"\r\n', "ключ": "значение", "": "\u2028"})
    await share(db, image, odd_member, "ACCEPTED")
    _, body = await listed(gql.as_(token), settings, db, visibility="PRIVATE", region="region-1")
    row = rows(body)[1]
    assert (row[0], row[1], row[3]) == (name, image.id, "\\N")
    assert row[10] == 'zoë "z":ACCEPTED'
    assert row[11] == "'" + '=\u2028;k;=1=v "2"\r\n;ключ=значение'  # guarded: it starts with "="


@pytest.mark.parametrize("value,expected", [
    ("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"),
    ("a=b", "a=b"), ("", ""), ("'quoted", "'quoted"),
])
def test_guard_neutralizes_formula_triggers_only_at_the_start(value: str, expected: str) -> None:
    assert guard(value) == expected


async def test_bad_requests_change_nothing(gql: GraphQLClient, db: Database) -> None:
    _, token = await make_account(db)
    _, bob_t = await make_account(db)
    await gql.as_(bob_t).execute('mutation { createBucket(input: {name: "bobs"}) { __typename } }')
    q = gql.as_(token)
    cases = [
        ({"visibility": "SHARED"}, error("ValidationError", "INVALID_VISIBILITY", field="input.visibility")),
        ({"visibility": "PRIVATE", "region": "mars-1"}, error("ValidationError", "INVALID_REGION",
                                                              field="input.region")),
        # Empty is no region either (only null means the default), as in images(filter:).
        ({"visibility": "PUBLIC", "region": ""}, error("ValidationError", "INVALID_REGION", field="input.region")),
        ({"visibility": "PRIVATE", "bucket": "bobs"}, error("NotFoundError", "BUCKET_NOT_FOUND", resourceId="bobs")),
        ({"visibility": "PRIVATE", "bucket": "missing"}, error("NotFoundError", "BUCKET_NOT_FOUND",
                                                               resourceId="missing")),
    ]
    for fields, expected in cases:
        assert without_message(await export_list(q, **fields)) == expected
    jobs = await q.execute("{ jobs { totalCount } }")
    assert jobs["jobs"]["totalCount"] == 0


HOSTILE = ['plain', '', 'a "quoted", name', '"', '""', 'line\r\nbreak', 'cr\ronly', '=1+1', '-x', '@x', '\tx',
           '\rx', 'semi;colon', 'ünïcödé 日本 \U0001f600', '\\back\\', "'x", ',', ' ']


@pytest.mark.parametrize("private", [True, False])
def test_page_lines_are_what_the_csv_writer_writes(private: bool) -> None:
    """The lines formatted row by row with one %-format hold the bytes `csv.writer`
    (QUOTE_ALL) writes for the same guarded cells, for hostile text in every text column."""
    from app.db.repositories.image_list import ListPage
    from app.services.image_list import _page_csv

    records = []
    expected: list[tuple[str | int, ...]] = []
    for number, text in enumerate(HOSTILE):
        other = HOSTILE[-1 - number]
        disks = None if number % 3 else '[{"role": "SYSTEM", "sizeGb": 7}, {"role": "DATA", "sizeGb": 5}]'
        size, key = (None, None) if number % 2 else (number * 1000, f'-kms "{number}"')
        # The texts as the database keeps them (Image.csv_tags): pairs in order, joined.
        tags = ";".join(f"{k}={v}" for k, v in sorted([(text, other), ("b", text)])) if number % 4 else ""
        members = ";".join(f"{n}:{s}" for n, s in sorted([(other, "PENDING"), (text, "ACCEPTED")])) \
            if number % 5 else ""
        records.append((f"img-{number}", text, "ACTIVE", None if number == 1 else other, "DATA_DISK",
                        "2026-01-02T03:04:05Z", disks, 10 + number, 512 * number, size, key,
                        "2026-01-02 03:04:05.000001", tags, members))
        if private:
            expected.append((guard(text), f"img-{number}", "ACTIVE", guard("" if number == 1 else other),
                             "DATA_DISK", "2026-01-02T03:04:05Z", 12 if disks else 10 + number,
                             "" if size is None else size, "true" if key else "false", key or "",
                             guard(members), guard(tags)))
        else:
            expected.append((guard(text), f"img-{number}", "ACTIVE", guard("" if number == 1 else other),
                             "DATA_DISK", "2026-01-02T03:04:05Z", 10 + number, 512 * number))
    written = io.StringIO()
    csv.writer(written, quoting=csv.QUOTE_ALL).writerows(expected)
    page = ListPage(count=len(records), after=None,
                    records=records if private else [record[:12] for record in records])
    assert _page_csv(page, private) == written.getvalue().encode()
