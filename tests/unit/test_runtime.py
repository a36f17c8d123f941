"""The allocator tuning that the serving and worker processes apply (app/runtime.py)."""

from __future__ import annotations

import platform
import subprocess
import sys

from app.runtime import tune_allocator


def test_tuning_takes_effect_on_glibc_only() -> None:
    # Its effect (no page faults per chunk moved) is a figure of the benchmarks, not a test.
    assert tune_allocator() is (platform.libc_ver()[0] == "glibc")


def test_freezing_moves_the_living_objects_out_of_the_collectors_reach() -> None:
    # In a process of its own: freezing the test process would keep its garbage forever.
    code = ("import gc, sys\nfrom app.runtime import freeze_startup_objects\n"
            "before = gc.get_freeze_count()\nfrozen = freeze_startup_objects()\n"
            "assert before == 0 and frozen == gc.get_freeze_count() > 1000, (before, frozen)\n"
            "assert sum(gc.get_count()) < 100\nprint(frozen)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 1000
