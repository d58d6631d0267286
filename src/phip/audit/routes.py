"""``/fhir/AuditEvent`` served from the audit chain, and the resident-facing access log.

- ``GET /fhir/AuditEvent?patient=&agent=&action=&outcome=&date=&subtype=&_count=&_cursor=``:
  newest first (auditor, admin).
- ``GET /fhir/AuditEvent/{seq}``: one record.
- ``POST /fhir/AuditEvent``: another system's AuditEvent (IHE ATNA record-audit-event), appended
  to the chain as submitted (with this node's ``id``); auditor, admin or node.
- ``GET /fhir/Patient/{id}/$access-log``: who accessed this patient's record, when, how and why —
  for the resident themself (a ``resident`` token whose Person links to the Patient), an auditor
  or an admin.  A Bundle of AuditEvents, newest first.

The role checks here are a floor for these routes only (they do not use the repository);
authorization of everything else is the security capability's.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from phip.audit.chain import content_of
from phip.audit.schema import audit_events as AE
from phip.fhir.datetimes import date_range, now_us
from phip.fhir.errors import FhirError, Issue, bad_request

router = APIRouter(prefix="/fhir", tags=["audit"])
FHIR_JSON = "application/fhir+json"
PREFIXES = ("ge", "gt", "le", "lt", "eq")


def _svc(request: Request) -> Any:
    return request.app.state.node.ext["audit"]


def _principal() -> Any:
    from phip.api.context import current_principal

    return current_principal.get()


def _require(roles: tuple[str, ...], what: str) -> Any:
    p = _principal()
    if p is None or getattr(p, "role", None) not in roles:
        raise FhirError(403, f"{what} is open to the roles {', '.join(roles)} only", code="forbidden",
                        msg_id="PHIP-5403")
    return p


def _date_conds(values: list[str]) -> list[Any]:
    conds: list[Any] = []
    for v in values:
        prefix = v[:2] if v[:2] in PREFIXES else "eq"
        text = v[2:] if v[:2] in PREFIXES else v
        try:
            lo, hi = date_range(text)
        except ValueError:
            raise bad_request(f"date {v!r} is not a FHIR date", expression="date") from None
        col = AE.c.recorded
        conds.append({"ge": col >= lo, "gt": col > hi, "le": col <= hi, "lt": col < lo,
                      "eq": sa.and_(col >= lo, col <= hi)}[prefix])
    return conds


def _bundle(request: Request, recs: list[Any], count: int, params: list[tuple[str, str]]) -> Response:
    base = str(request.base_url).rstrip("/") + "/fhir"
    entries = []
    for r in recs[:count]:
        entries.append(b'{"fullUrl":"' + f"{base}/AuditEvent/{r.seq}".encode() + b'","resource":'
                       + content_of(r) + b',"search":{"mode":"match"}}')
    self_url = str(request.url)
    links = [{"relation": "self", "url": self_url}]
    if len(recs) > count:
        nxt = [(k, v) for k, v in params if k != "_cursor"] + [("_cursor", str(recs[count - 1].seq))]
        links.append({"relation": "next", "url": f"{request.url.scheme}://{request.url.netloc}{request.url.path}?"
                                                  f"{urlencode(nxt)}"})
    head = {"resourceType": "Bundle", "type": "searchset", "timestamp": _now(), "link": links}
    body = orjson.dumps(head)[:-1] + b',"entry":[' + b",".join(entries) + b"]}"
    return Response(body, media_type=FHIR_JSON)


def _now() -> str:
    from phip.fhir.datetimes import to_instant

    return to_instant(now_us())


def _count(value: int | None) -> int:
    if value is None:
        return 50
    if value < 1 or value > 1000:
        raise bad_request("_count must be between 1 and 1000", expression="_count")
    return value


def _query(request: Request, conds: list[Any], count: int, cursor: int | None) -> Response:
    _svc(request).flush()  # what was just recorded is on the trail
    if cursor is not None:
        conds.append(AE.c.seq < cursor)
    q = sa.select(AE.c.seq, AE.c.content, AE.c.zcontent).where(*conds).order_by(AE.c.seq.desc()).limit(count + 1)
    with request.app.state.node.store.engine.connect() as conn:
        recs = conn.execute(q).all()
    return _bundle(request, recs, count, list(request.query_params.multi_items()))


@router.get("/AuditEvent", summary="Search the audit trail (auditor, admin)",
            openapi_extra={"x-phip-access": ["admin", "auditor"]})
def search_audit(
    request: Request,
    patient: str | None = Query(None, description="Patient/ID or ID"),
    agent: str | None = Query(None, description="the user (token subject)"),
    action: str | None = Query(None, pattern="^[CRUDE]$"),
    outcome: str | None = Query(None, pattern="^(0|4|8|12)$"),
    subtype: str | None = Query(None, description="read, search-type, create, update, delete, export, login…"),
    purpose: str | None = Query(None, description="purpose of use, e.g. TREAT, ETREAT"),
    date: list[str] = Query([], description="recorded, with ge/gt/le/lt prefixes"),
    count: int | None = Query(None, alias="_count", ge=1, le=1000),
    cursor: int | None = Query(None, alias="_cursor", ge=0, le=2**62),
) -> Response:
    _require(("admin", "auditor"), "The audit trail")
    known = {"patient", "agent", "action", "outcome", "subtype", "purpose", "date", "_count", "_cursor", "_format"}
    unknown = sorted({k for k in request.query_params if k not in known})
    if unknown:
        raise bad_request(f"Unknown AuditEvent search parameter(s): {', '.join(unknown)}",
                          expression=unknown[0], msg_id="PHIP-5400")
    conds: list[Any] = _date_conds(date)
    if patient:
        conds.append(AE.c.patient == patient.removeprefix("Patient/"))
    if agent:
        conds.append(AE.c.who == agent)
    if action:
        conds.append(AE.c.action == action)
    if outcome:
        conds.append(AE.c.outcome == int(outcome))
    if subtype:
        conds.append(AE.c.kind == subtype)
    if purpose:
        conds.append(AE.c.purpose == purpose)
    return _query(request, conds, _count(count), cursor)


@router.post("/AuditEvent", summary="Record another system's AuditEvent on this node's trail (ATNA)",
             status_code=201, openapi_extra={"x-phip-access": ["admin", "auditor", "node"]})
async def submit_audit(request: Request) -> Response:
    from phip.audit.events import Pending
    from phip.audit.service import principal_fields
    from phip.fhir.validation import validate

    _require(("admin", "auditor", "node"), "Submitting audit events")
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as e:
        raise bad_request(f"The body is not valid JSON: {e}", msg_id="PHIP-1104") from None
    if not isinstance(body, dict) or body.get("resourceType") != "AuditEvent":
        raise bad_request("The body must be an AuditEvent", expression="resourceType")
    errors = [Issue(i.severity, i.code, i.diagnostics, i.expression, "PHIP-1100") for i in validate(body)
              if i.severity in ("error", "fatal")]
    if errors:
        raise FhirError(422, errors[0].diagnostics, issues=errors)
    patient = None
    for ent in body.get("entity") or ():
        ref = (ent.get("what") or {}).get("reference") or ""
        if ref.startswith("Patient/"):
            patient = ref[len("Patient/"):]
            break
    pf = principal_fields(_principal())
    svc = _svc(request)
    detail = orjson.dumps(body).decode()[:2000]
    svc.record(Pending(now_us(), "submitted", 0, patient, None, None, source=request.client.host
                       if request.client else None, detail=f"submitted: {detail}", **pf))
    svc.flush()
    return Response(status_code=201)


@router.get("/AuditEvent/{seq}", summary="Read one audit record (auditor, admin)",
            openapi_extra={"x-phip-access": ["admin", "auditor"]})
def read_audit(request: Request, seq: str) -> Response:
    _require(("admin", "auditor"), "The audit trail")
    if not seq.isdigit() or len(seq) > 18:
        raise FhirError(404, f"AuditEvent/{seq} is not known", code="not-found", msg_id="PHIP-1404")
    _svc(request).flush()
    with request.app.state.node.store.engine.connect() as conn:
        rec = conn.execute(sa.select(AE.c.content, AE.c.zcontent).where(AE.c.seq == int(seq))).first()
    if rec is None:
        raise FhirError(404, f"AuditEvent/{seq} is not known (or archived)", code="not-found", msg_id="PHIP-1404")
    return Response(content_of(rec), media_type=FHIR_JSON)


def _resident_owns(request: Request, person: str | None, pid: str) -> bool:
    """Does the resident's Person link to this Patient (or is the Patient linked to the Person)?"""
    from phip.audit.service import request_audit

    if not person:
        return False
    token = request_audit.set(None)  # this check is not an access to audit
    try:
        repo = request.app.state.node.store.repository()
        try:
            doc = repo.read("Person", person.removeprefix("Person/")).resource()
        except FhirError:
            return False
        targets = {(lk.get("target") or {}).get("reference") for lk in doc.get("link") or ()}
        return f"Patient/{pid}" in targets
    finally:
        request_audit.reset(token)


@router.get("/Patient/{pid}/$access-log", summary="Who accessed this patient's record, when and why",
            openapi_extra={"x-phip-access": ["admin", "auditor", "resident"]})
def access_log(
    request: Request,
    pid: str,
    date: list[str] = Query([], description="recorded, with ge/gt/le/lt prefixes"),
    count: int | None = Query(None, alias="_count", ge=1, le=1000),
    cursor: int | None = Query(None, alias="_cursor", ge=0, le=2**62),
) -> Response:
    p = _principal()
    role = getattr(p, "role", None)
    if role not in ("admin", "auditor") and not (role == "resident" and _resident_owns(request, p.person, pid)):
        raise FhirError(403, "The access log of a record is open to its resident, auditors and admins",
                        code="forbidden", msg_id="PHIP-5403")
    conds = [*_date_conds(date), AE.c.patient == pid]
    return _query(request, conds, _count(count), cursor)
