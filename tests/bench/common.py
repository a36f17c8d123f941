"""What every benchmark module returns: figures measured against a baseline of the same run."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from sqlalchemy import create_engine, text

from app.config import normalize_database_url
from app.db.engine import sync_url


@dataclass(frozen=True)
class Figure:
    name: str
    baseline: str
    value: float
    target: str
    #: None for a figure shown for context (a bound of others), with no target of its own.
    met: bool | None
    unit: str = "×"

    def cells(self) -> list[str]:
        shown = f"{self.value:.3g}{self.unit}" if self.unit == "×" else f"{self.value:.3g} {self.unit}"
        return [self.name, self.baseline, shown, self.target, "-" if self.met is None else "yes" if self.met else "NO"]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RssSampler:
    """The process's resident set sampled every `interval` seconds on a thread while the block
    runs: `start` and `peak` in MiB (ru_maxrss is a high-water mark of the whole process, which
    cannot tell one phase from an earlier one)."""

    def __init__(self, interval: float = 0.005) -> None:
        import threading

        self.interval = interval
        self.start = self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current() -> float:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * resource.getpagesize() / (1024 * 1024)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.current())

    def __enter__(self) -> Self:
        self.start = self.peak = self.current()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served_process(env: dict[str, str], port: int, log_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real `ims serve` on loopback with `env`, up once /health answers; yields its base URL
    and its process, stops it (SIGTERM, then SIGKILL) when the block ends unless it has ended.
    Its output goes to `log_path`."""
    import httpx

    with open(log_path, "ab") as log:
        server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.05)
        yield base, server
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@contextmanager
def served(env: dict[str, str], port: int, log_path: Path) -> Iterator[str]:
    """`served_process`, for callers that need only the URL."""
    with served_process(env, port, log_path) as (url, _):
        yield url


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def postgres_bench_url() -> str | None:
    """A new, empty PostgreSQL database `<IMS_TEST_DATABASE_URL's database>_bench` next to
    the test database (dropped first if a run left it), or None when the variable is unset."""
    base = os.environ.get("IMS_TEST_DATABASE_URL")
    if not base:
        return None
    server, name = base.split("?", 1)[0].rsplit("/", 1)
    bench = f"{name}_bench"  # next to the test database, so runs against other databases do not collide
    admin = create_engine(sync_url(normalize_database_url(base)), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{bench}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{bench}"'))
    admin.dispose()
    return normalize_database_url(f"{server}/{bench}")
