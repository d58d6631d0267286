"""HTTP routes: the FHIR terminology operations and the unmapped-codes report.

https://hl7.org/fhir/R4/terminology-service.html — ``CodeSystem/$lookup``, ``$validate-code``,
``$subsumes``; ``ValueSet/$validate-code``, ``$expand``; ``ConceptMap/$translate``; each at type
level and at instance level (``/fhir/CodeSystem/{id}/$lookup``), by GET (query parameters) or POST
(a ``Parameters`` body).  ``GET /terminology/unmapped`` lists local codes seen without a mapping.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from phip.fhir.errors import FhirError, Issue, bad_request
from phip.terminology.model import ValueSetIndex, parse_conceptmap, parse_valueset
from phip.terminology.service import TerminologyService

FHIR_JSON = "application/fhir+json"
fhir_router = APIRouter(prefix="/fhir", tags=["Terminology"])
router = APIRouter(prefix="/terminology", tags=["Terminology"])
Json = dict[str, Any]


def _svc(request: Request) -> TerminologyService:
    return request.app.state.node.ext["terminology"]  # type: ignore[no-any-return]


def _out(body: Json, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=FHIR_JSON)


class Params:
    """Operation parameters from the query string and a ``Parameters`` body."""

    def __init__(self, query: list[tuple[str, str]], body: Json | None) -> None:
        self.values: dict[str, Any] = {}
        for k, v in query:
            self.values.setdefault(k, v)
        if body is not None:
            if body.get("resourceType") != "Parameters":
                raise bad_request("The body of a terminology operation must be a Parameters resource",
                                  msg_id="PHIP-6010")
            for p in body.get("parameter") or []:
                name = p.get("name")
                if not name:
                    continue
                if "resource" in p:
                    self.values.setdefault(name, p["resource"])
                    continue
                for key, val in p.items():
                    if key.startswith("value"):
                        self.values.setdefault(name, val)

    def str(self, name: str) -> str | None:
        v = self.values.get(name)
        return None if v is None else str(v)

    def int(self, name: str, default: int | None = None) -> int | None:
        v = self.values.get(name)
        if v is None or v == "":
            return default
        try:
            n = int(v)
        except (TypeError, ValueError):
            raise bad_request(f"Parameter {name!r} must be an integer, not {v!r}", msg_id="PHIP-6011") from None
        if n < 0:
            raise bad_request(f"Parameter {name!r} must not be negative", msg_id="PHIP-6011")
        return n

    def bool(self, name: str, default: bool = False) -> bool:
        v = self.values.get(name)
        if v is None:
            return default
        if isinstance(v, bool):
            return v
        return str(v).lower() == "true"

    def coding(self, name: str) -> Json | None:
        v = self.values.get(name)
        if isinstance(v, str):  # a Coding in a query string: system|code
            system, _, code = v.rpartition("|")
            return {"system": system or None, "code": code}
        return v if isinstance(v, dict) else None


async def _params(request: Request) -> Params:
    body = None
    if request.method == "POST":
        raw = await request.body()
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                raise bad_request(f"The body is not valid JSON: {e}", msg_id="PHIP-1104") from None
            if not isinstance(body, dict):
                raise bad_request("The body must be a Parameters resource", msg_id="PHIP-6010")
    return Params(list(request.query_params.multi_items()), body)


def _instance(request: Request, rtype: str, rid: str) -> Json:
    """The stored resource ``rtype/rid`` (or the shipped one with that id when it is not in the store)."""
    from phip.terminology.service import shipped_entries

    repo = request.app.state.node.store.repository()
    try:
        return repo.read(rtype, rid).resource()  # type: ignore[no-any-return]
    except FhirError as e:
        if e.status != 404:
            raise
    from phip.terminology import content as C

    if (rtype, rid) in shipped_entries():
        return next(d for d in C.shipped() if d["resourceType"] == rtype and d["id"] == rid)
    raise FhirError(404, f"{rtype}/{rid} is not known", code="not-found", msg_id="PHIP-1404")


def _p(name: str, **value: Any) -> Json:
    return {"name": name, **value}


# -- CodeSystem ------------------------------------------------------------------------------------------
async def _lookup(request: Request, url: str | None, version: str | None) -> Response:
    svc = _svc(request)
    p = await _params(request)
    coding = p.coding("coding")
    system = url or p.str("system") or (coding or {}).get("system")
    code = p.str("code") or (coding or {}).get("code")
    version = version or p.str("version") or (coding or {}).get("version")
    if not system or not code:
        raise bad_request("$lookup needs system and code (or coding)", msg_id="PHIP-6012")
    cs = svc.codesystem(system, version)
    if cs is None:
        raise FhirError(404, f"The code system {system}{' version ' + version if version else ''} is not known",
                        code="not-found", msg_id="PHIP-6001")
    c = cs.get(code)
    if c is None:
        shown = cs.grammar(code) if cs.grammar is not None else None
        if shown is None:
            raise FhirError(404, f"The code {code!r} is not a code of {system}", code="not-found",
                            msg_id="PHIP-6002", expression="code")
        return _out({"resourceType": "Parameters", "parameter": [
            _p("name", valueString=cs.title or cs.name or cs.url), _p("display", valueString=shown or code)]})
    out = [_p("name", valueString=cs.title or cs.name or cs.url)]
    if cs.version:
        out.append(_p("version", valueString=cs.version))
    out.append(_p("display", valueString=c.display or c.code))
    if c.definition:
        out.append(_p("definition", valueString=c.definition))
    if c.inactive:
        out.append(_p("inactive", valueBoolean=True))
    for d in c.designations:
        part = [_p("value", valueString=d.get("value", ""))]
        if d.get("language"):
            part.insert(0, _p("language", valueCode=d["language"]))
        out.append(_p("designation", part=part))
    for parent in c.parents:
        out.append(_p("property", part=[_p("code", valueCode="parent"), _p("value", valueCode=parent)]))
    for child in cs.children.get(c.code, []):
        out.append(_p("property", part=[_p("code", valueCode="child"), _p("value", valueCode=child)]))
    for key, val in c.properties.items():
        for v in val if isinstance(val, list) else [val]:
            out.append(_p("property", part=[_p("code", valueCode=key), _value_part(v)]))
    return _out({"resourceType": "Parameters", "parameter": out})


def _value_part(v: Any) -> Json:
    if isinstance(v, bool):
        return _p("value", valueBoolean=v)
    if isinstance(v, int):
        return _p("value", valueInteger=v)
    if isinstance(v, dict):
        return _p("value", valueCoding=v)
    return _p("value", valueString=str(v))


@fhir_router.get("/CodeSystem/$lookup", summary="Look up a code: display, designations, properties")
@fhir_router.post("/CodeSystem/$lookup", summary="Look up a code: display, designations, properties")
async def cs_lookup(request: Request) -> Response:
    return await _lookup(request, None, None)


@fhir_router.get("/CodeSystem/{rid}/$lookup", summary="Look up a code in this code system")
@fhir_router.post("/CodeSystem/{rid}/$lookup", summary="Look up a code in this code system")
async def cs_lookup_instance(request: Request, rid: str) -> Response:
    doc = _instance(request, "CodeSystem", rid)
    return await _lookup(request, doc.get("url"), doc.get("version"))


def _validation_result(check: Any) -> Response:
    out = [_p("result", valueBoolean=check.result)]
    if check.message:
        out.append(_p("message", valueString=check.message))
    if check.display:
        out.append(_p("display", valueString=check.display))
    if check.inactive:
        out.append(_p("inactive", valueBoolean=True))
    return _out({"resourceType": "Parameters", "parameter": out})


def _codes_to_check(p: Params, system: str | None) -> list[tuple[str | None, str, str | None]]:
    """(system, code, display) candidates from code/system, coding or codeableConcept."""
    if p.str("code"):
        return [(system or p.str("system"), str(p.str("code")), p.str("display"))]
    coding = p.coding("coding")
    if coding and coding.get("code"):
        return [(coding.get("system") or system, coding["code"], coding.get("display"))]
    cc = p.values.get("codeableConcept")
    if isinstance(cc, dict):
        return [(c.get("system") or system, c["code"], c.get("display")) for c in cc.get("coding") or []
                if c.get("code")]
    raise bad_request("$validate-code needs code (with system), coding or codeableConcept", msg_id="PHIP-6013")


async def _validate_cs(request: Request, url: str | None, version: str | None) -> Response:
    svc = _svc(request)
    p = await _params(request)
    system = url or p.str("url") or p.str("system")
    version = version or p.str("version")
    candidates = _codes_to_check(p, system)
    checks = [svc.check(s, c, display=d, version=version) for s, c, d in candidates]
    best = next((c for c in checks if c.result), checks[0] if checks else None)
    if best is None:
        raise bad_request("Nothing to validate: the codeableConcept has no coding", msg_id="PHIP-6013")
    return _validation_result(best)


@fhir_router.get("/CodeSystem/$validate-code", summary="Is this code in the code system?")
@fhir_router.post("/CodeSystem/$validate-code", summary="Is this code in the code system?")
async def cs_validate(request: Request) -> Response:
    return await _validate_cs(request, None, None)


@fhir_router.get("/CodeSystem/{rid}/$validate-code", summary="Is this code in this code system?")
@fhir_router.post("/CodeSystem/{rid}/$validate-code", summary="Is this code in this code system?")
async def cs_validate_instance(request: Request, rid: str) -> Response:
    doc = _instance(request, "CodeSystem", rid)
    return await _validate_cs(request, doc.get("url"), doc.get("version"))


async def _subsumes(request: Request, url: str | None, version: str | None) -> Response:
    svc = _svc(request)
    p = await _params(request)
    ca, cb = p.coding("codingA"), p.coding("codingB")
    system = url or p.str("system") or (ca or {}).get("system")
    a = p.str("codeA") or (ca or {}).get("code")
    b = p.str("codeB") or (cb or {}).get("code")
    if not system or not a or not b:
        raise bad_request("$subsumes needs system, codeA and codeB (or codingA and codingB)", msg_id="PHIP-6014")
    if svc.codesystem(system, version or p.str("version")) is None:
        raise FhirError(404, f"The code system {system} is not known", code="not-found", msg_id="PHIP-6001")
    outcome = svc.subsumes(system, a, b, version or p.str("version"))
    if outcome is None:
        raise bad_request(f"{a!r} or {b!r} is not a code of {system}", msg_id="PHIP-6002")
    return _out({"resourceType": "Parameters", "parameter": [_p("outcome", valueCode=outcome)]})


@fhir_router.get("/CodeSystem/$subsumes", summary="Does code A subsume code B?")
@fhir_router.post("/CodeSystem/$subsumes", summary="Does code A subsume code B?")
async def cs_subsumes(request: Request) -> Response:
    return await _subsumes(request, None, None)


@fhir_router.get("/CodeSystem/{rid}/$subsumes", summary="Does code A subsume code B in this code system?")
@fhir_router.post("/CodeSystem/{rid}/$subsumes", summary="Does code A subsume code B in this code system?")
async def cs_subsumes_instance(request: Request, rid: str) -> Response:
    doc = _instance(request, "CodeSystem", rid)
    return await _subsumes(request, doc.get("url"), doc.get("version"))


# -- ValueSet --------------------------------------------------------------------------------------------
def _resolve_vs(svc: TerminologyService, p: Params, vs_doc: Json | None) -> ValueSetIndex:
    if vs_doc is not None:
        return parse_valueset(vs_doc)
    body_vs = p.values.get("valueSet")
    if isinstance(body_vs, dict):
        return parse_valueset(body_vs)
    url = p.str("url") or p.str("context")
    if not url:
        raise bad_request("Name the value set: url (or a valueSet resource in the body)", msg_id="PHIP-6015")
    url, _, version = url.partition("|")
    vs = svc.valueset(url, p.str("valueSetVersion") or version or None)
    if vs is None:
        raise FhirError(404, f"The value set {url} is not known", code="not-found", msg_id="PHIP-6005")
    return vs


async def _validate_vs(request: Request, vs_doc: Json | None) -> Response:
    svc = _svc(request)
    p = await _params(request)
    vs = _resolve_vs(svc, p, vs_doc)
    candidates = _codes_to_check(p, None)
    checks = [svc.check(s, c, display=d, valueset=vs, version=p.str("systemVersion")) for s, c, d in candidates]
    best = next((c for c in checks if c.result), checks[0] if checks else None)
    if best is None:
        raise bad_request("Nothing to validate: the codeableConcept has no coding", msg_id="PHIP-6013")
    return _validation_result(best)


@fhir_router.get("/ValueSet/$validate-code", summary="Is this code in the value set?")
@fhir_router.post("/ValueSet/$validate-code", summary="Is this code in the value set?")
async def vs_validate(request: Request) -> Response:
    return await _validate_vs(request, None)


@fhir_router.get("/ValueSet/{rid}/$validate-code", summary="Is this code in this value set?")
@fhir_router.post("/ValueSet/{rid}/$validate-code", summary="Is this code in this value set?")
async def vs_validate_instance(request: Request, rid: str) -> Response:
    return await _validate_vs(request, _instance(request, "ValueSet", rid))


async def _expand(request: Request, vs_doc: Json | None) -> Response:
    svc = _svc(request)
    p = await _params(request)
    vs = _resolve_vs(svc, p, vs_doc)
    nested = p.values.get("excludeNested") is not None and not p.bool("excludeNested", True)
    out = svc.expand(vs, text=p.str("filter"), offset=p.int("offset", 0) or 0, count=p.int("count"),
                     active_only=p.bool("activeOnly"), nested=nested,
                     designations=p.bool("includeDesignations"))
    return _out(out)


@fhir_router.get("/ValueSet/$expand", summary="Expand a value set (filter, offset/count paging, nesting)")
@fhir_router.post("/ValueSet/$expand", summary="Expand a value set (filter, offset/count paging, nesting)")
async def vs_expand(request: Request) -> Response:
    return await _expand(request, None)


@fhir_router.get("/ValueSet/{rid}/$expand", summary="Expand this value set")
@fhir_router.post("/ValueSet/{rid}/$expand", summary="Expand this value set")
async def vs_expand_instance(request: Request, rid: str) -> Response:
    return await _expand(request, _instance(request, "ValueSet", rid))


# -- ConceptMap ------------------------------------------------------------------------------------------
async def _translate(request: Request, cm_doc: Json | None) -> Response:
    svc = _svc(request)
    p = await _params(request)
    coding = p.coding("coding")
    cc = p.values.get("codeableConcept")
    candidates: list[tuple[str | None, str]] = []
    if p.str("code"):
        candidates = [(p.str("system"), str(p.str("code")))]
    elif coding and coding.get("code"):
        candidates = [(coding.get("system"), coding["code"])]
    elif isinstance(cc, dict):
        candidates = [(c.get("system"), c["code"]) for c in cc.get("coding") or [] if c.get("code")]
    if not candidates or any(s is None for s, _ in candidates):
        raise bad_request("$translate needs system and code (or coding / codeableConcept)", msg_id="PHIP-6016")
    url = p.str("url")
    body_map = p.values.get("conceptMap")
    adhoc = parse_conceptmap(cm_doc or body_map) if isinstance(cm_doc or body_map, dict) else None
    if url and adhoc is None and svc.conceptmap(url) is None:
        raise FhirError(404, f"The concept map {url} is not known", code="not-found", msg_id="PHIP-6006")
    target = p.str("targetsystem") or p.str("targetSystem")
    reverse = p.bool("reverse")
    matches: list[Any] = []
    for system, code in candidates:
        assert system is not None
        if adhoc is not None:
            found = adhoc.by_target.get((system, code), []) if reverse else adhoc.by_source.get((system, code), [])
            matches += [m for m in found
                        if target is None or (m.source_system if reverse else m.target_system) == target]
        else:
            matches += svc.translate(system, code, target_system=target, conceptmap_url=url, reverse=reverse)
    good = [m for m in matches if m.equivalence not in ("unmatched", "disjoint")]
    out = [_p("result", valueBoolean=bool(good))]
    if not good:
        out.append(_p("message", valueString="No mapping found for " + ", ".join(f"{s}|{c}" for s, c in candidates)))
    for m in matches:
        sys_, code_ = (m.source_system, m.source_code) if reverse else (m.target_system, m.target_code)
        part = [_p("equivalence", valueCode=m.equivalence)]
        if code_:
            concept: Json = {"system": sys_, "code": code_}
            disp = m.display if not reverse else None
            disp = disp or svc.lookup(sys_, code_)
            if disp:
                concept["display"] = disp
            part.append(_p("concept", valueCoding=concept))
        part.append(_p("source", valueUri=m.conceptmap))
        if m.comment:
            part.append(_p("comment", valueString=m.comment))
        out.append(_p("match", part=part))
    return _out({"resourceType": "Parameters", "parameter": out})


@fhir_router.get("/ConceptMap/$translate", summary="Translate a code with the concept maps")
@fhir_router.post("/ConceptMap/$translate", summary="Translate a code with the concept maps")
async def cm_translate(request: Request) -> Response:
    return await _translate(request, None)


@fhir_router.get("/ConceptMap/{rid}/$translate", summary="Translate a code with this concept map")
@fhir_router.post("/ConceptMap/{rid}/$translate", summary="Translate a code with this concept map")
async def cm_translate_instance(request: Request, rid: str) -> Response:
    return await _translate(request, _instance(request, "ConceptMap", rid))


# -- reports ---------------------------------------------------------------------------------------------
@router.get("/unmapped", summary="Local codes seen at ingest without a mapping to a standard code")
def unmapped(request: Request, system: str | None = None, _count: int = 100) -> Response:
    svc = _svc(request)
    rows = svc.unmapped(system, limit=max(1, min(_count, 10_000)))
    return Response(orjson.dumps({"total": len(rows), "codes": rows}), media_type="application/json")


@router.get("/status", summary="Loaded terminology content and what the cache holds")
def status(request: Request) -> Response:
    import sqlalchemy as sa

    from phip.terminology.tables import loads

    svc = _svc(request)
    svc.refresh()
    with request.app.state.node.store.read_conn() as conn:
        found = conn.execute(sa.select(loads).order_by(loads.c.name))
        rows = [{str(k): v for k, v in zip(r._fields, r, strict=True)} for r in found]
    body = {"loads": rows, "codesystems": svc.summary(),
            "strictness": svc.settings.strictness if svc.settings else None}
    return Response(orjson.dumps(body), media_type="application/json")


# -- $validate against a profile (the core's $validate fires the VALIDATE hook point) ----------------------
def validate_hook(svc: TerminologyService) -> Any:
    def run(rtype: str, resource: Json, profile: str | None) -> list[Issue]:
        from phip.terminology.profiles import Profile, check_profile, profiles_for

        if profile:
            p = svc.profile(profile.split("|")[0])
            if not isinstance(p, Profile):
                raise FhirError(404, f"The profile {profile} is not known", code="not-found", msg_id="PHIP-6007")
            if p.type != rtype:
                raise bad_request(f"The profile {profile} constrains {p.type}, not {rtype}", msg_id="PHIP-6008")
            return check_profile(svc, p, resource)
        configured = svc.settings.profiles if svc.settings is not None else {}
        issues: list[Issue] = []
        for p in profiles_for(svc, rtype, resource, configured):
            issues += check_profile(svc, p, resource)
        return issues

    return run
