"""Which texts app.api.characters refuses: the values an operation carries, not its spelling."""

from __future__ import annotations

import pytest

from app.api.characters import NUL, SURROGATE, character_error, document_problem, value_problem

MAX_TOKENS = 5000


@pytest.mark.parametrize(("document", "problem"), [
    ('{ a(x: "plain") }', None),
    ('{ a(x: "\\u0000") }', NUL),
    ('{ a(x: "\\u{0}") }', NUL),
    ('{ a(x: "\\u{00000000}") }', NUL),
    ('{ a(x: "a\x00b") }', NUL),
    ('{ a(x: """a\x00b""") }', NUL),
    ('{ a(x: [{b: {c: ["\\u{0}"]}}]) }', NUL),
    ('query($v: String = "\\u0000") { a(x: $v) }', NUL),
    ('{ a @d(x: "\\u0000") }', NUL),
    # Not NUL: a block string has no escapes, a comment is no value, \\u0001 is another character.
    ('{ a(x: """\\u0000""") }', None),
    ('# \\u0000 \x00\n{ a }', None),
    ('{ a(x: "\\\\u0000 \\u0001") }', None),
    # Unpaired surrogates make the text not Unicode, wherever they stand.
    ('{ a(x: "a\ud800") }', SURROGATE),
    ('# \udc00\n{ a }', SURROGATE),
    ('{ a(x: "\U0001f600 \\uD83D\\uDE00") }', None),
    # What the lexer refuses (an unterminated string, a bad escape) is left to the parser.
    ('{ a(x: "\\u0000 }', None),
    ('{ a(x: "\\ud800") }', None),
])
def test_document_problem(document: str, problem: str | None) -> None:
    assert document_problem(document, MAX_TOKENS) == problem


def test_a_literal_past_the_token_limit_is_left_to_the_parser() -> None:
    padded = "{ a(x: [" + "1 " * MAX_TOKENS + '"\\u0000"]) }'
    assert document_problem(padded, MAX_TOKENS) is None
    assert document_problem(padded, MAX_TOKENS + 10) == NUL


def test_value_problem_reads_keys_and_values_at_any_depth() -> None:
    deep: object = "\x00"
    for _ in range(10_000):  # deeper than recursion would go
        deep = [deep]
    assert value_problem({"a": deep}) == NUL
    assert value_problem({"a\x00": 1}) == NUL
    assert value_problem({"a": {"b": ["ok", "\ud800"]}}) == SURROGATE
    assert value_problem({"a": [1, 2.5, True, None, "é \U0001f600"]}) is None
    assert value_problem(None) is None


def test_character_error_has_the_code_and_checks_the_operation_name() -> None:
    error = character_error("query A { a }", {"v": "\x00"}, "A", MAX_TOKENS)
    assert error is not None and (error.message, error.extensions) == (NUL, {"code": "INVALID_CHARACTER"})
    named = character_error("query A { a }", None, "A\ud800", MAX_TOKENS)
    assert named is not None and named.message == SURROGATE
    assert character_error("{ a }", {}, None, MAX_TOKENS) is None
    assert character_error(None, None, None, MAX_TOKENS) is None
