"""graphql/schema.graphql is the exported schema, it fits the contract, and the
migrations describe exactly the tables the code declares."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    build_schema,
    specified_scalar_types,
)
from sqlalchemy import create_engine

from app.api.schema import export_sdl
from app.db.engine import sync_url
from app.db.migrate import upgrade
from app.db.tables import metadata

ROOT = Path(__file__).resolve().parent.parent
CONTRACT_TOOL = ROOT.parent / "shared" / "tools" / "check_contract.py"


def test_schema_file_is_exported_from_code() -> None:
    committed = (ROOT / "graphql" / "schema.graphql").read_text()
    assert committed == export_sdl(), "graphql/schema.graphql drifted: run `make schema`"


@pytest.mark.skipif(not CONTRACT_TOOL.exists(), reason="../shared is not beside this checkout")
def test_served_schema_has_no_conflict_with_contract() -> None:
    result = subprocess.run(
        [sys.executable, str(CONTRACT_TOOL), "--partial", str(ROOT / "graphql" / "schema.graphql")],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no conflicts" in result.stdout


def test_migrations_match_the_models(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    engine = create_engine(sync_url(url))
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata())
    engine.dispose()
    assert diff == []


def test_graphql_folder_holds_no_python_package() -> None:
    # A package named `graphql` would shadow graphql-core.
    assert not (ROOT / "graphql" / "__init__.py").exists()
    assert not list((ROOT / "app").rglob("graphql/__init__.py"))


def test_export_to_a_path_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    """`ims schema export -o` into a directory that cannot be made printed an OSError's traceback."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    target = blocker / "schema.graphql"  # its parent is a file
    result = subprocess.run([sys.executable, "-m", "app.cli", "schema", "export", "-o", str(target)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    assert (result.returncode, result.stderr) == (1, f"ims: cannot write {target}: File exists\n"), result.stderr


def test_every_part_of_the_schema_is_described() -> None:
    """GraphiQL and the generated clients show each type, field, argument and enum value with
    its description: none may lack one (graphql-core's own scalars and introspection aside)."""
    schema = build_schema(export_sdl())
    missing: list[str] = []
    for name, kind in schema.type_map.items():
        if name.startswith("__") or name in specified_scalar_types:
            continue
        if not kind.description:
            missing.append(name)
        if isinstance(kind, GraphQLObjectType | GraphQLInterfaceType | GraphQLInputObjectType):
            for field_name, field in kind.fields.items():
                if not field.description:
                    missing.append(f"{name}.{field_name}")
                for arg_name, arg in getattr(field, "args", {}).items():
                    if not arg.description:
                        missing.append(f"{name}.{field_name}({arg_name})")
        if isinstance(kind, GraphQLEnumType):
            missing += [f"{name}.{value}" for value, spec in kind.values.items() if not spec.description]
    assert missing == []
