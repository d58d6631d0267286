"""HTTP operations of the master patient index (all under ``/fhir``, so authenticated).

- ``POST /fhir/Patient/$match`` — FHIR R4 patient matching (https://hl7.org/fhir/R4/patient-operation-match.html):
  Parameters ``resource``, ``onlyCertainMatches``, ``count``; a searchset Bundle ordered by score, each
  entry with ``search.score`` and the ``match-grade`` extension (certain | probable | possible).
- ``GET /fhir/Patient/$ihe-pix?sourceIdentifier=system|value[&targetSystem=…]`` — IHE PIXm (ITI-83):
  the identifiers and Patient ids of every record of the same person.
- ``POST /fhir/Patient/$merge`` (R5 patient-merge semantics) and ``POST /fhir/Patient/$unmerge``.
- ``GET /fhir/empi/review``, ``POST /fhir/empi/review/{id}`` — the review queue;
  ``POST /fhir/empi/link``, ``POST /fhir/empi/unlink`` — manual decisions.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from phip.api.context import current_principal
from phip.empi.normalize import features
from phip.fhir.errors import FhirError, Issue, bad_request, not_found

router = APIRouter(prefix="/fhir", tags=["empi"])
FHIR_JSON = "application/fhir+json"
MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
STEWARD_ROLES = frozenset({"admin", "node", "manager"})


def _fhir(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=FHIR_JSON)


def _empi(request: Request) -> Any:
    return request.app.state.node.ext["empi"]


def _who(steward: bool = False) -> str:
    p = current_principal.get()
    if p is None:
        raise FhirError(401, "authentication required", code="login", msg_id="PHIP-4020")
    if steward and p.role not in STEWARD_ROLES:
        raise FhirError(403, f"role {p.role!r} may not take master-index decisions (needs one of "
                        f"{', '.join(sorted(STEWARD_ROLES))})", code="forbidden", msg_id="PHIP-4021")
    return f"{p.role}:{p.sub}"


async def _json(request: Request) -> Any:
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError as e:
        raise bad_request(f"The body is not valid JSON: {e}") from None


def _param(params: dict[str, Any], name: str) -> dict[str, Any] | None:
    for p in params.get("parameter") or []:
        if isinstance(p, dict) and p.get("name") == name:
            return p
    return None


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir"


# -- $match ---------------------------------------------------------------------------------------
@router.post("/Patient/$match", summary="Patient matching (FHIR $match): candidates with scores and grades")
async def match_op(request: Request) -> Response:
    _who()
    body = await _json(request)
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise bad_request("$match takes a Parameters resource", expression="Parameters")
    p = _param(body, "resource")
    res = (p or {}).get("resource")
    if not isinstance(res, dict) or res.get("resourceType") != "Patient":
        raise bad_request("Parameter 'resource' must hold a Patient", expression="Parameters.parameter.resource")
    only = bool((_param(body, "onlyCertainMatches") or {}).get("valueBoolean", False))
    count_p = _param(body, "count")
    count = int((count_p or {}).get("valueInteger", 10)) if count_p else 10
    if count < 1:
        raise bad_request("count must be a positive integer", expression="Parameters.parameter.count")
    empi = _empi(request)
    f = features(res)
    f.pid = str(res.get("id") or "")
    repo = request.app.state.node.store.repository()
    with empi.store.read_conn() as conn:
        matches = empi.match(conn, f, exclude=f.pid or None)
    entries = []
    for m in matches:
        s = m.best
        grade = ("certain" if m.decision == "link" else "probable" if s.weight >= (empi.rules.auto_link +
                 empi.rules.review) / 2 else "possible" if m.decision == "review" else "certainly-not")
        if grade == "certainly-not" or (only and grade != "certain"):
            continue
        try:
            row = repo.read("Patient", m.best_patient)
        except FhirError:
            continue
        entries.append({
            "fullUrl": f"{_base(request)}/Patient/{row.id}",
            "resource": row.resource(),
            "search": {"mode": "match", "score": round(s.probability, 4),
                       "extension": [{"url": MATCH_GRADE, "valueCode": grade}]},
        })
    entries.sort(key=lambda e: -e["search"]["score"])
    entries = entries[:count]
    return _fhir({"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries})


# -- IHE PIXm -----------------------------------------------------------------------------------------
@router.get("/Patient/$ihe-pix", summary="IHE PIXm: cross-reference a patient identifier (ITI-83)")
def pix(request: Request) -> Response:
    _who()
    q = request.query_params
    src = q.get("sourceIdentifier")
    if not src or "|" not in src:
        raise bad_request("sourceIdentifier=system|value is required", expression="sourceIdentifier")
    system, value = src.split("|", 1)
    if not system or not value:
        raise bad_request("sourceIdentifier needs both a system and a value", expression="sourceIdentifier")
    targets = [t for t in q.getlist("targetSystem") for t in t.split(",") if t]
    empi = _empi(request)
    repo = request.app.state.node.store.repository()
    found = repo.find("Patient", f"identifier={_q(system)}|{_q(value)}", limit=50)
    if not found:
        raise not_found(f"No Patient has the identifier {system}|{value}")
    import sqlalchemy as sa

    from phip.empi import tables as T

    R = T.record
    with empi.store.read_conn() as conn:
        persons = {p for (p,) in conn.execute(
            sa.select(R.c.person_id).where(R.c.patient_id.in_([r.id for r in found])))}
        pids = [p for (p,) in conn.execute(sa.select(R.c.patient_id).where(R.c.person_id.in_(persons)))]
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    known_systems: set[str] = set()
    for row in repo.rows_by_ids([("Patient", p) for p in sorted(pids)]):
        doc = row.resource()
        for ident in doc.get("identifier") or []:
            s, v = ident.get("system"), ident.get("value")
            if not s or not v:
                continue
            known_systems.add(s)
            if (s, v) == (system, value) or (targets and s not in targets) or (s, v) in seen:
                continue
            seen.add((s, v))
            out.append({"name": "targetIdentifier", "valueIdentifier": {"system": s, "value": v}})
        if not targets:
            out.append({"name": "targetId", "valueReference": {"reference": f"Patient/{row.id}"}})
    if targets and not any(t in known_systems for t in targets):
        raise FhirError(403, f"targetSystem {', '.join(targets)} is not known for this person",
                        code="not-found", msg_id="PHIP-4030",
                        issues=[Issue("error", "code-invalid", "targetSystem not recognized", "targetSystem",
                                      "PHIP-4030")])
    return _fhir({"resourceType": "Parameters", "parameter": out})


def _q(s: str) -> str:
    from urllib.parse import quote

    return quote(s, safe=":/.-_")


# -- merge / unmerge ------------------------------------------------------------------------------
def _ref_param(body: dict[str, Any], name: str, repo: Any) -> str | None:
    p = _param(body, name)
    if p is not None:
        ref = (p.get("valueReference") or {}).get("reference", "")
        if not ref.startswith("Patient/"):
            raise bad_request(f"{name} must reference a Patient", expression=f"Parameters.parameter.{name}")
        return str(ref.split("/", 1)[1])
    pi = _param(body, f"{name}-identifier")
    if pi is not None:
        ident = pi.get("valueIdentifier") or {}
        found = repo.find("Patient", f"identifier={_q(ident.get('system', ''))}|{_q(ident.get('value', ''))}")
        if len(found) != 1:
            raise FhirError(422, f"{name}-identifier matches {len(found)} Patients (needs exactly one)",
                            code="processing", msg_id="PHIP-4013")
        return str(found[0].id)
    return None


@router.post("/Patient/$merge", summary="Merge two Patient records (R5 patient-merge semantics)")
async def merge_op(request: Request) -> Response:
    who = _who(steward=True)
    body = await _json(request)
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise bad_request("$merge takes a Parameters resource")
    from phip.empi.steward import merge

    empi = _empi(request)
    repo = request.app.state.node.store.repository()
    source = _ref_param(body, "source-patient", repo)
    target = _ref_param(body, "target-patient", repo) or _ref_param(body, "result-patient", repo)
    if not source or not target:
        raise bad_request("$merge needs source-patient and target-patient (references or identifiers)")
    preview = bool((_param(body, "preview") or {}).get("valueBoolean", False))
    with empi.store.write_tx() as tx:
        res = merge(empi, repo, tx.conn, source, target, who, preview)
    target_doc = repo.read("Patient", target).resource()
    out = [{"name": "input", "resource": body},
           {"name": "outcome", "resource": {"resourceType": "OperationOutcome", "issue": [{
               "severity": "information", "code": "informational",
               "diagnostics": (f"Preview: merging Patient/{source} into Patient/{target} would move "
                               if preview else f"Merged Patient/{source} into Patient/{target}; moved ")
               + f"{len(res['moved'])} references"}]}},
           {"name": "result", "resource": target_doc}]
    return _fhir({"resourceType": "Parameters", "parameter": out})


@router.post("/Patient/$unmerge", summary="Undo the last merge of a source Patient")
async def unmerge_op(request: Request) -> Response:
    who = _who(steward=True)
    body = await _json(request)
    from phip.empi.steward import unmerge

    empi = _empi(request)
    repo = request.app.state.node.store.repository()
    source = _ref_param(body, "source-patient", repo) if isinstance(body, dict) else None
    if not source:
        raise bad_request("$unmerge needs source-patient")
    reason = (_param(body, "reason") or {}).get("valueString")
    with empi.store.write_tx() as tx:
        res = unmerge(empi, repo, tx.conn, source, who, reason)
    return _fhir({"resourceType": "Parameters", "parameter": [
        {"name": "source", "valueReference": {"reference": f"Patient/{res['source']}"}},
        {"name": "target", "valueReference": {"reference": f"Patient/{res['target']}"}},
        {"name": "person", "valueReference": {"reference": f"Person/{res['person']}"}},
        *[{"name": "restored", "valueReference": {"reference": r}} for r in res["restored"]]]})


# -- review queue and manual decisions ------------------------------------------------------------
_MAX_ID = 2**31 - 1  # review item ids are 32-bit integers on every backend
@router.get("/empi/review", summary="Potential matches waiting for review (per-field scores)")
def review_list(request: Request, status: str = "open", _count: int = Query(50, ge=1, le=500),
                after: int = Query(0, ge=0, le=_MAX_ID)) -> Response:
    _who(steward=True)
    from phip.empi.steward import review_items

    if status not in ("open", "linked", "rejected", "obsolete", "all"):
        raise bad_request("status must be open, linked, rejected, obsolete or all", expression="status")
    empi = _empi(request)
    with empi.store.read_conn() as conn:
        items = review_items(conn, status, max(1, min(_count, 500)), after)
    return _fhir({"items": items, "next": items[-1]["id"] if len(items) == _count else None})


@router.post("/empi/review/{item_id}", summary="Decide a review item: link or reject, with a reason")
async def review_decide(request: Request, item_id: int = Path(ge=1, le=_MAX_ID)) -> Response:
    who = _who(steward=True)
    body = await _json(request)
    from phip.empi.steward import decide_review

    empi = _empi(request)
    decision = (body or {}).get("decision")
    with empi.store.write_tx() as tx:
        res = decide_review(empi, tx.conn, item_id, str(decision), who, (body or {}).get("reason"))
    return _fhir(res)


def _pid(v: Any, name: str) -> str:
    if not isinstance(v, str) or not v:
        raise bad_request(f"'{name}' (a Patient id or Patient/id) is required", expression=name)
    return v.split("/", 1)[1] if v.startswith("Patient/") else v


@router.post("/empi/link", summary="Link a Patient to the Person of another Patient (manual decision)")
async def link_op(request: Request) -> Response:
    who = _who(steward=True)
    body = await _json(request) or {}
    from phip.empi.steward import link_records

    empi = _empi(request)
    with empi.store.write_tx() as tx:
        person = link_records(empi, tx.conn, _pid(body.get("patient"), "patient"), _pid(body.get("other"), "other"),
                              who, body.get("reason"))
    return _fhir({"person": f"Person/{person}"})


@router.post("/empi/unlink", summary="Take a Patient out of its Person (manual decision)")
async def unlink_op(request: Request) -> Response:
    who = _who(steward=True)
    body = await _json(request) or {}
    from phip.empi.steward import unlink_record

    empi = _empi(request)
    with empi.store.write_tx() as tx:
        person = unlink_record(empi, tx.conn, _pid(body.get("patient"), "patient"), who, body.get("reason"))
    return _fhir({"person": f"Person/{person}"})


# -- pinyin name search (PDQm complement) ---------------------------------------------------------
@router.get("/empi/pinyin", summary="Patients whose name reads as the given pinyin (homophones, 繁体)")
def pinyin_search(request: Request, name: str, birthyear: str | None = None, _count: int = 50) -> Response:
    """``name`` in hanzi (any script) or pinyin without tones and spaces (``zhangwei``); an indexed
    prefix range on the ``name_year`` blocking keys (``ny:<pinyin>|<year>``)."""
    _who()
    import re

    import sqlalchemy as sa

    from phip.empi import tables as T
    from phip.empi.normalize import pinyin, simplify

    py = pinyin(simplify(name))
    if not re.fullmatch(r"[a-z]+", py):
        raise bad_request("name must be Chinese characters or pinyin letters", expression="name")
    if birthyear is not None and not re.fullmatch(r"\d{4}", birthyear):
        raise bad_request("birthyear must be YYYY", expression="birthyear")
    K = T.key
    lo = f"ny:{py}|{birthyear or ''}"
    n = max(1, min(_count, 500))
    q = (sa.select(K.c.patient_id).where(K.c.key == lo).limit(n) if birthyear
         else sa.select(K.c.patient_id).where(K.c.key >= lo, K.c.key < lo + "\x7f").limit(n))
    empi = _empi(request)
    with empi.store.read_conn() as conn:
        ids = [r[0] for r in conn.execute(q)]
    repo = request.app.state.node.store.repository()
    rows = repo.rows_by_ids([("Patient", i) for i in ids])
    entries = [{"fullUrl": f"{_base(request)}/Patient/{r.id}", "resource": r.resource(), "search": {"mode": "match"}}
               for r in rows]
    return _fhir({"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries})
