"""Basic-resource statistics (基础资源): institutions, staff, beds and large equipment by region.

Institutions are placed by their address division code; beds are the institution's
``urn:phip:ext:beds`` when it states one, else the sum over its Locations (ward extensions, and one
per ``physicalType`` ``bd`` Location); staff are active PractitionerRoles; devices are Devices typed
in ``urn:phip:cs:large-equipment`` owned by the institution.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import sqlalchemy as sa

from phip.cn import regions
from phip.registry import codes as C
from phip.store import schema as S


def _docs(conn: sa.Connection, rtype: str) -> list[dict[str, Any]]:
    R = S.resources
    out = []
    for rec in conn.execute(sa.select(R.c.content).where(R.c.type == rtype, R.c.deleted == sa.false())):
        out.append(rec.content if isinstance(rec.content, dict) else orjson.loads(rec.content))
    return out


def _ref_id(ref: Any, rtype: str) -> str | None:
    r = (ref or {}).get("reference", "") if isinstance(ref, dict) else ""
    t, _, i = r.partition("/")
    return i if t == rtype and i else None


def _beds_ext(doc: dict[str, Any]) -> int | None:
    for e in doc.get("extension") or []:
        if isinstance(e, dict) and e.get("url") == C.BEDS_EXT and isinstance(e.get("valueInteger"), int):
            return int(e["valueInteger"])
    return None


def summary(store: Any, region: str) -> dict[str, Any]:
    with store.read_conn() as conn:
        orgs = _docs(conn, "Organization")
        locs = _docs(conn, "Location")
        roles = _docs(conn, "PractitionerRole")
        devices = _docs(conn, "Device")
    t = C.table()
    chosen: dict[str, dict[str, Any]] = {}
    for o in orgs:
        code = next((C.division_code(a) for a in o.get("address") or [] if isinstance(a, dict) and C.division_code(a)),
                    None)
        if code and code.startswith(region):
            chosen[o["id"]] = {"region": code[:6], "doc": o}
    loc_beds: Counter[str] = Counter()
    for loc in locs:
        org = _ref_id(loc.get("managingOrganization"), "Organization")
        if org not in chosen or loc.get("status") == "inactive":
            continue
        n = _beds_ext(loc)
        if n is not None:
            loc_beds[org] += n
        elif any(c.get("code") == "bd" for c in (loc.get("physicalType") or {}).get("coding") or []):
            loc_beds[org] += 1
    staff: Counter[str] = Counter()
    for r in roles:
        org = _ref_id(r.get("organization"), "Organization")
        if org in chosen and r.get("active") is not False:
            staff[org] += 1
    equipment: Counter[tuple[str, str]] = Counter()
    for d in devices:
        org = _ref_id(d.get("owner"), "Organization")
        if org in chosen and d.get("status") in (None, "active"):
            for _i, _j, code in C.codes_of(d.get("type"), C.LARGE_EQUIPMENT):
                equipment[(org, code)] += 1
    by_type: Counter[str] = Counter()
    by_level: Counter[str] = Counter()
    institutions = []
    for oid, info in sorted(chosen.items()):
        o = info["doc"]
        types = [c for _i, _j, c in C.codes_of(o.get("type"), C.ORG_TYPE)]
        levels = [c for _i, _j, c in C.codes_of(o.get("type"), C.HOSPITAL_LEVEL)]
        beds = _beds_ext(o)
        beds = beds if beds is not None else loc_beds.get(oid, 0)
        for ty in types:
            by_type[ty] += 1
        for lv in levels:
            by_level[lv] += 1
        institutions.append({"id": oid, "name": o.get("name"), "region": info["region"],
                             "type": types[0] if types else None, "level": levels[0] if levels else None,
                             "partOf": _ref_id(o.get("partOf"), "Organization"), "beds": beds,
                             "staff": staff.get(oid, 0),
                             "equipment": {c: n for (org, c), n in sorted(equipment.items()) if org == oid}})
    eq_total: Counter[str] = Counter()
    for (_org, c), n in equipment.items():
        eq_total[c] += n
    return {
        "region": region or None,
        "regionName": regions.full_name(region[:6].ljust(6, "0")) if region else None,
        "institutions": len(institutions),
        "byType": [{"code": c, "display": t["org_types"].get(c), "count": n} for c, n in sorted(by_type.items())],
        "byLevel": [{"code": c, "display": t["hospital_levels"].get(c), "count": n}
                    for c, n in sorted(by_level.items())],
        "beds": sum(i["beds"] for i in institutions),
        "staff": sum(i["staff"] for i in institutions),
        "largeEquipment": [{"code": c, "class": t["large_equipment"].get(c, [None, None])[0],
                            "display": t["large_equipment"].get(c, [None, None])[1], "count": n}
                           for c, n in sorted(eq_total.items())],
        "list": institutions,
    }
