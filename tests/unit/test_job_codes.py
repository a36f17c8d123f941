"""Every code a job can fail with is a registered error code (and so in the README's list)."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import app
from app.errors import CODES
from app.jobs.registry import JobFailed

_LITERAL = re.compile(r'JobFailed\(\s*"([A-Z0-9_]+)"')


def test_every_literal_job_failure_code_is_registered() -> None:
    for module in pkgutil.walk_packages(app.__path__, "app."):  # each registers its codes at import
        importlib.import_module(module.name)
    root = Path(app.__file__).parent
    used = {code for path in root.rglob("*.py") for code in _LITERAL.findall(path.read_text())}
    assert {"MIN_DISK_TOO_SMALL", "EXPORT_WRITE_FAILED", "BACKUP_GONE"} <= used  # the pattern still finds them
    assert sorted(used - CODES.keys()) == []


def test_an_unregistered_code_is_refused_when_raised() -> None:
    with pytest.raises(ValueError, match="unregistered error code NO_SUCH_CODE"):
        JobFailed("NO_SUCH_CODE", "never shown")
    assert JobFailed("IMAGE_NOT_FOUND", "gone").code == "IMAGE_NOT_FOUND"
