"""The FHIR R4 RESTful API (https://hl7.org/fhir/R4/http.html), generic over every type.

Routes only translate HTTP to repository calls and back; the semantics live in
:mod:`phip.store.repository`.  Operation routes (``$…``) are declared before the
``/{type}/{id}`` routes so they match first.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from phip.api import render
from phip.api.bundles import process as process_bundle
from phip.api.capability import capability_statement
from phip.fhir import definitions as defs
from phip.fhir.errors import FhirError, Issue, bad_request, outcome
from phip.fhir.search.query import SearchRequest
from phip.fhir.validation import validate
from phip.store.repository import Repository, Row, WriteResult

FHIR_JSON = "application/fhir+json"
router = APIRouter(prefix="/fhir", tags=["FHIR R4"])


# -- helpers ------------------------------------------------------------------------------------
def repo_of(request: Request) -> Repository:
    return request.app.state.node.store.repository()  # type: ignore[no-any-return]


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir"


def fhir(body: bytes | dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return Response(content, status_code=status, media_type=FHIR_JSON, headers=headers)


async def json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        raise bad_request("The request has no body", msg_id="PHIP-1103")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise bad_request(f"The body is not valid JSON: {e}", msg_id="PHIP-1104") from None


def row_headers(request: Request, row: Row) -> dict[str, str]:
    return {
        "ETag": row.etag,
        "Last-Modified": _http_date(row.last_updated),
        "Location": f"{base_url(request)}/{row.type}/{row.id}/_history/{row.version}",
    }


def _http_date(us: int) -> str:
    from email.utils import formatdate

    return formatdate(us / 1_000_000, usegmt=True)


def prefer_return(request: Request) -> str:
    """``Prefer: return=minimal|representation|OperationOutcome`` (representation when absent)."""
    prefer = request.headers.get("prefer", "")
    if "return=minimal" in prefer:
        return "minimal"
    if "return=OperationOutcome" in prefer:
        return "OperationOutcome"
    return "representation"


def write_response(request: Request, result: WriteResult) -> Response:
    ret = prefer_return(request)
    headers = row_headers(request, result.row)
    if ret == "minimal":
        return Response(status_code=result.status, headers=headers)
    if ret == "OperationOutcome":
        return fhir(outcome(result.issues), result.status, headers)
    assert result.row.content is not None
    if result.issues:
        headers["X-Phip-Outcome"] = "warnings"
        # warnings travel with the resource: as a contained-free OperationOutcome header summary
        headers["X-Phip-Issues"] = str(len(result.issues))
    return fhir(result.row.content, result.status, headers)


def lenient(request: Request) -> bool:
    return "handling=lenient" in request.headers.get("prefer", "")


def check_type(rtype: str) -> None:
    if rtype not in defs.resource_types():
        raise FhirError(404, f"Unknown resource type {rtype!r}", code="not-supported", msg_id="PHIP-1001")


def run_search(request: Request, rtype: str | None, params: list[tuple[str, str]], path: str,
               extra_where: list[Any] | None = None) -> Response:
    repo = repo_of(request)
    req = repo.parser(lenient(request)).parse(rtype, params)
    req.base_url = base_url(request)
    result = repo.search(req, extra_where=extra_where)
    return fhir(searchset_bytes(request, req, params, path, result))


def searchset_bytes(request: Request, req: SearchRequest, params: list[tuple[str, str]], path: str,
                    result: Any) -> bytes:
    base = base_url(request)
    page_base = str(request.base_url).rstrip("/") + path
    self_url = render.page_url(page_base, params, req.cursor)
    next_url = render.page_url(page_base, params, result.next_cursor) if result.next_cursor else None
    return render.searchset(base, self_url, result.rows, result.included, result.total, next_url,
                            summary=req.summary, elements=req.elements, warnings=req.warnings)


def query_params(request: Request) -> list[tuple[str, str]]:
    return list(request.query_params.multi_items())


# -- whole system ------------------------------------------------------------------------------------
@router.get("/metadata", summary="CapabilityStatement (public)")
def metadata(request: Request) -> Response:
    return fhir(capability_statement(base_url(request), request.app.state.node))


@router.get("/$changes", summary="The node's change feed, in commit order")
def changes(request: Request, since: int = 0, _count: int = 100) -> Response:
    if _count < 1 or _count > 1000:
        raise bad_request("_count must be between 1 and 1000", expression="_count")
    if since < 0:
        raise bad_request("since must be a sequence number ≥ 0", expression="since")
    rows, nxt = repo_of(request).changes(since, _count)
    base = base_url(request)
    entries = []
    for seq, row in rows:
        entry: dict[str, Any] = {"fullUrl": f"{base}/{row.type}/{row.id}"}
        if row.deleted or row.content is None:
            entry["request"] = {"method": "DELETE", "url": f"{row.type}/{row.id}"}
        else:
            entry["resource"] = orjson.loads(row.content)
            entry["request"] = {"method": "PUT", "url": f"{row.type}/{row.id}"}
        entry["response"] = {"status": "200 OK", "etag": row.etag, "lastModified": row.last_modified}
        entries.append((seq, entry))
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "history",
        "meta": {"extension": [{"url": "urn:phip:change-feed:next", "valueString": str(nxt)}]},
        "link": [{"relation": "self", "url": f"{base}/$changes?since={since}&_count={_count}"},
                 {"relation": "next", "url": f"{base}/$changes?since={nxt}&_count={_count}"}],
        "entry": [{**e, "id": str(seq)} for seq, e in entries],
    }
    return fhir(bundle, headers={"X-Next-Since": str(nxt)})


@router.post("", summary="transaction or batch Bundle")
async def bundle(request: Request) -> Response:
    body = await json_body(request)
    repo = repo_of(request)
    out = await run_in_threadpool(process_bundle, repo, body, base_url(request), _bundle_get(request),
                                  ret=prefer_return(request), raw=True)
    return fhir(out)


def _bundle_get(request: Request) -> Any:
    def get(repo: Repository, path: str, query: list[tuple[str, str]]) -> dict[str, Any]:
        parts = [p for p in path.split("/") if p]
        if len(parts) == 2:
            return repo.read(parts[0], parts[1]).resource()
        if len(parts) == 4 and parts[2] == "_history":
            return repo.vread(parts[0], parts[1], parts[3]).resource()
        if len(parts) == 1:
            check_type(parts[0])
            req = repo.parser().parse(parts[0], query)
            req.base_url = base_url(request)
            res = repo.search(req)
            return orjson.loads(searchset_bytes(request, req, query, f"/fhir/{parts[0]}", res))  # type: ignore[no-any-return]
        raise bad_request(f"GET entry url {path!r} is not supported in a Bundle")

    return get


@router.get("", summary="Search across all types (_type)")
def system_search(request: Request) -> Response:
    return run_search(request, None, query_params(request), "/fhir")


@router.get("/_history", summary="History of the whole system")
def system_history(request: Request) -> Response:
    return _history(request, None, None, "/fhir/_history")


def _history(request: Request, rtype: str | None, rid: str | None, path: str) -> Response:
    q = request.query_params
    count = int(q.get("_count", "50")) if q.get("_count", "50").isdigit() else 50
    count = max(1, min(count, request.app.state.node.config.max_count))
    rows, nxt = repo_of(request).history(rtype, rid, since=q.get("_since"), at=q.get("_at"), count=count,
                                        cursor=q.get("_cursor"))
    params = query_params(request)
    page_base = str(request.base_url).rstrip("/") + path
    return fhir(render.history_bundle(base_url(request), render.page_url(page_base, params, q.get("_cursor")),
                                      rows, render.page_url(page_base, params, nxt) if nxt else None))


# -- operations --------------------------------------------------------------------------------------
from phip.api import operations  # noqa: E402  (operation routes must precede /{type}/{id})

router.include_router(operations.router)


# -- type level ----------------------------------------------------------------------------------------
@router.get("/{rtype}", summary="Search")
def search(request: Request, rtype: str) -> Response:
    check_type(rtype)
    return run_search(request, rtype, query_params(request), f"/fhir/{rtype}")


@router.post("/{rtype}/_search", summary="Search with a form body")
async def search_post(request: Request, rtype: str) -> Response:
    check_type(rtype)
    form = await request.form()
    params = query_params(request) + [(k, str(v)) for k, v in form.multi_items()]
    return await run_in_threadpool(run_search, request, rtype, params, f"/fhir/{rtype}")


@router.post("/{rtype}", summary="Create (conditional with If-None-Exist)")
async def create(request: Request, rtype: str) -> Response:
    check_type(rtype)
    body = await json_body(request)
    repo = repo_of(request)
    result = await run_in_threadpool(repo.create, rtype, body, if_none_exist=request.headers.get("if-none-exist"))
    return write_response(request, result)


@router.put("/{rtype}", summary="Conditional update")
async def conditional_update(request: Request, rtype: str) -> Response:
    check_type(rtype)
    body = await json_body(request)
    q = urlencode(query_params(request))
    if not q:
        raise bad_request("A PUT to the type needs search criteria (conditional update) or an id in the URL")
    result = await run_in_threadpool(repo_of(request).conditional_update, rtype, q, body,
                                     request.headers.get("if-match"))
    return write_response(request, result)


@router.delete("/{rtype}", summary="Conditional delete")
def conditional_delete(request: Request, rtype: str) -> Response:
    check_type(rtype)
    q = urlencode(query_params(request))
    if not q:
        raise bad_request("A DELETE on the type needs search criteria")
    n = repo_of(request).conditional_delete(rtype, q)
    return fhir(outcome([Issue("information", "informational", f"Deleted {n} resource(s)")]))


@router.get("/{rtype}/_history", summary="History of a type")
def type_history(request: Request, rtype: str) -> Response:
    check_type(rtype)
    return _history(request, rtype, None, f"/fhir/{rtype}/_history")


# -- instance level ---------------------------------------------------------------------------------------
@router.get("/{rtype}/{rid}", summary="Read")
def read(request: Request, rtype: str, rid: str) -> Response:
    row = repo_of(request).read(rtype, rid)
    assert row.content is not None
    q = request.query_params
    body = render.resource_bytes(row, q.get("_summary") if q.get("_summary") != "false" else None,
                                 q.get("_elements", "").split(",") if q.get("_elements") else None)
    inm = request.headers.get("if-none-match")
    headers = {"ETag": row.etag, "Last-Modified": _http_date(row.last_updated)}
    if inm and inm.strip() == row.etag:
        return Response(status_code=304, headers=headers)
    return fhir(body, headers=headers)


@router.put("/{rtype}/{rid}", summary="Update (or create with this id)")
async def update(request: Request, rtype: str, rid: str) -> Response:
    check_type(rtype)
    body = await json_body(request)
    result = await run_in_threadpool(repo_of(request).update, rtype, rid, body,
                                     if_match=request.headers.get("if-match"))
    return write_response(request, result)


@router.patch("/{rtype}/{rid}", summary="Patch (JSON Patch)")
async def patch(request: Request, rtype: str, rid: str) -> Response:
    check_type(rtype)
    ctype = request.headers.get("content-type", "")
    if "json-patch" not in ctype:
        raise FhirError(415, "PATCH takes application/json-patch+json", code="not-supported", msg_id="PHIP-1415")
    body = await json_body(request)
    result = await run_in_threadpool(repo_of(request).patch, rtype, rid, body,
                                     if_match=request.headers.get("if-match"))
    return write_response(request, result)


@router.delete("/{rtype}/{rid}", summary="Delete (soft, versioned)")
def delete(request: Request, rtype: str, rid: str) -> Response:
    row = repo_of(request).delete(rtype, rid)
    headers = {"ETag": row.etag} if row is not None else {}
    return Response(status_code=204, headers=headers)


@router.get("/{rtype}/{rid}/_history", summary="History of a resource")
def instance_history(request: Request, rtype: str, rid: str) -> Response:
    return _history(request, rtype, rid, f"/fhir/{rtype}/{rid}/_history")


@router.get("/{rtype}/{rid}/_history/{vid}", summary="Read a version")
def vread(request: Request, rtype: str, rid: str, vid: str) -> Response:
    row = repo_of(request).vread(rtype, rid, vid)
    assert row.content is not None
    return fhir(row.content, headers={"ETag": row.etag, "Last-Modified": _http_date(row.last_updated)})


@router.get("/{ctype}/{cid}/{rtype}", summary="Compartment search")
def compartment_search(request: Request, ctype: str, cid: str, rtype: str) -> Response:
    import sqlalchemy as sa

    from phip.store import schema as S
    from phip.store.search import local_refs

    comps = defs.compartments()
    if ctype not in comps:
        raise FhirError(404, f"{ctype} is not a compartment type", code="not-supported")
    check_type(rtype)
    params = comps[ctype].get(rtype)
    if not params:
        raise bad_request(f"{rtype} is not in the {ctype} compartment")
    keys = [k for p in params if p != "{def}" for k in S.param_rows(rtype, p)]
    repo_of(request).read(ctype, cid)
    x = S.idx_ref
    members = sa.select(x.c.rid).where(S.rows_of(x, keys, x.c.target_type == ctype, x.c.target_id == cid),
                                       local_refs(x, base_url(request)))
    return run_search(request, rtype, query_params(request), f"/fhir/{ctype}/{cid}/{rtype}",
                      [lambda r: r.c.rid.in_(members)])


def _validate_body(rtype: str, body: Any) -> list[Issue]:
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        res = next((p.get("resource") for p in body.get("parameter", []) if p.get("name") == "resource"), None)
        if res is None:
            raise bad_request("Parameters for $validate need a 'resource' parameter")
        body = res
    if not isinstance(body, dict) or body.get("resourceType") != rtype:
        raise bad_request(f"$validate on {rtype} needs a {rtype} resource")
    return [Issue(i.severity, i.code, i.diagnostics, i.expression) for i in validate(body)]


__all__ = [
    "_validate_body",
    "base_url",
    "check_type",
    "fhir",
    "json_body",
    "query_params",
    "render",
    "repo_of",
    "router",
    "run_search",
]
