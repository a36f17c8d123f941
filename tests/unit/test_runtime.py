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


def test_the_collector_is_paused_until_the_last_of_overlapping_blocks_ends() -> None:
    """Blocks overlapping across threads (two CSV pages formatted at once): the collector
    comes back when the last ends, not when the first does; one that was off stays off."""
    import gc
    import threading

    from app.runtime import gc_paused

    assert gc.isenabled()
    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with gc_paused():
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=other)
    try:
        with gc_paused():
            assert not gc.isenabled()
            thread.start()
            assert inside.wait(10)
        assert not gc.isenabled()  # the other thread's block still runs
        release.set()
        thread.join(10)
        assert gc.isenabled()
        gc.disable()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        release.set()
        gc.enable()
