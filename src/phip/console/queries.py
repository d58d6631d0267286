"""What the console reads that no other package offers yet: per-type scorecards, the daily trend,
a finding summary per rule, resource counts and the last changes — each through the same tables,
formulas and access seam as the API.

The scorecard itself is the quality service's (``QualityService.scorecard``, the function behind
``GET /quality/scorecard`` and ``phip quality report``); :func:`scorecard` only adds the resource
type filter, summing the same counters (``quality_counter``) with the same rate, 1 − failing/received.
The upload rate is per institution (its expected volume is not kept per type), so a type-filtered
scorecard has none.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from phip.fhir.errors import FhirError
from phip.store import schema as S


def _counter_conds(QC: Any, *, institution: str | None, rtype: str | None, day_from: int | None,
                   day_to: int | None) -> list[Any]:
    """The filters of a table with institution, rtype and day columns (the counters, the findings)."""
    conds: list[Any] = []
    if institution:
        conds.append(QC.c.institution == institution)
    if rtype:
        conds.append(QC.c.rtype == rtype)
    if day_from is not None:
        conds.append(QC.c.day >= day_from)
    if day_to is not None:
        conds.append(QC.c.day <= day_to)
    return conds


def scorecard(svc: Any, *, day_from: int | None, day_to: int | None, institution: str | None,
              rtype: str | None, threshold: float | None = None) -> dict[str, Any]:
    """The quality service's scorecard; with ``rtype``, the same figures over that type's counters."""
    if not rtype:
        return dict(svc.scorecard(day_from=day_from, day_to=day_to, threshold=threshold, institution=institution))
    from phip.quality.tables import FLAG_DIMENSIONS
    from phip.quality.tables import quality_counter as QC

    thr = svc.rules.threshold if threshold is None else threshold
    conds = _counter_conds(QC, institution=institution, rtype=rtype, day_from=day_from, day_to=day_to)
    rows = []
    total: dict[str, int] = defaultdict(int)
    with svc.store.read_conn() as conn:
        recs = conn.execute(sa.select(QC.c.institution, sa.func.sum(QC.c.received).label("received"),
                                      *[sa.func.sum(QC.c[f"f_{d}"]).label(d) for d in FLAG_DIMENSIONS])
                            .where(*conds).group_by(QC.c.institution).order_by(QC.c.institution)).all()
    for r in recs:
        n = int(r.received or 0)
        failing = {d: int(getattr(r, d) or 0) for d in FLAG_DIMENSIONS}
        rates: dict[str, float | None] = {d: (1 - failing[d] / n) if n else None for d in FLAG_DIMENSIONS}
        rates["upload"] = None
        below = [d for d, v in rates.items() if v is not None and v < thr]
        rows.append({"institution": r.institution, "received": n, "failing": failing, "rates": rates,
                     "below": below})
        total["received"] += n
        for d in FLAG_DIMENSIONS:
            total[d] += failing[d]
    n = total["received"]
    return {
        "rulesVersion": svc.rules.version, "threshold": thr, "resourceType": rtype,
        "from": iso_day(day_from), "to": iso_day(day_to),
        "overall": {"received": n, "rates": {d: (1 - total[d] / n) if n else None for d in FLAG_DIMENSIONS}},
        "institutions": rows,
        "below": [r["institution"] for r in rows if r["below"]],
    }


def trend(svc: Any, *, day_from: int | None, day_to: int | None, institution: str | None,
          rtype: str | None) -> list[dict[str, Any]]:
    """Per receipt day: records received and the rate of each flagged dimension."""
    from phip.quality.tables import FLAG_DIMENSIONS
    from phip.quality.tables import quality_counter as QC

    conds = _counter_conds(QC, institution=institution, rtype=rtype, day_from=day_from, day_to=day_to)
    with svc.store.read_conn() as conn:
        recs = conn.execute(sa.select(QC.c.day, sa.func.sum(QC.c.received).label("received"),
                                      *[sa.func.sum(QC.c[f"f_{d}"]).label(d) for d in FLAG_DIMENSIONS])
                            .where(*conds).group_by(QC.c.day).order_by(QC.c.day)).all()
    out = []
    for r in recs:
        n = int(r.received or 0)
        out.append({"day": iso_day(r.day), "received": n,
                    "rates": {d: (1 - int(getattr(r, d) or 0) / n) if n else None for d in FLAG_DIMENSIONS}})
    return out


def options(svc: Any, institution: str | None) -> tuple[list[str], list[str]]:
    """The institutions and resource types the counters know (only ``institution`` when set)."""
    from phip.quality.tables import quality_counter as QC

    conds = [QC.c.institution == institution] if institution else []
    with svc.store.read_conn() as conn:
        insts = [r[0] for r in conn.execute(sa.select(QC.c.institution).where(*conds).distinct()
                                            .order_by(QC.c.institution))]
        types = [r[0] for r in conn.execute(sa.select(QC.c.rtype).where(*conds).distinct().order_by(QC.c.rtype))]
    return insts, types


def rule_summary(svc: Any, *, institution: str, day_from: int | None, day_to: int | None,
                 rtype: str | None) -> list[dict[str, Any]]:
    """An institution's findings per rule: how many open, resolved and cancelled (most open first)."""
    from phip.quality.tables import quality_finding as QF

    conds = _counter_conds(QF, institution=institution, rtype=rtype, day_from=day_from, day_to=day_to)
    per: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: {"open": 0, "resolved": 0, "cancelled": 0})
    with svc.store.read_conn() as conn:
        for rule, dim, status, n in conn.execute(
                sa.select(QF.c.rule, QF.c.dimension, QF.c.status, sa.func.count())
                .where(*conds).group_by(QF.c.rule, QF.c.dimension, QF.c.status)):
            per[(rule, dim)][status] = int(n)
    out: list[dict[str, Any]] = [{"rule": rule, "dimension": dim, **c} for (rule, dim), c in per.items()]
    out.sort(key=lambda x: (-int(x["open"]), -int(x["resolved"]), str(x["rule"])))
    return out


def names(repo: Any, rtype: str, ids: list[str]) -> dict[str, str]:
    """Display names of directory resources (Organization…), read through the caller's repository
    (a role that may not see them gets none)."""
    out: dict[str, str] = {}
    for row in repo.rows_by_ids([(rtype, i) for i in sorted(set(ids)) if i]):
        try:
            doc = orjson.loads(row.content or b"{}")
        except orjson.JSONDecodeError:
            continue
        name = doc.get("name")
        if isinstance(name, str) and name:
            out[row.id] = name
    return out


def tasks(repo: Any, refs: list[str]) -> dict[str, dict[str, Any]]:
    """The Tasks assigned for findings (``Task/qf-…``), as the caller may see them."""
    out: dict[str, dict[str, Any]] = {}
    ids = [r.split("/", 1)[1] for r in refs if r and r.startswith("Task/")]
    for row in repo.rows_by_ids([("Task", i) for i in ids]):
        doc = orjson.loads(row.content or b"{}")
        out[f"Task/{row.id}"] = {"status": doc.get("status"), "owner": (doc.get("owner") or {}).get("reference"),
                                 "lastModified": (doc.get("meta") or {}).get("lastUpdated"),
                                 "version": row.version}
    return out


def resource_counts(repo: Any) -> list[tuple[str, int]]:
    """Current (not deleted) resources per type that the caller may see, most first."""
    R = S.resources
    q = (sa.select(R.c.type, sa.func.count()).where(R.c.deleted == sa.false(), *repo.access_where(R, None, "s",
                                                                                                   quiet=True))
         .group_by(R.c.type))
    with repo.store.read_conn() as conn:
        rows = [(str(t), int(n)) for t, n in conn.execute(q)]
    rows.sort(key=lambda x: (-x[1], x[0]))
    return rows


def recent_changes(repo: Any, count: int = 15) -> list[dict[str, Any]] | None:
    """The last ``count`` entries of the change feed, newest first, read through the repository's
    ``changes`` (so the caller needs the right to the feed); None when the caller has none."""
    try:
        repo.check_operation("changes")
    except FhirError:
        return None
    with repo.store.read_conn() as conn:
        last = conn.execute(sa.select(sa.func.max(S.changes.c.seq))).scalar_one() or 0
    since = max(0, int(last) - count * 4)  # the feed may have gaps; read a little more
    got, _cursor = repo.changes(since, count * 4)
    out = []
    for seq, row in reversed(got[-count:]):
        out.append({"seq": seq, "ref": f"{row.type}/{row.id}", "version": row.version,
                    "method": "DELETE" if row.deleted else (row.method or ""), "when": instant(row.last_updated)})
    return out


def iso_day(day: int | None) -> str | None:
    return f"{day // 10000:04d}-{day // 100 % 100:02d}-{day % 100:02d}" if day else None


def instant(us: int | None) -> str:
    if not us:
        return ""
    return datetime.fromtimestamp(us / 1_000_000, UTC).strftime("%Y-%m-%d %H:%M:%S")
