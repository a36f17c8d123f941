"""The committed client in app/client is what `make client` generates from the committed SDL
and graphql/operations today (the generator lives in .venv-codegen, see the Makefile)."""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CODEGEN = ROOT / ".venv-codegen" / "bin" / "ariadne-codegen"
COMMITTED = ROOT / "app" / "client"


def to_toml(table: dict[str, Any], prefix: str) -> str:
    """Enough TOML for ariadne-codegen's section: scalars first, then sub-tables."""
    lines = [f"[{prefix}]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in table.items() if not isinstance(v, dict)]
    text = "\n".join(lines) + "\n"
    for k, v in table.items():
        if isinstance(v, dict):
            text += "\n" + to_toml(v, f"{prefix}.{k}")
    return text


def files(package: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(package.glob("*.py"))}


def test_generator_settings_point_at_the_committed_sources() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ariadne-codegen"]
    assert (ROOT / config["schema_path"]).is_file() and (ROOT / config["queries_path"]).is_dir()
    assert Path(config["target_package_path"], config["target_package_name"]) == Path("app/client")
    assert (COMMITTED / "__init__.py").is_file()


def test_committed_client_is_freshly_generated(tmp_path: Path) -> None:
    if not CODEGEN.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but .venv-codegen is missing: `make test` creates it")
        pytest.skip("no .venv-codegen (`make client` creates it)")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ariadne-codegen"]
    config["target_package_path"] = str(tmp_path)
    (tmp_path / "codegen.toml").write_text(to_toml(config, "tool.ariadne-codegen"))
    result = subprocess.run([str(CODEGEN), "client", "--config", str(tmp_path / "codegen.toml")], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    fresh, committed = files(tmp_path / config["target_package_name"]), files(COMMITTED)
    assert sorted(fresh) == sorted(committed), "app/client is stale: run `make client`"
    assert [name for name in fresh if fresh[name] != committed[name]] == [], "app/client is stale: run `make client`"
