"""Scratch directories die with their process: a conversion's temporary files, left behind
by a kill -9, are removed by the next process that asks for its scratch directory under the
same root; a living process's files are never touched."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from app.scratch import private_dir

HOLD = """
import sys, time
from pathlib import Path
from app.scratch import private_dir
mine = private_dir(Path(sys.argv[1]))
(mine / "work.raw").write_bytes(b"x" * 4096)
print(mine, flush=True)
time.sleep(3600)
"""


def _holder(root: Path) -> tuple[subprocess.Popen[str], Path]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(root)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip())


def test_a_killed_process_files_go_and_a_living_one_stay(tmp_path: Path) -> None:
    killed, dead_dir = _holder(tmp_path)
    living, live_dir = _holder(tmp_path)
    try:
        killed.send_signal(signal.SIGKILL)
        assert killed.wait(timeout=10) == -signal.SIGKILL
        assert (dead_dir / "work.raw").exists()  # nothing cleaned it up when it died

        mine = private_dir(tmp_path)

        assert not dead_dir.exists()
        assert (live_dir / "work.raw").read_bytes() == b"x" * 4096
        assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted([live_dir.name, mine.name])
        assert private_dir(tmp_path) == mine  # one directory per process and root
    finally:
        for proc in (killed, living):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
