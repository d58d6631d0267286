"""Aggregate statistics for managers and researchers (数据可用不可见): counts, never rows.

``GET /stats/count?type=Condition&by=sex,county&code=I10&unit=patients``

- ``type``: the resource type counted (Patient counts residents);
- ``by``: up to 4 dimensions among ``sex``, ``age_band`` (10-year bands at the time of the
  query), ``county`` (GB/T 2260 code of the patient's home address), ``code`` (the first
  coding of ``code``/``vaccineCode``/``type``), ``month`` (of the resource's clinical date), ``type``;
- filters: ``code`` (``system|code`` or ``code``; prefix match with a trailing ``*``, e.g. ``I1*``),
  ``sex``, ``county`` (a prefix: ``5101`` is the whole prefecture), ``from``/``to`` (months);
- ``unit``: ``resources`` (default) or ``patients`` (distinct patients per cell).

Cells below ``min_cell`` (``[privacy] min_cell``, default 5) are suppressed (``count`` null,
``suppressed`` true); when exactly one cell would be suppressed, the next smallest is suppressed
too, so it cannot be recovered from the total, which is reported only as the sum of the cells shown.
Open to the roles admin, manager and public-health.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from phip.fhir.errors import FhirError, bad_request

router = APIRouter(prefix="/stats", tags=["statistics"])
DIMENSIONS = ("sex", "age_band", "county", "code", "month", "type")
ROLES = ("admin", "manager", "public-health")
_DATE_KEYS = ("effectiveDateTime", "effectivePeriod", "onsetDateTime", "recordedDate", "occurrenceDateTime",
              "authoredOn", "issued", "period", "date", "created", "performedDateTime", "birthDate")


def _principal(request: Request) -> Any:
    from phip.api.context import current_principal

    p = current_principal.get()
    if p is not None:
        return p
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise FhirError(401, "This request needs an Authorization: Bearer token", code="login", msg_id="PHIP-1401",
                        headers={"WWW-Authenticate": 'Bearer realm="phip"'})
    try:
        return request.app.state.node.tokens.verify(token.strip())
    except Exception as e:
        raise FhirError(401, f"Authentication failed: {e}", code="login", msg_id="PHIP-1401",
                        headers={"WWW-Authenticate": 'Bearer realm="phip"'}) from None


def _clinical_month(doc: dict[str, Any]) -> str | None:
    for k in _DATE_KEYS:
        v = doc.get(k)
        if isinstance(v, dict):
            v = v.get("start")
        if isinstance(v, str) and len(v) >= 7:
            return v[:7]
    return None


def _code(doc: dict[str, Any]) -> tuple[str | None, str | None]:
    for k in ("code", "vaccineCode", "type", "medicationCodeableConcept"):
        v = doc.get(k)
        if isinstance(v, list):
            v = v[0] if v else None
        if isinstance(v, dict):
            for c in v.get("coding") or ():
                if isinstance(c, dict) and c.get("code"):
                    return c.get("system"), str(c["code"])
    return None, None


def _matches_code(doc: dict[str, Any], want: str) -> bool:
    system, _, code = want.rpartition("|")
    for k in ("code", "vaccineCode", "type", "medicationCodeableConcept"):
        v = doc.get(k)
        for cc in v if isinstance(v, list) else [v]:
            if not isinstance(cc, dict):
                continue
            for c in cc.get("coding") or ():
                if not isinstance(c, dict) or not isinstance(c.get("code"), str):
                    continue
                if system and c.get("system") != system:
                    continue
                if (code.endswith("*") and c["code"].startswith(code[:-1])) or c["code"] == code:
                    return True
    return False


def count(store: Any, rtype: str, by: list[str], *, code: str | None = None, sex: str | None = None,
          county: str | None = None, month_from: str | None = None, month_to: str | None = None,
          unit: str = "resources", min_cell: int = 5, today: Any = None) -> dict[str, Any]:
    """The suppressed count table (the API's body)."""
    from phip.audit.service import patient_of
    from phip.bulk.export import iter_type
    from phip.privacy.deidentify import Deidentifier, county_of

    d = Deidentifier({"age_band_years": 10}, b"", today=today or datetime.now(UTC).date())
    people: dict[str, tuple[str, str, str]] = {}
    for body in iter_type(store, "Patient", None, None):
        p = orjson.loads(body)
        people[p["id"]] = (str(p.get("gender") or "unknown"), d.age_band(p.get("birthDate")),
                           county_of(p) or "unknown")
    cells: Counter[tuple[str, ...]] = Counter()
    seen: set[tuple[tuple[str, ...], str]] = set()
    for body in iter_type(store, rtype, None, None):
        doc = orjson.loads(body)
        pid = patient_of(rtype, doc.get("id", ""), body)
        person = people.get(pid or "", ("unknown", "unknown", "unknown"))
        if sex and person[0] != sex:
            continue
        if county and not person[2].startswith(county):
            continue
        if code and not _matches_code(doc, code):
            continue
        month = _clinical_month(doc)
        if (month_from and (month is None or month < month_from)) or (month_to and (month is None or month > month_to)):
            continue
        key: list[str] = []
        for dim in by:
            if dim == "sex":
                key.append(person[0])
            elif dim == "age_band":
                key.append(person[1])
            elif dim == "county":
                key.append(person[2])
            elif dim == "code":
                key.append(_code(doc)[1] or "unknown")
            elif dim == "month":
                key.append(month or "unknown")
            else:
                key.append(rtype)
        k = tuple(key)
        if unit == "patients":
            if pid is None or (k, pid) in seen:
                continue
            seen.add((k, pid))
        cells[k] += 1
    small = sorted((n, k) for k, n in cells.items() if n < min_cell)
    hidden = {k for _n, k in small}
    if len(hidden) == 1 and len(cells) > 1:  # one hidden cell could be recovered from a total
        rest = sorted((n, k) for k, n in cells.items() if k not in hidden)
        hidden.add(rest[0][1])
    rows = []
    for k, n in sorted(cells.items()):
        row: dict[str, Any] = dict(zip(by, k, strict=True))
        if k in hidden:
            row.update(count=None, suppressed=True)
        else:
            row.update(count=n)
        rows.append(row)
    return {"type": rtype, "by": by, "unit": unit, "min_cell": min_cell,
            "filters": {k: v for k, v in (("code", code), ("sex", sex), ("county", county),
                                           ("from", month_from), ("to", month_to)) if v},
            "cells": rows, "suppressed_cells": len(hidden),
            "total_shown": sum(n for k, n in cells.items() if k not in hidden)}


_MONTH = re.compile(r"^\d{4}-\d{2}$")


@router.get("/count", summary="Counts by dimensions, small cells suppressed (managers, researchers)",
            openapi_extra={"x-phip-access": list(ROLES)})
def stats_count(
    request: Request,
    type_: str = Query(..., alias="type", description="Resource type counted"),
    by: str = Query("", description=f"Comma-separated dimensions: {', '.join(DIMENSIONS)}"),
    code: str | None = Query(None, description="system|code or code; a trailing * matches a prefix"),
    sex: str | None = Query(None, pattern="^(male|female|other|unknown)$"),
    county: str | None = Query(None, pattern=r"^\d{2,6}$", description="GB/T 2260 code or prefix"),
    from_: str | None = Query(None, alias="from", description="first month, YYYY-MM"),
    to: str | None = Query(None, description="last month, YYYY-MM"),
    unit: str = Query("resources", pattern="^(resources|patients)$"),
) -> Response:
    from phip.fhir import definitions as defs

    p = _principal(request)
    if getattr(p, "role", None) not in ROLES:
        raise FhirError(403, f"Statistics are open to the roles {', '.join(ROLES)} only", code="forbidden",
                        msg_id="PHIP-5403")
    if type_ not in defs.resource_types():
        raise bad_request(f"Unknown resource type {type_!r}", expression="type", msg_id="PHIP-5401")
    dims = [b.strip() for b in by.split(",") if b.strip()]
    bad = [b for b in dims if b not in DIMENSIONS]
    if bad or len(dims) > 4 or len(set(dims)) != len(dims):
        raise bad_request(f"by: up to 4 distinct dimensions among {', '.join(DIMENSIONS)}"
                          + (f" (not {', '.join(bad)})" if bad else ""), expression="by", msg_id="PHIP-5402")
    for name, v in (("from", from_), ("to", to)):
        if v is not None and not _MONTH.match(v):
            raise bad_request(f"{name} must be a month YYYY-MM, not {v!r}", expression=name, msg_id="PHIP-5404")
    node = request.app.state.node
    min_cell = node.ext["privacy"].settings.min_cell if "privacy" in node.ext else 5
    body = count(node.store, type_, dims, code=code, sex=sex, county=county, month_from=from_, month_to=to,
                 unit=unit, min_cell=min_cell)
    return Response(orjson.dumps(body), media_type="application/json")
