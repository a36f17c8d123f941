"""The README documents every setting and every error code the code defines."""

from __future__ import annotations

from pathlib import Path

from app.config import ENVIRONMENT
from app.errors import CODES

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    assert [name for name in ENVIRONMENT if f"`{name}`" not in README] == []


def test_every_error_code_is_documented() -> None:
    assert [code for code in CODES if f"`{code}`" not in README] == []
