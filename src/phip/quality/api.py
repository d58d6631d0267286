"""``GET /quality/findings`` and ``GET /quality/scorecard`` (bearer token of this node).

A caller whose token names an institution (``--org Organization/ID``) and is not an admin sees
only that institution's findings and scorecard row.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from phip.fhir.errors import FhirError, Issue

router = APIRouter(prefix="/quality", tags=["quality"])
DAY_RE = re.compile(r"^(eq|ge|le|gt|lt)?(\d{4})-(\d{2})-(\d{2})$")
FINDING_PARAMS = frozenset({"subject", "institution", "rule", "dimension", "status", "resource", "date", "_count",
                            "_offset"})
SCORE_PARAMS = frozenset({"date", "threshold", "institution"})


#: who may call these routes (``phip.security.guard``); a token naming an institution that is not
#: an admin's or a node's is limited to that institution's rows
ACCESS = {"x-phip-access": ["admin", "node", "manager", "public-health", "clinician", "family-doctor", "auditor"]}


def _principal(request: Request) -> Any:
    from phip.api.context import current_principal
    from phip.security.tokens import TokenError

    p = current_principal.get()
    if p is not None:  # authenticated by the node's middleware
        return p

    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise FhirError(401, "This request needs an Authorization: Bearer token", code="login", msg_id="PHIP-1401")
    try:
        return request.app.state.node.tokens.verify(token.strip())
    except TokenError as e:
        raise FhirError(401, f"Invalid token: {e}", code="login", msg_id="PHIP-1401") from None


def _service(request: Request) -> Any:
    svc = request.app.state.node.ext.get("quality")
    if svc is None:
        raise FhirError(404, "The quality capability is not installed on this node", code="not-supported")
    return svc


def _check_params(request: Request, allowed: frozenset[str]) -> None:
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise FhirError(400, f"Unknown parameter(s): {', '.join(unknown)}", issues=[
            Issue("error", "not-supported", f"Unknown parameter {u!r}; known: {', '.join(sorted(allowed))}", u,
                  "PHIP-6001") for u in unknown])


def _days(values: list[str]) -> tuple[int | None, int | None]:
    lo = hi = None
    for v in values:
        m = DAY_RE.match(v)
        if not m:
            raise FhirError(400, f"date must be YYYY-MM-DD with an optional ge/le/gt/lt/eq prefix, not {v!r}",
                            issues=[Issue("error", "invalid", f"bad date {v!r}", "date", "PHIP-6002")])
        pre, y, mo, d = m.groups()
        day = int(y + mo + d)
        if pre in (None, "eq"):
            lo = hi = day
        elif pre == "ge":
            lo = day
        elif pre == "gt":
            lo = day + 1
        elif pre == "le":
            hi = day
        else:
            hi = day - 1
    return lo, hi


def _scope(principal: Any, institution: str | None) -> str | None:
    org = getattr(principal, "org", None)
    if org and getattr(principal, "role", "") not in ("admin", "node"):
        own = org.split("/", 1)[-1]
        if institution and institution != own:
            raise FhirError(403, f"This token may only see institution {own}", code="forbidden", msg_id="PHIP-6003")
        return own
    return institution


def _int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        v = int(raw)
    except ValueError:
        raise FhirError(400, f"{name} must be an integer", issues=[
            Issue("error", "invalid", f"{name} must be an integer, not {raw!r}", name, "PHIP-6004")]) from None
    if not lo <= v <= hi:
        raise FhirError(400, f"{name} must be within {lo}..{hi}", issues=[
            Issue("error", "invalid", f"{name} must be within {lo}..{hi}", name, "PHIP-6004")])
    return v


@router.get("/findings", summary="Quality findings (filters: subject, institution, rule, dimension, status, "
            "resource, date, _count, _offset)", openapi_extra=ACCESS)
def findings(request: Request) -> Response:
    principal = _principal(request)
    svc = _service(request)
    _check_params(request, FINDING_PARAMS)
    q = request.query_params
    lo, hi = _days(q.getlist("date"))
    count = _int(request, "_count", 100, 1, 1000)
    offset = _int(request, "_offset", 0, 0, 10**9)
    dim = q.get("dimension")
    if dim is not None and dim not in ("completeness", "conformance", "consistency", "timeliness", "uniqueness",
                                       "upload"):
        raise FhirError(400, f"Unknown dimension {dim!r}", issues=[
            Issue("error", "invalid", f"Unknown dimension {dim!r}", "dimension", "PHIP-6005")])
    status = q.get("status")
    if status is not None and status not in ("open", "resolved", "cancelled"):
        raise FhirError(400, f"status must be open, resolved or cancelled, not {status!r}", issues=[
            Issue("error", "invalid", f"bad status {status!r}", "status", "PHIP-6006")])
    rows, total = svc.findings(subject=q.get("subject"), institution=_scope(principal, q.get("institution")),
                               rule=q.get("rule"), dimension=dim, status=status, resource=q.get("resource"),
                               day_from=lo, day_to=hi, count=count, offset=offset)
    body: dict[str, Any] = {"total": total, "count": len(rows), "offset": offset, "findings": rows}
    if offset + len(rows) < total:
        body["next"] = str(request.url.include_query_params(_offset=offset + len(rows)))
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/scorecard", summary="Rates per dimension per institution, the threshold and those below it",
            openapi_extra=ACCESS)
def scorecard(request: Request) -> Response:
    principal = _principal(request)
    svc = _service(request)
    _check_params(request, SCORE_PARAMS)
    q = request.query_params
    lo, hi = _days(q.getlist("date"))
    thr = None
    if q.get("threshold") is not None:
        try:
            thr = float(q["threshold"])
        except ValueError:
            thr = -1.0
        if not 0 < thr <= 1:
            raise FhirError(400, "threshold must be a number in (0, 1], e.g. 0.98", issues=[
                Issue("error", "invalid", "threshold must be in (0, 1]", "threshold", "PHIP-6007")])
    sc = svc.scorecard(day_from=lo, day_to=hi, threshold=thr, institution=_scope(principal, q.get("institution")))
    return Response(orjson.dumps(sc), media_type="application/json")
