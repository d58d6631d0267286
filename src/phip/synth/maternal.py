"""Maternal care, births and child health checks.

For each delivery decided by the life simulation: registration and the first prenatal visit
(建册) before 13 weeks for most women, four prenatal visits in the standard windows, the delivery
stay at the birth hospital (vaginal or caesarean), the postpartum home visit 3-7 days after
discharge and the 42-day check.  For the baby: the birth-hospital record (usually 「母亲之子/之女」
under the mother's ID number), birth measurements, the birth certificate (出生医学证明, a
Composition), the newborn home visit and the child health checks at the ages of the 0-6 years
programme (clinical.json).
"""

from __future__ import annotations

from datetime import date, timedelta

from phip.synth import build as b
from phip.synth import events as ev
from phip.synth import insurance
from phip.synth.population import Birth
from phip.synth.rand import ri
from phip.synth.tables import table

BIRTH_CERT = ("EHR-SD-2", "出生医学证明")


def simulate_mother(ctx: ev.Ctx) -> None:
    for birth in ctx.p.births:
        _pregnancy(ctx, birth)


def _pregnancy(ctx: ev.Ctx, birth: Birth) -> None:
    rng = ctx.rng
    cfg = table("clinical")["maternal"]
    conception = birth.day - timedelta(days=birth.gestation_days)
    # registration + first prenatal visit
    lo, hi = cfg["registration_weeks"]
    weeks = rng.uniform(lo, hi) if rng.random() >= cfg["late_registration"] else rng.uniform(13, 20)
    reg_day = conception + timedelta(days=int(weeks * 7))
    if ctx.present(reg_day) and reg_day < birth.day:
        acc = ctx.access(reg_day)
        enc = ev.encounter(ctx, acc.primary, reg_day, ctx.minute(), "prenatal-first", "0601")
        ev.condition(ctx, enc, "Z34.9", onset=conception)
        ev.observation(ctx, enc, "ga", round((reg_day - conception).days / 7, 1))
        h, w, _ = ev.adult_size(ctx, reg_day)
        ev.observation(ctx, enc, "height", h)
        ev.observation(ctx, enc, "weight", w)
        ev.blood_pressure(ctx, enc, *ev.bp_reading(ctx, reg_day))
        if acc.primary.kind != "village":
            ev.panel(ctx, enc, "cbc", ev.lab_values(ctx, reg_day))
        ev.prescribe(ctx, enc, "folic_acid", 90)
        ev.finish(ctx, enc)
    for wlo, whi in cfg["visits_weeks"]:
        if rng.random() >= cfg["visit_attendance"]:
            continue
        day = conception + timedelta(days=int(rng.uniform(wlo, whi) * 7))
        if day >= birth.day or not ctx.present(day):
            continue
        acc = ctx.access(day)
        inst = acc.mch if wlo >= 28 or rng.random() < 0.4 else acc.primary
        enc = ev.encounter(ctx, inst, day, ctx.minute(), "prenatal", "0502" if inst.kind == "mch" else "0601")
        ev.condition(ctx, enc, "Z34.9", onset=conception)
        ga = (day - conception).days / 7
        ev.observation(ctx, enc, "ga", round(ga, 1))
        if ga >= 20:
            ev.observation(ctx, enc, "fundal", round(ga - 2 + rng.gauss(0, 1.5), 1))
            ev.observation(ctx, enc, "fhr", round(rng.gauss(142, 8)))
        ev.blood_pressure(ctx, enc, *ev.bp_reading(ctx, day))
        _h, w, _ = ev.adult_size(ctx, day)
        ev.observation(ctx, enc, "weight", round(w + ga * 0.35, 1))
        ev.finish(ctx, enc)
        insurance.claim(ctx, enc, "outpatient", "Z34.9")
    _delivery(ctx, birth)


def _delivery(ctx: ev.Ctx, birth: Birth) -> None:
    rng = ctx.rng
    if not ctx.present(birth.day):
        return
    inst = ctx.plan.registry[birth.hospital]
    admit_day = birth.day - timedelta(days=rng.random() < 0.5)
    stay = ri(rng, 4, 7) if birth.cesarean else ri(rng, 1, 3)
    discharge = birth.day + timedelta(days=stay)
    enc = ev.encounter(
        ctx,
        inst,
        admit_day,
        ctx.minute(0, 23 * 60),
        "delivery",
        "0502",
        "IMP",
        end=(discharge, ctx.minute(9 * 60, 16 * 60)),
    )
    code = "O82" if birth.cesarean else "O80"
    ev.condition(ctx, enc, code, onset=birth.day)
    if birth.cesarean:
        ev.procedure(ctx, enc, "74.1", "子宫下段剖宫产术", birth.day, ctx.minute(0, 23 * 60))
    ev.blood_pressure(ctx, enc, *ev.bp_reading(ctx, admit_day))
    ev.panel(ctx, enc, "cbc", ev.lab_values(ctx, admit_day))
    ev.prescribe(ctx, enc, "oxytocin", 1)
    ev.finish(ctx, enc, discharge="home")
    base = table("insurance")["costs"]["delivery"]["cesarean" if birth.cesarean else "vaginal"]
    cost = base * rng.lognormvariate(0, 0.2)
    insurance.claim(ctx, enc, "inpatient", code, cost=cost)
    cfg = table("clinical")["maternal"]
    visit = discharge + timedelta(days=ri(rng, 3, 7))
    if rng.random() < cfg["postpartum_attendance"] and ctx.present(visit):
        enc = ev.encounter(ctx, ctx.access(visit).primary, visit, ctx.minute(), "postpartum-visit", "0601", "HH")
        ev.condition(ctx, enc, "Z39.2")
        ev.blood_pressure(ctx, enc, *ev.bp_reading(ctx, visit))
        ev.observation(ctx, enc, "temp", round(rng.gauss(36.6, 0.25), 1))
        ev.finish(ctx, enc)
    check = birth.day + timedelta(days=42 + ri(rng, 0, 10))
    if rng.random() < cfg["postpartum_attendance"] and ctx.present(check):
        acc = ctx.access(check)
        inst = acc.mch if rng.random() < 0.4 else acc.primary
        enc = ev.encounter(ctx, inst, check, ctx.minute(), "postpartum-42d", "0601" if inst.kind != "mch" else "05")
        ev.condition(ctx, enc, "Z39.2")
        ev.blood_pressure(ctx, enc, *ev.bp_reading(ctx, check))
        _h, w, _ = ev.adult_size(ctx, check)
        ev.observation(ctx, enc, "weight", round(w + 2, 1))
        ev.finish(ctx, enc)


def simulate_newborn(ctx: ev.Ctx) -> None:
    """Birth records of a baby born in the run: measurements, the birth certificate, the home visit."""
    p = ctx.p
    birth = p.born
    if birth is None or not ctx.present(p.birth):
        return
    rng = ctx.rng
    inst = ctx.plan.registry[birth.hospital]
    minute = ctx.minute(0, 23 * 60)
    stay = ri(rng, 3, 6) if birth.cesarean else ri(rng, 1, 3)
    out = p.birth + timedelta(days=stay)
    enc = ev.newborn_encounter(ctx, inst, p.birth, minute, (out, ctx.minute(9 * 60, 16 * 60)))
    ev.condition(ctx, enc, "Z38.0", onset=p.birth)
    weeks = birth.gestation_days / 7
    bw = max(1200, round(rng.gauss(3300 - max(0, 39 - weeks) * 220, 380) * (1.03 if p.sex == "male" else 1.0)))
    length = round(rng.gauss(50 - max(0, 39 - weeks) * 0.8, 1.6), 1)
    entries = [
        ev.observation(ctx, enc, "bw", bw, when=b.dt(p.birth, minute)),
        ev.observation(ctx, enc, "blen", length, when=b.dt(p.birth, minute)),
        ev.observation(ctx, enc, "apgar1", min(10, max(3, round(rng.gauss(9, 0.8)))), when=b.dt(p.birth, minute + 1)),
        ev.observation(ctx, enc, "apgar5", min(10, max(5, round(rng.gauss(9.6, 0.5)))), when=b.dt(p.birth, minute + 5)),
    ]
    ev.finish(ctx, enc, discharge="home")
    mother = birth.mother
    father = mother.spouse
    ctx.em.begin(out, 10 * 60, rng)
    cert_no = f"{chr(ord('M') + p.birth.year % 13)}{p.birth:%y}{ri(rng, 0, 9_999_999):07d}"
    place = birth.residence.county.address_prefix
    sections = [
        (
            "新生儿",
            entries,
            f"姓名：{p.name.text}；性别：{'男' if p.sex == 'male' else '女'}；"
            f"出生时间：{p.birth.isoformat()}；出生孕周：{int(weeks)}周；出生地点：{place}；接生机构：{inst.name}",
        ),
        ("母亲", [], f"姓名：{mother.name.text}；身份证件号码：{mother.id_number}"),
    ]
    if father is not None and father.household is mother.household:
        sections.append(("父亲", [], f"姓名：{father.name.text}；身份证件号码：{father.id_number}"))
    ev.document(
        ctx,
        inst,
        enc.patient,
        BIRTH_CERT,
        b.dt(out, 10 * 60),
        sections,
        encounter_ref=enc.ref,
        identifier=("birth-certificate", cert_no),
    )
    visit = out + timedelta(days=ri(rng, 2, 7))
    if ctx.present(visit) and rng.random() < table("clinical")["child_checks"]["attendance"]:
        _child_check(ctx, visit, "newborn-visit", "HH")


def child_checks(ctx: ev.Ctx) -> None:
    """The 0-6 years health checks falling inside the person's stay (the newborn visit excepted)."""
    p = ctx.p
    cfg = table("clinical")["child_checks"]
    if p.birth < ctx.plan.start - timedelta(days=7 * 366):
        return
    rng = ctx.rng
    for months in cfg["months"]:
        if months < 1:
            continue
        day = ev.add_months(p.birth, months) + timedelta(days=ri(rng, -5, 20))
        if not ctx.present(day) or rng.random() >= cfg["attendance"]:
            continue
        _child_check(ctx, day, "child-check", "AMB")


def _child_check(ctx: ev.Ctx, day: date, etype: str, cls: str) -> None:
    acc = ctx.access(day)
    rng = ctx.rng
    inst = acc.mch if (ctx.p.household.residence_on(day).county.urban and rng.random() < 0.3) else acc.primary
    enc = ev.encounter(ctx, inst, day, ctx.minute(), etype, "09", cls)
    ev.condition(ctx, enc, "Z00.1")
    h, w, hc = ev.child_size(ctx, day)
    ev.observation(ctx, enc, "height", h)
    ev.observation(ctx, enc, "weight", w)
    if ctx.p.age_on(day) < 3:
        ev.observation(ctx, enc, "head", hc)
    if ctx.p.age_on(day) < 3 and etype == "child-check":
        ev.prescribe(ctx, enc, "vitamin_d", 90)
    ev.finish(ctx, enc)
