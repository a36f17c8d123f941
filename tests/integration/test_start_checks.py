"""A process that starts against an object store it cannot use, or with a KMS root key file
that does not open the stored keys, stops at once with one line naming the region's store or
the file, and exit status 1. Before, `ims serve` printed uvicorn's traceback of its lifespan
(about 140 lines for a store that does not answer, 60 for the key) and `ims worker` Python's."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from app.bootstrap import build_database, build_key_provider
from app.config import Settings
from app.db.migrate import upgrade
from app.domain.images import Caller
from tests.conftest import free_port, run_ims
from tests.factories import make_account

COMMANDS = pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker"]], ids=["serve", "worker"])


@COMMANDS
def test_an_object_store_that_does_not_answer_is_one_line_naming_it(tmp_path: Path, command: list[str]) -> None:
    port = free_port()  # nothing listens there
    result = run_ims(command, {"IMS_DATA_DIR": str(tmp_path / "data"), "IMS_S3_ENDPOINT": f"127.0.0.1:{port}",
                           "IMS_S3_ACCESS_KEY": "ims", "IMS_S3_SECRET_KEY": "secret-not-shown", "IMS_WORKERS": "0"})
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.splitlines()[-1].startswith(
        f"ims: the object store of region region-1 (the S3 endpoint 127.0.0.1:{port}) cannot be used: "), \
        result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "secret-not-shown" not in result.stderr + result.stdout


@COMMANDS
def test_a_root_key_file_that_does_not_open_the_stored_keys_is_one_line_naming_it(
    tmp_path: Path, command: list[str]
) -> None:
    settings = Settings(data_dir=tmp_path / "data", workers=0)
    settings.data_dir.mkdir(parents=True)
    upgrade(settings.effective_database_url)

    async def a_sealed_key() -> None:
        db = build_database(settings)
        try:
            owner, _ = await make_account(db)
            kms = await build_key_provider(settings, db)
            await kms.create_key(Caller(owner.id, owner.name, owner.role), "disks")
        finally:
            await db.dispose()

    asyncio.run(a_sealed_key())
    root = settings.effective_kms_root_key_file
    root.write_bytes(secrets.token_bytes(32))  # a restore that brought back another file
    result = run_ims(command, {"IMS_DATA_DIR": str(settings.data_dir), "IMS_WORKERS": "0"})
    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"ims: the KMS root key file {root} is not the one the stored keys are sealed under"), \
        result.stderr[-3000:]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("port", ["65536", "-1"])
def test_a_port_out_of_range_is_a_usage_error_before_anything_starts(tmp_path: Path, port: str) -> None:
    """`ims serve --port 70000` ran the migrations and started the service before bind()
    refused the port with an OverflowError's traceback."""
    data = tmp_path / "data"
    result = run_ims(["serve", "--port", port], {"IMS_DATA_DIR": str(data), "IMS_WORKERS": "0"})
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Invalid value for '--port'" in result.stderr and "Traceback" not in result.stderr
    assert not data.exists()  # nothing was migrated or started
