"""Pure ASGI middleware (no per-request task or body buffering, unlike ``BaseHTTPMiddleware``).

- :class:`BodyLimit`: refuses a body over the node's limit with 413, by ``Content-Length``
  up front and by counting a chunked body as it streams in.
- :class:`Authenticate`: every ``/fhir`` request but ``/fhir/metadata`` carries a bearer
  token of this node; the principal is put in a ``contextvar`` for the request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from phip.api.context import current_principal
from phip.fhir.errors import Issue, outcome
from phip.security.tokens import TokenError, TokenService

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC = frozenset({"/fhir/metadata"})


async def send_outcome(send: Send, status: int, issue: Issue, headers: dict[str, str] | None = None) -> None:
    body = orjson.dumps(outcome([issue]))
    raw = [(b"content-type", b"application/fhir+json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    def _issue(self) -> Issue:
        return Issue("error", "too-costly", f"The request body is over this node's limit of {self.max_body} bytes",
                     None, "PHIP-1413")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for k, v in scope.get("headers", ()):
            if k == b"content-length" and v.isdigit() and int(v) > self.max_body:
                await send_outcome(send, 413, self._issue())
                return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counted, tracking_send)
        except BodyTooLarge:
            if not started:
                await send_outcome(send, 413, self._issue())


class Authenticate:
    def __init__(self, app: ASGIApp, tokens: TokenService) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/fhir") or path in PUBLIC:
            await self.app(scope, receive, send)
            return
        auth = b""
        for k, v in scope.get("headers", ()):
            if k == b"authorization":
                auth = v
                break
        scheme, _, token = auth.decode("latin-1").partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="phip"'}
        if scheme.lower() != "bearer" or not token.strip():
            await send_outcome(send, 401, Issue("error", "login", "This request needs an Authorization: Bearer token",
                                                None, "PHIP-1401"), challenge)
            return
        try:
            principal = self.tokens.verify(token.strip())
        except TokenError as e:
            await send_outcome(send, 401, Issue("error", "login", f"Authentication failed: {e}", None, "PHIP-1401"),
                               challenge)
            return
        reset = current_principal.set(principal)
        try:
            await self.app(scope, receive, send)
        finally:
            current_principal.reset(reset)
