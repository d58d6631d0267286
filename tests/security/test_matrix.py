"""The role × route matrix: every route of the application, found in ``app.routes`` (a new route
is covered without touching this test), called without a token and by roles without rights.

- Without a token every route but the declared public ones answers 401.
- Roles without rights to patient data (manager, auditor, a token whose SMART scopes grant
  nothing) never get personal data: the answer is a refusal, or a success that carries no
  canary record and changed nothing; on the core FHIR routes aimed at a Patient it is a 403
  that names the rule.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa
from tests.security.conftest import CANARY, World

from phip.security.guard import CORE_MODULES, flat_routes, route_access

FILL = {"rtype": "Patient", "ctype": "Patient", "rid": "pB", "pid": "pB", "cid": "pB", "id": "pB", "vid": "1",
        "gid": "g1", "job": "nojob", "name": "Patient.ndjson"}
BODY = {"resourceType": "Patient", "id": "pB", "name": [{"family": "WRITTEN"}]}
BUNDLE = {"resourceType": "Bundle", "type": "transaction",
          "entry": [{"resource": {"resourceType": "Patient", "name": [{"family": "WRITTEN"}]},
                     "request": {"method": "POST", "url": "Patient"}}]}


def _routes(app: Any) -> list[tuple[Any, str, str]]:
    out = []
    for route in flat_routes(app.routes):
        methods = getattr(route, "methods", None)
        path = getattr(route, "path", None)
        if not methods or not path:
            continue
        url = re.sub(r"\{([^}:]+)(?::[^}]*)?\}", lambda m: FILL.get(m.group(1), "x"), path)
        for method in sorted(methods - {"HEAD", "OPTIONS"}):
            out.append((route, method, url))
    return out


def _versions(world: World) -> int:
    with world.node.store.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM resource_versions")).scalar_one())


def _call(world: World, method: str, url: str, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if method in ("PUT", "DELETE") and re.fullmatch(r"/fhir/[A-Z][A-Za-z]+", url):
        url += "?_id=pB"  # conditional update/delete need criteria
    body = BUNDLE if url == "/fhir" else BODY
    if method in ("POST", "PUT", "PATCH"):
        ctype = "application/json-patch+json" if method == "PATCH" else "application/fhir+json"
        payload = b'[{"op": "replace", "path": "/gender", "value": "other"}]' if method == "PATCH" else None
        import orjson

        return world.client.request(method, url, headers={**headers, "Content-Type": ctype},
                                    content=payload or orjson.dumps(body))
    return world.client.request(method, url, headers=headers)


def test_every_route_is_covered(world: World) -> None:
    routes = _routes(world.client.app)
    paths = {url for _r, _m, url in routes}
    # the core FHIR routes and the token endpoint are all there (flattened from included routers)
    assert {"/fhir/Patient/pB", "/fhir/Patient", "/fhir", "/fhir/$changes", "/auth/token"} <= paths
    assert len(routes) > 40


def test_unauthenticated_callers_are_refused(world: World, backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("routing does not depend on the backend")
    for route, method, url in _routes(world.client.app):
        r = _call(world, method, url, None)
        if route_access(route) == "public" or url in ("/auth/token",):
            continue
        assert r.status_code == 401, f"{method} {url} answered {r.status_code} without a token"
        assert CANARY not in r.text


@pytest.mark.parametrize("who", ["manager", "auditor", "no-scope"])
def test_roles_without_rights_get_nothing(world: World, backend: str, who: str) -> None:
    if backend != "sqlite":
        pytest.skip("routing does not depend on the backend")
    tokens = world.node.tokens
    token = (tokens.issue("clinician", "app", org="Organization/hospB", scope="openid") if who == "no-scope"
             else tokens.issue(who, f"{who}-1", org="Organization/hospB"))
    before = _versions(world)
    for route, method, url in _routes(world.client.app):
        r = _call(world, method, url, token)
        where = f"{who}: {method} {url} -> {r.status_code} {r.text[:300]}"
        assert CANARY not in r.text, where
        assert r.status_code < 500, where
        if 200 <= r.status_code < 300:
            assert _versions(world) == before, where
        endpoint = getattr(route, "endpoint", None)
        core = getattr(endpoint, "__module__", "") in CORE_MODULES
        if core and url.startswith("/fhir/Patient") and url != "/fhir/metadata":
            assert r.status_code == 403, where
            assert r.headers.get("x-phip-rule"), where
    assert _versions(world) == before


def test_undeclared_routes_are_for_admin_and_node_only(world: World) -> None:
    from fastapi import APIRouter

    from phip.security.guard import DEFAULT_ROLES, route_access

    router = APIRouter()

    @router.get("/fhir/$new-operation")
    def new_operation() -> dict[str, str]:
        return {"secret": CANARY}

    assert route_access(router.routes[0]) == DEFAULT_ROLES
    app = world.client.app
    app.include_router(router)
    try:
        tokens = world.node.tokens
        doc = tokens.issue("clinician", "x", org="Organization/hospA")
        r = world.client.get("/fhir/$new-operation", headers={"Authorization": f"Bearer {doc}"})
        if r.status_code != 404:  # routes added after start-up are not always matched
            assert r.status_code == 403 and r.headers["x-phip-rule"] == "route-undeclared"
        r = world.client.get("/fhir/$new-operation", headers={"Authorization": f"Bearer {tokens.issue('admin', 'a')}"})
        assert r.status_code in (200, 404)
    finally:
        app.router.routes.remove(app.router.routes[-1])
