"""`make ts-client`'s generator (app/web/codegen) turns the committed SDL and every operation
into typed documents that type-check. Runs when its node_modules are installed; under CI=true
it installs them itself (npm ci from the committed package-lock.json)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.api.test_operations import operation_names

ROOT = Path(__file__).resolve().parents[2]
CODEGEN = ROOT / "app" / "web" / "codegen"
GENERATED = CODEGEN / "generated"


def npm(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["npm", *args], cwd=CODEGEN, capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.fixture(scope="module")
def installed() -> None:
    if (CODEGEN / "node_modules" / ".package-lock.json").exists():
        return
    if os.environ.get("CI") != "true":
        pytest.skip("app/web/codegen/node_modules missing: `make ts-client` installs them")
    if shutil.which("npm") is None:
        pytest.fail("CI=true but npm is missing (`make system` installs it)")
    result = npm("ci", "--ignore-scripts", "--no-audit", "--no-fund")
    assert result.returncode == 0, result.stderr


def test_lockfile_is_committed_and_output_ignored() -> None:
    assert (CODEGEN / "package-lock.json").is_file()
    assert "generated/" in (CODEGEN / ".gitignore").read_text().split()


def test_generates_typed_documents_for_every_operation(installed: None) -> None:
    shutil.rmtree(GENERATED, ignore_errors=True)
    result = npm("run", "--silent", "codegen", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    source = (GENERATED / "graphql.ts").read_text()
    missing = [name for name in operation_names() if f"export const {name}Document" not in source]
    assert missing == []
    # Every operation has its result and variables types.
    kinds = ("Query", "Mutation", "Subscription")
    assert [n for n in operation_names() if not any(f"{n}{k} = " in source for k in kinds)] == []
    typecheck = npm("run", "--silent", "typecheck", timeout=120)
    assert typecheck.returncode == 0, typecheck.stdout + typecheck.stderr
