"""IHE mCSD-style directory queries: what the core search lacks for a health-worker directory.

The core already answers mCSD's searches (``Organization``/``Location``/``Practitioner``/
``PractitionerRole``/``HealthcareService`` by name, identifier, type, ``active``, ``partof``,
``_lastUpdated``, with ``_include``/``_revinclude`` and ``_has``).  Added here: the hierarchy
modifier ``:below`` on references into a ``partOf`` hierarchy (R5 search semantics, usable on R4):

    Organization?partof:below=Organization/510104-wjj   every organisation under it, at any depth
    PractitionerRole?organization:below=Organization/X   staff of X and of every unit under X
    Location?partof:below=Location/site                  wards, rooms and beds of a site

``p:below=T/X`` means ``p=T/X,T/<each descendant of X>`` where descendants follow ``T.partOf``
(Organization and Location).  A cycle in ``partOf`` is walked once; depth is capped at 32.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import Response

from phip.fhir import definitions as defs
from phip.fhir.errors import bad_request
from phip.store import schema as S

HIERARCHIES = {"Organization": "partof", "Location": "partof"}
#: resource types whose search routes understand ``:below`` on references into a hierarchy
TYPES = ("Organization", "Location", "PractitionerRole", "HealthcareService", "Endpoint", "OrganizationAffiliation",
         "Device")
MAX_DEPTH = 32


def descendants(conn: sa.Connection, rtype: str, roots: list[str]) -> list[str]:
    """Ids of every ``rtype`` under ``roots`` (following ``partOf``), roots excluded."""
    X, R = S.idx_ref, S.resources
    key = S.param_key(rtype, HIERARCHIES[rtype])
    seen = set(roots)
    out: list[str] = []
    frontier = list(roots)
    for _ in range(MAX_DEPTH):
        if not frontier:
            break
        nxt: list[str] = []
        for k in range(0, len(frontier), 500):
            chunk = frontier[k : k + 500]
            q = (sa.select(R.c.id).select_from(X.join(R, R.c.rid == X.c.rid))
                 .where(X.c.param == key, X.c.target_type == rtype, X.c.target_id.in_(chunk),
                        R.c.type == rtype, R.c.deleted == sa.false()))
            for (rid,) in conn.execute(q):
                if rid not in seen:
                    seen.add(rid)
                    nxt.append(rid)
        out.extend(nxt)
        frontier = nxt
    return out


def _below_filters(request: Request, rtype: str, params: list[tuple[str, str]]) -> tuple[list[tuple[str, str]],
                                                                                         list[Any]]:
    """Split ``p:below`` parameters off; each becomes a filter on the row ids."""
    node = request.app.state.node
    rest: list[tuple[str, str]] = []
    filters: list[Any] = []
    sps = defs.search_params_for(rtype)
    for name, value in params:
        if not name.endswith(":below"):
            rest.append((name, value))
            continue
        code = name[: -len(":below")]
        sp = sps.get(code)
        if sp is None or sp.type != "reference":
            rest.append((name, value))  # not ours: the core reports it
            continue
        targets: dict[str, list[str]] = {}
        for v in value.split(","):
            v = v.strip()
            ttype, _, tid = v.rpartition("/")
            if not ttype:
                hier = [t for t in sp.target if t in HIERARCHIES]
                if len(hier) != 1:
                    raise bad_request(f"{name}: give the target as Type/id", expression=name)
                ttype = hier[0]
            if ttype not in HIERARCHIES or ttype not in sp.target or not tid:
                raise bad_request(f"{name}: :below needs a reference to an Organization or Location (partOf "
                                  f"hierarchy) that {rtype}.{code} can point to, not {v!r}", expression=name,
                                  msg_id="PHIP-4680")
            targets.setdefault(ttype, []).append(tid)
        with node.store.read_conn() as conn:
            wanted = {t: ids + descendants(conn, t, ids) for t, ids in targets.items()}
        key = S.param_key(rtype, code)

        def f(r: Any, key: int = key, wanted: dict[str, list[str]] = wanted) -> Any:
            x = S.idx_ref
            conds = [sa.and_(x.c.target_type == t, x.c.target_id.in_(ids)) for t, ids in wanted.items()]
            return r.c.rid.in_(sa.select(x.c.rid).where(x.c.param == key, sa.or_(*conds)))

        filters.append(f)
    return rest, filters


def _route(rtype: str) -> Any:
    def search(request: Request) -> Response:
        from phip.api import fhir as core
        from phip.api.fhir import base_url, fhir, lenient, query_params, repo_of, searchset_bytes

        params = query_params(request)
        if not any(name.endswith(":below") for name, _v in params):
            return core.search(request, rtype)  # the core route, unchanged
        rest, filters = _below_filters(request, rtype, params)
        repo = repo_of(request)
        req = repo.parser(lenient(request)).parse(rtype, rest)
        req.base_url = base_url(request)
        result = repo.search(req, extra_where=filters or None)
        return fhir(searchset_bytes(request, req, params, f"/fhir/{rtype}", result))

    search.__name__ = f"mcsd_search_{rtype}"
    return search


def router() -> APIRouter:
    r = APIRouter(prefix="/fhir", tags=["FHIR R4"])
    for t in TYPES:
        r.add_api_route(f"/{t}", _route(t), methods=["GET"], openapi_extra={"x-phip-access": "any"},
                        summary=f"Search {t} (also :below on references into the partOf hierarchy, IHE mCSD)")
    return r
