"""Chronic diseases: who has them, when they are diagnosed, and the follow-ups of the managed.

Each resident's onset age for each chronic condition is drawn by inverting the age-specific
prevalence curve of clinical.json (``P(onset <= a) = prevalence(a)``), so prevalence at every age
matches the table whatever the run length.  A share of conditions is ever diagnosed, after a delay.

Hypertension and type 2 diabetes patients aged 35+ are managed by primary care (basic public
health services, 第三版): four follow-ups a year at the township/community centre or the village
clinic, each attended with the resident's own adherence; at each, blood pressure (and fasting
glucose) is measured and the visit classified.  An unsatisfactory visit brings a re-visit within
two weeks; two unsatisfactory visits in a row, or an emergency reading (≥180/110, glucose ≥16.7),
a referral up to the county hospital, a visit there, and a follow-up of the referral within two
weeks.  Diagnosed patients also come for prescription refills.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from itertools import pairwise
from random import Random

from phip.synth import build as b
from phip.synth import events as ev
from phip.synth import insurance
from phip.synth.population import Person, add_years
from phip.synth.rand import below, ri
from phip.synth.tables import table

FOLLOWUP_CODE = b.concept(b.coding(b.CS_FOLLOWUP, "assessment", "此次随访分类"), text="此次随访分类")
RESULTS = {1: "控制满意", 2: "控制不满意", 3: "不良反应", 4: "并发症"}
PROGRAM_TYPES = {"hypertension": "htn-followup", "diabetes": "dm-followup"}


@dataclass(slots=True)
class Condition:
    key: str
    code: str
    onset: date
    diagnosed: date | None
    drugs: tuple[str, ...] = ()


@cache
def _curves() -> dict[str, list[tuple[int, float]]]:
    return {k: [(int(a), float(p)) for a, p in c["prevalence"]] for k, c in table("clinical")["chronic"].items()}


def prevalence(key: str, a: float, sex: str) -> float:
    """Prevalence of a chronic condition at age ``a`` (piecewise linear between table points)."""
    c = table("clinical")["chronic"][key]
    pts = _curves()[key]
    f = c[sex]
    if a < pts[0][0]:
        return 0.0
    for (a0, p0), (a1, p1) in pairwise(pts):
        if a0 <= a <= a1:
            return min(0.95, (p0 + (p1 - p0) * (a - a0) / (a1 - a0)) * f)
    return min(0.95, pts[-1][1] * f)


def _onset_age(key: str, u: float, sex: str) -> float | None:
    """The smallest age at which prevalence reaches ``u`` (None if it never does)."""
    pts = _curves()[key]
    f = table("clinical")["chronic"][key][sex]
    if u > min(0.95, pts[-1][1] * f):
        return None
    prev_a, prev_p = pts[0][0] - 1.0, 0.0
    for a, p in pts:
        p = min(0.95, p * f)
        if u <= p:
            return prev_a + (a - prev_a) * (u - prev_p) / (p - prev_p) if p > prev_p else float(a)
        prev_a, prev_p = float(a), p
    return None


def plan_conditions(p: Person, rng: Random) -> dict[str, Condition]:
    """The person's chronic conditions with onset before they leave the run (truth)."""
    out: dict[str, Condition] = {}
    for key, c in table("clinical")["chronic"].items():
        u = rng.random()
        a = _onset_age(key, u, p.sex)
        diag_u = rng.random()
        delay = rng.expovariate(1 / c["delay_years"]) if c["delay_years"] > 0 else 0.0
        if a is None:
            continue
        onset = add_years(p.birth, int(a)) + timedelta(days=int((a % 1) * 365))
        if onset > p.last:
            continue
        diagnosed = None
        if diag_u < c["diagnosed"]:
            diagnosed = onset + timedelta(days=int(delay * 365))
            if diagnosed > p.last:
                diagnosed = None
        drugs: tuple[str, ...] = ()
        choices = table("clinical")["chronic_drugs"].get(key)
        if choices:
            n = 1 + (rng.random() < 0.3)
            picked = rng.choices([d for d, _ in choices], [w for _, w in choices], k=n)
            drugs = tuple(dict.fromkeys(picked))
        out[key] = Condition(key, c["code"], onset, diagnosed, drugs)
    return out


def simulate(ctx: ev.Ctx) -> None:
    """Diagnosis visits, refills and programme follow-ups for the person's chronic conditions."""
    p = ctx.p
    plan = ctx.plan
    rng = ctx.rng
    cfg = table("clinical")
    for key, cond in ctx.conditions.items():
        ctx.em.truth.row(
            "conditions",
            p.pid,
            key,
            cond.code,
            cond.onset.isoformat(),
            cond.diagnosed.isoformat() if cond.diagnosed else "",
        )
    for key, cond in ctx.conditions.items():
        if cond.diagnosed is None or cond.diagnosed > p.last:
            continue
        spec = cfg["chronic"][key]
        if cond.diagnosed >= plan.start and ctx.present(cond.diagnosed):
            _diagnosis_visit(ctx, cond)
        # refills
        first = max(cond.diagnosed, p.first)
        years = (p.last - first).days / 365.25
        if years > 0 and cond.drugs:
            n = _count(rng, cfg["outpatient_rate"]["chronic_refills"] * years / len(ctx.conditions))
            for _ in range(n):
                day = first + timedelta(days=below(rng, max(1, (p.last - first).days + 1)))
                _refill(ctx, cond, day)
        program = spec.get("program")
        if program and rng.random() < spec["managed"]:
            start = max(cond.diagnosed, p.first, add_years(p.birth, 35))
            if start <= p.last:
                _followups(ctx, cond, program, start)


def _count(rng: Random, lam: float) -> int:
    from phip.synth.population import poisson

    return poisson(rng, lam)


def _diagnosis_visit(ctx: ev.Ctx, cond: Condition) -> None:
    rng = ctx.rng
    day = cond.diagnosed
    assert day is not None
    acc = ctx.access(day)
    inst = ev.pick_tier(rng, [0.2, 2, 3, 1], acc)
    if inst.kind == "village":
        inst = acc.primary
    enc = ev.encounter(ctx, inst, day, ctx.minute(), "outpatient", "03")
    ev.condition(ctx, enc, cond.code, onset=cond.onset)
    if cond.key in ("hypertension", "diabetes", "chd", "stroke"):
        ev.blood_pressure(ctx, enc, *ev.bp_reading(ctx, day))
    if cond.key in ("diabetes", "dyslipidaemia", "chd") and inst.kind != "village":
        labs = ev.lab_values(ctx, day)
        ev.panel(ctx, enc, "chem", labs)
        if cond.key == "diabetes":
            ev.panel(ctx, enc, "hba1c", labs)
        else:
            ev.panel(ctx, enc, "lipid", labs)
    for d in cond.drugs:
        ev.prescribe(ctx, enc, d, 30)
    ev.finish(ctx, enc)
    insurance.claim(ctx, enc, "outpatient", cond.code)


def _refill(ctx: ev.Ctx, cond: Condition, day: date) -> None:
    rng = ctx.rng
    acc = ctx.access(day)
    inst = ev.pick_tier(rng, [1, 4, 2, 0.3], acc)
    enc = ev.encounter(ctx, inst, day, ctx.minute(), "outpatient", "03")
    _problem(ctx, enc, cond)
    if cond.key == "hypertension" and rng.random() < 0.7:
        ev.blood_pressure(ctx, enc, *ev.bp_reading(ctx, day, rng.random() < ctx.traits.control))
    for d in cond.drugs:
        ev.prescribe(ctx, enc, d, 30)
    ev.finish(ctx, enc)
    insurance.claim(ctx, enc, "outpatient", cond.code)


def _problem(ctx: ev.Ctx, enc: ev.Enc, cond: Condition) -> None:
    """The institution's problem-list entry for the condition: written once, then referenced."""
    key = f"{enc.inst.id}#cond#{cond.code}"
    ref = ctx.p.records.get(key)
    if ref is None:
        r = ev.condition(ctx, enc, cond.code, problem=True, onset=cond.onset)
        ctx.p.records[key] = r["reference"]
    else:
        enc.diagnoses.append({"reference": ref})


def _followups(ctx: ev.Ctx, cond: Condition, program: str, start: date) -> None:
    p = ctx.p
    rng = ctx.rng
    fcfg = table("clinical")["followup"]
    interval = 365.25 / fcfg["per_year"]
    day = start + timedelta(days=ri(rng, 7, 60))
    bad_streak = 0
    while day <= p.last and day <= ctx.plan.end:
        nxt = day + timedelta(days=round(interval + rng.gauss(0, 7)))
        if rng.random() < ctx.traits.adherence:
            controlled = rng.random() < ctx.traits.control
            result = _followup_visit(ctx, cond, program, day, controlled)
            if result == 1:
                bad_streak = 0
            else:
                bad_streak += 1
                emergency = result == 4
                if bad_streak >= 2 or emergency:
                    ref_day = _refer(ctx, cond, day)
                    bad_streak = 0
                    if ref_day is not None:
                        check = ref_day + timedelta(days=ri(rng, 5, 14))
                        if ctx.present(check):
                            _followup_visit(ctx, cond, program, check, rng.random() < 0.7)
                else:
                    again = day + timedelta(days=ri(rng, 10, 14))
                    if ctx.present(again) and again < nxt:
                        r2 = _followup_visit(ctx, cond, program, again, rng.random() < ctx.traits.control + 0.15)
                        bad_streak = 0 if r2 == 1 else bad_streak + 1
                        if bad_streak >= 2:
                            _refer(ctx, cond, again)
                            bad_streak = 0
        day = nxt


def _followup_visit(ctx: ev.Ctx, cond: Condition, program: str, day: date, controlled: bool) -> int:
    """One follow-up; returns the classification code (1 satisfied, 2 not, 4 emergency/complication)."""
    rng = ctx.rng
    acc = ctx.access(day)
    share = table("clinical")["followup"]["village_share"]
    inst = acc.village if acc.village is not None and rng.random() < share else acc.primary
    cls = "HH" if rng.random() < 0.15 else "AMB"
    enc = ev.encounter(ctx, inst, day, ctx.minute(), PROGRAM_TYPES[program], "02", cls)
    _problem(ctx, enc, cond)
    sbp, dbp = ev.bp_reading(ctx, day, controlled if cond.key == "hypertension" else None)
    if cond.key == "diabetes" and "hypertension" not in ctx.conditions:
        sbp, dbp = ev.bp_reading(ctx, day)
    ev.blood_pressure(ctx, enc, sbp, dbp)
    result = 1 if controlled else 2
    if cond.key == "diabetes":
        fpg = ev.glucose(ctx, day, controlled)
        if not controlled and rng.random() < 0.03:
            fpg = round(rng.uniform(16.7, 22.0), 1)
        ev.observation(ctx, enc, "fpg", fpg)
        if fpg >= 16.7:
            result = 4
    if cond.key == "hypertension" and not controlled and rng.random() < 0.04:
        result = 4  # emergency reading at the visit
    if sbp >= 180 or dbp >= 110:
        result = 4
    if rng.random() < 0.25:
        _h, w, _bmi = ev.adult_size(ctx, day)
        ev.observation(ctx, enc, "weight", w)
    ev.coded_observation(ctx, enc, FOLLOWUP_CODE, b.concept(b.coding(b.CS_FOLLOWUP, str(result), RESULTS[result])))
    for d in cond.drugs:
        ev.prescribe(ctx, enc, d, 90)
    ev.finish(ctx, enc)
    return result


def _refer(ctx: ev.Ctx, cond: Condition, day: date) -> date | None:
    """Refer up to the county hospital; returns the day the patient was seen there (or None)."""
    rng = ctx.rng
    acc = ctx.access(day)
    src = acc.primary
    ctx.em.begin(day, ctx.minute(), rng)
    pid = ctx.em.patient(ctx.p, src, day, rng)
    target = acc.general
    sr: b.Json = {
        "resourceType": "ServiceRequest",
        "id": ctx.em.rid(),
        "status": "completed",
        "intent": "order",
        "category": [b.concept(b.coding(b.SNOMED, "3457005", "Patient referral"))],
        "code": b.concept(b.coding(b.CS_REFERRAL, "up", "上转"), text="上转"),
        "subject": {"reference": f"Patient/{pid}"},
        "authoredOn": b.dt(day, 16 * 60),
        "performer": [{"reference": f"Organization/{target.id}"}],
        "reasonCode": [ctx.em.dx(src, cond.code)],
    }
    doc = src.doctor(rng, src.dept("02"))
    if doc:
        sr["requester"] = {"reference": f"Practitioner/{doc}"}
    ref = ctx.em.put(src.id, sr, rng)
    seen = day + timedelta(days=ri(rng, 1, 7))
    if not ctx.present(seen) or rng.random() < 0.1:
        return None
    enc = ev.encounter(ctx, target, seen, ctx.minute(), "referral", "03", based_on=ref)
    ev.condition(ctx, enc, cond.code, onset=cond.onset)
    ev.blood_pressure(ctx, enc, *ev.bp_reading(ctx, seen, rng.random() < 0.3 if cond.key == "hypertension" else None))
    labs = ev.lab_values(ctx, seen, controlled=False)
    ev.panel(ctx, enc, "chem", labs)
    if cond.key == "diabetes":
        ev.panel(ctx, enc, "hba1c", labs)
    for d in cond.drugs:
        ev.prescribe(ctx, enc, d, 30)
    ev.finish(ctx, enc)
    insurance.claim(ctx, enc, "outpatient", cond.code)
    return seen
