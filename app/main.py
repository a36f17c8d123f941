"""`create_app(settings)`: the Starlette application, wired by `app.bootstrap`."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import orjson
from cross_web import StarletteRequestAdapter
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.unset import UNSET, UnsetType

from app import __version__
from app.api.context import Context
from app.api.schema import build_schema
from app.bootstrap import Runtime
from app.config import Settings
from app.http import EdgeMiddleware
from app.logs import quiet_parameter_loggers, redact_url_signatures
from app.metrics import CONTENT_TYPE, Metrics, operation_names
from app.runtime import freeze_startup_objects
from app.storage.filesystem import FilesystemObjectStore
from app.storage.http import object_routes
from app.web.graphiql import graphiql_page, graphiql_routes
from app.websocket import AuthenticatedTransportWS, socket_caller


class _RequestAdapter(StarletteRequestAdapter):
    @property
    def content_type(self) -> str | None:
        """The Content-Type with its media type in lowercase: media types are case-insensitive
        (RFC 9110 §8.3.1), and Strawberry compares them as written (`Application/JSON` was a 400)."""
        value = super().content_type
        if value is None:
            return None
        media_type, sep, parameters = value.partition(";")
        return media_type.lower() + sep + parameters


class GraphQLApp(GraphQL[Context, None]):
    """GraphQL over HTTP (authenticated by EdgeMiddleware) and over graphql-transport-ws,
    authenticated from the `connection_init` payload `{"authorization": "Bearer <token>"}`
    here and before every operation and result (app.websocket)."""

    graphql_transport_ws_handler_class = AuthenticatedTransportWS
    request_adapter_class = _RequestAdapter

    def __init__(self, runtime: Runtime, metrics: Metrics) -> None:
        schema = build_schema((metrics.extension(),))
        metrics.operations = operation_names(schema)
        super().__init__(
            schema, graphql_ide="graphiql", allow_queries_via_get=True,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        )
        self.runtime = runtime

    def decode_json(self, data: str | bytes) -> object:
        """Any body Python's JSON parser cannot take (bytes that are not UTF-8, an integer over
        4,300 digits, nesting past its depth) is malformed JSON, answered 400 as such instead of
        an internal error."""
        try:
            return super().decode_json(data)
        except json.JSONDecodeError:
            raise
        except (ValueError, RecursionError) as exc:
            raise json.JSONDecodeError(f"not JSON the server can read ({type(exc).__name__})", "", 0) from None

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """Authenticate the websocket; a missing or bad token closes it with 4403 Forbidden."""
        caller = await socket_caller(context)
        if caller is None:
            raise ConnectionRejectionError({"message": "authentication required"})
        context.caller = caller
        unset: UnsetType = UNSET
        return unset

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        state = request.scope.get("state", {})
        return Context(
            services=self.runtime.services,
            caller=state.get("caller"),
            request_id=state.get("request_id", "-"),
            request=request,
            response=response,
        )

    def encode_json(self, data: object) -> str | bytes:
        """Responses by orjson: a page of 50 images with tags and members is ~40 KB of JSON,
        which the standard library takes a few ms to write."""
        try:
            # Text, not bytes: the websocket transport sends what it gets (bytes would go out
            # as binary frames, which graphql-transport-ws clients do not read).
            return orjson.dumps(data).decode()
        except (TypeError, orjson.JSONEncodeError):  # e.g. an integer beyond 64 bits
            return super().encode_json(data)

    async def render_graphql_ide(self, request: Request) -> Response:
        return graphiql_page("/graphql")


#: Uploads through signed URLs: the largest importable file plus headroom.
MAX_UPLOAD_BYTES = 130 * 1024**3


class LazyObjectRoutes:
    """The signed-URL object routes; the store exists only once the lifespan started."""

    def __init__(self, runtime: Runtime, on_put: Any) -> None:
        self.runtime = runtime
        self.on_put = on_put
        self._router: Router | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._router is None:
            # The URLs this server signs are those of the filesystem store (S3 regions get
            # presigned URLs of their own endpoint), whichever regions use it: the default
            # region may well be on S3 while others are not.
            stores = [s for s in self.runtime.stores.values() if isinstance(s, FilesystemObjectStore)]
            routes = object_routes(stores[0], self.runtime.signer, MAX_UPLOAD_BYTES, self.on_put) if stores else []
            self._router = Router(routes=routes)
        await self._router(scope, receive, send)


def create_app(settings: Settings) -> Starlette:
    quiet_parameter_loggers()
    redact_url_signatures()
    runtime = Runtime(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        if getattr(_app.state, "freeze_after_start", False):  # set by `ims serve` (a process of its own)
            freeze_startup_objects()
        try:
            yield
        finally:
            await runtime.stop()

    async def health(_request: Request) -> JSONResponse:
        ok = await runtime.services.ping()
        return JSONResponse({"ok": ok, "version": __version__}, status_code=200 if ok else 503)

    metrics = Metrics()
    runtime.metrics = metrics
    graphql_app = GraphQLApp(runtime, metrics)

    async def metrics_endpoint(_request: Request) -> Response:
        return Response(await metrics.render(runtime.services), media_type=CONTENT_TYPE)

    async def on_put(bucket: str, key: str, info: Any) -> None:
        await runtime.services.storage.record_checksum(bucket, key, info)

    objects_app = LazyObjectRoutes(runtime, on_put)
    routes: list[Any] = [
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/graphql", graphql_app, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql_app),
        *graphiql_routes(endpoint="/graphql"),
        # /objects/{bucket}/{key} signed URLs. A Route (its router checks the methods), not a
        # Mount at "/": that matched every path, so a method another route does not take was a 404.
        Route("/objects/{path:path}", objects_app),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.runtime = runtime

    async def authenticate(token: str) -> Any:
        return await runtime.services.accounts.authenticate(token)

    app.add_middleware(EdgeMiddleware, authenticate=authenticate)
    if settings.cors_origins:
        # Outermost: it answers preflights before the edge asks for a token, and marks every
        # answer, a 401 or a 413 of the edge included, for the page to read. Bearer tokens,
        # no cookies: credentials are never allowed. PUT and the range and validator headers
        # are the signed /objects/ URLs': big files go there, not through GraphQL.
        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST", "PUT"],
            allow_headers=["Authorization", "Content-Type", "X-Request-Id", "Range", "If-Range", "If-Match",
                           "If-None-Match"],
            expose_headers=["X-Request-Id", "ETag", "Content-Range", "Accept-Ranges", "Retry-After"],
            allow_credentials=False, max_age=600,
        )
    return app
