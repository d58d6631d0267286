"""Notifiable infectious diseases: sporadic cases with seasonality, and injected outbreaks.

Sporadic cases: each resident's yearly risk is the sum over diseases of the incidence per
100,000 (infectious.json), shaped by age (weights normalised to the census pyramid, so the
population rate equals the table), sex and area; the day of a case follows the disease's monthly
profile.  Outbreaks are decided in the plan, per county and year: a season-consistent start week,
2-6 weeks, an expected number of extra cases in the disease's age band (per 10,000 residents);
residents of that county and age band get the extra risk in those weeks, peaking mid-outbreak.
Both are written in ``truth/outbreaks.csv`` with the cases actually generated.

A case is an outpatient visit at the disease's level (primary care, county or prefecture
hospital), a confirmed Condition, treatment, and the infectious disease report card (传染病报告卡,
a Composition) filed by the diagnosing institution within the legal time limit (2 h for 甲类,
24 h otherwise; a few late).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from itertools import accumulate
from random import Random
from typing import TYPE_CHECKING, Any

from phip.synth import build as b
from phip.synth import events as ev
from phip.synth import insurance
from phip.synth.population import add_years, poisson
from phip.synth.rand import cumulative, pick, ri
from phip.synth.tables import table

if TYPE_CHECKING:
    from phip.synth.geography import Geography

REPORT_CARD = ("EHR-SD-10", "传染病报告卡")
BANDS = ((0, 4), (5, 14), (15, 44), (45, 64), (65, 200))
MIN_OUTBREAK = 8.0
"""Fewest expected extra cases of an injected outbreak: smaller clusters would not be one."""


@dataclass(frozen=True, slots=True)
class Outbreak:
    oid: str
    county: str
    disease: str
    start: date  # a Monday
    end: date  # a Sunday
    age_from: int
    age_to: int
    expected: float


def band(a: int) -> int:
    for i, (lo, hi) in enumerate(BANDS):
        if lo <= a <= hi:
            return i
    return len(BANDS) - 1


@cache
def _pyramid_band_shares() -> tuple[float, ...]:
    groups = table("demography")["pyramid"]["groups"]
    total = sum(g["share"] for g in groups)
    out = [0.0] * len(BANDS)
    for g in groups:
        n = g["to"] - g["from"] + 1
        for a in range(g["from"], g["to"] + 1):
            out[band(a)] += g["share"] / n / total
    return tuple(out)


def _age_share(lo: int, hi: int) -> float:
    groups = table("demography")["pyramid"]["groups"]
    total = sum(g["share"] for g in groups)
    s = 0.0
    for g in groups:
        n = g["to"] - g["from"] + 1
        for a in range(g["from"], g["to"] + 1):
            if lo <= a <= hi:
                s += g["share"] / n / total
    return s


@cache
def _rates() -> tuple[tuple[str, ...], tuple[tuple[float, ...], ...]]:
    """Disease keys and, per age band, the yearly rate of each (before sex and area factors)."""
    diseases = table("infectious")["diseases"]
    shares = _pyramid_band_shares()
    keys = tuple(diseases)
    per_band: list[list[float]] = [[0.0] * len(keys) for _ in BANDS]
    for j, k in enumerate(keys):
        d = diseases[k]
        mean = sum(w * s for w, s in zip(d["ages"], shares, strict=True))
        for i in range(len(BANDS)):
            per_band[i][j] = d["per100k"] / 1e5 * d["ages"][i] / mean
    return keys, tuple(tuple(r) for r in per_band)


def _factor(d: dict[str, Any], sex: str, county: str) -> float:
    f = 1.0
    m = d.get("male")
    if m:
        f *= 2 * m / (m + 1) if sex == "male" else 2 / (m + 1)
    for prefix, mult in d.get("area", {}).items():
        if county.startswith(prefix):
            f *= mult
            break
    return f


@cache
def _month_cum(key: str) -> tuple[float, ...]:
    return tuple(accumulate(table("infectious")["diseases"][key]["months"]))


def _seasonal_day(rng: Random, key: str, lo: date, hi: date) -> date:
    """A day in [lo, hi] drawn with the disease's monthly profile (rejection sampling)."""
    months = table("infectious")["diseases"][key]["months"]
    top = max(months)
    span = (hi - lo).days
    for _ in range(50):
        d = lo + timedelta(days=ri(rng, 0, span))
        if rng.random() * top <= months[d.month - 1]:
            return d
    return lo + timedelta(days=ri(rng, 0, span))


def plan_outbreaks(geo: Geography, rng: Random, start: date, end: date) -> list[Outbreak]:
    """Outbreaks to inject, per county and year (truth/outbreaks.csv)."""
    cfg = table("infectious")
    prone = [(k, d) for k, d in cfg["diseases"].items() if d.get("outbreak")]
    per_year = cfg["outbreaks"]["per_county_year"]
    wlo, whi = cfg["outbreaks"]["weeks"]
    out: list[Outbreak] = []
    n = 0
    for county in geo.counties:
        y = 0
        while add_years(start, y) <= end:
            ys = add_years(start, y)
            ye = min(add_years(start, y + 1) - timedelta(days=1), end)
            y += 1
            for _ in range(poisson(rng, per_year * ((ye - ys).days + 1) / 365.25)):
                key, d = rng.choices(prone, [dd["per100k"] ** 0.5 for _, dd in prone])[0]
                size, a_lo, a_hi = d["outbreak"]
                peak = _seasonal_day(rng, key, ys, ye)
                weeks = ri(rng, wlo, whi)
                first = peak - timedelta(days=peak.weekday() + 7 * (weeks // 2))
                first = max(first, start - timedelta(days=start.weekday()))
                last = first + timedelta(days=7 * weeks - 1)
                if last > end:
                    continue
                n += 1
                expected = max(MIN_OUTBREAK, size * county.population / 10_000 * rng.uniform(0.7, 1.4))
                out.append(Outbreak(f"OB{n:04d}", county.code, key, first, last, a_lo, a_hi, round(expected, 1)))
    return out


def outbreak_rate(ob: Outbreak, county_population: int) -> float:
    """Extra cases per resident of the age band over the whole outbreak."""
    return ob.expected / max(1.0, county_population * _age_share(ob.age_from, ob.age_to))


@cache
def _weights(sex: str, county: str, age_band: int) -> tuple[tuple[float, ...], float]:
    """Cumulative yearly rates of the diseases for one sex, county and age band, and their sum."""
    keys, per_band = _rates()
    diseases = table("infectious")["diseases"]
    w = tuple(r * _factor(diseases[k], sex, county) for k, r in zip(keys, per_band[age_band], strict=True))
    return cumulative(w), sum(w)


def simulate(ctx: ev.Ctx) -> None:
    p = ctx.p
    rng = ctx.rng
    keys = _rates()[0]
    for span in ctx.spans:
        county = span.residence.county.code
        cur = span.start
        while cur <= span.end:
            nxt = min(span.end, add_years(cur, 1) - timedelta(days=1))
            weights, rate = _weights(p.sex, county, band(p.age_on(cur)))
            total = rate * ((nxt - cur).days + 1) / 365.25
            for _ in range(poisson(rng, total)):
                k = pick(rng, keys, weights)
                _case(ctx, k, _seasonal_day(rng, k, cur, nxt), None)
            cur = nxt + timedelta(days=1)
        pop = span.residence.county.population
        for ob in ctx.plan.outbreaks:
            if ob.county != county or ob.end < span.start or ob.start > span.end:
                continue
            lo, hi = max(ob.start, span.start), min(ob.end, span.end)
            mid = ob.start + (ob.end - ob.start) / 2
            if not ob.age_from <= p.age_on(mid) <= ob.age_to:
                continue
            share = ((hi - lo).days + 1) / ((ob.end - ob.start).days + 1)
            for _ in range(poisson(rng, outbreak_rate(ob, pop) * share)):
                offset = rng.triangular(0, (ob.end - ob.start).days, (mid - ob.start).days)
                day = ob.start + timedelta(days=round(offset))
                if lo <= day <= hi:
                    _case(ctx, ob.disease, day, ob.oid)


def _case(ctx: ev.Ctx, key: str, day: date, outbreak: str | None) -> None:
    if not ctx.present(day):
        return
    rng = ctx.rng
    d = table("infectious")["diseases"][key]
    acc = ctx.access(day)
    level = d["level"]
    if level == "primary":
        inst = acc.primary if rng.random() < 0.6 else acc.general
    elif level == "county":
        inst = acc.general if rng.random() < 0.85 else acc.pref_general
    else:
        inst = acc.pref_general
    minute = ctx.minute()
    dept = "16" if "16" in inst.depts and key in ("tuberculosis", "hepatitis_b", "hepatitis_c", "hiv") else "03"
    enc = ev.encounter(ctx, inst, day, minute, "infectious", dept)
    cond = ev.condition(ctx, enc, d["icd10"])
    if key in ("influenza", "hfmd", "measles", "scarlet", "mumps"):
        ev.observation(ctx, enc, "temp", round(rng.uniform(37.8, 39.8), 1))
    if inst.kind != "village" and rng.random() < 0.6:
        ev.panel(ctx, enc, "cbc", ev.lab_values(ctx, day, infection=True))
    for drug in d["drugs"]:
        ev.prescribe(ctx, enc, drug)
    ev.finish(ctx, enc)
    limit = table("infectious")["report_hours"][d["class"]] * 60
    delay = ri(rng, 10, limit) if rng.random() < 0.95 else ri(rng, limit + 1, limit * 4)
    report_day = day + timedelta(days=(minute + delay) // 1440)
    report_minute = (minute + delay) % 1440
    ctx.em.begin(report_day, report_minute, rng)
    onset = day - timedelta(days=ri(rng, 0, 3))
    text = (
        f"疾病名称：{d['name']}（{d['class']}类）；发病日期：{onset.isoformat()}；"
        f"诊断日期：{day.isoformat()}；病例分类：确诊病例"
    )
    ev.document(
        ctx,
        inst,
        enc.patient,
        REPORT_CARD,
        b.dt(report_day, report_minute),
        [("诊断", [cond], text)],
        encounter_ref=enc.ref,
        author=enc.doctor,
        identifier=("report-card", ctx.em.rid()[1:].replace("-", "")),
    )
    insurance.claim(ctx, enc, "outpatient", d["icd10"])
    county = ctx.p.household.residence_on(day).county.code
    ctx.em.truth.row("infections", ctx.p.pid, key, d["icd10"], day.isoformat(), county, inst.id, outbreak or "")
    if outbreak:
        ctx.em.outbreak_cases[outbreak] += 1
