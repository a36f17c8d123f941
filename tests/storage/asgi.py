"""Calling an ASGI app with an exact request: HTTP clients normalise `..` segments away
and always send a well-formed Content-Length, which some tests must not."""

from __future__ import annotations

from starlette.types import ASGIApp, Message


async def raw_asgi(
    app: ASGIApp,
    method: str,
    path: str,
    query: str = "",
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """Send one request to `app` and return the response's status and body."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    raw_headers = [(b"host", b"testserver")] + [
        (name.lower().encode(), value.encode()) for name, value in (headers or {}).items()
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": raw_headers,
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    status: int = sent[0]["status"]
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
