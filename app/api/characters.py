"""Characters no text of the service may hold, refused in every operation whatever carries it
(POST, GET or the websocket) before anything runs:

- NUL (U+0000): PostgreSQL cannot store it in text, and no name, key or id may contain one;
- unpaired surrogates (U+D800-U+DFFF alone, e.g. a JSON `"\\ud800"`): not Unicode text, they
  cannot be encoded as UTF-8 and so cannot be stored or compared by any database.

The variables are read as decoded from JSON; the document's string literals as its lexer
decodes them, so every spelling of NUL counts (raw, `\\u0000`, `\\u{0}`) in strings and block
strings, wherever they stand: arguments, lists, input objects, default values, directives.
"""

from __future__ import annotations

from graphql import GraphQLError, Lexer, Source, TokenKind

from app.errors import register_codes

#: The error's `extensions.code` (the answer over HTTP is 400).
INVALID_CHARACTER = "INVALID_CHARACTER"
register_codes({
    INVALID_CHARACTER: "A string of the request holds a NUL character or an unpaired surrogate; the operation is "
                       "refused before it runs (a top-level error, HTTP 400).",
})
NUL = "NUL characters are not accepted"
SURROGATE = "unpaired surrogates are not accepted: text must be valid Unicode"

_LITERALS = (TokenKind.STRING, TokenKind.BLOCK_STRING)


def text_problem(text: str) -> str | None:
    """Why `text` is refused (a message), or None."""
    if "\x00" in text:
        return NUL
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return SURROGATE
    return None


def value_problem(value: object) -> str | None:
    """Why a JSON value (the variables) is refused: any string in it, key or value."""
    pending = [value]  # a loop, not recursion: variables may nest as deep as JSON allows
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if (problem := text_problem(item)) is not None:
                return problem
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return None


def document_problem(query: str, max_tokens: int) -> str | None:
    """Why the document is refused. Outside its literals, NUL is a syntax error or a comment;
    a surrogate anywhere makes the text not Unicode. Documents the parser refuses anyway (bad
    syntax, more than `max_tokens` tokens) are left to it."""
    if (problem := text_problem(query)) == SURROGATE:
        return problem
    if problem is None and "\\u" not in query:
        return None  # no literal can hold NUL without a raw one or an escape
    lexer = Lexer(Source(query))
    try:
        for _ in range(max_tokens):
            token = lexer.advance()
            if token.kind is TokenKind.EOF:
                return None
            if token.kind in _LITERALS and token.value is not None and "\x00" in token.value:
                return NUL
    except GraphQLError:
        return None
    return None


def character_error(query: str | None, variables: dict[str, object] | None, operation_name: str | None,
                    max_tokens: int) -> GraphQLError | None:
    """The error refusing this operation, or None when its text is acceptable."""
    problem = (
        (document_problem(query, max_tokens) if isinstance(query, str) else None)
        or value_problem(variables)
        or (text_problem(operation_name) if isinstance(operation_name, str) else None)
    )
    return None if problem is None else GraphQLError(problem, extensions={"code": INVALID_CHARACTER})
