"""A small graphql-transport-ws client for the API tests, over a real websocket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

PROTOCOL = Subprotocol("graphql-transport-ws")
#: How long a test waits for the server before it fails (a guard against hanging, not a
#: figure any test checks).
PATIENCE = 30.0


@dataclass
class Socket:
    """One open graphql-transport-ws connection, acknowledged."""

    conn: ClientConnection
    #: The close code the server sent, once it closed the socket.
    close_code: int | None = None

    async def subscribe(self, op_id: str, query: str, variables: dict[str, Any] | None = None) -> None:
        await self.send_text(json.dumps({"id": op_id, "type": "subscribe",
                                         "payload": {"query": query, "variables": variables or {}}}))

    async def send_text(self, text: str) -> None:
        await self.conn.send(text)

    async def recv(self) -> dict[str, Any] | None:
        """The next message, or None once the server closed the socket (see `close_code`)."""
        try:
            async with asyncio.timeout(PATIENCE):
                data = await self.conn.recv()
        except ConnectionClosed as closed:
            self.close_code = closed.rcvd.code if closed.rcvd is not None else None
            return None
        message: dict[str, Any] = json.loads(data)
        return message

    async def until_done(self, op_id: str) -> list[dict[str, Any]]:
        """The messages of `op_id` up to its `complete` or `error` (fails if the socket closes)."""
        messages = []
        while True:
            message = await self.recv()
            assert message is not None, f"socket closed with {self.close_code} before {op_id} ended"
            if message.get("id") == op_id:
                messages.append(message)
                if message["type"] in ("complete", "error"):
                    return messages


def ws_url(base: str) -> str:
    return base.replace("http", "ws", 1) + "/graphql"


@asynccontextmanager
async def socket(base: str, token: str) -> AsyncIterator[Socket]:
    """A connection to the server at `base` (http://…), authenticated with `token`."""
    async with asyncio.timeout(PATIENCE):
        conn = await connect(ws_url(base), subprotocols=[PROTOCOL], max_size=None)
    async with conn:
        ws = Socket(conn)
        await conn.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}))
        assert await ws.recv() == {"type": "connection_ack"}
        yield ws
