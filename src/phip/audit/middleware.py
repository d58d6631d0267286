"""ASGI middleware that gives each HTTP request its audit context and records what the hooks cannot:
failed authentication (401), denied or failed requests that touched no record, logins, operations
such as ``$export``; and it releases the writes of the request with their real outcome."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from phip.audit.events import Pending
from phip.audit.service import AuditService, RequestAudit, principal_fields, request_audit
from phip.fhir.datetimes import now_us

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_OP = re.compile(r"/(\$[A-Za-z\-]+)")
_PATIENT = re.compile(r"^/fhir/Patient/([A-Za-z0-9\-.]{1,64})(?:/|$)")
_QUIET = ("/fhir/metadata", "/healthz", "/docs", "/openapi.json", "/redoc")


class AuditMiddleware:
    def __init__(self, app: ASGIApp, node: Any) -> None:
        self.app = app
        self.svc: AuditService = node.ext["audit"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(_QUIET):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        m = _OP.search(path)
        ctx = RequestAudit(scope["method"], path, scope.get("query_string", b"").decode("latin-1"),
                           client[0] if client else None, m.group(1) if m else None)
        token = request_audit.set(ctx)
        status = 500

        async def audited_send(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = int(msg["status"])
                self._finish(ctx, status)
            await send(msg)

        try:
            await self.app(scope, receive, audited_send)
        except Exception:
            if ctx.writes or not ctx.recorded:
                self._finish(ctx, 500)
            raise
        finally:
            request_audit.reset(token)

    def _finish(self, ctx: RequestAudit, status: int) -> None:
        from phip.api.context import current_principal

        outcome = 0 if status < 400 else (4 if status < 500 else 8)
        for p in ctx.writes:
            if outcome:
                p.outcome = outcome
                p.detail = f"HTTP {status}" + (": not committed" if p.kind in ("create", "update", "patch", "delete",
                                                                               "merge") else "")
            self.svc.record(p)
            ctx.recorded += 1
        ctx.writes = []
        if ctx.recorded:
            return
        last = ctx.path.rstrip("/").rsplit("/", 1)[-1]
        pm = _PATIENT.match(ctx.path)
        patient = pm.group(1) if pm and not pm.group(1).startswith("$") else None
        pf = principal_fields(current_principal.get())
        if status == 401:
            kind = "auth-failure"
        elif last == "token" and ctx.method == "POST":
            kind = "login" if status < 400 else "auth-failure"
        elif ctx.operation == "$export":
            kind = "export"
        elif not ctx.path.startswith("/fhir"):
            return  # pages and the statistics API hold no personal data
        elif not outcome and patient is None:
            return  # a success that touched no personal data (a search with no patient in it…)
        elif ctx.operation:
            kind = "operation"
        else:
            kind = {"GET": "read" if patient else "search-type"}.get(ctx.method) or \
                {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(ctx.method, "read")
        query = f"{ctx.path}?{ctx.query}" if ctx.query else ctx.path
        ctx.recorded += 1
        self.svc.record(Pending(now_us(), kind, outcome, patient, None, query, source=ctx.source,
                                detail=f"HTTP {status}" if outcome else None, **pf))
