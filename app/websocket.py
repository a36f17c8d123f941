"""GraphQL over the websocket (graphql-transport-ws), authenticated for as long as it is open.

The `connection_init` payload carries the token (`{"authorization": "Bearer <token>"}`). It is
checked at `connection_init`, again before every operation the socket starts and again before
every result an operation sends: a token revoked, expired or whose account is gone while the
socket is open closes it with 4403 Forbidden, as a bad token at `connection_init` does, and
nothing more runs or goes out on it.
"""

from __future__ import annotations

from collections.abc import Mapping

from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import Message, SubscribeMessage

from app.api.context import Context
from app.domain.images import Caller

#: graphql-transport-ws's close code for a connection whose authentication is refused.
FORBIDDEN = 4403


def bearer_token(params: Mapping[str, object]) -> str:
    auth = params.get("authorization")
    return auth[7:].strip() if isinstance(auth, str) and auth[:7].lower() == "bearer " else ""


async def socket_caller(context: Context) -> Caller | None:
    """The caller the socket's token stands for now, None when it is missing or not valid."""
    token = bearer_token(context.connection_params)
    return await context.services.accounts.authenticate(token) if token else None


class AuthenticatedTransportWS(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws whose token is checked before each operation and each result."""

    forbidden = False

    async def handle_message(self, message: Message) -> None:
        # A message must be an object, and a subscribe message's payload an object with the
        # document as a string: anything else is the protocol's invalid message (4400), not a
        # failure of the server (the base class indexed into it and raised TypeError).
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self.handle_invalid_message("Failed to parse message")
            return
        # An operation's id is a string: one of another JSON type ([] or {}: unhashable) made
        # the base class raise TypeError, an internal error and an abrupt close.
        if message["type"] in ("subscribe", "complete") and not isinstance(message.get("id"), str):
            await self.handle_invalid_message("Invalid message id")
            return
        if message["type"] == "subscribe":
            payload = message.get("payload")
            if (not isinstance(payload, dict) or not isinstance(payload.get("query"), str)
                    or not isinstance(payload.get("variables") or {}, dict)
                    or not isinstance(payload.get("operationName") or "", str)):
                await self.handle_invalid_message("Invalid subscribe message payload")
                return
        await super().handle_message(message)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        # Before acknowledgement the base class closes with 4401 Unauthorized.
        if self.connection_acknowledged and not await self._still_authenticated():
            return
        await super().handle_subscribe(message)

    async def send_message(self, message: Message) -> None:
        if self.forbidden:
            return  # the socket is closed: operations still winding down send nothing
        # A subscription's next result is the operation waking up: what it carries is only
        # for a caller still authenticated.
        if message["type"] == "next" and not await self._still_authenticated():
            return
        await super().send_message(message)

    async def _still_authenticated(self) -> bool:
        caller = None if self.forbidden else await socket_caller(self.context)
        if self.forbidden:
            return False
        if caller is None:
            self.forbidden = True
            await self.websocket.close(code=FORBIDDEN, reason="Forbidden")
            return False
        self.context.caller = caller  # e.g. an account's role changed: later operations see it
        return True
