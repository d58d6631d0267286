"""HTTP routes of the registry capability (see docs/registry.md).

FHIR operations (behind the ``/fhir`` authentication middleware):
``POST /fhir/$register-birth``, ``POST /fhir/Patient/{id}/$register-death``,
``POST /fhir/Patient/{id}/$change-address``, ``GET /fhir/Patient/{id}/$household``,
``GET /fhir/Group/{id}/$members``, ``POST /fhir/Person/{id}/$health-card``,
``GET /fhir/Person/{id}/$health-cards``; ``:below`` hierarchy searches (:mod:`phip.registry.mcsd`).

Plain JSON routes (bearer token checked here; they are outside ``/fhir``):
``GET /registry/population``, ``GET /registry/resources``, ``POST /health-card/verify``,
``POST /health-card/revoke``, ``GET /health-card/qr``.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from phip.api.context import current_principal
from phip.fhir.errors import FhirError
from phip.registry import codes as C

FHIR_JSON = "application/fhir+json"
WRITERS_DENIED = {"resident", "auditor", "insurer"}
# route access for the security capability's guard (``x-phip-access``; see phip.security.guard)
WRITERS = {"x-phip-access": ["admin", "node", "clinician", "public-health", "family-doctor", "manager"]}
READERS = {"x-phip-access": ["admin", "node", "clinician", "public-health", "family-doctor", "manager"]}
MANAGERS = {"x-phip-access": ["admin", "manager", "public-health"]}
ANY = {"x-phip-access": "any"}  # the route checks the caller itself


def _fhir(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=FHIR_JSON, headers=headers)


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _node(request: Request) -> Any:
    return request.app.state.node


def _svc(request: Request) -> Any:
    return _node(request).ext["registry"]


def principal(request: Request) -> Any:
    """The caller: set by the /fhir middleware, or verified here for the routes outside /fhir."""
    p = current_principal.get()
    if p is not None:
        return p
    from phip.security.tokens import TokenError

    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise FhirError(401, "This request needs an Authorization: Bearer token", code="login", msg_id="PHIP-1401",
                        headers={"WWW-Authenticate": 'Bearer realm="phip"'})
    try:
        return _node(request).tokens.verify(token.strip())
    except TokenError as e:
        raise FhirError(401, f"Authentication failed: {e}", code="login", msg_id="PHIP-1401",
                        headers={"WWW-Authenticate": 'Bearer realm="phip"'}) from None


def system_repo(request: Request) -> Any:
    """A repository with the node's own full access, for the follow-up work of a registry event
    (stopping other institutions' plans, the master Person, the household Group) once the route
    has checked the caller (route roles + a read of the target with the caller's own scope)."""
    from phip.core.access import as_system

    with as_system():
        return _node(request).store.repository()


def _forbid(msg: str) -> FhirError:
    return FhirError(403, msg, code="forbidden", msg_id="PHIP-4690")


def _writer(request: Request) -> Any:
    p = principal(request)
    if p.role in WRITERS_DENIED:
        raise _forbid(f"The role {p.role!r} may not write to the population registry")
    return p


async def _body(request: Request) -> Any:
    from phip.api.fhir import json_body

    return await json_body(request)


def _result_params(parts: list[tuple[str, Any]]) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for name, v in parts:
        if v is None:
            continue
        if isinstance(v, dict) and "resourceType" in v:
            out.append({"name": name, "resource": v})
        elif isinstance(v, dict) and "reference" in v:
            out.append({"name": name, "valueReference": v})
        elif isinstance(v, bool):
            out.append({"name": name, "valueBoolean": v})
        else:
            out.append({"name": name, "valueString": str(v)})
    return {"resourceType": "Parameters", "parameter": out}


def fhir_router() -> APIRouter:
    r = APIRouter(prefix="/fhir", tags=["Population registry (全员人口)"])

    @r.post("/$register-birth", summary="Register a birth from a birth-certificate document Bundle",
            openapi_extra=WRITERS)
    async def register_birth(request: Request) -> Response:
        p = _writer(request)
        body = await _body(request)

        status, result = await run_in_threadpool(_svc(request).registry.register_birth, system_repo(request), body, p)
        headers = {}
        pat = result["parameter"][0]["resource"]
        headers["Location"] = f"{str(request.base_url).rstrip('/')}/fhir/Patient/{pat['id']}"
        return _fhir(result, status, headers)

    @r.post("/Patient/{pid}/$register-death", summary="Register a death: deceased, Person inactive, reminders stop",
            openapi_extra=WRITERS)
    async def register_death(request: Request, pid: str) -> Response:
        p = _writer(request)
        body = await _body(request)
        from phip.api.fhir import repo_of

        await run_in_threadpool(repo_of(request).read, "Patient", pid)  # the caller may see the record
        res = await run_in_threadpool(_svc(request).registry.register_death, system_repo(request), pid, body, p)
        parts: list[tuple[str, Any]] = [("patient", res["patient"])]
        if res["person"]:
            parts.append(("person", {"reference": f"Person/{res['person']}"}))
        parts += [("stopped", {"reference": s}) for s in res["stopped"]]
        parts += [("revokedCard", c) for c in res["cards"]]
        if res["provenance"]:
            parts.append(("provenance", {"reference": f"Provenance/{res['provenance']}"}))
        if res["unchanged"]:
            parts.append(("unchanged", True))
        return _fhir(_result_params(parts))

    @r.post("/Patient/{pid}/$change-address", summary="Address change or migration between counties",
            openapi_extra=WRITERS)
    async def change_address(request: Request, pid: str) -> Response:
        p = _writer(request)
        body = await _body(request)
        from phip.api.fhir import repo_of

        await run_in_threadpool(repo_of(request).read, "Patient", pid)  # the caller may see the record
        res = await run_in_threadpool(_svc(request).registry.change_address, system_repo(request), pid, body, p)
        parts: list[tuple[str, Any]] = [("patient", res["patient"]), ("migration", res["migration"])]
        parts += [("moved", {"reference": m}) for m in res["moved"]]
        parts += [("fromCounty", res["from"]), ("toCounty", res["to"])]
        if res["organization"]:
            parts.append(("managingOrganization", {"reference": f"Organization/{res['organization']}"}))
        parts.append(("provenance", {"reference": f"Provenance/{res['provenance']}"}))
        return _fhir(_result_params(parts))

    @r.get("/Patient/{pid}/$household", summary="The resident's household (户): the Group and its members",
            openapi_extra=READERS)
    def household(request: Request, pid: str) -> Response:
        from phip.api.fhir import repo_of

        repo = repo_of(request)
        repo.read("Patient", pid)
        reg = _svc(request).registry
        g = reg.household_of(repo, pid)
        if g is None:
            raise FhirError(404, f"Patient/{pid} is not a current member of any household (Group with code "
                            f"{C.HOUSEHOLD}|household)", code="not-found", msg_id="PHIP-4631")
        return _fhir(_bundle(request, g, reg.household_members(repo, g)))

    @r.get("/Group/{gid}/$members", summary="Members of a Group (current ones; _all=true for past ones too)",
            openapi_extra=READERS)
    def members(request: Request, gid: str) -> Response:
        from phip.api.fhir import repo_of

        repo = repo_of(request)
        g = repo.read("Group", gid)
        past = request.query_params.get("_all") == "true"
        return _fhir(_bundle(request, g, _svc(request).registry.household_members(repo, g, past)))

    @r.post("/Person/{pid}/$health-card", summary="Issue the electronic health card and a signed QR payload",
            openapi_extra=ANY)
    def health_card(request: Request, pid: str, format: str = "json", ttl: int = 600) -> Response:
        from phip.api.fhir import repo_of
        from phip.registry.healthcard import render

        p = principal(request)
        if not (p.role == "admin" or p.org or (p.role == "resident" and p.person == f"Person/{pid}")):
            raise _forbid("A health card is issued by an institution's desk (a token with an org), an admin, "
                          "or to the resident themself")
        if format not in ("json", "svg", "png"):
            raise FhirError(400, "format must be json, svg or png", expression="format", msg_id="PHIP-4677")
        repo = repo_of(request) if p.role != "resident" else system_repo(request)
        card = _svc(request).cards.issue(repo, pid, p.sub)
        if ttl != 600:
            card["token"], card["expires"] = _svc(request).cards.sign(card["cardNumber"], _ttl(ttl))
        if format != "json":
            data, media = render(card["token"], format)
            return Response(data, media_type=media, headers={"X-Health-Card": card["cardNumber"],
                                                             "X-Health-Card-Expires": card["expires"]})
        params = {"resourceType": "Parameters", "parameter": [
            {"name": "cardNumber", "valueIdentifier": {"system": C.HEALTH_CARD, "value": card["cardNumber"]}},
            {"name": "qr", "valueString": card["token"]},
            {"name": "expires", "valueInstant": card["expires"]},
            {"name": "person", "valueReference": {"reference": f"Person/{pid}"}},
            {"name": "created", "valueBoolean": card["created"]},
        ]}
        return _fhir(params, 201 if card["created"] else 200)

    @r.get("/Person/{pid}/$health-cards", summary="The health cards of a Person and their status",
            openapi_extra=ANY)
    def health_cards(request: Request, pid: str) -> Response:
        from phip.api.fhir import repo_of

        p = principal(request)
        if not (p.role in ("admin", "manager", "node") or (p.role == "resident" and p.person == f"Person/{pid}")):
            raise _forbid("The cards of a Person are listed for an admin or a manager, or for the resident themself")
        repo_of(request).read("Person", pid)
        return _json({"person": f"Person/{pid}", "cards": _svc(request).cards.cards_of(pid)})

    return r


def _ttl(ttl: int) -> int:
    from phip.registry.healthcard import MAX_TTL

    if ttl < 30 or ttl > MAX_TTL:
        raise FhirError(400, f"ttl must be between 30 and {MAX_TTL} seconds", expression="ttl", msg_id="PHIP-4670")
    return ttl


def _bundle(request: Request, group: Any, members: list[Any]) -> dict[str, Any]:
    base = str(request.base_url).rstrip("/") + "/fhir"
    entries = [{"fullUrl": f"{base}/Group/{group.id}", "resource": group.resource(), "search": {"mode": "match"}}]
    entries += [{"fullUrl": f"{base}/Patient/{m.id}", "resource": m.resource(), "search": {"mode": "include"}}
                for m in members]
    return {"resourceType": "Bundle", "type": "searchset", "total": 1, "entry": entries}


def plain_router() -> APIRouter:
    r = APIRouter(tags=["Population registry (全员人口)"])

    @r.get("/registry/population", summary="Population counts by region (GB/T 2260 prefix), sex, age band",
            openapi_extra=MANAGERS)
    def population(request: Request, region: str | None = None, by: str | None = None, bands: str | None = None,
                   asOf: str | None = None) -> Response:
        from phip.registry.population import check_region_scope, parse_query
        from phip.registry.population import population as count

        p = principal(request)
        if p.role not in ("admin", "manager", "public-health"):
            raise _forbid("Population counts are for managers (roles admin, manager, public-health)")
        if not region and p.region:
            region = p.region.rstrip("0") or p.region
            while len(region) % 2:
                region += "0"
        q = parse_query(region, by, bands, asOf)
        check_region_scope(p, q.region)
        return _json(count(_node(request).store, q))

    @r.get("/registry/resources", summary="Basic resources by region: institutions, staff, beds, large equipment",
            openapi_extra=MANAGERS)
    def resources(request: Request, region: str | None = None) -> Response:
        from phip.registry.resources import summary

        p = principal(request)
        if p.role not in ("admin", "manager", "public-health"):
            raise _forbid("Resource statistics are for managers (roles admin, manager, public-health)")
        reg = (region or "").strip()
        if reg and not reg.isdigit():
            raise FhirError(400, "region must be a GB/T 2260 code or prefix", expression="region", msg_id="PHIP-4620")
        return _json(summary(_node(request).store, reg))

    @r.post("/health-card/verify", summary="Verify a health-code QR payload; returns the Person (institutions)",
            openapi_extra=ANY)
    async def verify(request: Request) -> Response:

        p = principal(request)
        if not (p.org or p.role in ("admin", "node")):
            raise _forbid("Health codes are verified by an institution: the token needs an org claim")
        body = await _body(request)
        token = _token_of(body)
        # the scanned, signed card is the holder's consent to identify them at this desk
        person, card = await run_in_threadpool(_svc(request).cards.verify, system_repo(request), token)
        return _fhir(person, headers={"X-Health-Card": card})

    @r.post("/health-card/revoke", summary="Revoke a health card (lost, replaced, deceased)",
            openapi_extra=ANY)
    async def revoke(request: Request) -> Response:
        import sqlalchemy as sa

        from phip.registry.schema import health_card as HC

        p = principal(request)
        body = await _body(request)
        if not isinstance(body, dict) or not isinstance(body.get("cardNumber"), str):
            raise FhirError(400, "Give {\"cardNumber\": …, \"reason\": …}", expression="cardNumber", msg_id="PHIP-4678")
        card = body["cardNumber"].strip()
        if p.role not in ("admin", "manager"):
            with _node(request).store.read_conn() as conn:
                rec = conn.execute(sa.select(HC.c.person_id).where(HC.c.card_no == card)).first()
            if not (p.role == "resident" and rec is not None and p.person == f"Person/{rec.person_id}"):
                raise _forbid("A card is revoked by an admin or a manager, or by the resident holding it")
        res = await run_in_threadpool(_svc(request).cards.revoke, card, str(body.get("reason") or ""), p.sub)
        return _json(res)

    @r.get("/health-card/qr", summary="Render a QR payload as SVG or PNG",
            openapi_extra=ANY)
    def qr(request: Request, token: str, format: str = "svg") -> Response:
        from phip.registry.healthcard import render

        principal(request)
        data, media = render(token, format)
        return Response(data, media_type=media)

    return r


def _token_of(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("token"), str):
        return str(body["token"])
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        for p in body.get("parameter") or []:
            if p.get("name") in ("token", "qr") and isinstance(p.get("valueString"), str):
                return str(p["valueString"])
    raise FhirError(400, "Give the scanned QR payload as {\"token\": …} or Parameters (token)", expression="token",
                    msg_id="PHIP-4672")


def routers() -> list[APIRouter]:
    from phip.registry import mcsd

    return [fhir_router(), mcsd.router(), plain_router()]

