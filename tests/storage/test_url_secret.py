"""The URL secret generated into a fresh data directory: processes starting together all
read the one secret, whole."""

from __future__ import annotations

import multiprocessing
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from app.config import Settings
from app.storage.factory import UrlSecretError, url_secret

PROCESSES = 4
#: Fresh data directories, each raced for by every process at once.
ROUNDS = 500


def _read_secrets(barrier: Barrier, dirs: list[str], out: Connection) -> None:
    """In a child process: for each directory, wait for the siblings, then read its secret."""
    secrets: list[str] = []
    for data_dir in dirs:
        barrier.wait()
        try:
            secrets.append(url_secret(Settings(data_dir=Path(data_dir))).decode())
        except (OSError, ValueError) as exc:  # reported to the test, which names it
            secrets.append(f"{type(exc).__name__}: {exc}")
    out.send(secrets)
    out.close()


def test_processes_starting_together_on_a_fresh_data_dir_share_one_whole_secret(tmp_path: Path) -> None:
    dirs = [str(tmp_path / f"data-{i}") for i in range(ROUNDS)]
    ctx = multiprocessing.get_context("forkserver")
    barrier = ctx.Barrier(PROCESSES)
    pipes = [ctx.Pipe(duplex=False) for _ in range(PROCESSES)]
    procs = [ctx.Process(target=_read_secrets, args=(barrier, dirs, send)) for _, send in pipes]
    for proc in procs:
        proc.start()
    results = [receive.recv() for receive, _ in pipes]
    for proc in procs:
        proc.join(timeout=60)
    assert [proc.exitcode for proc in procs] == [0] * PROCESSES

    bad = [(i, {r[i] for r in results}) for i, data_dir in enumerate(dirs)
           if len({r[i] for r in results}) != 1 or len(results[0][i]) < 32
           or Path(data_dir, "url-secret").read_text() != results[0][i]]
    assert bad == []
    for data_dir in map(Path, dirs):
        assert [p.name for p in data_dir.iterdir()] == ["url-secret"]  # no temporary file left
        assert (data_dir / "url-secret").stat().st_mode & 0o777 == 0o600


def test_a_secret_is_generated_once_and_kept(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = url_secret(settings)
    assert len(first) == 64 and bytes.fromhex(first.decode())
    assert url_secret(settings) == first
    assert url_secret(Settings(data_dir=tmp_path / "data", url_secret="s" * 16)) == b"s" * 16


def test_an_empty_secret_file_is_refused(tmp_path: Path) -> None:
    # Signing with an empty key would let anyone forge URLs.
    (tmp_path / "url-secret").write_bytes(b"\n")
    with pytest.raises(UrlSecretError, match=r"url-secret holds fewer than 16 bytes"):
        url_secret(Settings(data_dir=tmp_path))
