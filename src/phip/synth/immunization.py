"""Childhood immunizations following the National Immunization Programme schedule.

The schedule is data (immunization.json), versioned: children born before 2020 follow the 2016
edition, later ones the 2021 edition.  Each dose falls due at its age; most are given within two
weeks, the rest later (exponential delay), a few are missed (more for later doses and in minority
areas), a few children are never vaccinated, and consecutive doses keep their minimum intervals.
Birth doses (HepB 1, BCG) are given at the birth hospital, under the newborn's birth-hospital
record; the rest at the vaccination clinic of the township or community health centre.  Doses
given before the run or before the child arrived in the region are not recorded.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from phip.synth import build as b
from phip.synth import events as ev
from phip.synth.rand import ri
from phip.synth.tables import table

ROUTES = {
    "IM": ("IM", "Injection, intramuscular"),
    "SC": ("SQ", "Injection, subcutaneous"),
    "ID": ("IDINJ", "Injection, intradermal"),
    "PO": ("PO", "Swallow, oral"),
}
SITES = {"LA": "left arm", "RA": "right arm", "RT": "right thigh", "LT": "left thigh"}
ADMIN = b.concept(b.coding(b.IMM_FUNCTION, "AP", "Administering Provider"))


def edition(birth: date) -> dict[str, Any]:
    for ed in table("immunization")["editions"]:
        cutoff = ed["born_before"]
        if cutoff is None or birth < date.fromisoformat(cutoff):
            return ed
    raise ValueError("no schedule edition applies")


def _miss_probability(months: int, minority: bool) -> float:
    cfg = table("immunization")["miss"]
    p = cfg["default"]
    for upto, prob in cfg["by_age_months"]:
        if months <= upto:
            p = prob
            break
    else:
        p = cfg["by_age_months"][-1][1]
    return p * (cfg["minority_factor"] if minority else 1.0)


def simulate(ctx: ev.Ctx) -> None:
    p = ctx.p
    plan = ctx.plan
    if p.birth < plan.start - timedelta(days=7 * 366) or p.last < p.first:
        return
    rng = ctx.rng
    cfg = table("immunization")
    if rng.random() < cfg["miss"]["refuser"]:
        return
    ed = edition(p.birth)
    timely = cfg["timeliness"]
    minimum = cfg["min_interval_days"]
    last_given: dict[str, date] = {}
    minority = p.ethnicity != "01"
    for vaccine, dose, months in ed["doses"]:
        due = ev.add_months(p.birth, months)
        if months == 0:
            day = p.birth + timedelta(days=0 if rng.random() < timely["birth_dose_in_hospital"] else ri(rng, 1, 20))
        else:
            if rng.random() < _miss_probability(months, minority):
                continue
            if rng.random() < timely["on_time"]:
                day = due + timedelta(days=ri(rng, 0, timely["on_time_days"]))
            else:
                day = due + timedelta(days=timely["on_time_days"] + int(rng.expovariate(1 / timely["late_mean_days"])))
        prev = last_given.get(vaccine)
        if prev is not None and vaccine in minimum:
            day = max(day, prev + timedelta(days=minimum[vaccine]))
        if day > p.last or day > plan.end:
            continue
        last_given[vaccine] = day
        if day < p.first:
            continue
        _give(ctx, vaccine, dose, day, ed["edition"])


def _give(ctx: ev.Ctx, vaccine: str, dose: int, day: date, edition_name: str) -> None:
    rng = ctx.rng
    p = ctx.p
    spec = table("immunization")["vaccines"][vaccine]
    born = p.born
    at_birth_hospital = born is not None and day == p.birth
    minute = ctx.minute(8 * 60, 16 * 60)
    if at_birth_hospital:
        assert born is not None
        inst = ctx.plan.registry[born.hospital]
        ctx.em.begin(day, minute, rng)
        pid = ctx.em.newborn(p, inst, day, rng)
        dept = inst.dept("0502")
    else:
        inst = ctx.access(day).primary
        ctx.em.begin(day, minute, rng)
        pid = ctx.em.patient(p, inst, day, rng)
        dept = inst.dept("01")
    codings = [b.coding(b.CS_VACCINE, vaccine, spec["name"])]
    if spec["cvx"]:
        codings.append(b.coding(b.CVX, spec["cvx"]))
    res: b.Json = {
        "resourceType": "Immunization",
        "id": ctx.em.rid(),
        "status": "completed",
        "vaccineCode": b.concept(*codings, text=spec["name"]),
        "patient": {"reference": f"Patient/{pid}"},
        "occurrenceDateTime": b.dt(day, minute),
        "recorded": b.dt(day, minute),
        "primarySource": True,
    }
    if dept is not None:
        res["location"] = {"reference": f"Location/{dept.location}"}
    res["lotNumber"] = f"{day.year}{ri(rng, 10000, 99999)}"
    res["expirationDate"] = (day + timedelta(days=ri(rng, 200, 700))).isoformat()
    if spec["site"]:
        res["site"] = b.concept(b.coding(b.V3_SITE, spec["site"][0], SITES[spec["site"][0]]), text=spec["site"][1])
    route = ROUTES[spec["route"][0]]
    res["route"] = b.concept(b.coding(b.V3_ROUTE, route[0], route[1]), text=spec["route"][1])
    res["doseQuantity"] = b.quantity(spec["dose"], "mL")
    nurse = None
    if dept is not None and dept.nurses:
        nurse = rng.choice(dept.nurses)
    elif dept is not None and dept.doctors:
        nurse = rng.choice(dept.doctors)
    if nurse:
        res["performer"] = [{"function": ADMIN, "actor": {"reference": f"Practitioner/{nurse}"}}]
    res["protocolApplied"] = [
        {
            "series": f"国家免疫规划疫苗儿童免疫程序({edition_name}年版)",
            "targetDisease": [{"text": spec["disease"]}],
            "doseNumberPositiveInt": dose,
        }
    ]
    ctx.em.put(inst.id, res, rng)
