"""Basic medical insurance: coverage by the county medical insurance bureau, claims and settlements.

Residents are covered by the bureau of the county they live in (the employee scheme for a share
of working-age adults, the urban-rural resident scheme otherwise; a few uninsured), from the start,
birth registration or arrival, a new coverage after a move to another county.  The bureau keeps its
own Patient record of each insured person.  Every insured visit to a township centre or hospital
produces a Claim from the institution and a ClaimResponse (the settlement) from the bureau, with a
reimbursement ratio by level (insurance.json), less when treated outside the home prefecture
(异地就医).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import cache

from phip.synth import build as b
from phip.synth import events as ev
from phip.synth.institutions import Institution
from phip.synth.population import Span
from phip.synth.tables import table

TIER_LEVEL = {
    "village": "village",
    "primary": "primary",
    "county": "county",
    "prefecture": "prefecture",
    "province": "prefecture",
}
_CLAIM_TYPES = {
    True: b.concept(b.coding(b.CLAIM_TYPE, "professional")),
    False: b.concept(b.coding(b.CLAIM_TYPE, "institutional")),
}
_NORMAL = b.concept(b.coding(b.PROC_PRIORITY, "normal"))
_SUBMITTED = b.concept(b.coding(b.ADJUDICATION, "submitted"))
_BENEFIT = b.concept(b.coding(b.ADJUDICATION, "benefit"))
_COMPLETE = b.concept(b.coding("http://terminology.hl7.org/CodeSystem/ex-paymenttype", "complete"))


@dataclass(slots=True)
class Cover:
    start: date
    end: date
    coverage: str  # Coverage id
    insurer: Institution
    patient: str  # the bureau's Patient id
    scheme: str


def enrol(ctx: ev.Ctx) -> None:
    """Coverage resources for the person's stays in the region (one per county of residence)."""
    p = ctx.p
    rng = ctx.rng
    cfg = table("insurance")
    if rng.random() < cfg["uninsured"]:
        return
    urban = ctx.spans[0].residence.county.urban if ctx.spans else False
    adult = p.age_on(p.first) >= 18
    employee = adult and p.age_on(p.first) < 60 and rng.random() < cfg["employee_share"]["urban" if urban else "rural"]
    scheme = "employee" if employee else "resident"
    code, name = cfg["schemes"][scheme]["code"], cfg["schemes"][scheme]["name"]
    groups: list[list[Span]] = []
    for s in ctx.spans:
        if groups and groups[-1][-1].residence.county is s.residence.county:
            groups[-1].append(s)
        else:
            groups.append([s])
    for grp in groups:
        start = grp[0].start
        if p.id_date is not None and p.id_date > start:
            start = p.id_date
        end = grp[-1].end
        if start > end:
            continue
        insurer = ctx.plan.registry.access[grp[0].residence.village.code].insurer
        ctx.em.begin(start, 9 * 60, rng)
        pid = ctx.em.patient(p, insurer, start, rng)
        rid = ctx.em.rid()
        member = f"{insurer.county}{rid[1:].replace('-', '')}"
        res: b.Json = {
            "resourceType": "Coverage",
            "id": rid,
            "identifier": [{"system": b.org_system(insurer.id, "member"), "value": member}],
            "status": "active",
            "type": b.concept(b.coding(b.CS_INSURANCE, code, name), text=name),
            "subscriberId": p.id_number,
            "beneficiary": {"reference": f"Patient/{pid}"},
            "relationship": b.concept(b.coding(b.SUBSCRIBER_REL, "self")),
            "period": {"start": start.isoformat(), "end": end.isoformat()}
            if end < ctx.plan.end
            else {"start": start.isoformat()},
            "payor": [{"reference": f"Organization/{insurer.id}"}],
        }
        ctx.em.put(insurer.id, res, rng)
        ctx.coverage.append(Cover(start, end, rid, insurer, pid, scheme))


@cache
def _tariff(kind: str, tier: str) -> tuple[float, float, float]:
    """Average cost (per visit, or per day of stay), its log-normal spread and the reimbursement ratio."""
    cfg = table("insurance")
    level = TIER_LEVEL[tier]
    if kind == "outpatient":
        return cfg["costs"]["outpatient"][level], 0.5, cfg["reimbursement"]["outpatient"][level]
    return cfg["costs"]["inpatient_per_day"][level], 0.3, cfg["reimbursement"]["inpatient"][level]


@cache
def _items(kind: str) -> tuple[tuple[b.Json, float], ...]:
    """Fee item categories of a bill and their shares (cached concepts)."""
    rows = table("insurance")["items"]["outpatient" if kind == "outpatient" else "inpatient"]
    return tuple((b.concept(b.coding(b.CS_FEE_ITEM, code, name)), share) for code, name, share in rows)


def cover_on(ctx: ev.Ctx, day: date) -> Cover | None:
    for c in ctx.coverage:
        if c.start <= day <= c.end:
            return c
    return None


def claim(ctx: ev.Ctx, enc: ev.Enc, kind: str, dx: str, cost: float | None = None, days: int = 1) -> None:
    """Claim + settlement for an insured visit or stay (nothing for village clinics or the uninsured)."""
    inst = enc.inst
    if inst.tier == "village":
        return
    cover = cover_on(ctx, enc.day)
    if cover is None:
        return
    rng = ctx.rng
    base, sigma, ratio = _tariff(kind, inst.tier)
    if cost is None:
        cost = base * (1 if kind == "outpatient" else days) * rng.lognormvariate(0, sigma)
    lines = []
    total = 0.0
    for i, (concept, share) in enumerate(_items(kind)):
        v = round(cost * share * (0.7 + 0.6 * rng.random()), 2)
        total += v
        lines.append({"sequence": i + 1, "productOrService": concept, "net": b.money(v)})
    total = round(total, 2)
    period = enc.res["period"]
    res: b.Json = {
        "resourceType": "Claim",
        "id": ctx.em.rid(),
        "status": "active",
        "type": _CLAIM_TYPES[kind == "outpatient"],
        "use": "claim",
        "patient": enc.patient,
        "billablePeriod": {"start": period["start"], "end": period.get("end", period["start"])},
        "created": period.get("end", period["start"]),
        "provider": {"reference": f"Organization/{inst.id}"},
        "priority": _NORMAL,
        "diagnosis": [{"sequence": 1, "diagnosisCodeableConcept": ctx.em.dx(inst, dx)}],
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": f"Coverage/{cover.coverage}"}}],
        "item": lines,
        "total": b.money(total),
    }
    ref = ctx.em.put(inst.id, res, rng)
    cfg = table("insurance")
    if cover.scheme == "employee":
        ratio += cfg["employee_bonus"]
    if inst.county[:4] != cover.insurer.county[:4]:
        ratio -= cfg["other_region_penalty"]
    paid = round(total * min(0.95, max(0.0, ratio)), 2)
    ctx.em.begin(enc.end_day, 20 * 60, rng)
    ctx.em.put(
        cover.insurer.id,
        {
            "resourceType": "ClaimResponse",
            "id": ctx.em.rid(),
            "status": "active",
            "type": res["type"],
            "use": "claim",
            "patient": {"reference": f"Patient/{cover.patient}"},
            "created": res["created"],
            "insurer": {"reference": f"Organization/{cover.insurer.id}"},
            "requestor": {"reference": f"Organization/{inst.id}"},
            "request": ref,
            "outcome": "complete",
            "total": [
                {"category": _SUBMITTED, "amount": b.money(total)},
                {"category": _BENEFIT, "amount": b.money(paid)},
            ],
            "payment": {"type": _COMPLETE, "amount": b.money(paid)},
        },
        rng,
    )
