"""The allocator tuning that the serving and worker processes apply (app/runtime.py)."""

from __future__ import annotations

import platform

from app.runtime import tune_allocator


def test_tuning_takes_effect_on_glibc_only() -> None:
    # Its effect (no page faults per chunk moved) is a figure of the benchmarks, not a test.
    assert tune_allocator() is (platform.libc_ver()[0] == "glibc")
