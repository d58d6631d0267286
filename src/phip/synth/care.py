"""Care over the years for one resident: the orchestration, plus acute, inpatient and end-of-life care.

:func:`simulate_person` draws the person's traits and chronic conditions, enrols them in insurance
and runs every module over their days in the region.  This module itself adds:

- acute outpatient visits (rate by age band, diagnosis by age and season, institution by the
  diagnosis' level weights: village clinic, township/community centre, county, prefecture or
  province), with prescriptions from the essential-drug list, some labs, and a claim;
- inpatient stays (rate by age band, diagnosis by age, length of stay, department ward, labs,
  drugs, operations, discharge, claim), with a downward referral (下转) to primary care after a
  share of stays at prefecture level;
- the annual health check of residents aged 65 and over;
- death: a terminal stay in hospital or a home death, and the death certificate (死亡医学证明).
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import cache, lru_cache
from random import Random
from typing import Any

from phip.synth import build as b
from phip.synth import chronic, immunization, infectious, insurance, maternal
from phip.synth import events as ev
from phip.synth.infectious import band
from phip.synth.institutions import Institution
from phip.synth.population import Person, Span, add_years, poisson, spans
from phip.synth.rand import below, cumulative, pick, ri
from phip.synth.tables import table

DEATH_CERT = ("EHR-SD-11", "死亡医学证明")
SEASONS = (0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 0)  # month-1 -> winter, spring, summer, autumn


def simulate_person(ctx: ev.Ctx) -> None:
    """Run every care module for the person of ``ctx`` (a fresh :class:`events.Ctx`)."""
    if not ctx.spans:
        return
    ctx.conditions = chronic.plan_conditions(ctx.p, ctx.plan.rng(ctx.p.pid, "conditions"))
    insurance.enrol(ctx)
    for s in ctx.spans:
        _acute(ctx, s)
        _inpatient(ctx, s)
    chronic.simulate(ctx)
    immunization.simulate(ctx)
    maternal.simulate_newborn(ctx)
    maternal.child_checks(ctx)
    if ctx.p.sex == "female":
        maternal.simulate_mother(ctx)
    infectious.simulate(ctx)
    _elderly_checks(ctx)
    if ctx.p.death is not None and ctx.present(ctx.p.death):
        _death(ctx)


def make_ctx(plan: object, em: object, p: Person) -> ev.Ctx:
    from phip.synth.plan import Plan
    from phip.synth.records import Emitter

    assert isinstance(plan, Plan) and isinstance(em, Emitter)
    return ev.Ctx(plan, em, p, plan.rng(p.pid, "care"), ev.Traits.draw(plan.rng(p.pid, "traits"), p.sex), spans(p))


@cache
def _acute_table() -> tuple[list[dict[str, Any]], list[list[list[tuple[float, ...]]]]]:
    """The acute diagnoses and, per sex, age band and season, their cumulative weights."""
    rows = table("clinical")["acute"]
    weights = [[[[0.0] * len(rows) for _ in range(4)] for _ in range(5)] for _ in range(2)]
    for j, r in enumerate(rows):
        for si, sex in enumerate(("male", "female")):
            f = r.get("female", 1.0)
            sf = (2 * f / (f + 1)) if sex == "female" else (2 / (f + 1))
            if f >= 100:
                sf = 1.0 if sex == "female" else 0.0
            for bi in range(5):
                for se in range(4):
                    weights[si][bi][se][j] = r["ages"][bi] * r["seasons"][se] * sf
    cums = [[[cumulative(w) for w in per_band] for per_band in per_sex] for per_sex in weights]
    return rows, cums


def _slices(span: Span) -> tuple[tuple[date, date], ...]:
    """The span cut into years (the last one shorter)."""
    return _year_slices(span.start, span.end)


@lru_cache(maxsize=8192)
def _year_slices(start: date, end: date) -> tuple[tuple[date, date], ...]:
    out = []
    cur = start
    while cur <= end:
        nxt = min(end, add_years(cur, 1) - timedelta(days=1))
        out.append((cur, nxt))
        cur = nxt + timedelta(days=1)
    return tuple(out)


def _acute(ctx: ev.Ctx, span: Span) -> None:
    rng = ctx.rng
    p = ctx.p
    rates = table("clinical")["outpatient_rate"]["bands"]
    rows, weights = _acute_table()
    sx = 0 if p.sex == "male" else 1
    for lo, hi in _slices(span):
        ndays = (hi - lo).days + 1
        bi = band(p.age_on(lo))
        for _ in range(poisson(rng, rates[bi] * ndays / 365.25)):
            day = lo + timedelta(days=below(rng, ndays))
            cum = weights[sx][bi][SEASONS[day.month - 1]]
            if cum[-1] <= 0:
                continue
            row = pick(rng, rows, cum)
            _visit(ctx, row, day)


def _visit(ctx: ev.Ctx, row: dict[str, Any], day: date) -> None:
    rng = ctx.rng
    acc = ctx.access(day)
    inst = ev.pick_tier(rng, row["levels"], acc)
    cls = "EMER" if inst.tier != "village" and inst.tier != "primary" and rng.random() < 0.08 else "AMB"
    enc = ev.encounter(
        ctx, inst, day, ctx.minute(7 * 60, 21 * 60), "emergency" if cls == "EMER" else "outpatient", row["dept"], cls
    )
    ev.condition(ctx, enc, row["code"])
    if row["temp"] and rng.random() < row["temp"]:
        fever = rng.random() < 0.7
        ev.observation(ctx, enc, "temp", round(rng.uniform(37.3, 39.5) if fever else rng.gauss(36.7, 0.2), 1))
    if ctx.p.age_on(day) >= 35 and inst.tier != "village" and rng.random() < 0.35:
        ev.blood_pressure(ctx, enc, *ev.bp_reading(ctx, day))
    if inst.tier != "village":
        for panel, prob in row["labs"]:
            if rng.random() < prob:
                ev.panel(ctx, enc, panel, ev.lab_values(ctx, day, infection=panel in ("cbc", "crp")))
    if row["drugs"]:
        keys, cum = _drug_choices(row["code"])
        first = pick(rng, keys, cum)
        ev.prescribe(ctx, enc, first)
        if rng.random() < 0.35:
            second = pick(rng, keys, cum)
            if second != first:
                ev.prescribe(ctx, enc, second)
    ev.finish(ctx, enc)
    insurance.claim(ctx, enc, "outpatient", row["code"])


@cache
def _drug_choices(code: str) -> tuple[tuple[str, ...], tuple[float, ...]]:
    row = next(r for r in table("clinical")["acute"] if r["code"] == code)
    return tuple(d for d, _ in row["drugs"]), cumulative([w for _, w in row["drugs"]])


@cache
def _inpatient_weights() -> list[tuple[float, ...]]:
    rows = table("clinical")["inpatient"]
    return [cumulative([r["ages"][bi] for r in rows]) for bi in range(5)]


def _inpatient(ctx: ev.Ctx, span: Span) -> None:
    rng = ctx.rng
    rates = table("clinical")["inpatient_rate"]["bands"]
    rows = table("clinical")["inpatient"]
    for lo, hi in _slices(span):
        ndays = (hi - lo).days + 1
        bi = band(ctx.p.age_on(lo))
        for _ in range(poisson(rng, rates[bi] * ndays / 365.25)):
            row = pick(rng, rows, _inpatient_weights()[bi])
            day = lo + timedelta(days=below(rng, ndays))
            need = row.get("requires")
            if need is not None:
                cond = ctx.conditions.get(need)
                if cond is None or cond.diagnosed is None or cond.diagnosed > day:
                    continue
            stay(ctx, row, day)


def stay(ctx: ev.Ctx, row: dict[str, Any], day: date) -> date | None:
    """One inpatient stay from ``day``; returns the discharge day (None if it would leave the run)."""
    rng = ctx.rng
    p = ctx.p
    los = max(1, round(rng.lognormvariate(0, 0.4) * row["los"]))
    out = day + timedelta(days=los)
    if out > p.last or out > ctx.plan.end:
        return None
    acc = ctx.access(day)
    levels = list(row["levels"])
    inst = ev.pick_tier(rng, [0.0, *levels[:3]], acc)
    if inst.tier == "village" or not any(d.beds for d in inst.depts.values()):
        inst = acc.general
    dept = row["dept"]
    if not inst.depts.get(dept) or not inst.depts[dept].beds:
        beds = [d.code for d in inst.depts.values() if d.beds]
        dept = beds[0] if beds else dept
    enc = ev.encounter(
        ctx, inst, day, ctx.minute(0, 23 * 60), "inpatient", dept, "IMP", end=(out, ctx.minute(8 * 60, 17 * 60))
    )
    ev.condition(ctx, enc, row["code"])
    for key, cond in ctx.conditions.items():
        if cond.diagnosed is not None and cond.diagnosed <= day and key in ("hypertension", "diabetes"):
            ev.condition(ctx, enc, cond.code, onset=cond.onset)
    ev.blood_pressure(ctx, enc, *ev.bp_reading(ctx, day))
    ev.observation(ctx, enc, "temp", round(rng.gauss(37.0, 0.5), 1))
    ev.observation(ctx, enc, "hr", round(rng.gauss(82, 10)))
    labs = ev.lab_values(ctx, day, infection=row["code"].startswith("J") or row["code"].startswith("K35"))
    for panel in row["labs"]:
        ev.panel(ctx, enc, panel, labs)
    proc = row.get("procedure")
    if proc and rng.random() < proc[2]:
        ev.procedure(ctx, enc, proc[0], proc[1], day + timedelta(days=min(los - 1, 1)), ctx.minute(8 * 60, 18 * 60))
    for d in row["drugs"]:
        ev.prescribe(ctx, enc, d, los)
    ev.finish(ctx, enc, discharge="home")
    insurance.claim(ctx, enc, "inpatient", row["code"], days=los)
    if inst.tier in ("prefecture", "province") and rng.random() < 0.25:
        _refer_down(ctx, inst, out, row["code"])
    return out


def _refer_down(ctx: ev.Ctx, src: Institution, day: date, code: str) -> None:
    """Downward referral (下转) to the resident's primary care after a stay at a higher level."""
    rng = ctx.rng
    acc = ctx.access(day)
    ctx.em.begin(day, 10 * 60, rng)
    pid = ctx.em.patient(ctx.p, src, day, rng)
    sr: b.Json = {
        "resourceType": "ServiceRequest",
        "id": ctx.em.rid(),
        "status": "completed",
        "intent": "order",
        "category": [b.concept(b.coding(b.SNOMED, "3457005", "Patient referral"))],
        "code": b.concept(b.coding(b.CS_REFERRAL, "down", "下转"), text="下转"),
        "subject": {"reference": f"Patient/{pid}"},
        "authoredOn": b.dt(day, 10 * 60),
        "performer": [{"reference": f"Organization/{acc.primary.id}"}],
        "reasonCode": [ctx.em.dx(src, code)],
    }
    ref = ctx.em.put(src.id, sr, rng)
    seen = day + timedelta(days=ri(rng, 2, 14))
    if ctx.present(seen):
        enc = ev.encounter(ctx, acc.primary, seen, ctx.minute(), "referral", "02", based_on=ref)
        ev.condition(ctx, enc, code)
        ev.blood_pressure(ctx, enc, *ev.bp_reading(ctx, seen))
        ev.finish(ctx, enc)


def _elderly_checks(ctx: ev.Ctx) -> None:
    p = ctx.p
    rng = ctx.rng
    share = table("clinical")["followup"]["annual_check_65"]
    for span in ctx.spans:
        for lo, hi in _slices(span):
            if p.age_on(hi) < 65 or rng.random() >= share:
                continue
            day = lo + timedelta(days=below(rng, (hi - lo).days + 1))
            acc = ctx.access(day)
            enc = ev.encounter(ctx, acc.primary, day, ctx.minute(7 * 60, 11 * 60), "elderly-check", "02")
            ev.condition(ctx, enc, "Z00.0")
            h, w, bmi = ev.adult_size(ctx, day)
            ev.observation(ctx, enc, "height", h)
            ev.observation(ctx, enc, "weight", w)
            ev.observation(ctx, enc, "bmi", bmi)
            ev.blood_pressure(ctx, enc, *ev.bp_reading(ctx, day, _treated(ctx, day)))
            labs = ev.lab_values(ctx, day, controlled=rng.random() < ctx.traits.control)
            ev.panel(ctx, enc, "chem", labs)
            if rng.random() < 0.5:
                ev.panel(ctx, enc, "lipid", labs)
            ev.finish(ctx, enc)


def _treated(ctx: ev.Ctx, day: date) -> bool | None:
    c = ctx.conditions.get("hypertension")
    if c is None or c.diagnosed is None or c.diagnosed > day:
        return None
    return ctx.rng.random() < ctx.traits.control


def _cause(rng: Random, a: int) -> tuple[str, str]:
    causes = table("demography")["mortality"]["causes"]
    key = "0-14" if a < 15 else "15-44" if a < 45 else "45-64" if a < 65 else "65+"
    rows = causes[key]
    code, display, _w = rng.choices(rows, [r[2] for r in rows])[0]
    return code, display


def _death(ctx: ev.Ctx) -> None:
    p = ctx.p
    rng = ctx.rng
    day = p.death
    assert day is not None
    code, display = _cause(rng, p.age_on(day))
    minute = ctx.minute(0, 23 * 60)
    in_hospital = rng.random() < table("demography")["mortality"]["in_hospital_share"]
    acc = ctx.access(day)
    if in_hospital:
        admit = day - timedelta(days=ri(rng, 0, 10))
        admit = max(admit, p.first)
        inst = acc.general if rng.random() < 0.7 else acc.pref_general
        admit_minute = ctx.minute(0, minute) if admit == day else ctx.minute(0, 23 * 60)
        enc = ev.encounter(ctx, inst, admit, admit_minute, "inpatient", "03", "IMP", end=(day, minute))
    else:
        inst = acc.primary
        enc = ev.encounter(ctx, inst, day, min(minute + 120, 23 * 60 + 59), "death", "02", "HH")
    cond = ev.condition(ctx, enc, code)
    ev.finish(ctx, enc, discharge="exp" if in_hospital else None)
    issued = day + timedelta(days=ri(rng, 0, 3))
    ctx.em.begin(issued, 10 * 60, rng)
    place = "医院" if in_hospital else "家中"
    ev.document(
        ctx,
        inst,
        enc.patient,
        DEATH_CERT,
        b.dt(issued, 10 * 60),
        [
            (
                "死亡原因",
                [cond],
                f"根本死因：{display}（{code}）；死亡地点：{place}；死者：{p.name.text}，身份证件号码：{p.id_number}",
            )
        ],
        encounter_ref=enc.ref,
        author=enc.doctor,
        identifier=("death-certificate", ctx.em.rid()[1:].replace("-", "")),
        event=(b.dt(day, minute), b.dt(day, minute)),
    )
