"""Route-level deny by default: every route must say who may call it.

A route declares its access in ``openapi_extra={"x-phip-access": …}``:

- ``"public"``: no token needed (the token endpoint, discovery documents);
- ``"any"``: any authenticated caller — the route reads and writes through the repository,
  whose access scope filters and checks every resource (all of ``/fhir``'s core routes);
- a list of roles, e.g. ``["admin", "auditor"]``.

A route that declares nothing is open to ``admin`` and ``node`` only, so a new route is
never reachable by other roles by accident.  The core FHIR routes (``phip.api.fhir``,
``phip.api.operations``) are ``"any"``: the repository enforces their access.

:class:`RouteGuard` runs after authentication; administrators and nodes pass without the
route lookup, and ``GET /fhir/{type}/{id}`` (the read fast path) is a core route.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.routing import Match

from phip.api.context import current_principal
from phip.api.middleware import flat_routes, send_outcome
from phip.fhir.errors import Issue

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]
CORE_MODULES = ("phip.api.fhir", "phip.api.operations")
DEFAULT_ROLES = ("admin", "node")
PUBLIC = frozenset({"/healthz", "/fhir/metadata", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc"})
_FAST = re.compile(r"^/fhir/([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}$")


def route_access(route: Any) -> str | tuple[str, ...]:
    """What a route declares (``public``, ``any`` or roles); undeclared: admin and node."""
    extra = getattr(route, "openapi_extra", None) or {}
    declared = extra.get("x-phip-access")
    if declared is not None:
        return declared if isinstance(declared, str) else tuple(declared)
    if getattr(route, "path", "") in PUBLIC:
        return "public"
    endpoint = getattr(route, "endpoint", None)
    if endpoint is not None and getattr(endpoint, "__module__", "") in CORE_MODULES:
        return "any"
    return DEFAULT_ROLES


class RouteGuard:
    def __init__(self, app: ASGIApp, node: Any = None) -> None:
        self.app = app
        self._routes: list[Any] | None = None
        # types a capability serves from its own routes (not the read fast path): looked up
        self.owned = frozenset(t for cap in getattr(node, "capabilities", ()) for t in cap.extras.get("owns_types", ()))

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        p = current_principal.get()
        if scope["type"] != "http" or p is None or p.role in DEFAULT_ROLES:
            await self.app(scope, receive, send)
            return
        m = _FAST.match(scope["path"]) if scope["method"] == "GET" else None
        if m is not None and m.group(1) not in self.owned:
            await self.app(scope, receive, send)  # a read by id: the repository checks it
            return
        if self._routes is None:
            self._routes = flat_routes(scope["app"].router.routes)
        for route in self._routes:
            match, _child = route.matches(scope)
            if match == Match.FULL:
                access = route_access(route)
                if access in ("public", "any") or (isinstance(access, tuple) and p.role in access):
                    break
                rule = "route-roles" if getattr(route, "openapi_extra", None) else "route-undeclared"
                msg = (f"Access denied by rule '{rule}': {scope['method']} {getattr(route, 'path', '')} is open to "
                       f"{', '.join(access) if isinstance(access, tuple) else access} only, not to role {p.role}")
                await send_outcome(send, 403, Issue("error", "forbidden", msg, None, "PHIP-3403"),
                                   {"X-Phip-Rule": rule})
                return
        await self.app(scope, receive, send)
