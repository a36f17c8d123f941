"""The root schema: every feature's queries and mutations merged, with the protections."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from typing import Annotated, Any

import strawberry
from graphql import GraphQLError, lexicographic_sort_schema, parse, print_schema
from starlette.responses import Response
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.schema.schema import StreamResult
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.execution import PreExecutionError
from strawberry.types.graphql import OperationType

from app import __version__
from app.api.accounts import AccountMutations, AccountQueries
from app.api.backups import BackupMutations, BackupQueries
from app.api.characters import character_error
from app.api.common import Node
from app.api.compute import ComputeMutations, ComputeQueries
from app.api.compute_types import Backup, Server, Volume
from app.api.context import Info, Unauthenticated
from app.api.errors import ERROR_TYPES, QueryError
from app.api.exports import ExportMutations
from app.api.image_types import ImageBase, PrivateImage, PublicImage, SharedImage, image_of
from app.api.images import ImageMutations, ImageQueries
from app.api.imports import ImportMutations
from app.api.jobs import Job, JobQueries, Subscription
from app.api.kms import KmsKey, KmsMutations, KmsQueries
from app.api.replication import ReplicationMutations
from app.api.scalars import SCALAR_MAP
from app.api.sharing import SharingMutations
from app.api.storage import StorageMutations, StorageQueries
from app.api.volumes import VolumeMutations, VolumeQueries
from app.db.uow import SharedReader
from app.errors import ImsError, NotFound
from app.jobs.registry import out_of_space, storage_unavailable

log = logging.getLogger("app.api")

MAX_DEPTH = 12
MAX_ALIASES = 30
MAX_TOKENS = 5000
CACHE_SIZE = 512


@strawberry.type(description="Whether the service can answer.")
class Health:
    ok: bool = strawberry.field(description="The database answers.")
    version: str = strawberry.field(description="The service's version, e.g. `0.1.0`.")


@strawberry.type(description="A region of the service: where images, buckets and servers live.")
class Region:
    id: str = strawberry.field(description="The region's id, as `region` arguments name it.")
    is_default: bool = strawberry.field(
        description="The region an operation uses when its `region` is null.")


@strawberry.type
class CoreQueries:
    @strawberry.field(description="Answers without a token.")  # type: ignore[untyped-decorator]
    async def health(self, info: Info) -> Health:
        return Health(ok=await info.context.services.ping(), version=__version__)

    @strawberry.field(description="The service's regions, the default one first.")  # type: ignore[untyped-decorator]
    def regions(self, info: Info) -> list[Region]:
        regions = info.context.services.settings.regions
        return [Region(id=r, is_default=i == 0) for i, r in enumerate(regions)]

    @strawberry.field(  # type: ignore[untyped-decorator]
        description="The object with this id, if the caller may see it: an image, job, KMS key, "
                    "server, volume, backup, API token of the caller's account, or account (the "
                    "caller's own; any, for an administrator). Null for anything else.")
    async def node(
        self, info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The `id` of a `Node`.")],
    ) -> Node | None:
        prefix = str(id).split("-", 1)[0]
        me = info.context.me
        try:
            if prefix == "img":
                return image_of(await info.context.services.images.get(me, str(id)), me)
            if prefix == "job":
                return Job.of(await info.context.services.jobs.get(me, str(id)))
            if prefix == "acc" and (me.is_admin or str(id) == me.account_id):
                from app.api.accounts import Account

                return Account.of(await info.context.services.accounts.get(str(id)))
            if prefix == "tok":  # the caller's own tokens only, as viewer.apiTokens lists them
                from app.api.accounts import ApiToken

                token = next((t for t in await info.context.services.accounts.tokens(me) if t.id == str(id)), None)
                return ApiToken.of(token) if token is not None else None
            if prefix == "key":
                return KmsKey.of(await info.context.services.kms.get_key(me, str(id)))
            if prefix == "srv":
                return Server.of(await info.context.services.compute.get_server(me, str(id)))
            if prefix == "vol":
                return Volume.of(await info.context.services.compute.get_volume(me, str(id)))
            if prefix == "bak":
                backup = (await info.context.services.compute.get_backups(me, [str(id)])).get(str(id))
                return Backup.of(backup) if backup is not None else None
        except NotFound:
            return None
        return None


@strawberry.type(
    description="Every read. All but `health` need an API token: `Authorization: Bearer <token>`.")
class Query(CoreQueries, AccountQueries, ImageQueries, StorageQueries, KmsQueries, JobQueries, ComputeQueries,
            BackupQueries, VolumeQueries):
    pass


@strawberry.type(
    description="Every change. A mutation takes one `input` and answers a payload union: its "
                "success type, or the `UserError` type of an expected failure, with a stable "
                "`code`.")
class Mutation(AccountMutations, ImageMutations, StorageMutations, KmsMutations, ImportMutations, SharingMutations, ComputeMutations, ReplicationMutations,
               ExportMutations, BackupMutations, VolumeMutations):
    pass


def _is_expected(error: GraphQLError) -> bool:
    """Errors a client caused (validation, limits, auth, an operation type the transport does
    not carry, variables that do not fit their types, the service's expected failures) are
    shown; the rest are masked. A variable's value outside its enum is reported by
    graphql-core as an error wrapping its own GraphQLError."""
    original = error.original_error
    return original is None or isinstance(
        original, (Unauthenticated, QueryError, ImsError, InvalidOperationTypeError, CannotGetOperationTypeError,
                   GraphQLError))


class SharedReads(SchemaExtension):
    """Query operations read through one shared read session (closed when they end);
    mutations and subscriptions keep a unit of work per read, so they see each commit."""

    async def on_execute(self) -> AsyncIterator[None]:
        ctx = self.execution_context.context
        if self.execution_context.operation_type is not OperationType.QUERY or getattr(ctx, "caller", None) is None:
            yield
            return
        ctx.reader = SharedReader(ctx.services.db, ctx.caller.account_id)
        try:
            yield
        finally:
            reader, ctx.reader = ctx.reader, None
            await reader.close()


#: What a client is told when an object store did not answer (or the data directory is
#: read-only) under a field: asking again later may work.
UNAVAILABLE_MESSAGE = "The object store could not be reached or written. Try again later."
#: What a client is told when the service's storage was full under a field (a conversion, a
#: copy of a disk): nothing was made, and asking again later may work.
FULL_MESSAGE = "The service's storage is full; nothing was made. Try again later."


class ClientErrors(MaskErrors):
    """An expected failure (the service's error tree) raised by any query field reaches the
    client as a `QueryError`, with its code; an object store that did not answer is shown as
    STORAGE_UNAVAILABLE, a full disk as INSUFFICIENT_STORAGE (both still logged with their
    traceback: an operator must look); every other exception is masked."""

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        return [self._shown(err) if isinstance(err.original_error, ImsError) else
                self._unavailable(err, UNAVAILABLE_MESSAGE, "STORAGE_UNAVAILABLE")
                if err.original_error is not None and storage_unavailable(err.original_error) else
                self._unavailable(err, FULL_MESSAGE, "INSUFFICIENT_STORAGE")
                if err.original_error is not None and out_of_space(err.original_error)
                else self.anonymise_error(err) if self.should_mask_error(err) else err for err in errors]

    @staticmethod
    def _unavailable(err: GraphQLError, message: str, code: str) -> GraphQLError:
        return GraphQLError(message, nodes=err.nodes, source=err.source, positions=err.positions,
                            path=err.path, extensions={"code": code, "classification": "UnavailableError"})

    @staticmethod
    def _shown(err: GraphQLError) -> GraphQLError:
        assert isinstance(err.original_error, ImsError)
        shown = QueryError(err.original_error)
        return GraphQLError(shown.message, nodes=err.nodes, source=err.source, positions=err.positions,
                            path=err.path, extensions=shown.extensions)


def _refused(context: Any, query: str | None, variables: dict[str, Any] | None,
             operation_name: str | None) -> GraphQLError | None:
    """The INVALID_CHARACTER error of an operation whose text the service refuses (app.api.
    characters); an HTTP request is then answered 400."""
    error = character_error(query, variables, operation_name, MAX_TOKENS)
    response = getattr(context, "response", None)
    if error is not None and isinstance(response, Response):
        response.status_code = 400
    return error


async def _only(result: PreExecutionError) -> StreamResult:
    yield result


class LoggingSchema(strawberry.Schema):
    """Every operation enters by `execute` (HTTP) or `stream` (the websocket): both refuse
    text no field may hold before parsing, and errors the client did not cause are logged."""

    async def execute(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        if (error := _refused(context_value, query, variable_values, operation_name)) is not None:
            return ExecutionResult(data=None, errors=[error])
        # Subscriptions go over the websocket: executed here (a POST) one resolved to a
        # generator where a value goes, an internal error. Refused as the transport's.
        allowed = [t for t in (allowed_operation_types or (OperationType.QUERY, OperationType.MUTATION))
                   if t is not OperationType.SUBSCRIPTION]
        return await super().execute(query, variable_values, context_value, root_value, operation_name,
                                     allowed, operation_extensions)

    async def stream(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        operation_extensions: dict[str, Any] | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
    ) -> StreamResult:
        """Operations of the websocket, the one transport that streams here: subscriptions
        only. Queries and mutations go over HTTP, where the edge's checks, the request id and
        a 401 per request apply (over the websocket they get "queries/mutations are not
        allowed", and nothing runs)."""
        if (error := _refused(context_value, query, variable_values, operation_name)) is not None:
            return _only(PreExecutionError(data=None, errors=[error]))
        if isinstance(query, str):
            # The parser cache raises a syntax error out of the stream instead of answering
            # it (logged as a failure, the client told only `complete`): parsed here first,
            # a document that does not parse is answered like any refused operation.
            try:
                parse(query, max_tokens=MAX_TOKENS)
            except GraphQLError as syntax:
                return _only(PreExecutionError(data=None, errors=[syntax]))
        allowed = [t for t in (allowed_operation_types or (OperationType.SUBSCRIPTION,))
                   if t is OperationType.SUBSCRIPTION]
        return await super().stream(query, variable_values, context_value, root_value, operation_name,
                                    operation_extensions, allowed_operation_types=allowed)

    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        request_id = "-"
        if execution_context is not None and execution_context.context is not None:
            request_id = getattr(execution_context.context, "request_id", "-")
        for error in errors:
            if not _is_expected(error):
                log.error("request %s: unexpected error in %s", request_id, error.path,
                          exc_info=error.original_error)


def build_schema(extra_extensions: tuple[type, ...] = ()) -> strawberry.Schema:
    """Build the schema. The limiter rules are built here once and every request's extension
    reuses the same rule classes: the validation cache is keyed by them, so it hits across
    requests (rules built per request would make every lookup a miss)."""
    rules = [
        *QueryDepthLimiter(max_depth=MAX_DEPTH).validation_rules,
        *MaxAliasesLimiter(max_alias_count=MAX_ALIASES).validation_rules,
    ]
    extensions: list[Any] = [
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
        lambda: ParserCache(maxsize=CACHE_SIZE),
        lambda: AddValidationRules(rules),
        lambda: ValidationCache(maxsize=CACHE_SIZE),
        SharedReads,
        lambda: ClientErrors(should_mask_error=lambda err: not _is_expected(err), error_message="Internal server error"),
        *extra_extensions,
    ]
    return LoggingSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[PublicImage, PrivateImage, SharedImage, ImageBase, *ERROR_TYPES],
        extensions=extensions,
        config=StrawberryConfig(scalar_map=SCALAR_MAP),
    )


def export_sdl(schema: strawberry.Schema | None = None) -> str:
    schema = schema or build_schema()
    return print_schema(lexicographic_sort_schema(schema._schema)) + "\n"
