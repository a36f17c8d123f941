"""The catalog page statement, built once per query *shape* and cached.

A request's filter values, caller, cursor and page size travel as bound parameters; which
filters are present, the visibilities, the ordering and whether a cursor or a total is
wanted make the shape. Building a union of three subqueries with SQLAlchemy costs more
Python time than SQLite takes to run it, so each shape is built once per process
(`functools.lru_cache`; statements are immutable and shared safely).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    exists,
    func,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.visitors import InternalTraversal, _TraverseInternalsType
from sqlmodel import col

from app.db.folding import CaseFolded, fold_case
from app.db.tables import CSV_ONLY_COLUMNS, Account, Image, ImageCount, ImageMember, ImageTag
from app.domain.enums import ImageOrderField, ImageVisibility, OrderDirection
from app.domain.images import ImageOrder, ImageQuery

#: The columns an image is displayed from (`ImageRecord`), in table order.
IMAGE_COLUMNS = tuple(c.name for c in Image.__table__.columns  # type: ignore[attr-defined]
                      if c.name not in CSV_ONLY_COLUMNS)


class NotIndexed(ColumnElement[Any]):
    """A column that SQLite must not look rows up by: rendered with SQLite's unary `+`, the
    documented way to disqualify a term from index use; other dialects see the bare column.

    Without statistics SQLite serves `owner_id = ? AND visibility = 'PRIVATE' AND region = ?`
    from the public index on (region, visibility, …), visiting every private image of the
    region instead of the caller's own through (owner_id, region, …): 1.5 ms of the 2.5 ms
    page statement of a 5,000-image catalog (EXPLAIN QUERY PLAN, README "Performance")."""

    inherit_cache = True
    _traverse_internals: _TraverseInternalsType = [("column", InternalTraversal.dp_clauseelement)]  # noqa: RUF012

    def __init__(self, column: Any) -> None:
        self.column = column
        self.type = column.type


@compiles(NotIndexed)
def _bare(element: NotIndexed, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column, **kw)


@compiles(NotIndexed, "sqlite")
def _unary_plus(element: NotIndexed, compiler: SQLCompiler, **kw: Any) -> str:
    return "+" + compiler.process(element.column, **kw)


class JsonArrays(FunctionElement[str]):
    """`[[a, b, …], …]` of the rows an aggregate sees, as JSON text: SQLite's
    json_group_array(json_array(…)), PostgreSQL's json_agg(json_build_array(…)) (`[]` for
    none). A page's tags and members ride in the page statement this way."""

    name = "json_arrays"
    type = String()
    inherit_cache = True


@compiles(JsonArrays)
def _json_agg(element: JsonArrays, compiler: SQLCompiler, **kw: Any) -> str:
    args = compiler.process(element.clauses, **kw)
    return f"CAST(COALESCE(json_agg(json_build_array({args})), '[]') AS TEXT)"


@compiles(JsonArrays, "sqlite")
def _json_group_array(element: JsonArrays, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_group_array(json_array({compiler.process(element.clauses, **kw)}))"


class GuardedLimit(ColumnElement[int]):
    """An arm's LIMIT that SQLite drops to 0 when `guard` (an uncorrelated EXISTS) is false:
    `CASE WHEN guard THEN limit ELSE 0 END`, computed once before the arm's loop, which a
    LIMIT of 0 skips. Other dialects see the bare limit (the guard stays in the arm's WHERE,
    where PostgreSQL's planner makes it a one-time filter; a LIMIT it cannot read would cost
    it the plan `_limit` is there for).

    SQLite evaluates such a guard in the WHERE once per row the arm reads (its planner does
    not hoist subqueries out of the loop): for a caller without memberships the SHARED arm
    read every private image of the region to find none (6.1 ms of SQL on the 100,000-image
    benchmark catalog, 0.005 ms with the guarded LIMIT)."""

    inherit_cache = True
    type = Integer()
    _traverse_internals: _TraverseInternalsType = [  # noqa: RUF012
        ("guard", InternalTraversal.dp_clauseelement), ("limit", InternalTraversal.dp_clauseelement)]

    def __init__(self, guard: ColumnElement[bool], limit: Any) -> None:
        self.guard = guard
        self.limit = limit


@compiles(GuardedLimit)
def _plain_limit(element: GuardedLimit, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.limit, **kw)


@compiles(GuardedLimit, "sqlite")
def _case_limit(element: GuardedLimit, compiler: SQLCompiler, **kw: Any) -> str:
    guard, limit = compiler.process(element.guard, **kw), compiler.process(element.limit, **kw)
    return f"CASE WHEN {guard} THEN {limit} ELSE 0 END"


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def sort_column(field: ImageOrderField, entity: Any = Image) -> ColumnElement[Any]:
    """The sort key of an ordering, on the images table or an alias of it."""
    if field is ImageOrderField.NAME:
        return entity.name  # type: ignore[no-any-return]
    if field is ImageOrderField.SIZE:
        return func.coalesce(entity.size_bytes, -1)
    if field is ImageOrderField.STATUS:
        return entity.status  # type: ignore[no-any-return]
    return entity.created_at  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Shape:
    """What decides the SQL text of a catalog query (values are parameters)."""

    visibility: frozenset[ImageVisibility]
    shared: bool
    kinds: bool
    statuses: bool
    name: bool
    os_types: bool
    platforms: bool
    formats: bool
    encrypted: bool | None
    kms_key: bool
    protected: bool
    tags: tuple[bool, ...]
    after_time: bool
    before_time: bool
    ids: bool
    field: ImageOrderField
    ascending: bool
    cursor: bool
    total: bool
    #: The page's tags and members as JSON columns (what the request's selection shows).
    with_tags: bool = False
    with_members: bool = False


def shape_and_params(query: ImageQuery, order: ImageOrder, caller_id: str, first: int,
                     after: tuple[Any, str] | None, with_total: bool, *, with_tags: bool = False,
                     with_members: bool = False) -> tuple[Shape, dict[str, Any]]:
    q = query
    params: dict[str, Any] = {"caller": caller_id, "region": q.region, "limit": first + 1}
    shape = Shape(
        visibility=frozenset(q.visibility), shared=bool(q.member_statuses), kinds=q.kinds is not None,
        statuses=q.statuses is not None, name=bool(q.name_contains), os_types=q.os_types is not None,
        platforms=q.platforms is not None, formats=q.disk_formats is not None, encrypted=q.encrypted,
        kms_key=q.kms_key_id is not None, protected=q.protected is not None,
        tags=tuple(t.value is not None for t in q.tags), after_time=q.created_after is not None,
        before_time=q.created_before is not None, ids=q.ids is not None, field=order.field,
        ascending=order.direction is OrderDirection.ASC, cursor=after is not None, total=with_total,
        with_tags=with_tags, with_members=with_members,
    )
    params["member_statuses"] = sorted(s.value for s in q.member_statuses)
    if q.kinds is not None:
        params["kinds"] = sorted(k.value for k in q.kinds)
    if q.statuses is not None:
        params["statuses"] = sorted(s.value for s in q.statuses)
    if q.name_contains:
        params["name"] = f"%{escape_like(q.name_contains)}%"
    if q.os_types is not None:
        params["os_types"] = sorted(t.value for t in q.os_types)
    if q.platforms is not None:
        params["platforms"] = sorted({fold_case(p) for p in q.platforms})
    if q.disk_formats is not None:
        params["formats"] = sorted(f.value for f in q.disk_formats)
    if q.kms_key_id is not None:
        params["kms_key"] = q.kms_key_id
    if q.protected is not None:
        params["protected"] = q.protected
    for i, tag in enumerate(q.tags):
        params[f"tag_key_{i}"] = tag.key
        if tag.value is not None:
            params[f"tag_value_{i}"] = tag.value
    if q.created_after is not None:
        params["after_time"] = q.created_after
    if q.created_before is not None:
        params["before_time"] = q.created_before
    if q.ids is not None:
        params["ids"] = sorted(q.ids)
    if after is not None:
        params["cursor_value"], params["cursor_id"] = after
    return shape, params


def _in(name: str) -> Any:
    return bindparam(name, expanding=True)


def _limit() -> Any:
    """The page size, rendered into the statement's text (a statement per page size): under a
    generic plan (PostgreSQL's read pool) an unknown LIMIT made the planner drive the SHARED
    arm from every private image of the region, probing each one's members, for a caller
    with few memberships (most accounts): 38–58 ms a page on 50,000 images, against 1.3 ms
    with the LIMIT known."""
    return bindparam("limit", type_=Integer, literal_execute=True)


def _filters(s: Shape) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = [col(Image.region) == bindparam("region")]
    if s.kinds:
        conds.append(col(Image.kind).in_(_in("kinds")))
    if s.statuses:
        conds.append(col(Image.status).in_(_in("statuses")))
    if s.name:
        # Both sides folded in the database, alike on both backends (app.db.folding): SQLite's
        # lower() folds ASCII only, so there "ärger" did not find "Ärger".
        conds.append(CaseFolded(col(Image.name)).like(CaseFolded(bindparam("name")), escape="\\"))
    if s.os_types:
        conds.append(col(Image.os_type).in_(_in("os_types")))
    if s.platforms:
        conds.append(CaseFolded(col(Image.os_platform)).in_(_in("platforms")))
    if s.formats:
        conds.append(col(Image.disk_format).in_(_in("formats")))
    if s.encrypted is not None:
        conds.append(col(Image.kms_key_id).is_not(None) if s.encrypted else col(Image.kms_key_id).is_(None))
    if s.kms_key:
        conds.append(col(Image.kms_key_id) == bindparam("kms_key"))
    if s.protected:
        conds.append(col(Image.protected) == bindparam("protected"))
    for i, with_value in enumerate(s.tags):
        tag = and_(col(ImageTag.image_id) == col(Image.id), col(ImageTag.key) == bindparam(f"tag_key_{i}"))
        if with_value:
            tag = and_(tag, col(ImageTag.value) == bindparam(f"tag_value_{i}"))
        conds.append(exists().where(tag))
    if s.after_time:
        conds.append(col(Image.created_at) > bindparam("after_time", type_=Image.__table__.c.created_at.type))  # type: ignore[attr-defined]
    if s.before_time:
        conds.append(col(Image.created_at) < bindparam("before_time", type_=Image.__table__.c.created_at.type))  # type: ignore[attr-defined]
    if s.ids:
        conds.append(col(Image.id).in_(_in("ids")))
    return conds


def branches(s: Shape) -> list[tuple[Select[Any], ColumnElement[bool] | None]]:
    """One SELECT per visibility asked for, each served by its own index (public by region;
    owned by owner; shared through the caller's memberships), which an OR would defeat;
    each with the one-time condition its LIMIT is guarded by (`GuardedLimit`), if any."""
    filters = _filters(s)
    out: list[tuple[Select[Any], ColumnElement[bool] | None]] = []
    if ImageVisibility.PUBLIC in s.visibility:
        out.append((select(Image).where(col(Image.visibility) == "PUBLIC", *filters), None))
    if ImageVisibility.PRIVATE in s.visibility:
        out.append((select(Image).where(
            col(Image.owner_id) == bindparam("caller"), NotIndexed(col(Image.visibility)) == "PRIVATE", *filters
        ), None))
    if ImageVisibility.SHARED in s.visibility and s.shared:
        # Most accounts have no membership at all: without this one-time check (uncorrelated,
        # answered once from the memberships' (account, status) index) the arm, read in the
        # page's order through the images' index, walked every private image of the region
        # to find none (page 1 for such a caller 5-8x the benchmark viewer's).
        anyone = ImageMember.__table__.alias("any_membership")  # type: ignore[attr-defined]
        has_memberships = exists().where(anyone.c.account_id == bindparam("caller"),
                                         anyone.c.status.in_(_in("member_statuses")))
        out.append((
            select(Image).join(ImageMember, col(ImageMember.image_id) == col(Image.id)).where(
                has_memberships,
                col(ImageMember.account_id) == bindparam("caller"),
                col(ImageMember.status).in_(_in("member_statuses")),
                col(Image.visibility) == "PRIVATE",
                col(Image.owner_id) != bindparam("caller"),
                *filters,
            ),
            has_memberships,
        ))
    return out


def _cursor_type(field: ImageOrderField) -> Any:
    if field is ImageOrderField.CREATED_AT:
        return Image.__table__.c.created_at.type  # type: ignore[attr-defined]
    return None


@lru_cache(maxsize=512)
def page_statement(s: Shape) -> Select[Any] | None:
    """Plain rows, no ORM entities: the image's columns (IMAGE_COLUMNS), its owner's name,
    role and creation time, the caller's membership as JSON ([[status, created_at,
    updated_at]] or [])[, the tags JSON][, the members JSON][, the total]."""
    parts = branches(s)
    if not parts:
        return None
    key = sort_column(s.field, Image)
    limited = []
    for branch, guard in parts:
        if s.cursor:
            value = bindparam("cursor_value", type_=_cursor_type(s.field))
            last: BindParameter[Any] = bindparam("cursor_id")
            # The bare bound on the key lets the index seek to the cursor: under the OR alone
            # SQLite (and PostgreSQL's plan) walk the index from its start, and page 1000 of
            # 100,000 images cost 2.9× page 1.
            if s.ascending:
                branch = branch.where(key >= value, or_(key > value, col(Image.id) > last))
            else:
                branch = branch.where(key <= value, or_(key < value, col(Image.id) < last))
        ordering = (key.asc(), col(Image.id).asc()) if s.ascending else (key.desc(), col(Image.id).desc())
        # Each arm yields its ids and sort keys only: the page's rows are read once, below.
        narrow = branch.with_only_columns(col(Image.id), key.label("sort_key"))
        limit = _limit() if guard is None else GuardedLimit(guard, _limit())
        limited.append(narrow.order_by(*ordering).limit(limit).subquery().select())
    # The page itself first (a MATERIALIZED CTE): otherwise SQLite pushes the joins and the
    # tags/members subqueries down into each arm of the union, for up to three times the
    # rows of the page (0.93 → ms of SQL on a 5,000-image catalog).
    arms = union_all(*limited).subquery("arms")
    ordered = ((arms.c.sort_key.asc(), arms.c.id.asc()) if s.ascending
               else (arms.c.sort_key.desc(), arms.c.id.desc()))
    ids = (select(arms.c.id, arms.c.sort_key).order_by(*ordered).limit(_limit())
           .cte("page_ids").prefix_with("MATERIALIZED"))
    page = Image.__table__.alias("page")  # type: ignore[attr-defined]
    owner = Account.__table__.alias("owner")  # type: ignore[attr-defined]
    mine = ImageMember.__table__.alias("my_membership")  # type: ignore[attr-defined]
    # The caller's membership as a JSON column too: joined, PostgreSQL hashed every
    # membership of the caller (9,333 rows on the 100,000-image benchmark) for 51 images.
    membership = (select(JsonArrays(mine.c.status, mine.c.created_at, mine.c.updated_at))
                  .where(mine.c.image_id == page.c.id, mine.c.account_id == bindparam("caller"))
                  .scalar_subquery().label("membership"))
    columns: list[Any] = [*(page.c[name] for name in IMAGE_COLUMNS), owner.c.name, owner.c.role, owner.c.created_at,
                          membership]
    if s.with_tags:
        t = ImageTag.__table__.alias("tag")  # type: ignore[attr-defined]
        columns.append(select(JsonArrays(t.c.key, t.c.value)).where(t.c.image_id == page.c.id)
                       .scalar_subquery().label("tags"))
    if s.with_members:
        m = ImageMember.__table__.alias("member")  # type: ignore[attr-defined]
        a = Account.__table__.alias("member_account")  # type: ignore[attr-defined]
        columns.append(
            select(JsonArrays(m.c.account_id, m.c.status, m.c.created_at, m.c.updated_at, a.c.name))
            .select_from(m.join(a, a.c.id == m.c.account_id)).where(m.c.image_id == page.c.id)
            .scalar_subquery().label("members")
        )
    stmt = (
        select(*columns)
        .select_from(ids)
        .join(page, page.c.id == ids.c.id)
        .join(owner, owner.c.id == page.c.owner_id)
        .order_by(*((ids.c.sort_key.asc(), ids.c.id.asc()) if s.ascending else (ids.c.sort_key.desc(), ids.c.id.desc())))
    )
    if s.total:
        # Counted once: as a bare scalar subquery SQLite copies it into every arm of the
        # union it pushes the outer query down into, and counts up to three times.
        expression = counters_sum(s) if counted(s) else count_expression(s)
        total = select(expression.label("total")).cte("total").prefix_with("MATERIALIZED")
        stmt = stmt.add_columns(select(total.c.total).scalar_subquery().label("total"))
    return stmt


def counted(s: Shape) -> bool:
    """Whether the `image_counts` rows answer this shape's total: filtered at most by
    visibility, kind and membership status (the region is in every counter's key)."""
    return not (
        s.statuses or s.name or s.os_types or s.platforms or s.formats or s.encrypted is not None or s.kms_key
        or s.protected or s.tags or s.after_time or s.before_time or s.ids
    )


def counters_sum(s: Shape) -> Any:
    """The total of a `counted` shape: the sum of its counter rows (migration 0002 keeps
    them), one term per visibility branch of `branches`, each found by a prefix of the
    counters' primary key (region, scope, account_id, member_status, kind)."""
    c = ImageCount.__table__.c  # type: ignore[attr-defined]
    scopes: list[list[ColumnElement[bool]]] = []
    if ImageVisibility.PUBLIC in s.visibility:
        scopes.append([c.scope == "PUBLIC", c.account_id == "", c.member_status == ""])
    if ImageVisibility.PRIVATE in s.visibility:
        scopes.append([c.scope == "OWNED", c.account_id == bindparam("caller"), c.member_status == ""])
    if ImageVisibility.SHARED in s.visibility and s.shared:
        scopes.append([c.scope == "SHARED", c.account_id == bindparam("caller"),
                       c.member_status.in_(_in("member_statuses"))])
    terms: list[ColumnElement[Any]] = []
    for conds in scopes:
        conds = [c.region == bindparam("region"), *conds]
        if s.kinds:
            conds.append(c.kind.in_(_in("kinds")))
        terms.append(func.coalesce(select(func.sum(c.n)).where(*conds).scalar_subquery(), 0))
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def count_expression(s: Shape) -> Any:
    counts: list[ColumnElement[Any]] = [select(func.count()).select_from(b.subquery()).scalar_subquery() for b, _ in branches(s)]
    total = counts[0]
    for c in counts[1:]:
        total = total + c
    return total


@lru_cache(maxsize=512)
def count_statement(s: Shape) -> Select[Any] | None:
    if not branches(s):
        return None
    return select(counters_sum(s) if counted(s) else count_expression(s))
