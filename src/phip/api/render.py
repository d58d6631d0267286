"""Building response bodies: Bundles from stored rows, ``_summary`` and ``_elements``.

Stored rows are already JSON bytes, so a searchset is assembled by joining bytes
(no parse and re-serialise per resource) unless ``_summary``/``_elements`` ask for a
subset (https://hl7.org/fhir/R4/search.html#summary).
"""

from __future__ import annotations

from functools import cache
from typing import Any
from urllib.parse import urlencode

import orjson

from phip.fhir import definitions as defs
from phip.fhir.datetimes import now_us, to_instant
from phip.fhir.errors import Issue, outcome
from phip.store.repository import Row

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}


@cache
def summary_elements(rtype: str) -> frozenset[str]:
    """Top-level JSON keys of a type that are in its summary (choice types expanded)."""
    td = defs.types().get(rtype)
    if td is None:
        return frozenset()
    out = {"resourceType", "id", "meta"}
    for path, el in td.elements.items():
        if "." in path or not (el.summary or el.min > 0 or el.modifier):
            continue
        if path.endswith("[x]"):
            stem = path[:-3]
            out.update(stem + t[0].upper() + t[1:] for t in el.types)
        else:
            out.add(path)
    return frozenset(out)


def subset(doc: dict[str, Any], summary: str | None, elements: list[str] | None) -> dict[str, Any]:
    """Apply ``_summary`` (true, text, data) or ``_elements`` to one resource."""
    rtype = doc.get("resourceType", "")
    keep: set[str] | None = None
    if summary == "true":
        keep = set(summary_elements(rtype))
    elif summary == "text":
        keep = {"resourceType", "id", "meta", "text"} | {
            p for p, e in defs.types()[rtype].elements.items() if "." not in p and e.min > 0
        }
    elif summary == "data":
        out = {k: v for k, v in doc.items() if k != "text"}
        return _tag_subsetted(out)
    if elements:
        keep = {"resourceType", "id", "meta"} | {e.split(".", 1)[1] if "." in e else e for e in elements}
        if keep is not None and any("." in e for e in elements):
            keep = {k for k in keep if k}
    if keep is None:
        return doc
    out = {k: v for k, v in doc.items() if k in keep or _choice_in(k, keep)}
    return _tag_subsetted(out)


def _choice_in(key: str, keep: set[str]) -> bool:
    return any(key.startswith(k) and key[len(k) : len(k) + 1].isupper() for k in keep)


def _tag_subsetted(doc: dict[str, Any]) -> dict[str, Any]:
    meta = dict(doc.get("meta") or {})
    tags = list(meta.get("tag") or [])
    if not any(t.get("code") == "SUBSETTED" for t in tags):
        tags.append(SUBSETTED)
    meta["tag"] = tags
    doc = dict(doc)
    doc["meta"] = meta
    return doc


def resource_bytes(row: Row, summary: str | None = None, elements: list[str] | None = None) -> bytes:
    assert row.content is not None
    if summary is None and not elements:
        return row.content
    return orjson.dumps(subset(orjson.loads(row.content), summary, elements))


def searchset(
    base: str,
    self_url: str,
    rows: list[Row],
    included: list[Row],
    total: int | None,
    next_url: str | None,
    *,
    summary: str | None = None,
    elements: list[str] | None = None,
    warnings: list[Issue] | None = None,
) -> bytes:
    head: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": _bundle_id(),
        "meta": {"lastUpdated": to_instant(now_us())},
        "type": "searchset",
    }
    if total is not None:
        head["total"] = total
    links = [{"relation": "self", "url": self_url}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    head["link"] = links
    parts: list[bytes] = []
    for mode, group in (("match", rows), ("include", included)):
        for row in group:
            parts.append(
                b'{"fullUrl":' + orjson.dumps(f"{base}/{row.type}/{row.id}") + b',"resource":'
                + resource_bytes(row, summary, elements) + b',"search":{"mode":"' + mode.encode() + b'"}}'
            )
    if warnings:
        parts.append(
            b'{"resource":' + orjson.dumps(outcome(warnings)) + b',"search":{"mode":"outcome"}}'
        )
    body = orjson.dumps(head)
    if not parts:
        return body
    return body[:-1] + b',"entry":[' + b",".join(parts) + b"]}"


def history_bundle(base: str, self_url: str, rows: list[Row], next_url: str | None) -> bytes:
    head: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": _bundle_id(),
        "meta": {"lastUpdated": to_instant(now_us())},
        "type": "history",
        "link": [{"relation": "self", "url": self_url}]
        + ([{"relation": "next", "url": next_url}] if next_url else []),
    }
    parts = []
    for row in rows:
        method = row.method or "PUT"
        url = f"{row.type}" if method == "POST" else f"{row.type}/{row.id}"
        status = {"POST": "201 Created", "DELETE": "204 No Content"}.get(method, "200 OK")
        if row.version == 1 and method != "DELETE":
            status = "201 Created"
        entry: dict[str, Any] = {"fullUrl": f"{base}/{row.type}/{row.id}"}
        req = {"method": "PUT" if method == "PATCH" else method, "url": url}
        resp = {"status": status, "etag": row.etag, "lastModified": row.last_modified}
        if row.deleted or row.content is None:
            parts.append(orjson.dumps({**entry, "request": req, "response": resp}))
        else:
            parts.append(
                orjson.dumps(entry)[:-1] + b',"resource":' + row.content + b',"request":' + orjson.dumps(req)
                + b',"response":' + orjson.dumps(resp) + b"}"
            )
    body = orjson.dumps(head)
    return body[:-1] + b',"entry":[' + b",".join(parts) + b"]}" if parts else body


def page_url(base_path: str, params: list[tuple[str, str]], cursor: str | None) -> str:
    kept = [(k, v) for k, v in params if k != "_cursor"]
    if cursor:
        kept.append(("_cursor", cursor))
    return base_path + ("?" + urlencode(kept) if kept else "")


def _bundle_id() -> str:
    import uuid

    return str(uuid.uuid4())
