"""The population registry's index and its queries (全员人口).

Who counts: a Patient whose ``managingOrganization`` is a *registry authority* — an Organization
typed with one of ``registry_org_types`` of ``data/registry.json`` (``urn:phip:cs:org-type|Z200``
卫生健康行政部门 by default, the county health commission that runs the registry in the synthetic
region).  Hospitals' own Patient records are copies of the same residents and are not counted.

Where they live: the division code (``urn:phip:ext:division-code``) of the current home address
(no ``period.end``, ``use`` not ``old``), else that of the registry authority's address.

The index (:data:`phip.registry.schema.resident`) is kept by an AFTER_WRITE hook inside each
write's transaction, and rebuilt in a batch after ``phip import`` (and by ``phip registry reindex``).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson
import sqlalchemy as sa

from phip.cn import regions
from phip.core.hooks import WriteEvent
from phip.fhir.errors import FhirError, bad_request
from phip.registry import codes as C
from phip.registry.schema import resident
from phip.store import schema as S

ORG_TTL_S = 30.0


def _org_is_registry(doc: dict[str, Any]) -> bool:
    wanted = set(C.table()["registry_org_types"])
    return any(code in wanted for _i, _j, code in C.codes_of(doc.get("type"), C.ORG_TYPE))


def _org_region(doc: dict[str, Any]) -> str:
    for a in doc.get("address") or []:
        if isinstance(a, dict):
            code = C.division_code(a)
            if code:
                return code
    return ""


def current_address(patient: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    """The index and value of the resident's current home address (open period, not ``old``)."""
    best: tuple[int, dict[str, Any]] | None = None
    for i, a in enumerate(patient.get("address") or []):
        if not isinstance(a, dict) or a.get("use") in ("old", "temp", "billing", "work"):
            continue
        if (a.get("period") or {}).get("end"):
            continue
        if best is None or a.get("use") == "home":
            best = (i, a)
    return best


def _birth_int(value: Any) -> int:
    if not isinstance(value, str) or len(value) < 4 or not value[:4].isdigit():
        return 0
    y = int(value[:4])
    m = int(value[5:7]) if len(value) >= 7 and value[5:7].isdigit() else 1
    d = int(value[8:10]) if len(value) >= 10 and value[8:10].isdigit() else 1
    return y * 10000 + m * 100 + d


def _ref_id(ref: Any, rtype: str) -> str | None:
    if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
        t, _, i = ref["reference"].partition("/")
        if t == rtype and i:
            return i.split("/")[0]
    return None


class PopulationIndex:
    """Keeps ``registry_resident`` in step with the Patients of the registry authorities."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._orgs: dict[str, tuple[float, bool, str]] = {}  # org id → (expires, is registry, region)

    # -- organisations --------------------------------------------------------------------------
    def org_info(self, conn: sa.Connection, org_id: str) -> tuple[bool, str]:
        hit = self._orgs.get(org_id)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1], hit[2]
        R = S.resources
        rec = conn.execute(sa.select(R.c.content, R.c.deleted).where(R.c.type == "Organization",
                                                                      R.c.id == org_id)).first()
        info = (False, "")
        if rec is not None and not rec.deleted and rec.content is not None:
            doc = rec.content if isinstance(rec.content, dict) else orjson.loads(rec.content)
            info = (_org_is_registry(doc), _org_region(doc))
        self._orgs[org_id] = (now + ORG_TTL_S, *info)
        return info

    def forget_org(self, org_id: str) -> None:
        self._orgs.pop(org_id, None)

    # -- rows -------------------------------------------------------------------------------------
    def row(self, conn: sa.Connection, pid: str, doc: dict[str, Any]) -> dict[str, Any] | None:
        org = _ref_id(doc.get("managingOrganization"), "Organization")
        if org is None:
            return None
        is_reg, org_region = self.org_info(conn, org)
        if not is_reg:
            return None
        cur = current_address(doc)
        region = (C.division_code(cur[1]) if cur else None) or org_region
        alive = not (doc.get("deceasedBoolean") is True or "deceasedDateTime" in doc)
        return {"patient_id": pid, "region": region[:12], "sex": str(doc.get("gender") or "unknown")[:16],
                "birth": _birth_int(doc.get("birthDate")), "alive": alive, "active": doc.get("active") is not False,
                "organization": org[:64]}

    def after_write(self, tx: Any, ev: WriteEvent) -> None:
        if ev.resource_type == "Organization":
            self.forget_org(ev.id)
            return
        if ev.resource_type != "Patient":
            return
        conn = tx.conn
        if ev.method != "POST":  # a create has no row yet
            conn.execute(resident.delete().where(resident.c.patient_id == ev.id))
        if ev.resource is None:
            return
        row = self.row(conn, ev.id, ev.resource)
        if row is not None:
            conn.execute(resident.insert().values(**row))

    # -- batch ------------------------------------------------------------------------------------
    def registry_org_ids(self, conn: sa.Connection) -> list[str]:
        T, R = S.idx_token, S.resources
        q = (sa.select(R.c.id).select_from(T.join(R, R.c.rid == T.c.rid))
             .where(T.c.param == S.param_key("Organization", "type"), T.c.system == C.ORG_TYPE,
                    T.c.code.in_(C.table()["registry_org_types"]), R.c.deleted == sa.false()).distinct())
        return sorted(r.id for r in conn.execute(q))

    def rebuild(self, progress: Callable[[int, int], None] | None = None, batch: int = 5000) -> int:
        """Recompute the whole index; returns the number of residents indexed."""
        self._orgs.clear()
        X, R = S.idx_ref, S.resources
        n = 0
        with self.store.engine.begin() as conn:
            conn.execute(resident.delete())
            orgs = self.registry_org_ids(conn)
            if not orgs:
                return 0
            base = (sa.select(R.c.rid, R.c.id, R.c.content).select_from(X.join(R, R.c.rid == X.c.rid))
                    .where(X.c.param == S.param_key("Patient", "organization"), X.c.target_type == "Organization",
                           X.c.target_id.in_(orgs), R.c.deleted == sa.false()))
            total = conn.execute(sa.select(sa.func.count()).select_from(base.subquery())).scalar_one()
            last = -1
            while True:
                recs = conn.execute(base.where(R.c.rid > last).order_by(R.c.rid).limit(batch)).all()
                if not recs:
                    break
                last = recs[-1].rid
                rows = []
                seen: set[str] = set()
                for rec in recs:
                    if rec.id in seen:
                        continue
                    seen.add(rec.id)
                    doc = rec.content if isinstance(rec.content, dict) else orjson.loads(rec.content)
                    row = self.row(conn, rec.id, doc)
                    if row is not None:
                        rows.append(row)
                if rows:
                    conn.execute(resident.insert(), rows)
                n += len(rows)
                if progress is not None:
                    progress(min(n, total), total)
        return n

    def after_import(self, _store: Any, loaded: dict[str, int]) -> None:
        if loaded.get("Patient") or loaded.get("Organization"):
            self.rebuild()


# -- queries --------------------------------------------------------------------------------------
DIMENSIONS = {"sex": 0, "age": 0, "province": 2, "prefecture": 4, "county": 6, "region": 6, "township": 9}


@dataclass(slots=True)
class PopulationQuery:
    region: str
    by: list[str]
    bands: list[int]
    as_of: date


def parse_query(region: str | None, by: str | None, bands: str | None, as_of: str | None) -> PopulationQuery:
    reg = (region or "").strip()
    if reg and (not reg.isdigit() or len(reg) > 12):
        raise bad_request(f"region must be a GB/T 2260 code or prefix (digits), not {region!r}", expression="region",
                          msg_id="PHIP-4620")
    dims = [d.strip() for d in (by or "").split(",") if d.strip()]
    for d in dims:
        if d not in DIMENSIONS:
            raise bad_request(f"by: unknown dimension {d!r}; use {', '.join(DIMENSIONS)}", expression="by",
                              msg_id="PHIP-4621")
    if len(set(dims)) != len(dims):
        raise bad_request("by names a dimension twice", expression="by", msg_id="PHIP-4621")
    if bands:
        try:
            edges = sorted({int(x) for x in bands.split(",") if x.strip()})
        except ValueError:
            raise bad_request("bands must be ages in years, comma-separated (0,15,65)", expression="bands",
                              msg_id="PHIP-4622") from None
        if not edges or edges[0] < 0 or edges[-1] > 150:
            raise bad_request("bands must be ages between 0 and 150", expression="bands", msg_id="PHIP-4622")
        if edges[0] != 0:
            edges.insert(0, 0)
    else:
        edges = list(C.table()["age_bands"])
    try:
        day = date.fromisoformat(as_of) if as_of else date.today()
    except ValueError:
        raise bad_request(f"asOf must be a date (YYYY-MM-DD), not {as_of!r}", expression="asOf",
                          msg_id="PHIP-4623") from None
    return PopulationQuery(reg, dims, edges, day)


def band_labels(edges: list[int]) -> list[str]:
    out = []
    for k, lo in enumerate(edges):
        out.append(f"{lo}-{edges[k + 1] - 1}" if k + 1 < len(edges) else f"{lo}+")
    return out


def population(store: Any, q: PopulationQuery) -> dict[str, Any]:
    """Counts of current residents (alive, active record) under ``q.region`` grouped by ``q.by``.

    Ages are exact (whole years on ``asOf``): SQL groups by birth year and whether the birthday has
    come yet in the ``asOf`` year (a few thousand groups at most), and the age bands are summed here.
    """
    T = resident
    labels = band_labels(q.bands)
    as_of = q.as_of.year * 10000 + q.as_of.month * 100 + q.as_of.day
    mmdd = as_of % 10000
    cols: list[Any] = []
    for d in q.by:
        if d == "sex":
            cols.append(T.c.sex.label("sex"))
        elif d == "age":
            cols.append((T.c.birth // 10000).label("by_year"))
            cols.append(sa.case((T.c.birth % 10000 > mmdd, 1), else_=0).label("not_yet"))
        else:
            cols.append(sa.func.substr(T.c.region, 1, DIMENSIONS[d]).label(d))
    where = [T.c.alive == sa.true(), T.c.active == sa.true(), sa.or_(T.c.birth <= as_of, T.c.birth == 0)]
    if q.region:
        # a range on the index (digits compare alike in every collation), not LIKE
        where.append(T.c.region >= q.region)
        upper = _next_prefix(q.region)
        if upper:
            where.append(T.c.region < upper)
    stmt = sa.select(*cols, sa.func.count().label("n")).where(*where)
    if cols:
        stmt = stmt.group_by(*cols)
    with store.read_conn() as conn:
        recs = conn.execute(stmt).all()
    counts: dict[tuple[Any, ...], int] = {}
    for rec in recs:
        parts: list[Any] = []
        for d in q.by:
            if d == "age":
                year = int(rec.by_year)
                if year == 0:
                    parts.append(-1)
                else:
                    age = q.as_of.year - year - int(rec.not_yet)
                    parts.append(bisect.bisect_right(q.bands, age) - 1)
            else:
                parts.append(getattr(rec, d))
        counts[tuple(parts)] = counts.get(tuple(parts), 0) + int(rec.n)
    cells = []
    total = 0
    for key in sorted(counts):
        cell: dict[str, Any] = {}
        for d, v in zip(q.by, key, strict=True):
            if d == "age":
                cell["age"] = "unknown" if v == -1 else labels[int(v)]
            elif d == "sex":
                cell["sex"] = v
            else:
                cell[d] = v
                name = regions.full_name(v[:6]) if len(v) >= 6 else _prefix_name(v)
                if name:
                    cell[d + "Name"] = name
        cell["count"] = counts[key]
        total += counts[key]
        cells.append(cell)
    out: dict[str, Any] = {"region": q.region or None, "regionName": _prefix_name(q.region) if q.region else None,
                           "asOf": q.as_of.isoformat(), "by": q.by, "total": total}
    if "age" in q.by:
        out["ageBands"] = labels
    out["cells"] = cells if q.by else []
    out["note"] = ("Counts of current residents of the population registry (alive, active registry record), "
                   "small cells included: for managers, not for publication.")
    return out


def _next_prefix(prefix: str) -> str | None:
    """The smallest digit string above every string starting with ``prefix`` ('5101' → '5102')."""
    digits = prefix.rstrip("9")
    if not digits:
        return None
    return digits[:-1] + str(int(digits[-1]) + 1)


def _prefix_name(prefix: str) -> str | None:
    code = prefix[:6].ljust(6, "0")
    if len(prefix) >= 6:
        return regions.full_name(code) or None
    r = regions.get(code)
    return regions.full_name(code) if r is not None else None


def iter_chunks(items: list[Any], n: int) -> Iterator[list[Any]]:
    for k in range(0, len(items), n):
        yield items[k : k + n]


def check_region_scope(principal: Any, region: str) -> None:
    """A token limited to a region (``region`` claim) may only ask within it."""
    claim = getattr(principal, "region", None)
    if not claim:
        return
    prefix = claim
    while len(prefix) > 2 and prefix.endswith("00"):
        prefix = prefix[:-2]
    if not region.startswith(prefix):
        raise FhirError(403, f"This token is limited to region {claim}; ask for a region under {prefix}",
                        code="forbidden", expression="region", msg_id="PHIP-4624")
