"""The HTTP application: FastAPI, with the middleware order declared here, in one file.

Order (outermost first): request-size limit → error translation (every error is an
OperationOutcome, never a bare 500) → authentication for ``/fhir`` (all but
``/fhir/metadata``) → routes.  ``/healthz`` and ``/docs`` need no token.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from phip import __version__
from phip.api.context import current_principal
from phip.fhir.errors import FhirError, Issue, outcome
from phip.node.node import Node
from phip.security.tokens import TokenError

log = logging.getLogger("phip.api")
FHIR_JSON = "application/fhir+json"
PUBLIC = ("/fhir/metadata",)


def oo_response(status: int, issues: list[Issue], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(outcome(issues)), status_code=status, media_type=FHIR_JSON, headers=headers)


class LimitsAndErrors(BaseHTTPMiddleware):
    """Body-size limit and the last line of defence: no stack trace ever reaches a client."""

    def __init__(self, app: Any, max_body: int) -> None:
        super().__init__(app)
        self.max_body = max_body

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return oo_response(413, [Issue("error", "too-costly",
                                           f"The request body is over this node's limit of {self.max_body} bytes",
                                           None, "PHIP-1413")])
        try:
            return await call_next(request)
        except FhirError as e:
            return oo_response(e.status, e.issues, e.headers)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            return oo_response(500, [Issue("error", "exception", "Internal server error", None, "PHIP-1500")])


class Authenticate(BaseHTTPMiddleware):
    """Every ``/fhir`` request carries a bearer token of this node (``/fhir/metadata`` excepted)."""

    def __init__(self, app: Any, node: Node) -> None:
        super().__init__(app)
        self.node = node

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        path = request.url.path
        if not path.startswith("/fhir") or path in PUBLIC:
            return await call_next(request)
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="phip"'}
        if scheme.lower() != "bearer" or not token.strip():
            return oo_response(401, [Issue("error", "login", "This request needs an Authorization: Bearer token",
                                           None, "PHIP-1401")], challenge)
        try:
            principal = self.node.tokens.verify(token.strip())
        except TokenError as e:
            return oo_response(401, [Issue("error", "login", f"Authentication failed: {e}", None, "PHIP-1401")],
                               challenge)
        reset = current_principal.set(principal)
        try:
            return await call_next(request)
        finally:
            current_principal.reset(reset)


def create_app(node: Node) -> FastAPI:
    from phip.api import fhir

    app = FastAPI(
        title="phip",
        version=__version__,
        description="Regional population health information platform: FHIR R4 API of one node "
        f"({node.config.name}, {node.config.level}, region {node.config.region}).",
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.node = node

    @app.exception_handler(FhirError)
    async def _fhir_error(_request: Request, exc: FhirError) -> Response:
        return oo_response(exc.status, exc.issues, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _bad_params(_request: Request, exc: RequestValidationError) -> Response:
        issues = [
            Issue("error", "invalid", f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}",
                  str(e.get("loc", ("",))[-1]), "PHIP-1105")
            for e in exc.errors()
        ]
        return oo_response(400, issues)

    @app.get("/healthz", tags=["node"], summary="Liveness and database check (no authentication)")
    def healthz() -> dict[str, Any]:
        import sqlalchemy as sa

        with node.store.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return {"status": "ok", "node": node.config.name, "level": node.config.level,
                "region": node.config.region, "version": __version__}

    app.include_router(fhir.router)
    # added last = outermost
    app.add_middleware(Authenticate, node=node)
    app.add_middleware(LimitsAndErrors, max_body=node.config.max_body_bytes)
    return app
