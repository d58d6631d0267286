"""Transaction and batch Bundles (https://hl7.org/fhir/R4/http.html#transaction).

A ``transaction`` is all or nothing: entries run in the spec's order (DELETE, POST,
PUT/PATCH, GET/HEAD) in one database transaction; ``urn:uuid:`` full URLs of new
resources get server ids up front and every reference to them is rewritten; a
conditional reference (``Patient?identifier=…``) is resolved to the one resource it
matches.  A ``batch`` runs each entry on its own and reports each outcome.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson

from phip.core.ids import uuid7
from phip.fhir import definitions as defs
from phip.fhir.datetimes import now_us, to_instant
from phip.fhir.errors import FhirError, Issue, bad_request, outcome
from phip.fhir.search.extract import index_resource
from phip.store.repository import Checked, Repository, Row, WriteResult, stored_rows

ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}

#: a function answering a GET entry: (repository, url path, query params) -> resource dict
GetHandler = Callable[[Repository, str, list[tuple[str, str]]], dict[str, Any]]


def _entry_error(i: int, e: FhirError) -> FhirError:
    issues = [
        Issue(x.severity, x.code, f"Bundle.entry[{i}]: {x.diagnostics}",
              f"Bundle.entry[{i}]" + (f".resource{_strip_type(x.expression)}" if x.expression else ""), x.msg_id)
        for x in e.issues
    ]
    return FhirError(e.status, issues[0].diagnostics, issues=issues)


def _strip_type(expr: str) -> str:
    head, _, rest = expr.partition(".")
    if head in defs.resource_types():
        return "." + rest if rest else ""
    return "." + expr


def _check_bundle(bundle: Any) -> tuple[str, list[dict[str, Any]]]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise bad_request("POST to the base URL takes a Bundle of type transaction or batch",
                          expression="resourceType")
    btype = bundle.get("type")
    if btype not in ("transaction", "batch"):
        raise bad_request(f"Bundle.type must be transaction or batch, not {btype!r}", expression="Bundle.type")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise bad_request("Bundle.entry must be an array", expression="Bundle.entry")
    for i, e in enumerate(entries):
        req = e.get("request") if isinstance(e, dict) else None
        if not isinstance(req, dict) or req.get("method") not in ORDER or not isinstance(req.get("url"), str):
            raise bad_request(f"Bundle.entry[{i}].request needs a method (GET, POST, PUT, PATCH, DELETE) and a url",
                              expression=f"Bundle.entry[{i}].request")
    return btype, entries


def _split(url: str) -> tuple[list[str], list[tuple[str, str]]]:
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    return path, parse_qsl(parts.query, keep_blank_values=True)


def _resolve_refs(repo: Repository, value: Any, mapping: dict[str, str], cache: dict[str, str],
                  path: str = "") -> Any:
    """One pass over a resource: references to ``urn:uuid:`` full URLs of the bundle become
    ``Type/id``; conditional references (``Patient?identifier=x|1``) become the one match."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k == "reference" and isinstance(v, str):
                if v in mapping:
                    v = mapping[v]
                elif "?" in v and not v.startswith(("http:", "https:")):
                    v = _conditional(repo, v, cache, path)
                out[k] = v
            elif isinstance(v, dict | list):
                out[k] = _resolve_refs(repo, v, mapping, cache, f"{path}.{k}")
            else:
                out[k] = v
        return out
    if isinstance(value, list):
        return [_resolve_refs(repo, v, mapping, cache, f"{path}[{i}]") if isinstance(v, dict | list) else v
                for i, v in enumerate(value)]
    return value


#: a ``"reference"`` member and its string value in orjson's output (no whitespace; inside a JSON
#: string every ``"`` is escaped, so this matches keys only); group 1 is the raw value
_REF_MEMBER = re.compile(rb'"reference":"((?:[^"\\]|\\.)*)"')


def _rewrite_refs(raw: bytes, mapping: dict[str, str]) -> bytes | None:
    """:func:`_resolve_refs` on a resource's JSON bytes for the common case: only ``urn:uuid``-style
    references of the bundle and plain ``Type/id`` ones.  Returns the rewritten bytes (``raw`` when
    nothing changed), or None when a value needs the full walk (a conditional reference, an
    escaped character)."""
    changed = False
    out: list[bytes] = []
    last = 0
    for m in _REF_MEMBER.finditer(raw):
        v = m.group(1)
        if b"\\" in v:
            return None
        text = v.decode()
        if text in mapping:
            out.append(raw[last:m.start(1)])
            out.append(orjson.dumps(mapping[text])[1:-1])
            last = m.end(1)
            changed = True
        elif "?" in text and not text.startswith(("http:", "https:")):
            return None  # conditional: resolved (and its errors reported with their path) by the walk
    if not changed:
        return raw
    out.append(raw[last:])
    return b"".join(out)


def _conditional(repo: Repository, ref: str, cache: dict[str, str], path: str) -> str:
    if ref not in cache:
        rtype, _, query = ref.partition("?")
        if rtype not in defs.resource_types():
            raise bad_request(f"Conditional reference {ref!r} names an unknown type", expression=path)
        found = repo.find(rtype, query)
        if len(found) != 1:
            raise FhirError(
                412, f"Conditional reference {ref!r} matches {len(found)} resources (needs exactly one)",
                code="processing", expression=path,
            )
        cache[ref] = f"{rtype}/{found[0].id}"
    return cache[ref]


#: what an entry's response carries, by the request's ``Prefer: return=…`` (representation by default)
RETURNS = ("representation", "minimal", "OperationOutcome")


@dataclass(slots=True)
class _Later:
    """An entry's response, built once the transaction is over (outside the write lock): a stored
    version's content does not change."""

    row: Row
    status: str
    base: str
    issues: list[Issue]

    def build(self, ret: str = "representation", raw: bool = False) -> dict[str, Any]:
        return _response(self.row, self.status, self.base, self.issues, resource=ret == "representation",
                         raw=raw, always_outcome=ret == "OperationOutcome")


def _built(out: Any, ret: str = "representation", raw: bool = False) -> dict[str, Any]:
    return out.build(ret, raw) if isinstance(out, _Later) else out


@dataclass(slots=True)
class _Pre:
    """A POST/PUT entry prepared before the write lock: its resource with the bundle's references
    rewritten (for ``mapping`` as it then was) and the outcome of its validation."""

    mapping: dict[str, str]
    raw: bytes  # the rewritten resource's JSON
    resource: dict[str, Any]
    checked: Checked


def _precheck(repo: Repository, entries: list[dict[str, Any]], mapping: dict[str, str],
              assigned: dict[int, str]) -> dict[int, _Pre]:
    """Rewrite references, validate and index the POST/PUT entries up front, outside the transaction,
    and run the PREPARE_WRITE hooks for them with the id they will be written with (CPU work that need
    not hold the database's write lock; the index and the hooks' results are used if the write's
    BEFORE_WRITE hooks leave the resource unchanged).  An entry whose references need the
    database (conditional) is left to :func:`_one`; errors are kept and raised when the entry's turn
    comes, so the transaction fails on the same entry, with the same error, as it would otherwise."""
    out: dict[int, _Pre] = {}
    snapshot = dict(mapping)
    later: list[tuple[Checked, str, str, dict[str, Any]]] = []  # (what to prepare: after the loop, in one go)
    for i, e in enumerate(entries):
        req = e["request"]
        res = e.get("resource")
        if req["method"] not in ("POST", "PUT") or not isinstance(res, dict):
            continue
        path, query = _split(req["url"])
        if not ((req["method"] == "POST" and len(path) == 1)
                or (req["method"] == "PUT" and len(path) == 2 and not query)):
            continue
        raw = orjson.dumps(res)
        fast = _rewrite_refs(raw, mapping) if b'"reference"' in raw else raw
        if fast is None:
            continue
        doc = res if fast is raw else orjson.loads(fast)
        try:
            checked = Checked(repo._validate(path[0], doc), raw=fast)
            ix = index_resource(doc)
            if repo.store.codec is not None:  # its sealed values as the index stores them (blind)
                repo.store.codec.index(path[0], doc, ix)
            checked.index = stored_rows(path[0], ix)  # (the rows as inserted: less to do in the write lock)
        except FhirError as err:
            checked = Checked([], err)
        except Exception:  # e.g. an unknown type: left to the write, which reports it first
            continue
        rid = assigned.get(i) if req["method"] == "POST" else path[1]
        if checked.error is None and rid is not None:
            later.append((checked, path[0], rid, {**doc, "id": rid}))
        out[i] = _Pre(snapshot, fast, doc, checked)
    if later:
        for (checked, _t, rid, _d), prepared in zip(
                later, repo.store.hooks.prepare_many([(t, r, d) for _c, t, r, d in later]), strict=True):
            checked.prepared = prepared
            checked.prepared_id = rid
    return out


def _response(row: Row | None, status: str, base: str, issues: list[Issue] | None = None,
              resource: bool = True, raw: bool = False, always_outcome: bool = False) -> dict[str, Any]:
    """``raw``: the stored JSON goes into the response as it is (``orjson.Fragment``: the response is
    serialised by orjson, nothing parses it back); ``always_outcome``: an outcome even when all is well
    (``Prefer: return=OperationOutcome``)."""
    resp: dict[str, Any] = {"status": status}
    out: dict[str, Any] = {}
    if row is not None:
        out["fullUrl"] = f"{base}/{row.type}/{row.id}"
        resp["location"] = f"{row.type}/{row.id}/_history/{row.version}"
        resp["etag"] = row.etag
        resp["lastModified"] = row.last_modified
        if resource and row.content is not None:
            out["resource"] = orjson.Fragment(row.content) if raw else orjson.loads(row.content)
    if issues or always_outcome:
        resp["outcome"] = outcome(issues or [])
    out["response"] = resp
    return out


def _status(code: int) -> str:
    return {200: "200 OK", 201: "201 Created", 204: "204 No Content"}.get(code, str(code))


def process(repo: Repository, bundle: Any, base: str, get: GetHandler, *, ret: str = "representation",
            raw: bool = False) -> dict[str, Any]:
    """Run a transaction or batch Bundle; returns the response Bundle.

    ``ret``: what each write entry's response carries (:data:`RETURNS`, the request's ``Prefer:
    return=…``): the stored resource, nothing but its location and version, or an outcome.  ``raw``:
    stored resources go in as ``orjson.Fragment`` (for a caller that serialises with orjson)."""
    if ret not in RETURNS:
        raise ValueError(f"ret must be one of {RETURNS}, not {ret!r}")
    btype, entries = _check_bundle(bundle)
    if btype == "transaction":
        out = [_built(r, ret, raw) for r in _transaction(repo, entries, base, get)]
    else:
        out = []
        for i, e in enumerate(entries):
            try:
                with repo.transaction():
                    done = _one(repo, i, e, base, get, {}, {})
                out.append(_built(done, ret, raw))
            except FhirError as err:
                out.append({"response": {"status": str(err.status), "outcome": err.outcome()}})
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": to_instant(now_us())},
        "type": f"{btype}-response",
        "entry": out,
    }


def _transaction(repo: Repository, entries: list[dict[str, Any]], base: str, get: GetHandler) -> list[Any]:
    mapping: dict[str, str] = {}
    assigned: dict[int, str] = {}
    for i, e in enumerate(entries):
        full = e.get("fullUrl")
        method = e["request"]["method"]
        res = e.get("resource")
        if method == "POST" and isinstance(res, dict):
            new_id = uuid7()
            assigned[i] = new_id
            if isinstance(full, str) and full:
                mapping[full] = f"{res.get('resourceType')}/{new_id}"
        elif method == "PUT" and isinstance(full, str) and full.startswith("urn:uuid:"):
            path, _query = _split(e["request"]["url"])
            if len(path) == 2:
                mapping[full] = "/".join(path)
    pre = _precheck(repo, entries, mapping, assigned)
    results: list[Any] = [None] * len(entries)
    order = sorted(range(len(entries)), key=lambda i: ORDER[entries[i]["request"]["method"]])
    seen_targets: set[str] = set()
    cond_cache: dict[str, str] = {}
    with repo.transaction():
        # conditional creates first: a match replaces the id a urn:uuid was given
        for i, e in enumerate(entries):
            cond = e["request"].get("ifNoneExist")
            if e["request"]["method"] == "POST" and cond and isinstance(e.get("resource"), dict):
                rtype = e["resource"].get("resourceType", "")
                try:
                    found = repo.find(rtype, cond)
                except FhirError as err:
                    raise _entry_error(i, err) from None
                if len(found) == 1 and isinstance(e.get("fullUrl"), str):
                    mapping[e["fullUrl"]] = f"{rtype}/{found[0].id}"
        for i in order:
            e = entries[i]
            key = e["request"]["method"] + " " + e["request"]["url"].split("?", 1)[0]
            if e["request"]["method"] in ("PUT", "DELETE", "PATCH") and "?" not in e["request"]["url"]:
                if key.split(" ", 1)[1] in seen_targets:
                    raise _entry_error(i, bad_request(
                        f"Two entries of the transaction change {e['request']['url']}"))
                seen_targets.add(key.split(" ", 1)[1])
            try:
                results[i] = _one(repo, i, e, base, get, mapping, cond_cache, assigned.get(i), pre.get(i))
            except FhirError as err:
                raise _entry_error(i, err) from None
    return results


def _one(repo: Repository, i: int, e: dict[str, Any], base: str, get: GetHandler, mapping: dict[str, str],
         cond_cache: dict[str, str], new_id: str | None = None, pre: _Pre | None = None) -> Any:
    """Run one entry; returns its response entry (a :class:`_Later` for writes)."""
    req = e["request"]
    method = req["method"]
    path, query = _split(req["url"])
    res = e.get("resource")
    if method in ("POST", "PUT") and not isinstance(res, dict):
        raise bad_request(f"A {method} entry needs a resource", expression=f"Bundle.entry[{i}].resource")
    checked: Checked | None = None
    if pre is not None and pre.mapping == mapping:
        res, checked = pre.resource, pre.checked
    elif isinstance(res, dict):
        raw = orjson.dumps(res)
        if b'"reference"' in raw:
            fast = _rewrite_refs(raw, mapping)
            if fast is None:
                res = _resolve_refs(repo, res, mapping, cond_cache)
            elif fast is not raw:
                res = orjson.loads(fast)
            if pre is not None and fast == pre.raw:  # the mapping changed, not this resource
                res, checked = pre.resource, pre.checked
    if method == "POST":
        if len(path) != 1:
            raise bad_request(f"POST url must be a resource type, not {req['url']!r}")
        assert isinstance(res, dict)
        r: WriteResult = repo.create(path[0], res, if_none_exist=req.get("ifNoneExist"), rid=new_id,
                                     checked=checked)
        if r.status == 200 and new_id and e.get("fullUrl") in mapping:
            mapping[e["fullUrl"]] = f"{r.row.type}/{r.row.id}"
        return _Later(r.row, _status(r.status), base, r.issues)
    if method == "PUT":
        assert isinstance(res, dict)
        if len(path) == 2:
            r = repo.update(path[0], path[1], res, if_match=req.get("ifMatch"), checked=checked)
        elif len(path) == 1 and query:
            r = repo.conditional_update(path[0], urlencode(query), res)
        else:
            raise bad_request(f"PUT url must be Type/id or Type?criteria, not {req['url']!r}")
        return _Later(r.row, _status(r.status), base, r.issues)
    if method == "PATCH":
        if len(path) != 2:
            raise bad_request(f"PATCH url must be Type/id, not {req['url']!r}")
        patch = _patch_body(res)
        r = repo.patch(path[0], path[1], patch, if_match=req.get("ifMatch"))
        return _Later(r.row, _status(r.status), base, r.issues)
    if method == "DELETE":
        if len(path) == 2:
            repo.delete(path[0], path[1])
        elif len(path) == 1 and query:
            repo.conditional_delete(path[0], urlencode(query))
        else:
            raise bad_request(f"DELETE url must be Type/id or Type?criteria, not {req['url']!r}")
        return {"response": {"status": "204 No Content"}}
    body = get(repo, "/".join(path), query)
    return {"resource": body, "response": {"status": "200 OK"}}


def _patch_body(res: Any) -> Any:
    """A PATCH entry carries a Binary with the JSON Patch, or Parameters (FHIRPath patch: not supported)."""
    import base64

    if isinstance(res, dict) and res.get("resourceType") == "Binary" and res.get("data"):
        try:
            return orjson.loads(base64.b64decode(res["data"]))
        except Exception:
            raise bad_request("The Binary of a PATCH entry must hold a JSON Patch") from None
    raise FhirError(422, "PATCH entries need a Binary holding a JSON Patch (FHIRPath Patch is not supported)",
                    code="not-supported")
