"""Schemathesis in GraphQL mode against the live server: over a thousand generated
operations (every query and mutation field) as an administrator (the role with the most
reach: every field answers instead of ADMIN_REQUIRED). No 5xx, no internal detail
in any response, and another account's data is untouched afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from app.db.uow import Database
from tests.conftest import GraphQLClient, LiveServer
from tests.factories import make_account, make_image, share

LEAKS = ("Traceback", "sqlalchemy", "asyncpg", "aiosqlite", 'File "', "app/", "SELECT ", "INSERT ")


async def snapshot(db: Database, owner_id: str, image_id: str) -> tuple[object, ...]:
    async with db.uow(owner_id, write=False) as uow:
        view = await uow.images.get_visible(image_id)
        assert view is not None
        tags = [(t.key, t.value) for t in (await uow.images.tags_of([image_id]))[image_id]]
        members = [(m.member.account_id, m.member.status) for m in (await uow.images.members_of([image_id]))[image_id]]
    i = view.image
    return (i.name, i.description, i.version, i.status, i.protected, i.visibility, tuple(tags), tuple(members))


async def test_fuzzed_operations_never_fail_or_leak(gql: GraphQLClient, db: Database, live_server: LiveServer,
                                                    tmp_path: Path) -> None:
    fuzzer, token = await make_account(db, "fuzzer", role="ADMIN")
    victim, victim_token = await make_account(db, "victim")
    target = await make_image(db, victim, tags={"keep": "me"})
    shared = await make_image(db, victim, name="shared with the fuzzer")
    await share(db, shared, fuzzer, "ACCEPTED")
    await gql.as_(victim_token).execute('mutation { createBucket(input: {name: "victims-bucket"}) { __typename } }')
    before = [await snapshot(db, victim.id, target.id), await snapshot(db, victim.id, shared.id)]

    report = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{live_server.url}/graphql",
         "-H", f"Authorization: Bearer {token}", "--phases", "fuzzing", "--max-examples", "40", "--seed", "7",
         "--checks", "not_a_server_error", "--report", "har", "--report-dir", str(report), "--no-color"],
        capture_output=True, text=True, timeout=900, check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    [har] = list(report.glob("*.har")) or list(report.glob("har-*.json"))
    entries = json.loads(har.read_text())["log"]["entries"]
    assert len(entries) >= 1000, len(entries)
    statuses = [e["response"]["status"] for e in entries]
    assert max(statuses) < 500
    bodies = [e["response"]["content"].get("text", "") for e in entries]
    leaked = [b for b in bodies if any(word in b for word in LEAKS)]
    assert leaked == []
    assert after_ok(await snapshot(db, victim.id, target.id), before[0])
    shared_after = await snapshot(db, victim.id, shared.id)
    # The fuzzer may accept/reject its own membership of the shared image; nothing else changes.
    assert shared_after[:6] == before[1][:6] and shared_after[6] == before[1][6]
    assert (await gql.as_(victim_token).execute("{ buckets { name } }"))["buckets"] == [{"name": "victims-bucket"}]


def after_ok(after: tuple[object, ...], before: tuple[object, ...]) -> bool:
    return after == before
