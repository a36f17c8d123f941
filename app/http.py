"""The HTTP edge: request ids, the body limit, and bearer-token authentication.

A pure ASGI middleware in front of `/graphql`: it buffers the (≤ 1 MiB) body once,
refuses a query string that repeats a GraphQL parameter, authenticates the bearer token,
and answers 401 to anything but a `health`-only operation when the token is missing or
bad. The caller goes down in `scope["state"]`.
"""

from __future__ import annotations

import contextvars
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from graphql import FieldNode, GraphQLError, OperationDefinitionNode, parse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.domain.images import Caller
from app.storage.http import decimal_over

MAX_BODY_BYTES = 1024 * 1024
#: Top-level fields an anonymous request may ask for.
ANONYMOUS_FIELDS = frozenset({"health", "__typename"})
#: The GraphQL-over-HTTP parameters of a query string.
REQUEST_PARAMETERS = frozenset({"query", "variables", "operationName", "extensions"})

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")

Authenticate = Callable[[str], Awaitable[Caller | None]]


def anonymous_allowed(query: Any) -> bool:
    """True when every operation of the document selects only `health`/`__typename`."""
    if not isinstance(query, str) or len(query) > MAX_BODY_BYTES:
        return False
    try:
        document = parse(query, max_tokens=200)
    except GraphQLError:
        return False
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if not operations or len(operations) != len(document.definitions):
        return False  # fragments could hide other fields; anonymous callers get none
    for op in operations:
        if op.operation.value != "query":
            return False
        for sel in op.selection_set.selections:
            if not isinstance(sel, FieldNode) or sel.name.value not in ANONYMOUS_FIELDS:
                return False
    return True


async def _send_json(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    data = json.dumps(body).encode()
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": data})


def _query_parameters(scope: Scope) -> list[tuple[str, str]]:
    """The query string as Starlette's `request.query_params` (and so Strawberry) reads it."""
    return parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)


def _json_scalar(headers: dict[str, str], body: bytes) -> bool:
    """Whether a JSON request's body is JSON but neither an object nor a list (a batch, which
    Strawberry refuses with its own 400); bodies that are not JSON are left to Strawberry."""
    if "json" not in headers.get("content-type", "application/json").lower():
        return False
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
        return False
    return not isinstance(data, (dict, list))


def _within_body_limit(declared: str) -> bool:
    """Whether a Content-Length is a number of at most MAX_BODY_BYTES; compared as digits, so
    that one of any length is (int() refuses strings over 4300 digits)."""
    return declared.isascii() and declared.isdigit() and not decimal_over(declared, MAX_BODY_BYTES)


def _repeated_parameter(scope: Scope) -> str | None:
    """The first GraphQL parameter the query string names twice. Strawberry runs the last
    `query` of a query string: with two, the one checked here must not be another one."""
    seen: set[str] = set()
    for name, _ in _query_parameters(scope):
        if name in REQUEST_PARAMETERS:
            if name in seen:
                return name
            seen.add(name)
    return None


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, authenticate: Authenticate, protected_prefix: str = "/graphql") -> None:
        self.app = app
        self.authenticate = authenticate
        self.protected_prefix = protected_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        incoming = headers.get("x-request-id", "")
        request_id = incoming if _REQUEST_ID_RE.fullmatch(incoming) else secrets.token_hex(8)
        request_id_var.set(request_id)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        rid_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), rid_header]}
            await send(message)

        if scope["type"] == "websocket" or not scope["path"].startswith(self.protected_prefix):
            await self.app(scope, receive, send_with_id if scope["type"] == "http" else send)
            return

        repeated = _repeated_parameter(scope)
        if repeated is not None:
            await _send_json(send, 400, {"errors": [{"message": f"query string parameter '{repeated}' given more than once"}]},
                             [rid_header])
            return

        declared = headers.get("content-length")
        if declared is not None and not _within_body_limit(declared):
            await _send_json(send, 413, {"errors": [{"message": "request body over 1 MiB"}]}, [rid_header])
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_BODY_BYTES:
                await _send_json(send, 413, {"errors": [{"message": "request body over 1 MiB"}]}, [rid_header])
                return

        if scope["method"] == "POST" and _json_scalar(headers, bytes(body)):
            # A JSON string or number where a request object goes: Strawberry's parser took it
            # for an object and failed with an internal error.
            await _send_json(send, 400, {"errors": [{"message": "the request body must be a JSON object"}]},
                             [rid_header])
            return

        caller = None
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            caller = await self.authenticate(auth[7:].strip())
        state["caller"] = caller
        if caller is None and not self._anonymous_ok(scope, headers, bytes(body)):
            await _send_json(
                send, 401, {"errors": [{"message": "authentication required: Authorization: Bearer <token>"}]},
                [rid_header, (b"www-authenticate", b'Bearer realm="ims"')],
            )
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send_with_id)

    @staticmethod
    def _anonymous_ok(scope: Scope, headers: dict[str, str], body: bytes) -> bool:
        if scope["method"] in ("GET", "HEAD"):
            query = dict(_query_parameters(scope)).get("query")  # at most one: repeats are refused
            if query is None and "text/html" in headers.get("accept", ""):
                # The GraphiQL page itself; its requests carry the token. With a `query`
                # the request is executed, so the Accept header must not let it skip auth.
                return True
            return anonymous_allowed(query)
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return False
        return isinstance(data, dict) and anonymous_allowed(data.get("query"))
