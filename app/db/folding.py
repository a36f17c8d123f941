"""Case folding that SQLite and PostgreSQL share: Unicode's simple lowercase mapping, one code
point for one (`nameContains` and `platform` match case-insensitively through it).

PostgreSQL's `lower()` maps each character by that table under a collation of a UTF-8 locale,
ICU's or libc's (an ICU one differs for two characters, mapped beforehand: see `_PREMAPPED`),
but folds ASCII only under a plain `C` locale and maps "I" to "ı" under a Turkish one: it runs
under `ims_fold`, a collation migration 0006 makes from ICU's root locale (or libc's C.UTF-8),
whatever the database's own locale. SQLite's `lower()` folds ASCII only (`lower('Ärger')` is
`Ärger`), so there "ärger" did not find "Ärger" while PostgreSQL found it. SQLite gets the
same mapping as a function of ours (`ims_fold`), registered on every connection
(`app.db.engine`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import String
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnClause
from sqlalchemy.sql.functions import FunctionElement

#: The name of `fold_case` in SQLite connections.
SQLITE_FUNCTION = "ims_fold"
#: The collation PostgreSQL folds under (made by migration 0006).
COLLATION = "ims_fold"

#: Mapped before lowering, on both backends: İ and Σ to their simple lowercase mappings (an
#: ICU database's `lower()`, like `str.lower`, takes their full, context-dependent ones: "i̇",
#: a final ς), and the final ς to σ, so that "οδος" typed with its final letter finds "ΟΔΟΣ".
_PREMAPPED = {"\u0130": "i", "\u03a3": "\u03c3", "\u03c2": "\u03c3"}
_PREMAP = str.maketrans(_PREMAPPED)


def fold_case(text: str) -> str:
    """Each character's simple lowercase mapping (UnicodeData.txt), the final sigma as σ:
    what `CaseFolded` computes in either database."""
    if text.isascii():
        return text.lower()
    return text.translate(_PREMAP).lower()


def _fold_value(value: Any) -> Any:
    return fold_case(value) if isinstance(value, str) else value


def register(dbapi_connection: Any) -> None:
    """Make `ims_fold(text)` available in a SQLite connection (sqlite3's or aiosqlite's)."""
    dbapi_connection.create_function(SQLITE_FUNCTION, 1, _fold_value, deterministic=True)


class CaseFolded(FunctionElement[str]):
    """`fold_case` of a text expression in SQL: SQLite's `ims_fold()`; PostgreSQL's `lower()`
    under the `ims_fold` collation (migration 0006; under a column's "C" or the database's
    own, it could fold ASCII only), after `_PREMAPPED`'s characters are mapped (`translate`)."""

    name = "case_folded"
    type = String()
    inherit_cache = True


@compiles(CaseFolded)
def _lower(element: CaseFolded, compiler: SQLCompiler, **kw: Any) -> str:
    text = compiler.process(element.clauses, **kw)
    source, target = "".join(_PREMAPPED), "".join(_PREMAPPED.values())
    return f"lower(translate(({text}) COLLATE {COLLATION}, '{source}', '{target}'))"


@compiles(CaseFolded, "sqlite")
def _ims_fold(element: CaseFolded, compiler: SQLCompiler, **kw: Any) -> str:
    [argument] = element.clauses.clauses
    text = compiler.process(argument, **kw)
    if not isinstance(argument, ColumnClause):  # a parameter: folded once, not per row
        return f"{SQLITE_FUNCTION}({text})"
    # A column's ASCII values (its text as long as its bytes) by SQLite's own lower(), which
    # folds them exactly so: the function call per row made a name filter's scan ~3x slower
    # (100,000 ASCII names: 219 ms against 69; 92 ms this way).
    return f"CASE WHEN length({text}) = length(CAST({text} AS BLOB)) THEN lower({text}) " \
           f"ELSE {SQLITE_FUNCTION}({text}) END"
