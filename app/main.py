"""`create_app(settings)`: the Starlette application, wired by `app.bootstrap`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from app import __version__
from app.api.context import Context
from app.api.schema import build_schema
from app.bootstrap import Runtime
from app.config import Settings
from app.http import EdgeMiddleware
from app.web.graphiql import graphiql_page, graphiql_routes


class GraphQLApp(GraphQL[Context, None]):
    def __init__(self, runtime: Runtime) -> None:
        super().__init__(build_schema(), graphql_ide="graphiql", allow_queries_via_get=True)
        self.runtime = runtime

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:  # type: ignore[override]
        state = request.scope.get("state", {})
        return Context(
            services=self.runtime.services,
            caller=state.get("caller"),
            request_id=state.get("request_id", "-"),
            request=request,
            response=response,
        )

    async def render_graphql_ide(self, request: Request) -> Response:
        return graphiql_page("/graphql")


def create_app(settings: Settings) -> Starlette:
    runtime = Runtime(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    async def health(_request: Request) -> JSONResponse:
        ok = await runtime.services.ping()
        return JSONResponse({"ok": ok, "version": __version__}, status_code=200 if ok else 503)

    graphql_app = GraphQLApp(runtime)
    routes: list[Any] = [
        Route("/health", health, methods=["GET"]),
        Route("/graphql", graphql_app, methods=["GET", "POST"]),
        *graphiql_routes(endpoint="/graphql"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.runtime = runtime

    async def authenticate(token: str) -> Any:
        return await runtime.services.accounts.authenticate(token)

    app.add_middleware(EdgeMiddleware, authenticate=authenticate)
    return app
