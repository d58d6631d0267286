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
from phip.security.tokens import TokenError, TokenService, with_request

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


def flat_routes(routes: list[Any]) -> list[Any]:
    """Every leaf route with its full path (FastAPI ≥ 0.120 keeps included routers as nodes of
    ``app.routes``; older versions already list the leaves)."""
    try:
        from fastapi.routing import _iter_routes_with_context
    except ImportError:  # pragma: no cover - older FastAPI
        return list(routes)
    out = []
    for route, ctx in _iter_routes_with_context(routes):
        sr = ctx.starlette_route if ctx is not None else None
        out.append(sr if sr is not None and getattr(route, "path", None) is None else route)
    return out


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
    """Every path but the ``public`` ones needs a bearer token of this node (or of a trusted
    issuer); a break-glass header (``X-Break-Glass: reason``, purpose of use ETREAT) and the
    caller's address are added to the principal of the request."""

    def __init__(self, app: ASGIApp, tokens: TokenService, public: frozenset[str] = PUBLIC,
                 hooks: Any = None) -> None:
        self.app = app
        self.tokens = tokens
        self.public = public
        self.hooks = hooks

    def _failed(self, scope: Scope, reason: str) -> None:
        if self.hooks is not None:
            from phip.core.hooks import AuthEvent, Point

            client = scope.get("client")
            self.hooks.fire(Point.AUTHENTICATE, AuthEvent("failure", "bearer", None, None, None,
                                                          client[0] if client else None, reason))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path in self.public:
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
            self._failed(scope, "no bearer token")
            await send_outcome(send, 401, Issue("error", "login", "This request needs an Authorization: Bearer token",
                                                None, "PHIP-1401"), challenge)
            return
        try:
            principal = self.tokens.verify(token.strip())
        except TokenError as e:
            self._failed(scope, str(e))
            await send_outcome(send, 401, Issue("error", "login", f"Authentication failed: {e}", None, "PHIP-1401"),
                               challenge)
            return
        principal = with_request(principal, scope)
        reset = current_principal.set(principal)
        try:
            await self.app(scope, receive, send)
        finally:
            current_principal.reset(reset)


class ReadFastPath:
    """``GET /fhir/{Type}/{id}`` without parameters, answered without the router or a thread hop.

    The read by id is the hottest request a node serves (document retrieval, other nodes'
    look-ups). It is answered here, after authentication, with the same repository call,
    headers and errors as the routed ``read`` (``phip.api.fhir.read``); everything else, and
    reads with ``_summary``/``_elements`` or ``If-None-Match``, goes on to the router.
    """

    def __init__(self, app: ASGIApp, store: Any, exclude: frozenset[str] = frozenset()) -> None:
        import re

        from phip.fhir import definitions as defs

        self.app = app
        self.store = store
        # types a capability serves itself (AuditEvent: from the audit chain) go to its routes
        self.types = frozenset(defs.resource_types()) - exclude
        self.path_re = re.compile(r"^/fhir/([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})$")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("query_string"):
            await self.app(scope, receive, send)
            return
        m = self.path_re.match(scope["path"])
        if m is None or m.group(1) not in self.types or any(k == b"if-none-match" for k, _ in scope["headers"]):
            await self.app(scope, receive, send)
            return
        from email.utils import formatdate

        from phip.fhir.errors import FhirError

        try:
            row = self.store.repository().read(m.group(1), m.group(2))
        except FhirError as e:
            await send_outcome(send, e.status, e.issues[0], e.headers)
            return
        body = row.content or b""
        headers = [
            (b"content-type", b"application/fhir+json"),
            (b"content-length", str(len(body)).encode()),
            (b"etag", row.etag.encode()),
            (b"last-modified", formatdate(row.last_updated / 1_000_000, usegmt=True).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
