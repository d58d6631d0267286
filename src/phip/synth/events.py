"""Shared pieces of the care simulation: the per-person context, resource builders, physiology.

Every clinical module records care the same way: open an encounter at an institution (which
registers the resident there and starts an upload bundle), add conditions, observations, lab
panels, prescriptions and procedures that point at it, then :func:`finish` the encounter, which
writes it with its diagnoses.  Measurements come from :class:`Traits`, a resident's stable
physiology (height, BMI, blood-pressure and glucose levels) plus their true conditions on the day.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache, lru_cache
from random import Random
from typing import TYPE_CHECKING, Any

from phip.synth import build as b
from phip.synth.institutions import Access, Institution
from phip.synth.population import Person, Span
from phip.synth.rand import ri
from phip.synth.tables import table

if TYPE_CHECKING:
    from phip.synth.plan import Plan
    from phip.synth.records import Emitter

CLASSES = {
    "AMB": ("AMB", "ambulatory"),
    "IMP": ("IMP", "inpatient encounter"),
    "HH": ("HH", "home health"),
    "EMER": ("EMER", "emergency"),
}
ENCOUNTER_TYPES = {
    "outpatient": "门诊",
    "inpatient": "住院",
    "emergency": "急诊",
    "htn-followup": "高血压患者随访",
    "dm-followup": "2型糖尿病患者随访",
    "health-check": "健康体检",
    "elderly-check": "老年人健康体检",
    "prenatal-first": "首次产前随访(建册)",
    "prenatal": "产前随访",
    "delivery": "分娩",
    "postpartum-visit": "产后访视",
    "postpartum-42d": "产后42天健康检查",
    "newborn-visit": "新生儿家庭访视",
    "child-check": "儿童健康体检",
    "infectious": "传染病就诊",
    "referral": "转诊就诊",
    "death": "死亡医学证明",
}
VITAL = b.concept(b.coding(b.OBS_CAT, "vital-signs", "Vital Signs"))
LAB = b.concept(b.coding(b.OBS_CAT, "laboratory", "Laboratory"))
EXAM = b.concept(b.coding(b.OBS_CAT, "exam", "Exam"))
SURVEY = b.concept(b.coding(b.OBS_CAT, "survey", "Survey"))
CATEGORIES = {"vital-signs": VITAL, "laboratory": LAB, "exam": EXAM, "survey": SURVEY}
ACTIVE = b.concept(b.coding(b.COND_CLIN, "active"))
CONFIRMED = b.concept(b.coding(b.COND_VER, "confirmed"))
ENC_DX = b.concept(b.coding(b.COND_CAT, "encounter-diagnosis", "Encounter Diagnosis"))
PROBLEM = b.concept(b.coding(b.COND_CAT, "problem-list-item", "Problem List Item"))
LAB_REPORT = b.concept(b.coding(b.V2_0074, "LAB", "Laboratory"))
_CLASS = {k: b.coding(b.V3_ACT, c, d) for k, (c, d) in CLASSES.items()}
_TYPE = {k: [b.concept(b.coding(b.CS_ENCOUNTER_TYPE, k, v))] for k, v in ENCOUNTER_TYPES.items()}
_DEPT: dict[str, b.Json] = {}


def _dept_cc(code: str, name: str) -> b.Json:
    cc = _DEPT.get(code)
    if cc is None:
        cc = _DEPT[code] = b.concept(b.coding(b.CS_DEPARTMENT, code, name))
    return cc


@dataclass(slots=True)
class Traits:
    """A resident's stable physiology, drawn once."""

    height: float  # adult height in cm
    bmi: float
    sbp: float  # usual systolic pressure without hypertension
    fpg: float  # usual fasting glucose without diabetes
    control: float  # share of follow-ups with the chronic condition under control
    adherence: float  # share of planned follow-ups attended

    @classmethod
    def draw(cls, rng: Random, sex: str) -> Traits:
        fcfg = table("clinical")["followup"]
        adh = rng.choices([a for a, _ in fcfg["adherence"]], [w for _, w in fcfg["adherence"]])[0]
        return cls(
            height=rng.gauss(169.5, 6.0) if sex == "male" else rng.gauss(158.0, 5.5),
            bmi=min(40.0, max(16.5, rng.gauss(23.6, 3.2))),
            sbp=rng.gauss(118, 8),
            fpg=rng.gauss(5.0, 0.35),
            control=min(0.95, max(0.1, rng.gauss(0.6, 0.2))),
            adherence=adh,
        )


@dataclass(slots=True)
class Ctx:
    """Everything a module needs to record care for one person."""

    plan: Plan
    em: Emitter
    p: Person
    rng: Random
    traits: Traits
    spans: list[Span]
    conditions: dict[str, Any] = field(default_factory=dict)  # key -> chronic.Condition
    coverage: list[Any] = field(default_factory=list)  # insurance.Cover

    def access(self, day: date) -> Access:
        return self.plan.registry.access[self.p.household.residence_on(day).village.code]

    def present(self, day: date) -> bool:
        return self.p.first <= day <= self.p.last and day <= self.plan.end

    def minute(self, lo: int = 8 * 60, hi: int = 17 * 60) -> int:
        return ri(self.rng, lo, hi)


@dataclass(slots=True)
class Enc:
    res: b.Json
    inst: Institution
    day: date
    minute: int
    patient: b.Json
    doctor: b.Json | None
    ref: b.Json  # Reference to this encounter (shared by its resources)
    when: str  # its start as a dateTime
    end_day: date  # the day it ended
    diagnoses: list[b.Json] = field(default_factory=list)


def pick_tier(rng: Random, weights: list[float], acc: Access) -> Institution:
    """An institution for a visit, by level weights [village, primary, county, prefecture]."""
    w0, w1, w2, w3 = weights
    if acc.village is None:
        w0, w1 = 0.0, w0 + w1
    u = rng.random() * (w0 + w1 + w2 + w3)
    tier = 0 if u < w0 else 1 if u < w0 + w1 else 2 if u < w0 + w1 + w2 else 3
    if tier == 0 and acc.village is not None:
        return acc.village
    if tier == 1:
        return acc.primary
    if tier == 2:
        return acc.general if rng.random() < 0.8 else acc.tcm
    u = rng.random()
    if acc.province is not None and u < 0.15:
        return acc.province
    return acc.pref_general if u < 0.85 else acc.pref_tcm


def encounter(
    ctx: Ctx,
    inst: Institution,
    day: date,
    minute: int,
    etype: str,
    dept_code: str = "03",
    cls: str = "AMB",
    end: tuple[date, int] | None = None,
    based_on: b.Json | None = None,
) -> Enc:
    """Open an encounter: registers the resident at ``inst`` and starts an upload bundle."""
    rng = ctx.rng
    em = ctx.em
    em.begin(day, minute, rng)
    pid = em.patient(ctx.p, inst, day, rng)
    return _encounter(ctx, inst, day, minute, etype, dept_code, cls, end, based_on, {"reference": f"Patient/{pid}"})


def _encounter(
    ctx: Ctx,
    inst: Institution,
    day: date,
    minute: int,
    etype: str,
    dept_code: str,
    cls: str,
    end: tuple[date, int] | None,
    based_on: b.Json | None,
    patient: b.Json,
) -> Enc:
    rng = ctx.rng
    dept = inst.dept(dept_code, child=ctx.p.age_on(day) < 14)
    doc = inst.doctor(rng, dept)
    rid = ctx.em.rid()
    res: b.Json = {
        "resourceType": "Encounter",
        "id": rid,
        "identifier": [{"system": _system(inst.id, "visit"), "value": rid[1:].replace("-", "")}],
        "status": "finished",
        "class": _CLASS[cls],
        "type": _TYPE[etype],
    }
    if dept is not None:
        res["serviceType"] = _dept_cc(dept.code, dept.name)
    res["subject"] = patient
    if based_on is not None:
        res["basedOn"] = [based_on]
    doc_ref = None
    if doc is not None:
        doc_ref = ref("Practitioner", doc)
        res["participant"] = [{"individual": doc_ref}]
    if end is None:
        end = (day, min(minute + ri(rng, 10, 40), 23 * 60 + 59))
    start = b.dt(day, minute)
    res["period"] = {"start": start, "end": b.dt(*end)}
    if cls == "IMP" and dept is not None:
        res["location"] = [{"location": ref("Location", dept.location)}]
    res["serviceProvider"] = ref("Organization", inst.id)
    return Enc(res, inst, day, minute, patient, doc_ref, {"reference": f"Encounter/{rid}"}, start, end[0])


def newborn_encounter(ctx: Ctx, inst: Institution, day: date, minute: int, end: tuple[date, int]) -> Enc:
    """The birth stay of a newborn, recorded against the birth hospital's newborn record."""
    ctx.em.begin(day, minute, ctx.rng)
    pid = ctx.em.newborn(ctx.p, inst, day, ctx.rng)
    return _encounter(ctx, inst, day, minute, "inpatient", "0502", "IMP", end, None, {"reference": f"Patient/{pid}"})


def finish(ctx: Ctx, enc: Enc, discharge: str | None = None) -> b.Json:
    """Write the encounter (with its diagnoses and, for stays, the discharge disposition)."""
    res = enc.res
    if enc.diagnoses:
        res["diagnosis"] = [{"condition": r, "rank": i + 1} for i, r in enumerate(enc.diagnoses)]
    if discharge is not None:
        res["hospitalization"] = {"dischargeDisposition": b.concept(b.coding(b.DISCHARGE, discharge))}
    return ctx.em.put(enc.inst.id, res, ctx.rng)


def condition(
    ctx: Ctx, enc: Enc, code: str, problem: bool = False, onset: date | None = None, primary: bool = True
) -> b.Json:
    rid = ctx.em.rid()
    res: b.Json = {
        "resourceType": "Condition",
        "id": rid,
        "clinicalStatus": ACTIVE,
        "verificationStatus": CONFIRMED,
        "category": [PROBLEM if problem else ENC_DX],
        "code": ctx.em.dx(enc.inst, code),
        "subject": enc.patient,
        "encounter": enc.ref,
        "onsetDateTime": (onset or enc.day).isoformat(),
        "recordedDate": enc.when,
    }
    if enc.doctor is not None:
        res["recorder"] = enc.doctor
    ref = ctx.em.put(enc.inst.id, res, ctx.rng)
    if primary:
        enc.diagnoses.append(ref)
    return ref


def observation(
    ctx: Ctx,
    enc: Enc,
    key: str,
    value: float | None = None,
    components: list[tuple[str, float]] | None = None,
    when: str | None = None,
) -> b.Json:
    category, unit = _obs_meta(key)
    rid = ctx.em.rid()
    res: b.Json = {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "category": category,
        "code": ctx.em.obs_code(enc.inst, key),
        "subject": enc.patient,
        "encounter": enc.ref,
        "effectiveDateTime": when or enc.when,
    }
    if enc.doctor is not None:
        res["performer"] = [enc.doctor]
    if value is not None:
        res["valueQuantity"] = b.quantity(value, unit)
    if components:
        res["component"] = [
            {"code": ctx.em.obs_code(enc.inst, ckey), "valueQuantity": b.quantity(cval, _obs_meta(ckey)[1])}
            for ckey, cval in components
        ]
    return ctx.em.put(enc.inst.id, res, ctx.rng)


@cache
def _obs_meta(key: str) -> tuple[list[b.Json], str | None]:
    row = table("clinical")["observations"][key]
    return [CATEGORIES[row[4]]], row[3]


def blood_pressure(ctx: Ctx, enc: Enc, sbp: int, dbp: int) -> b.Json:
    return observation(ctx, enc, "bp", components=[("sbp", sbp), ("dbp", dbp)])


def coded_observation(ctx: Ctx, enc: Enc, code: b.Json, value: b.Json, category: b.Json = SURVEY) -> b.Json:
    res: b.Json = {
        "resourceType": "Observation",
        "id": ctx.em.rid(),
        "status": "final",
        "category": [category],
        "code": code,
        "subject": enc.patient,
        "encounter": enc.ref,
        "effectiveDateTime": enc.when,
        "valueCodeableConcept": value,
    }
    return ctx.em.put(enc.inst.id, res, ctx.rng)


def panel(ctx: Ctx, enc: Enc, key: str, values: dict[str, float]) -> b.Json:
    """A lab panel: its Observations and the DiagnosticReport grouping them (results next day at most)."""
    code, display, name, members = table("clinical")["panels"][key]
    rng = ctx.rng
    taken = b.dt(enc.day, min(enc.minute + ri(rng, 5, 60), 23 * 60 + 59))
    results = [observation(ctx, enc, m, values[m], when=taken) for m in members]
    issued_day = enc.day + timedelta(days=rng.random() < 0.3)
    res: b.Json = {
        "resourceType": "DiagnosticReport",
        "id": ctx.em.rid(),
        "status": "final",
        "category": [LAB_REPORT],
    }
    if enc.inst.id and "lab" in enc.inst.local_codes:
        res["code"] = b.concept(b.coding(b.org_codes(enc.inst.id, "lab"), key.upper(), name), text=name)
    else:
        res["code"] = b.concept(b.coding(b.LOINC, code, display), text=name)
    res.update(
        {
            "subject": enc.patient,
            "encounter": enc.ref,
            "effectiveDateTime": taken,
            "issued": b.instant(b.at(issued_day, 17 * 60 if issued_day > enc.day else min(enc.minute + 120, 23 * 60))),
            "performer": [{"reference": f"Organization/{enc.inst.id}"}],
            "result": results,
        }
    )
    return ctx.em.put(enc.inst.id, res, ctx.rng)


@lru_cache(maxsize=4096)
def _rx_tail(key: str, days: int | None) -> tuple[list[b.Json], b.Json]:
    """The dosage text and dispense request of a drug (shared, never modified)."""
    dosage, supply = table("clinical")["drugs"][key][3:5]
    return [{"text": dosage}], {
        "expectedSupplyDuration": {"value": days or supply, "unit": "d", "system": b.UCUM, "code": "d"}
    }


@lru_cache(maxsize=65536)
def ref(rtype: str, rid: str) -> b.Json:
    """A shared Reference to a long-lived resource (institution, practitioner, location)."""
    return {"reference": f"{rtype}/{rid}"}


@lru_cache(maxsize=8192)
def _system(org: str, kind: str) -> str:
    return b.org_system(org, kind)


def prescribe(ctx: Ctx, enc: Enc, key: str, days: int | None = None) -> b.Json:
    rid = ctx.em.rid()
    res: b.Json = {
        "resourceType": "MedicationRequest",
        "id": rid,
        "identifier": [{"system": _system(enc.inst.id, "rx"), "value": rid[1:].replace("-", "")}],
        "status": "completed",
        "intent": "order",
        "medicationCodeableConcept": ctx.em.drug(enc.inst, key),
        "subject": enc.patient,
        "encounter": enc.ref,
        "authoredOn": enc.when,
    }
    if enc.doctor is not None:
        res["requester"] = enc.doctor
    res["dosageInstruction"], res["dispenseRequest"] = _rx_tail(key, days)
    return ctx.em.put(enc.inst.id, res, ctx.rng)


def procedure(ctx: Ctx, enc: Enc, code: str, display: str, day: date, minute: int) -> b.Json:
    res: b.Json = {
        "resourceType": "Procedure",
        "id": ctx.em.rid(),
        "status": "completed",
        "code": b.concept(b.coding(b.ICD9CM, code, display), text=display),
        "subject": enc.patient,
        "encounter": enc.ref,
        "performedDateTime": b.dt(day, minute),
    }
    if enc.doctor is not None:
        res["performer"] = [{"actor": enc.doctor}]
    return ctx.em.put(enc.inst.id, res, ctx.rng)


def _div(text: str) -> b.Json:
    safe = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{safe}</div>'}


def document(
    ctx: Ctx,
    inst: Institution,
    subject: b.Json,
    doc: tuple[str, str],
    when: str,
    sections: list[tuple[str, list[b.Json], str]],
    encounter_ref: b.Json | None = None,
    author: b.Json | None = None,
    identifier: tuple[str, str] | None = None,
    event: tuple[str, str] | None = None,
) -> b.Json:
    """A Composition for a WS/T 483 shared document (birth/death certificate, report card).

    ``sections`` are (title, entries, narrative text); ``event`` a (start, end) period.
    """
    res: b.Json = {"resourceType": "Composition", "id": ctx.em.rid()}
    if identifier is not None:
        res["identifier"] = {"system": b.org_system(inst.id, identifier[0]), "value": identifier[1]}
    res.update(
        {
            "status": "final",
            "type": b.concept(b.coding(b.CS_DOCUMENT, doc[0], doc[1]), text=doc[1]),
            "subject": subject,
        }
    )
    if encounter_ref is not None:
        res["encounter"] = encounter_ref
    res["date"] = when
    res["author"] = [author or {"reference": f"Organization/{inst.id}"}]
    res["title"] = doc[1]
    if event is not None:
        res["event"] = [{"period": {"start": event[0], "end": event[1]}}]
    res["custodian"] = {"reference": f"Organization/{inst.id}"}
    out = []
    for title, entries, text in sections:
        s: b.Json = {"title": title}
        if text:
            s["text"] = _div(text)
        if entries:
            s["entry"] = entries
        if text or entries:
            out.append(s)
    res["section"] = out
    return ctx.em.put(inst.id, res, ctx.rng)


# --- physiology ------------------------------------------------------------------------------


def _months(birth: date, day: date) -> float:
    return (day - birth).days / 30.44


def child_size(ctx: Ctx, day: date) -> tuple[float, float, float]:
    """(length/height cm, weight kg, head circumference cm) of a child on ``day``, near WHO medians."""
    m = _months(ctx.p.birth, day)
    male = ctx.p.sex == "male"
    z = (ctx.traits.height - (169.5 if male else 158.0)) / 6.0
    if m < 24:
        h = 50 + 25 * (m / 12) ** 0.55 + (1 if male else 0)
    else:
        h = 87 + 6.3 * (m - 24) / 12
    h += z * (1.5 + m / 24)
    w = (
        3.3 + 0.75 * m
        if m < 6
        else 7.8 + 0.4 * (m - 6)
        if m < 12
        else 10.2 + 0.2 * (m - 12)
        if m < 36
        else 14.7 + 0.17 * (m - 36)
    ) * (1.03 if male else 1.0)
    w *= 1 + (ctx.traits.bmi - 23.6) / 60
    hc = 34.5 + 11 * (min(m, 36) / 36) ** 0.45
    rng = ctx.rng
    return round(h + rng.gauss(0, 0.5), 1), round(w + rng.gauss(0, 0.2), 1), round(hc + rng.gauss(0, 0.3), 1)


def adult_size(ctx: Ctx, day: date) -> tuple[float, float, float]:
    """(height cm, weight kg, BMI) of an adult (from 18) or adolescent on ``day``."""
    a = ctx.p.age_on(day)
    if a < 18:
        frac = max(0.6, min(1.0, 0.6 + a * 0.022))
        h = ctx.traits.height * frac
    else:
        h = ctx.traits.height - max(0, a - 60) * 0.12
    bmi = ctx.traits.bmi + (0.04 * (min(a, 60) - 40) if a >= 18 else -3)
    bmi = max(14.0, bmi + ctx.rng.gauss(0, 0.4))
    w = bmi * (h / 100) ** 2
    return round(h, 1), round(w, 1), round(w / (h / 100) ** 2, 1)


def bp_reading(ctx: Ctx, day: date, controlled: bool | None = None) -> tuple[int, int]:
    """Systolic/diastolic pressure: normal, untreated hypertension, or treated (controlled or not)."""
    rng = ctx.rng
    a = ctx.p.age_on(day)
    htn = ctx.conditions.get("hypertension")
    has = htn is not None and htn.onset <= day
    if not has:
        s = ctx.traits.sbp + 0.25 * max(0, a - 30) + rng.gauss(0, 5)
        s = min(s, 138.0)
    elif controlled is None:
        s = rng.gauss(152, 11)
    elif controlled:
        s = min(139.0, rng.gauss(128, 6))
    else:
        s = max(141.0, rng.gauss(151, 10))
    d = s * 0.62 + rng.gauss(0, 4)
    if has and controlled is False and rng.random() < 0.3:
        d = max(d, 91 + rng.random() * 8)
    if a < 14:
        s, d = 95 + a * 1.5 + rng.gauss(0, 5), 60 + a + rng.gauss(0, 4)
    return round(s), round(min(d, s - 20))


def glucose(ctx: Ctx, day: date, controlled: bool | None = None) -> float:
    rng = ctx.rng
    dm = ctx.conditions.get("diabetes")
    if dm is None or dm.onset > day:
        return round(min(6.9, max(3.9, ctx.traits.fpg + rng.gauss(0, 0.3))), 1)
    if controlled is None:
        return round(max(7.0, rng.gauss(8.2, 1.3)), 1)
    if controlled:
        return round(min(6.9, max(4.4, rng.gauss(6.2, 0.4))), 1)
    return round(max(7.0, rng.gauss(8.9, 1.5)), 1)


class Labs(dict[str, float]):
    """Laboratory values of one person on one day, drawn only when a panel asks for them."""

    def __init__(self, ctx: Ctx, day: date, infection: bool, controlled: bool | None) -> None:
        super().__init__()
        self.ctx, self.day, self.infection, self.controlled = ctx, day, infection, controlled

    def __missing__(self, key: str) -> float:
        value = self._draw(key)
        self[key] = value
        return value

    def _draw(self, key: str) -> float:
        ctx, day = self.ctx, self.day
        g = ctx.rng.gauss
        male = ctx.p.sex == "male"
        if key == "wbc":
            return round(max(2.5, g(11.5, 3) if self.infection else g(6.3, 1.4)), 1)
        if key == "hgb":
            return round(g(145, 11) if male else g(128, 10))
        if key == "plt":
            return round(max(60, g(230, 50)))
        if key == "crp":
            return round(max(0.5, g(38, 20) if self.infection else g(3, 1.5)), 1)
        if key == "fpg":
            return glucose(ctx, day, self.controlled)
        if key == "cr":
            return round(max(35, g(82, 14) if male else g(63, 11)))
        if key == "alt":
            return round(max(5, g(23, 9)))
        if key == "hba1c":
            dm = ctx.conditions.get("diabetes")
            if dm is not None and dm.onset <= day:
                return round(max(4.2, g(6.6, 0.4) if self.controlled else g(8.4, 1.1)), 1)
            return round(max(4.2, g(5.3, 0.3)), 1)
        lip = ctx.conditions.get("dyslipidaemia")
        high = lip is not None and lip.onset <= day
        if key == "tc":
            return round(max(2.5, g(6.3, 0.7) if high else g(4.7, 0.7)), 2)
        if key == "tg":
            return round(max(0.4, g(2.6, 0.8) if high else g(1.4, 0.5)), 2)
        if key == "ldl":
            return round(max(1.0, g(4.2, 0.6) if high else g(2.8, 0.6)), 2)
        if key == "hdl":
            return round(max(0.6, g(1.25, 0.25)), 2)
        raise KeyError(key)


def lab_values(ctx: Ctx, day: date, infection: bool = False, controlled: bool | None = None) -> Labs:
    """The person's lab values on ``day`` (lazy: only the values a panel reads are drawn)."""
    return Labs(ctx, day, infection, controlled)


def add_months(d: date, months: float) -> date:
    whole = int(months)
    y, m = divmod(d.month - 1 + whole, 12)
    try:
        base = d.replace(year=d.year + y, month=m + 1)
    except ValueError:
        base = d.replace(year=d.year + y, month=m + 1, day=28)
    return base + timedelta(days=round((months - whole) * 30.44))
