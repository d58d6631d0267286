"""The population registry (全员人口库) of each county health commission, and the people truth.

Each county's health commission sends one Patient per resident who lived in the county during the
run (its own record number, the identity number once the birth is registered, the address history
within the county with periods, death), RelatedPerson resources for parents of children and for
spouses, and a Group per household (户) with its members and their periods.  The registry is the
authoritative source (一数一源): no registration errors are injected into it, only late uploads.

It also writes the truth about people: ``people.csv``, ``households.csv`` and ``moves.csv``.
"""

from __future__ import annotations

from datetime import date, timedelta

from phip.synth import build as b
from phip.synth.population import Household, Person, Residence
from phip.synth.records import Emitter, address

ROLE_NAMES = {
    "head": "户主",
    "spouse": "配偶",
    "child": "子女",
    "grandchild": "孙子女",
    "parent": "父母",
    "other": "其他",
}
RELATIONS = {
    "mother": ("MTH", "mother"),
    "father": ("FTH", "father"),
    "husband": ("HUSB", "husband"),
    "wife": ("WIFE", "wife"),
}


def _county_periods(hh: Household, end: date) -> list[tuple[str, list[tuple[Residence, date, date]]]]:
    """The household's residences grouped by consecutive county, with their periods."""
    out: list[tuple[str, list[tuple[Residence, date, date]]]] = []
    res = hh.residences
    last = end if hh.left is None else hh.left - timedelta(days=1)
    for i, r in enumerate(res):
        stop = last if i + 1 == len(res) else res[i + 1].start - timedelta(days=1)
        if out and out[-1][0] == r.county.code:
            out[-1][1].append((r, r.start, stop))
        else:
            out.append((r.county.code, [(r, r.start, stop)]))
    return out


def emit(em: Emitter, hh: Household) -> None:
    """Registry resources of one household, and its truth rows."""
    plan = em.plan
    rng = plan.rng(hh.hid, "registry")
    _truth(em, hh)
    for _county, periods in _county_periods(hh, plan.end):
        lo, hi = periods[0][1], periods[-1][2]
        org = plan.registry.access[periods[0][0].village.code].registry
        members: list[tuple[Person, str, date, date]] = []
        for p in hh.members:
            s, e = max(lo, p.first), min(hi, p.last)
            known = p.id_date or p.first
            s = max(s, known)
            if s > e:
                continue
            em.begin(min(e, plan.end), 18 * 60, rng)
            pid = _patient(em, org.id, p, periods, s, e, plan.end)
            members.append((p, pid, s, e))
        if not members:
            continue
        ids = {p.pid: pid for p, pid, _s, _e in members}
        for p, pid, s, e in members:
            if p.age_on(s) < 18:
                for rel, parent in (("mother", p.mother), ("father", p.father)):
                    if parent is not None:
                        _related(em, org.id, pid, parent, rel, e)
            if p.spouse is not None and p.spouse.pid in ids and p.sex == "female":
                _related(em, org.id, pid, p.spouse, "husband", e)
                _related(em, org.id, ids[p.spouse.pid], p, "wife", e)
        head = members[0][0]
        gid = em.rid()
        group: b.Json = {
            "resourceType": "Group",
            "id": gid,
            "identifier": [{"system": b.org_system(org.id, "household"), "value": gid[1:].replace("-", "")}],
            "active": hi >= plan.end,
            "type": "person",
            "actual": True,
            "code": b.concept(b.coding(b.CS_HOUSEHOLD_ROLE, "household", "户")),
            "name": f"{head.name.text}户",
            "quantity": len(members),
            "managingEntity": {"reference": f"Organization/{org.id}"},
            "member": [
                {
                    "entity": {"reference": f"Patient/{pid}"},
                    "period": {"start": s.isoformat(), **({"end": e.isoformat()} if e < plan.end else {})},
                    "inactive": e < plan.end,
                }
                for _p, pid, s, e in members
            ],
        }
        em.put(org.id, group, rng)


def _patient(
    em: Emitter, org: str, p: Person, periods: list[tuple[Residence, date, date]], s: date, e: date, end: date
) -> str:
    plan = em.plan
    mrn = em.next_mrn()
    pid = f"{org}-{mrn}"
    name: b.Json = {"use": "official", "text": p.name.text}
    if p.name.family:
        name["family"] = p.name.family
    name["given"] = [p.name.given]
    res: b.Json = {
        "resourceType": "Patient",
        "id": pid,
        "extension": em.person_extensions(None, p),
        "identifier": [
            {
                "use": "usual",
                "type": b.concept(b.coding(b.V2_0203, "MR")),
                "system": b.org_system(org, "mrn"),
                "value": mrn,
            },
            {
                "use": "official",
                "type": b.concept(b.coding(b.CS_ID_TYPE, "01", "居民身份证")),
                "system": b.ID_NUMBER,
                "value": p.id_number,
            },
        ],
        "active": e >= end and p.death is None,
        "name": [name],
    }
    phone = p.phone_on(e)
    if phone:
        res["telecom"] = [{"system": "phone", "value": phone, "use": "mobile"}]
    res["gender"] = p.sex
    res["birthDate"] = p.birth.isoformat()
    if p.death is not None and s <= p.death <= e:
        res["deceasedDateTime"] = p.death.isoformat()
    addrs = []
    for r, rs, re_ in periods:
        a0, a1 = max(rs, s), min(re_, e)
        if a0 > a1:
            continue
        a = address(r)
        a["period"] = {"start": a0.isoformat(), **({"end": a1.isoformat()} if a1 < end else {})}
        if a1 < end:
            a["use"] = "old"
        addrs.append(a)
    res["address"] = addrs
    spouse = p.spouse
    if spouse is not None and spouse.household is p.household:
        widowed = spouse.death is not None and spouse.death <= e
        res["maritalStatus"] = b.concept(b.coding(b.V3_MARITAL, "W" if widowed else "M"))
    elif p.age_on(e) >= 18:
        res["maritalStatus"] = b.concept(b.coding(b.V3_MARITAL, "U"))
    res["managingOrganization"] = {"reference": f"Organization/{org}"}
    em.put(org, res, plan.rng(p.pid, "registry-put"))
    em.truth.row("persons", org, "Patient", pid, b.org_system(org, "mrn"), mrn, p.pid)
    return pid


def _related(em: Emitter, org: str, patient: str, other: Person, rel: str, e: date) -> None:
    code, display = RELATIONS[rel]
    rid = em.rid()
    name: b.Json = {"text": other.name.text}
    if other.name.family:
        name["family"] = other.name.family
    name["given"] = [other.name.given]
    res: b.Json = {
        "resourceType": "RelatedPerson",
        "id": rid,
        "identifier": [
            {
                "type": b.concept(b.coding(b.CS_ID_TYPE, "01", "居民身份证")),
                "system": b.ID_NUMBER,
                "value": other.id_number,
            }
        ],
        "active": True,
        "patient": {"reference": f"Patient/{patient}"},
        "relationship": [b.concept(b.coding(b.V3_ROLE, code, display))],
        "name": [name],
        "gender": other.sex,
        "birthDate": other.birth.isoformat(),
    }
    phone = other.phone_on(e)
    if phone:
        res["telecom"] = [{"system": "phone", "value": phone, "use": "mobile"}]
    em.put(org, res, em.plan.rng(other.pid, patient, "related"))
    em.truth.row("persons", org, "RelatedPerson", rid, b.ID_NUMBER, other.id_number, other.pid)


def _truth(em: Emitter, hh: Household) -> None:
    plan = em.plan
    for p in hh.members:
        reason = (
            "died"
            if p.death is not None and p.death <= p.last
            else ("moved_out" if hh.left is not None and p.last < plan.end else "alive")
        )
        em.truth.row(
            "people",
            p.pid,
            p.id_number,
            p.name.text,
            p.sex,
            p.birth.isoformat(),
            p.ethnicity,
            p.birth_county,
            hh.hid,
            p.mother.pid if p.mother else "",
            p.father.pid if p.father else "",
            p.first.isoformat(),
            p.last.isoformat(),
            reason,
        )
        em.truth.row("households", hh.hid, p.pid, p.role, p.first.isoformat(), p.last.isoformat())
    prev = "outside" if hh.arrived else None
    for r in hh.residences:
        if prev is not None:
            em.truth.row("moves", hh.hid, r.start.isoformat(), prev, r.village.code)
        prev = r.village.code
    if hh.left is not None:
        em.truth.row("moves", hh.hid, hh.left.isoformat(), prev, "outside")
