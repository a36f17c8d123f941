"""Every benchmark of DESIGN §4 in one run, one table: each figure against a baseline measured
in the same run.

    python -m tests.bench.run [--quick] [--only catalog,chunks,...] [--markdown FILE]

`--quick` uses small sizes (64 MiB instead of 1 GiB or 8 GiB, 5,000 catalog images instead of
100,000) so that the whole run takes a minute or two; the full sizes are DESIGN §4's. The
catalog is measured on PostgreSQL too when IMS_TEST_DATABASE_URL is set. The modules' own
progress lines go to stderr; stdout has the table and the machine's facts. Each module runs
in a fresh interpreter (its peak RSS is its own; a crash is a row of the table).

Exit status 0 whether or not the targets are met (benchmarks report, they do not fail a
build), 1 when a module crashes, so that the benchmarks cannot rot unnoticed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import multiprocessing
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from app.runtime import tune_allocator
from tests.bench.common import Figure

#: Module names under tests/bench/ as bench_<name>.py; absent ones are skipped.
MODULES = ("catalog", "chunks", "import", "compute", "replicate", "export", "sharing", "latency")
COLUMNS = ("figure", "baseline (same run)", "ratio / value", "target", "met")


@dataclass
class Outcome:
    module: str
    figures: list[Figure]
    seconds: float
    crashed: bool = False


def available() -> list[str]:
    return [m for m in MODULES if importlib.util.find_spec(f"tests.bench.bench_{m}") is not None]


def _measure(name: str, quick: bool) -> list[Figure]:
    """In the child process: the module's figures, its progress lines on stderr."""
    # Tuned as the product's `serve` and `worker` processes are (app/runtime.py).
    tune_allocator()
    module = importlib.import_module(f"tests.bench.bench_{name}")
    measure: Callable[[bool], list[Figure]] = module.figures
    with contextlib.redirect_stdout(sys.stderr):
        return measure(quick)


def run_module(name: str, quick: bool) -> Outcome:
    """One module in a fresh interpreter: its peak RSS is its own and a crash (even a signal)
    is reported as a row."""
    started = time.perf_counter()
    try:
        with ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            got = pool.submit(_measure, name, quick).result()
        return Outcome(name, got, time.perf_counter() - started)
    except Exception as exc:  # noqa: BLE001 - a crashing module is a row, not the end of the run
        traceback.print_exception(exc, file=sys.stderr)
        crashed = Figure(
            f"{name}: CRASHED ({type(exc).__name__}: {exc})"[:160], "-", 0.0, "runs", False, unit=""
        )
        return Outcome(name, [crashed], time.perf_counter() - started, crashed=True)


#: CPU flags that set the baselines and the crypto's speed: SHA-256 and AES-GCM instructions.
_CRYPTO_FLAGS = ("sha_ni", "aes", "vaes", "vpclmulqdq", "avx512f")


def _cpuinfo(path: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        text = path.read_text()
    except OSError:
        return fields
    for line in text.split("\n\n", 1)[0].splitlines():
        name, _, value = line.partition(":")
        fields.setdefault(name.strip().lower(), value.strip())
    return fields


def cpu_model(info: dict[str, str] | None = None) -> str:
    """The CPU's model name, with its family and model numbers and its crypto flags when the
    kernel tells them: two VMs both named "AMD EPYC" differed 2.5x in the interpreter."""
    info = _cpuinfo() if info is None else info
    name = info.get("model name") or platform.processor() or platform.machine()
    details = [f"family {info['cpu family']}, model {info['model']}"] if "cpu family" in info and "model" in info else []
    flags = set(info.get("flags", "").split())
    present = [flag for flag in _CRYPTO_FLAGS if flag in flags]
    if present:
        details.append(" ".join(present))
    return f"{name} ({'; '.join(details)})" if details else name


def machine_facts(quick: bool, seconds: float) -> list[str]:
    load = os.getloadavg()
    return [
        f"CPU: {cpu_model()}, {os.cpu_count()} cores (os.cpu_count())",
        f"load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}",
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}",
        f"sizes: {'quick (--quick)' if quick else 'full (DESIGN §4)'}; run took {seconds:.0f} s",
        f"PostgreSQL: {'yes (IMS_TEST_DATABASE_URL)' if os.environ.get('IMS_TEST_DATABASE_URL') else 'no (SQLite only)'}",
    ]


def rows(outcomes: list[Outcome]) -> list[list[str]]:
    return [f.cells() for o in outcomes for f in o.figures]


def print_table(outcomes: list[Outcome], facts: list[str]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text
        table = [list(COLUMNS), *rows(outcomes)]
        widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
        for r in table:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
        print("\n".join(facts))
        return
    out = Table(title="Performance figures (DESIGN §4)")
    for column in COLUMNS:
        out.add_column(column, overflow="fold")
    for r in rows(outcomes):
        out.add_row(*r[:4], f"[bold red]{r[4]}[/]" if r[4] == "NO" else r[4])
    console = Console(width=max(140, Console().width))
    console.print(out)
    for fact in facts:
        console.print(fact, highlight=False)


def markdown(outcomes: list[Outcome], facts: list[str]) -> str:
    def line(cells: list[str] | tuple[str, ...]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines = [line(COLUMNS), line(["---"] * len(COLUMNS)), *(line(r) for r in rows(outcomes)), ""]
    lines += [f"- {fact}" for fact in facts]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a minute or two")
    parser.add_argument(
        "--only", default="", help=f"comma-separated, among: {', '.join(available())}"
    )
    parser.add_argument(
        "--markdown", type=Path, default=None, help="also write the table as markdown"
    )
    args = parser.parse_args(argv)
    names = available()
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            parser.error(
                f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(names)}"
            )
        names = wanted
    started = time.perf_counter()
    outcomes = []
    for name in names:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        outcomes.append(run_module(name, args.quick))
        print(f"[bench] {name}: {outcomes[-1].seconds:.1f} s", file=sys.stderr, flush=True)
    facts = machine_facts(args.quick, time.perf_counter() - started)
    print_table(outcomes, facts)
    if args.markdown:
        args.markdown.write_text(markdown(outcomes, facts))
    return 1 if any(o.crashed for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
