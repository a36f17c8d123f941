"""GraphQL error types (payload union members) and the mapping from the service error tree."""

from __future__ import annotations

from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import strawberry
from graphql import GraphQLError

from app import errors as e


@strawberry.interface(description="Every expected failure implements this. `code` is stable and machine-readable.")
class UserError:
    code: str = strawberry.field(
        description="Stable and machine-readable, e.g. `IMAGE_NOT_FOUND`; the README lists all.")
    message: str = strawberry.field(
        description="What went wrong, in English, for people; may change: match on `code`.")


@strawberry.type(description="The resource does not exist, or the caller may not see it (the two are not told apart).")
class NotFoundError(UserError):
    resource_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="The id (a bucket's name) that names nothing visible; null when not known.")


@strawberry.type(description="An input value is malformed or out of range. `field` is the input path, e.g. `input.name`.")
class ValidationError(UserError):
    field: str | None = strawberry.field(
        default=None,
        description="The path of the value at fault, e.g. `input.name`, `input.tags[2].key`; null "
                    "when no single value is.")


@strawberry.type(description="The caller sees the resource but may not do this to it (e.g. modify a public image).")
class ForbiddenError(UserError):
    pass


@strawberry.type(description="The resource is in a state that does not allow this now (not ACTIVE, changed concurrently, duplicate).")
class ConflictError(UserError):
    pass


@strawberry.type(description="This kind of image or resource does not support the operation (e.g. exporting a full-ECS image).")
class NotSupportedError(UserError):
    pass


@strawberry.type(description="A quota or a hard limit would be exceeded.")
class LimitExceededError(UserError):
    limit: int = strawberry.field(
        description="The limit in force: a count, or for a size (`*_TOO_LARGE`) GiB.")


@strawberry.type(description="The KMS key is missing, disabled, pending deletion, or not granted to the caller.")
class KmsKeyError(UserError):
    key_id: strawberry.ID | None = strawberry.field(
        default=None, description="The KMS key at fault; null when not known.")


ERROR_TYPES: tuple[type, ...] = (
    NotFoundError, ValidationError, ForbiddenError, ConflictError, NotSupportedError, LimitExceededError, KmsKeyError,
)


def _id(value: str | None) -> strawberry.ID | None:
    return None if value is None else strawberry.ID(value)


def to_graphql(exc: e.ImsError) -> Any:
    if isinstance(exc, e.NotFound):
        return NotFoundError(code=exc.code, message=exc.message, resource_id=_id(exc.resource_id))
    if isinstance(exc, e.Invalid):
        return ValidationError(code=exc.code, message=exc.message, field=exc.field)
    if isinstance(exc, e.Forbidden):
        return ForbiddenError(code=exc.code, message=exc.message)
    if isinstance(exc, e.Conflict):
        return ConflictError(code=exc.code, message=exc.message)
    if isinstance(exc, e.NotSupported):
        return NotSupportedError(code=exc.code, message=exc.message)
    if isinstance(exc, e.LimitExceeded):
        return LimitExceededError(code=exc.code, message=exc.message, limit=exc.limit)
    if isinstance(exc, e.KmsKeyProblem):
        return KmsKeyError(code=exc.code, message=exc.message, key_id=_id(exc.key_id))
    raise TypeError(f"unmapped error {type(exc).__name__}")


T = TypeVar("T")


async def payload(allowed: tuple[type, ...], call: Awaitable[T]) -> T | Any:
    """Await a service call; an expected failure becomes its error type if the payload union
    admits it. One it does not admit is a bug (the contract makes expected failures data): it
    propagates and reaches the client as a top-level error with its code (`ClientErrors`)."""
    try:
        return await call
    except e.ImsError as exc:
        err = to_graphql(exc)
        if type(err) not in allowed:
            raise
        return err


class QueryError(GraphQLError):
    """An expected failure of a query field, which has no payload union to carry it (a bad
    `first`, cursor or region; a non-admin asking for `accounts`). It is a top-level error
    with the message and `extensions.code` (and `field`): shown to the client, never masked."""

    def __init__(self, exc: e.ImsError) -> None:
        # `classification` is the graphql-java convention generic clients (and fuzzers) read
        # to tell a refused request from a server failure.
        extensions: dict[str, Any] = {"code": exc.code, "classification": exc.kind}
        if isinstance(exc, e.Invalid) and exc.field:
            extensions["field"] = exc.field
        super().__init__(exc.message, extensions=extensions)


@contextmanager
def query_errors() -> Iterator[None]:
    """Turn an expected failure inside a query resolver into a `QueryError`."""
    try:
        yield
    except e.ImsError as exc:
        raise QueryError(exc) from exc
