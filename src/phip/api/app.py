"""The HTTP application: FastAPI, with the middleware order declared here, in one file.

Order (outermost first): Starlette's error middleware (any unhandled exception becomes
an OperationOutcome 500, never a stack trace) → request-size limit → the web console's session
(``/console`` only: its cookie becomes the bearer token, a refusal becomes a login redirect or an
HTML page) → capabilities' outer middleware (audit, hardening) → authentication of every path but
the public ones → capabilities' inner middleware (the route guard) → the read-by-id fast path →
routes, whose errors (``FhirError``, parameter validation) are OperationOutcomes too.  ``/healthz``,
``/docs`` and the console's login page are public.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from phip import __version__
from phip.api.middleware import Authenticate, BodyLimit, ReadFastPath, flat_routes
from phip.fhir.errors import FhirError, Issue, outcome
from phip.node.node import Node

log = logging.getLogger("phip.api")
FHIR_JSON = "application/fhir+json"


def oo_response(status: int, issues: list[Issue], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(outcome(issues)), status_code=status, media_type=FHIR_JSON, headers=headers)


def create_app(node: Node) -> FastAPI:
    from phip import console
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

    @app.exception_handler(Exception)
    async def _crash(request: Request, _exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return oo_response(500, [Issue("error", "exception", "Internal server error", None, "PHIP-1500")])

    # capability routes first: their operations (``/fhir/Patient/$match``…) must win over the
    # generic ``/fhir/{type}/{id}`` routes
    for cap in node.capabilities:
        if cap.routers is not None:
            for router in cap.routers():
                app.include_router(router)
    app.include_router(fhir.router)
    app.include_router(console.router)  # the web console, on every node (docs/console.md)
    # added last = outermost
    owned = frozenset(t for cap in node.capabilities for t in cap.extras.get("owns_types", ()))
    app.add_middleware(ReadFastPath, store=node.store, exclude=owned)
    # capabilities' middleware that run once the caller is known (the security route guard)
    for cap in reversed(node.capabilities):
        for mw in cap.extras["inner_middleware"]() if "inner_middleware" in cap.extras else ():
            app.add_middleware(mw, node=node)
    # every path needs a bearer token but these (deny by default); routes may declare themselves
    # public with openapi_extra={"x-phip-access": "public"}
    public = {"/fhir/metadata", "/healthz", app.docs_url, app.openapi_url, app.swagger_ui_oauth2_redirect_url,
              app.redoc_url}
    public |= {p for cap in node.capabilities for p in cap.extras.get("public_paths", ())}
    public |= {getattr(r, "path", "") for r in flat_routes(app.routes)
               if (getattr(r, "openapi_extra", None) or {}).get("x-phip-access") == "public"}
    app.add_middleware(Authenticate, tokens=node.tokens, public=frozenset(p for p in public if p),
                       hooks=node.store.hooks)
    # capabilities' middleware that must see every request, authenticated or not (audit, hardening)
    for cap in reversed(node.capabilities):
        for mw in cap.extras["middleware"]() if "middleware" in cap.extras else ():
            app.add_middleware(mw, node=node)
    # the console's cookie session, outside everything that reads the Authorization header
    app.add_middleware(console.ConsoleSession, node=node)
    app.add_middleware(BodyLimit, max_body=node.config.max_body_bytes)
    return app
