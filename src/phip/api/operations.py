"""FHIR operations: ``$validate``, ``$meta``/``$meta-add``/``$meta-delete``,
``Patient/$everything`` and Bulk Data ``$export`` (async kick-off, status, files).

https://hl7.org/fhir/R4/operationslist.html, https://hl7.org/fhir/uv/bulkdata/export.html
"""

from __future__ import annotations

import shutil
import threading
import uuid
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from phip.api.context import current_principal
from phip.bulk.export import export, parse_since, parse_types, patient_compartment_types
from phip.fhir import definitions as defs
from phip.fhir.datetimes import now_us, to_instant
from phip.fhir.errors import FhirError, Issue, bad_request, not_found, outcome
from phip.store import schema as S

router = APIRouter()
FHIR_JSON = "application/fhir+json"


def _fhir(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return Response(content, status_code=status, media_type=FHIR_JSON, headers=headers)


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir"


# -- $validate ------------------------------------------------------------------------------------
@router.post("/{rtype}/$validate", summary="Validate a resource without storing it")
async def validate_op(request: Request, rtype: str) -> Response:
    from phip.api.fhir import _validate_body, check_type, json_body, repo_of

    check_type(rtype)
    repo_of(request).check_operation("validate", rtype)
    body = await json_body(request)
    issues = _validate_body(rtype, body)
    # the capabilities' checks (e.g. a named profile: ?profile=<url>, or a Parameters 'profile')
    profile = request.query_params.get("profile")
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        params = body.get("parameter", [])
        profile = profile or next((p.get("valueUri") or p.get("valueCanonical") for p in params
                                   if p.get("name") == "profile"), None)
        body = next((p.get("resource") for p in params if p.get("name") == "resource"), body)
    from phip.core.hooks import Point

    for extra in request.app.state.node.store.hooks.fire(Point.VALIDATE, rtype, body, profile):
        issues += extra or []
    return _fhir(outcome(issues))


# -- $meta ------------------------------------------------------------------------------------------
def _meta_params(meta: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [{"name": "return", "valueMeta": meta}]}


@router.get("/{rtype}/{rid}/$meta", summary="The meta of a resource")
@router.post("/{rtype}/{rid}/$meta", summary="The meta of a resource")
def meta_op(request: Request, rtype: str, rid: str) -> Response:
    from phip.api.fhir import repo_of

    doc = repo_of(request).read(rtype, rid).resource()
    return _fhir(_meta_params(doc.get("meta") or {}))


async def _meta_change(request: Request, rtype: str, rid: str, add: bool) -> Response:
    from phip.api.fhir import json_body, repo_of

    body = await json_body(request)
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise bad_request("$meta-add/$meta-delete take Parameters with a 'meta' parameter")
    meta = next((p.get("valueMeta") for p in body.get("parameter", []) if p.get("name") == "meta"), None)
    if not isinstance(meta, dict):
        raise bad_request("Parameters need a 'meta' parameter with valueMeta", expression="Parameters.parameter")
    result = await run_in_threadpool(repo_of(request).meta_change, rtype, rid, meta, add)
    return _fhir(_meta_params(result))


@router.post("/{rtype}/{rid}/$meta-add", summary="Add tags, profiles, security labels")
async def meta_add(request: Request, rtype: str, rid: str) -> Response:
    return await _meta_change(request, rtype, rid, True)


@router.post("/{rtype}/{rid}/$meta-delete", summary="Remove tags, profiles, security labels")
async def meta_delete(request: Request, rtype: str, rid: str) -> Response:
    return await _meta_change(request, rtype, rid, False)


# -- $everything -------------------------------------------------------------------------------------
@router.get("/Patient/{pid}/$everything", summary="Everything in a patient's compartment")
def everything(request: Request, pid: str) -> Response:
    from phip.api import render
    from phip.api.fhir import repo_of
    from phip.store.repository import _row
    from phip.store.search import after_cursor, decode_cursor, encode_cursor, local_refs

    repo = repo_of(request)
    patient = repo.read("Patient", pid)
    q = request.query_params
    types = parse_types(q.get("_type"))
    since = parse_since(q.get("_since"))
    try:
        count = int(q.get("_count", "100"))
    except ValueError:
        raise bad_request("_count must be a whole number", expression="_count") from None
    count = max(1, min(count, request.app.state.node.config.max_count))
    comp = patient_compartment_types()
    keys = [k for t, ps in comp.items() if types is None or t in types for p in ps if p != "{def}"
            for k in S.param_rows(t, p)]
    r, x = S.resources, S.idx_ref
    member = r.c.rid.in_(
        sa.select(x.c.rid).where(S.rows_of(x, keys, x.c.target_type == "Patient", x.c.target_id == pid),
                                 local_refs(x, _base(request)))
    )
    include_patient = types is None or "Patient" in types
    cond = sa.or_(member, r.c.rid == patient.rid) if include_patient else member
    conds: list[Any] = [cond, r.c.deleted == sa.false(), *repo.access_where(r, sorted(set(comp) | {"Patient"}))]
    if since is not None:
        conds.append(r.c.last_updated >= since)
    cursor = q.get("_cursor")
    if cursor:
        conds.append(after_cursor([(r.c.rid, False)], decode_cursor(cursor)))
    with repo.store.read_conn() as conn:
        recs = conn.execute(
            sa.select(r.c.rid, r.c.type, r.c.id, r.c.version, r.c.last_updated, r.c.deleted, r.c.content)
            .where(*conds).order_by(r.c.rid).limit(count + 1)
        ).all()
    more = len(recs) > count
    rows = repo.view_rows(repo._opened([_row(rec) for rec in recs[:count]], "operation"))
    path = str(request.base_url).rstrip("/") + f"/fhir/Patient/{pid}/$everything"
    params = list(q.multi_items())
    nxt = render.page_url(path, params, encode_cursor([rows[-1].rid])) if more and rows else None
    body = render.searchset(_base(request), render.page_url(path, params, cursor), rows, [], None, nxt)
    return _fhir(body)


# -- Bulk Data $export ---------------------------------------------------------------------------------
_running: dict[str, threading.Event] = {}


def _exports_dir(request: Request) -> Path:
    return Path(request.app.state.node.data) / "exports"


def _kickoff(request: Request, level: str, group: str | None = None) -> Response:
    node = request.app.state.node
    q = request.query_params
    fmt = q.get("_outputFormat")
    if fmt and fmt not in ("application/fhir+ndjson", "application/ndjson", "ndjson"):
        raise bad_request(f"_outputFormat {fmt!r} is not supported (use application/fhir+ndjson)",
                          expression="_outputFormat")
    types = parse_types(q.get("_type"))
    since = parse_since(q.get("_since"))
    patients: list[str] | None = None
    store = node.store
    repo = store.repository()  # the caller's access scope, made in the request's context
    repo.check_operation("export")
    where: Any = None
    transform: Any = None
    if repo.scope is not None:
        from phip.store.repository import Row

        def where(r: Any, rtype: str) -> list[Any]:
            return repo.access_where(r, [rtype], "r", quiet=True)

        def transform(rtype: str, body: bytes) -> bytes:
            return repo.view_rows([Row(0, rtype, "", 0, 0, False, body)])[0].content or body
    if level == "patient":
        with store.engine.connect() as conn:
            patients = [i for (i,) in conn.execute(sa.select(S.resources.c.id).where(
                S.resources.c.type == "Patient", S.resources.c.deleted == sa.false()))]
    elif level == "group":
        assert group is not None
        g = repo.read("Group", group).resource()
        patients = []
        for m in g.get("member") or []:
            ref = (m.get("entity") or {}).get("reference", "")
            if ref.startswith("Patient/"):
                patients.append(ref.split("/", 1)[1])
    job = uuid.uuid4().hex
    principal = current_principal.get()
    owner = principal.sub if principal else None
    now = now_us()
    req_url = str(request.url)
    with store.engine.begin() as conn:
        conn.execute(S.jobs.insert().values(id=job, kind="export", status="running", request=req_url,
                                            owner=owner, created=now, updated=now, progress="starting"))
    cancel = threading.Event()
    _running[job] = cancel
    out = _exports_dir(request) / job
    base = _base(request)

    def work() -> None:
        try:
            def progress(rtype: str, n: int) -> None:
                with store.engine.begin() as c:
                    c.execute(S.jobs.update().where(S.jobs.c.id == job).values(progress=f"{rtype}: {n}",
                                                                              updated=now_us()))

            counts = export(store, out, types=types, since_us=since, patients=patients, progress=progress,
                            where=where, transform=transform,
                            cancelled=cancel.is_set)
            manifest = {
                "transactionTime": to_instant(now),
                "request": req_url,
                "requiresAccessToken": True,
                "output": [{"type": t, "url": f"{base}/$export-file/{job}/{t}.ndjson", "count": n}
                           for t, n in counts.items()],
                "error": [],
            }
            status = "cancelled" if cancel.is_set() else "done"
            with store.engine.begin() as c:
                c.execute(S.jobs.update().where(S.jobs.c.id == job).values(
                    status=status, result=orjson.dumps(manifest).decode(), updated=now_us()))
        except Exception as e:  # the job reports its failure through the status endpoint
            with store.engine.begin() as c:
                c.execute(S.jobs.update().where(S.jobs.c.id == job).values(
                    status="failed", result=orjson.dumps(outcome([Issue("error", "exception", str(e))])).decode(),
                    updated=now_us()))
        finally:
            _running.pop(job, None)

    threading.Thread(target=work, name=f"export-{job}", daemon=True).start()
    return Response(status_code=202, headers={"Content-Location": f"{base}/$export-status/{job}"})


@router.get("/$export", summary="Bulk Data export of the whole system (async)")
@router.post("/$export", summary="Bulk Data export of the whole system (async)")
def export_system(request: Request) -> Response:
    return _kickoff(request, "system")


@router.get("/Patient/$export", summary="Bulk Data export of all patients (async)")
@router.post("/Patient/$export", summary="Bulk Data export of all patients (async)")
def export_patients(request: Request) -> Response:
    return _kickoff(request, "patient")


@router.get("/Group/{gid}/$export", summary="Bulk Data export of a group's members (async)")
@router.post("/Group/{gid}/$export", summary="Bulk Data export of a group's members (async)")
def export_group(request: Request, gid: str) -> Response:
    return _kickoff(request, "group", gid)


def _job(request: Request, job: str) -> Any:
    with request.app.state.node.store.engine.connect() as conn:
        rec = conn.execute(sa.select(S.jobs).where(S.jobs.c.id == job, S.jobs.c.kind == "export")).first()
    if rec is None:
        raise not_found(f"No export job {job}")
    principal = current_principal.get()
    if principal is not None and principal.role != "admin" and rec.owner != principal.sub:
        raise FhirError(403, "This export job belongs to another client", code="forbidden")
    return rec


@router.get("/$export-status/{job}", summary="Status of a Bulk Data export")
def export_status(request: Request, job: str) -> Response:
    rec = _job(request, job)
    if rec.status == "running":
        return Response(status_code=202, headers={"X-Progress": rec.progress or "running", "Retry-After": "2"})
    if rec.status == "failed":
        return _fhir(rec.result.encode(), 500)
    if rec.status == "cancelled":
        raise not_found(f"Export job {job} was cancelled")
    return Response(rec.result.encode(), media_type="application/json",
                    headers={"Expires": to_instant(now_us() + 86_400_000_000)})


@router.delete("/$export-status/{job}", summary="Cancel a Bulk Data export and delete its files")
def export_cancel(request: Request, job: str) -> Response:
    _job(request, job)
    ev = _running.get(job)
    if ev is not None:
        ev.set()
    with request.app.state.node.store.engine.begin() as conn:
        conn.execute(S.jobs.update().where(S.jobs.c.id == job).values(status="cancelled", updated=now_us()))
    shutil.rmtree(_exports_dir(request) / job, ignore_errors=True)
    return Response(status_code=202)


@router.get("/$export-file/{job}/{name}", summary="A file of a finished Bulk Data export")
def export_file(request: Request, job: str, name: str) -> Response:
    _job(request, job)
    rtype = name.removesuffix(".ndjson")
    if not name.endswith(".ndjson") or rtype not in defs.resource_types():
        raise not_found(f"No file {name} in export {job}")
    path = _exports_dir(request) / job / name
    if not path.exists():
        raise not_found(f"No file {name} in export {job}")
    return FileResponse(path, media_type="application/fhir+ndjson")
