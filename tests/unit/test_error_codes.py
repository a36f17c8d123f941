"""The README's error-code table (app.errors.CODES) is exactly what callers can get: every
registered code is raised somewhere, and every code an answer carries is registered."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import app
from app.api.characters import INVALID_CHARACTER
from app.errors import CODES

#: A code as the source names it: quoted, and not as the key of a registration (`"CODE": "meaning"`).
_USED = re.compile(r'"([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)"(?!\s*:)')
#: A code set directly into a GraphQL error's extensions.
_EXTENSION = re.compile(r'"code":\s*"([A-Z][A-Z0-9_]+)"')


def _sources() -> list[str]:
    root = Path(app.__file__).parent
    # app/client is generated from the schema (it names no code).
    return [p.read_text() for p in root.rglob("*.py") if p.relative_to(root).parts[0] != "client"]


def _registered() -> dict[str, str]:
    for module in pkgutil.walk_packages(app.__path__, "app."):  # each registers its codes at import
        importlib.import_module(module.name)
    return CODES


def test_every_registered_code_is_raised_somewhere() -> None:
    registered = _registered()
    used = {code for text in _sources() for code in _USED.findall(text)}
    assert {"IMAGE_NOT_FOUND", "SHARE_LIMIT", "WORKER_LOST"} <= used  # the pattern still finds them
    assert sorted(registered.keys() - used) == []


def test_every_code_an_answer_carries_is_registered() -> None:
    registered = _registered()
    carried = {code for text in _sources() for code in _EXTENSION.findall(text)} | {INVALID_CHARACTER}
    assert "JOB_NOT_FOUND" in carried  # the pattern still finds them
    assert sorted(carried - registered.keys()) == []
