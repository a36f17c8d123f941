"""The one benchmark command runs, prints one table with the agreed columns and reports a
crashing module as a row (exit 1) instead of stopping. No timed assertions: figures are
reported, not tested."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.bench.run import COLUMNS, _cpuinfo, cpu_model, run_module

ROOT = Path(__file__).resolve().parents[2]


def test_quick_catalog_run_prints_one_table_and_the_machine(tmp_path: Path) -> None:
    md = tmp_path / "bench.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.bench.run",
            "--only",
            "catalog",
            "--quick",
            "--markdown",
            str(md),
        ],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for column in COLUMNS:
        assert column in done.stdout
    assert "images(first: 50) throughput, 5,000 images, SQLite" in done.stdout
    assert f"{os.cpu_count()} cores" in done.stdout
    lines = md.read_text().splitlines()
    assert lines[0] == "| " + " | ".join(COLUMNS) + " |"
    rows = [line for line in lines[2:] if line.startswith("| ")]
    databases = ["SQLite"] + (["PostgreSQL"] if os.environ.get("IMS_TEST_DATABASE_URL") else [])
    assert len(rows) == 5 * len(databases)
    for database in databases:
        names = [
            row.removeprefix("| ").split(" | ")[0]
            for row in rows
            if row.split(" | ")[0].endswith(database)
        ]
        assert len(names) == 5
        assert names[0] == f"images(first: 50) throughput, 5,000 images, {database}"
        assert names[1] == f"SQL statements per images(first: 50) request, {database}"
        assert names[2].startswith("keyset page after ") and names[2].endswith(
            f"vs page 1, {database}"
        )
        assert names[3] == f"page 1 for a caller without memberships vs the viewer's, {database}"
        assert names[4] == f"images(first: 50) over HTTP, 10 connections, p50 / p99, {database}"
    for row in rows:
        cells = row.strip("| ").split(" | ")
        # The HTTP latencies and the caller without memberships are reported without a target.
        http = cells[0].startswith("images(first: 50) over HTTP")
        context = http or cells[0].startswith("page 1 for a caller without memberships")
        assert len(cells) == len(COLUMNS) and cells[4] in (("-",) if context else ("yes", "NO"))
        if http:
            assert cells[2].endswith(" ms") and cells[3].startswith("p99 ") and cells[3].endswith(" q/s")
    assert any(line.startswith("- CPU: ") for line in lines)


def test_a_crashing_module_is_a_row_not_the_end_of_the_run() -> None:
    outcome = run_module("no_such_benchmark", quick=True)
    assert outcome.crashed
    [row] = outcome.figures
    assert row.name.startswith("no_such_benchmark: CRASHED (ModuleNotFoundError")
    assert row.met is False and row.cells()[4] == "NO"


def test_unknown_only_name_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.run", "--only", "nope"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "unknown benchmark(s) nope" in done.stderr


def test_the_cpu_is_named_with_its_family_model_and_crypto_flags(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
        "model name\t: AMD EPYC\nflags\t\t: fpu sse2 aes avx2 sha_ni avx512f vaes\n\n"
        "processor\t: 1\ncpu family\t: 6\nmodel\t\t: 207\nmodel name\t: Other\nflags\t\t: fpu\n"
    )
    assert cpu_model(_cpuinfo(cpuinfo)) == "AMD EPYC (family 25, model 17; sha_ni aes vaes avx512f)"
    bare = tmp_path / "bare"
    bare.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2\n")
    assert cpu_model(_cpuinfo(bare)) == "Some CPU"
    assert _cpuinfo(tmp_path / "missing") == {}
