"""The README's generated tables (settings, error codes) are up to date: `python -m app.docs`."""

from __future__ import annotations

from pathlib import Path

from app.docs import render

README = Path(__file__).resolve().parent.parent / "README.md"


def test_generated_tables_are_current() -> None:
    text = README.read_text()
    assert render(text) == text, "README tables are stale: run `python -m app.docs`"
    assert "<!-- codes:start -->" in text and "<!-- settings:start -->" in text
