"""Secrets (API tokens, the root key, KMS key material, data keys, URL signatures) never appear
in responses or logs: a whole flow runs with every log record captured, then both are
searched."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from app.config import Settings
from app.db.uow import Database
from app.kms.envelope import load_root_key
from tests.conftest import GraphQLClient, LiveServer
from tests.factories import data_plane


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, workers=1, job_poll_interval=0.05)


def spellings(secret: bytes) -> list[str]:
    return [secret.hex(), base64.b64encode(secret).decode(), base64.urlsafe_b64encode(secret).decode().rstrip("=")]


async def test_no_secret_in_responses_or_logs(gql: GraphQLClient, db: Database, live_server: LiveServer,
                                              caplog: pytest.LogCaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)
    # The access log must reach the capture whatever configured logging before this test.
    access = logging.getLogger("uvicorn.access")
    monkeypatch.setattr(access, "propagate", True)
    monkeypatch.setattr(access, "disabled", False)
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    bodies: list[str] = []

    async def call(token: str, query: str, variables: dict[str, object] | None = None) -> dict[str, object]:
        response = await gql.as_(token).raw(query, variables)
        bodies.append(response.text)
        return response.json()["data"]  # type: ignore[no-any-return]

    made = await call(gql.token or "", 'mutation { createAccount(input: {name: "secretive"}) { ... on CreateAccountSuccess { account { id } token } } }')
    token = made["createAccount"]["token"]  # type: ignore[index]
    extra = await call(token, 'mutation { createApiToken(input: {name: "second"}) { ... on CreateApiTokenSuccess { token } } }')
    second = extra["createApiToken"]["token"]  # type: ignore[index]
    key = await call(token, 'mutation { createKmsKey(input: {alias: "s-key"}) { ... on KmsKeySuccess { key { id } } } }')
    key_id = key["createKmsKey"]["key"]["id"]  # type: ignore[index]
    await call(token, 'mutation { createBucket(input: {name: "secret-bucket"}) { __typename } }')
    url = (await call(token, 'mutation { createUploadUrl(input: {bucket: "secret-bucket", key: "d"}) { ... on CreateUploadUrlSuccess { url } } }'))["createUploadUrl"]["url"]  # type: ignore[index]
    async with httpx.AsyncClient() as plain:
        await plain.put(url, content=b"\x07" * 2_000_000)
    got = await call(token, 'mutation($k: ID!) { importImage(input: {bucket: "secret-bucket", key: "d", name: "enc", minDiskGb: 1, '
                            'os: {type: LINUX, platform: "Debian", version: "12"}, kmsKeyId: $k}) { ... on ImageJobSuccess { job { id } images { ... on ImageBase { id } } } } }',
                     {"k": key_id})
    job_id = got["importImage"]["job"]["id"]  # type: ignore[index]
    for _ in range(200):
        status = (await call(token, "query($j: ID!) { job(id: $j) { status } }", {"j": job_id}))["job"]["status"]  # type: ignore[index]
        if status in ("SUCCESS", "FAIL"):
            break
        await asyncio.sleep(0.05)
    assert status == "SUCCESS"
    await call(token, "{ viewer { apiTokens { id name } } kmsKeys { edges { node { id alias grants { id } } } } }")
    # A failing request too (its error is logged).
    await gql.as_("ims_not-a-real-token").raw("{ viewer { account { id } } }")

    # The secrets themselves.
    chunks, kms = data_plane(db, live_server.settings)
    image_id = got["importImage"]["images"][0]["id"]  # type: ignore[index]
    async with db.uow(write=False) as uow:
        view = await uow.images.get_visible(image_id)
    assert view is None  # the admin-less uow sees no private image: read the row directly
    from sqlalchemy import select

    from app.db.tables import Image

    async with db.uow(write=False) as uow:
        image = (await uow.session.execute(select(Image).where(Image.id == image_id))).scalar_one()
    manifest, _ = await chunks.load(image.disks[0]["manifestId"])
    account_id = made["createAccount"]["account"]["id"]  # type: ignore[index]
    data_key = await kms.decrypt_data_key(account_id, key_id, manifest.wrapped_key)
    root_key = load_root_key(live_server.settings.effective_kms_root_key_file)
    [signature] = parse_qs(urlsplit(url).query)["sig"]
    secrets = [token, second, gql.token or "", *spellings(data_key), *spellings(root_key),
               *spellings(manifest.wrapped_key or b""), hashlib.sha256(token.encode()).hexdigest()]
    # httpx and httpcore log the test's own requests, as a client: the server's records are searched.
    records = [r for r in caplog.records if r.name.split(".")[0] not in ("httpx", "httpcore")]
    logs = "\n".join(r.getMessage() + (str(r.exc_info) if r.exc_info else "") for r in records)
    assert len(records) > 10
    for secret in [*secrets, signature]:
        assert secret and secret not in logs
    # The upload's request line is logged, its signature replaced.
    [upload] = [r.getMessage() for r in records if r.name == "uvicorn.access" and "PUT /objects/" in r.getMessage()]
    assert f"PUT {urlsplit(url).path}?expires={parse_qs(urlsplit(url).query)['expires'][0]}&sig=REDACTED " in upload
    # Responses show a token exactly once: in the payload that creates it.
    for secret in secrets[3:]:
        assert not any(secret in body for body in bodies)
    assert sum(token in body for body in bodies) == 1
