"""Residents, households and their life events over the simulated years.

A township's residents are drawn at the start date from the census age/sex pyramid
(demography.json), then put into households by matching: women marry men a few years older at the
census-like married shares; children go to a couple whose wife was 19-42 when they were born (or,
in rural townships, sometimes to grandparents: left-behind children); some elderly people live with
a child's family; everyone else lives alone.  Surnames follow the family (wives keep theirs,
children take the father's, Tibetan names have none), ethnicity follows the county's mix.

Each year every household may see deaths (age/sex mortality), births (age-specific fertility of
women living with a partner, by calendar year and parity), a move (within the county, to another
simulated county, or out of the region) and phone changes; households also arrive from outside.
Newborns get their identity number when the household registers them (10-60 days after birth).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache
from itertools import accumulate
from random import Random
from typing import TYPE_CHECKING

from phip.synth import geography, names
from phip.synth.geography import County, Town, Village
from phip.synth.tables import table

if TYPE_CHECKING:
    from phip.synth.plan import Plan


@dataclass(slots=True)
class Residence:
    """Where a household lives from ``start`` on."""

    start: date
    county: County
    town: Town
    village: Village
    line: str
    text: str = ""  # the full address, as written

    def __post_init__(self) -> None:
        self.text = f"{self.county.address_prefix}{self.town.name}{self.village.name}{self.line}"


@dataclass(slots=True)
class Birth:
    """A delivery in the region: decided in the life simulation, used by mother and baby."""

    day: date
    mother: Person
    babies: list[Person]
    residence: Residence
    hospital: str  # org id
    cesarean: bool
    gestation_days: int


@dataclass(slots=True, eq=False)
class Person:
    pid: str
    sex: str  # male | female
    birth: date
    ethnicity: str
    household: Household
    role: str  # head | spouse | child | grandchild | parent | other
    name: names.Name = names.NO_NAME
    birth_county: str = ""
    id_number: str = ""
    id_date: date | None = None  # when the number became known (newborns); None: before the run
    mother: Person | None = None
    father: Person | None = None
    spouse: Person | None = None
    death: date | None = None
    phones: list[tuple[date, str]] = field(default_factory=list)
    births: list[Birth] = field(default_factory=list)  # deliveries of this woman
    born: Birth | None = None  # the delivery this person came from
    records: dict[str, str] = field(default_factory=dict)  # org id -> Patient id
    first: date = date.min
    last: date = date.max

    @property
    def children(self) -> int:
        return sum(len(b.babies) for b in self.births)

    def phone_on(self, d: date) -> str | None:
        cur = None
        for since, number in self.phones:
            if since <= d:
                cur = number
            else:
                break
        return cur

    def age_on(self, d: date) -> int:
        return age(self.birth, d)


@dataclass(slots=True, eq=False)
class Household:
    hid: str
    members: list[Person] = field(default_factory=list)
    residences: list[Residence] = field(default_factory=list)
    arrived: date | None = None
    left: date | None = None

    def residence_on(self, d: date) -> Residence:
        cur = self.residences[0]
        for r in self.residences:
            if r.start <= d:
                cur = r
            else:
                break
        return cur


@dataclass(slots=True)
class Counters:
    """Per-chunk numbering of people and households, identity numbers and phones."""

    chunk: int
    ids: names.IdAllocator
    phones: names.PhoneBook
    person: int = 0
    household: int = 0

    def pid(self) -> str:
        self.person += 1
        return f"P{self.chunk:02d}{self.person:06d}"

    def hid(self) -> str:
        self.household += 1
        return f"H{self.chunk:02d}{self.household:05d}"


def age(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def add_years(d: date, n: int) -> date:
    try:
        return d.replace(year=d.year + n)
    except ValueError:  # 29 February
        return d.replace(year=d.year + n, day=28)


def _band(rows: list[dict[str, float]], a: int, key: str, default: float = 0.0) -> float:
    for r in rows:
        if r["from"] <= a <= r["to"]:
            return float(r[key])
    return default


@cache
def _pyramid() -> tuple[list[dict[str, float]], list[float]]:
    groups = table("demography")["pyramid"]["groups"]
    return groups, list(accumulate(g["share"] for g in groups))


def sample_age_sex(rng: Random) -> tuple[int, str]:
    groups, cum = _pyramid()
    g = groups[bisect.bisect_left(cum, rng.random() * cum[-1])]
    a = rng.randint(int(g["from"]), int(g["to"]))
    male = g["sex_ratio"] / (100 + g["sex_ratio"])
    return a, "male" if rng.random() < male else "female"


def death_probability(a: int, sex: str) -> float:
    return _band(table("demography")["mortality"]["groups"], a, sex, 0.3)


def married_share(a: int) -> float:
    return _band(table("demography")["households"]["married_by_age"], a, "p")


def _adult_child_home(a: int) -> float:
    pts = sorted((int(k), v) for k, v in table("demography")["households"]["adult_child_at_home"].items())
    out = 1.0
    for k, v in pts:
        if a >= k:
            out = v
    return out if a >= pts[0][0] else 1.0


def _ethnic(rng: Random, county: County) -> str:
    u = rng.random()
    for code, cum in county.ethnic:
        if u <= cum:
            return code
    return county.ethnic[-1][0]


def _line(rng: Random, urban: bool) -> str:
    if urban:
        road = rng.choice(table("names")["places"]["roads"])
        return (
            f"{road}路{rng.randint(1, 399)}号{rng.randint(1, 30)}栋{rng.randint(1, 4)}单元"
            f"{rng.randint(1, 32)}{rng.randint(1, 8):02d}室"
        )
    return f"{rng.randint(1, 12)}组{rng.randint(1, 99)}号"


def _new_residence(rng: Random, start: date, county: County, town: Town | None = None) -> Residence:
    t = town or rng.choice(county.towns)
    return Residence(start, county, t, rng.choice(t.villages), _line(rng, county.urban))


# --- the initial population of a township ----------------------------------------------------


def build_initial(plan: Plan, town: Town, rng: Random, ctr: Counters) -> list[Household]:
    """The households of ``town`` at the start date."""
    county = plan.geo.county(town.county)
    hcfg = table("demography")["households"]
    start = plan.start
    people: list[Person] = []
    tmp = Household("")
    for _ in range(town.population):
        a, sex = sample_age_sex(rng)
        born = add_years(start, -a) - timedelta(days=rng.randint(1, 364))
        people.append(Person(ctr.pid(), sex, born, "", tmp, "other"))
    ages = {p.pid: age(p.birth, start) for p in people}

    # couples
    men: dict[int, list[Person]] = defaultdict(list)
    for p in people:
        if p.sex == "male" and ages[p.pid] >= 20:
            men[ages[p.pid]].append(p)
    women = [p for p in people if p.sex == "female" and ages[p.pid] >= 20]
    rng.shuffle(women)
    lo, hi = hcfg["husband_age_gap"]
    households: list[Household] = []
    for w in women:
        wa = ages[w.pid]
        if rng.random() >= married_share(wa):
            continue
        target = wa + rng.randint(lo, hi)
        for off in (0, 1, -1, 2, -2, 3, -3, 4, 5, 6):
            pool = men.get(target + off)
            if pool and wa - 3 <= target + off <= wa + 12:
                h = pool.pop()
                h.spouse, w.spouse = w, h
                hh = Household(ctr.hid(), [h, w])
                h.household = w.household = hh
                h.role, w.role = "head", "spouse"
                households.append(hh)
                break

    # children (and young adults still at home) to a couple of the right age
    by_mother_age: dict[int, list[Household]] = defaultdict(list)
    for hh in households:
        by_mother_age[ages[hh.members[1].pid]].append(hh)
    kids = [
        p
        for p in people
        if p.spouse is None
        and (ages[p.pid] < 18 or (ages[p.pid] < 31 and rng.random() < _adult_child_home(ages[p.pid])))
    ]
    rng.shuffle(kids)
    mlo, mhi = hcfg["mother_age_at_birth"]
    n_kids: dict[str, int] = defaultdict(int)
    accept = (1.0, 0.5, 0.12, 0.03)
    singles: list[Person] = []
    for k in kids:
        ka = ages[k.pid]
        placed = False
        if not county.urban and ka < 15 and rng.random() < hcfg["left_behind_children_rural"]:
            for off in range(0, 16):
                cands = by_mother_age.get(ka + 50 + (off if off % 2 else -off), [])
                if cands:
                    hh = rng.choice(cands)
                    k.role, k.household = "grandchild", hh
                    hh.members.append(k)
                    placed = True
                    break
        if placed:
            continue
        target = ka + round(rng.triangular(mlo, mhi, 27))
        for off in (0, 1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6, 8, -8):
            ma = target + off
            if not (ka + mlo <= ma <= ka + mhi):
                continue
            for hh in by_mother_age.get(ma, []):
                if rng.random() < accept[min(n_kids[hh.hid], 3)]:
                    k.role, k.household = "child", hh
                    k.mother, k.father = hh.members[1], hh.members[0]
                    hh.members.append(k)
                    n_kids[hh.hid] += 1
                    placed = True
                    break
            if placed:
                break
        if not placed:
            singles.append(k)

    # everyone else: elderly may join a child's family, the rest live alone (minors with an adult)
    alone = [p for p in people if p.household is tmp and p not in singles]
    elder_units: list[list[Person]] = []
    for hh in households:
        h, w = hh.members[0], hh.members[1]
        if ages[h.pid] >= 65 and ages[w.pid] >= 60 and len(hh.members) == 2:
            elder_units.append([h, w])
    for p in alone:
        if ages[p.pid] >= 65:
            elder_units.append([p])
    by_head_age: dict[int, list[Household]] = defaultdict(list)
    for hh in households:
        if ages[hh.members[0].pid] < 60:
            by_head_age[ages[hh.members[0].pid]].append(hh)
    joined: set[str] = set()
    taken: set[str] = set()
    for unit in elder_units:
        if rng.random() >= hcfg["elder_with_children"]:
            continue
        ea = ages[unit[0].pid]
        for off in range(20, 41):
            cands = [hh for hh in by_head_age.get(ea - off, []) if hh.hid not in taken]
            if cands:
                hh = rng.choice(cands)
                taken.add(hh.hid)
                old = unit[0].household
                for p in unit:
                    p.role, p.household = "parent", hh
                    hh.members.append(p)
                    joined.add(p.pid)
                if old is not tmp:
                    old.members = []
                break
    households = [hh for hh in households if hh.members]
    minors = [p for p in singles if ages[p.pid] < 18]
    for p in [*alone, *singles]:
        if p.pid in joined or ages[p.pid] < 18:
            continue
        hh = Household(ctr.hid(), [p])
        p.household, p.role = hh, "head"
        households.append(hh)
    adults_alone = [hh for hh in households if len(hh.members) == 1 and ages[hh.members[0].pid] >= 18]
    for p in minors:  # a child nobody could be matched with lives with a lone adult relative
        hh = rng.choice(adults_alone) if adults_alone else households[0]
        p.household, p.role = hh, "other"
        hh.members.append(p)

    for hh in households:
        _identify(plan, county, hh, rng, ctr)
        hh.residences.append(_new_residence(rng, start, county, town))
    return households


def _identify(plan: Plan, county: County, hh: Household, rng: Random, ctr: Counters) -> None:
    """Ethnicity, names, birthplaces, identity numbers and phones of a new household's members."""
    mixed = table("ethnicity")["mixed_marriage"]
    base = _ethnic(rng, county)
    head = hh.members[0]
    for p in hh.members:
        if p.role in ("head", "other", "grandchild") or p.role == "parent":
            p.ethnicity = base
        elif p.role == "spouse":
            p.ethnicity = _ethnic(rng, county) if rng.random() < mixed else base
        elif p.role == "child":
            f = p.father.ethnicity if p.father else base
            m = p.mother.ethnicity if p.mother else base
            p.ethnicity = m if (f == "01" and m != "01" and rng.random() < 0.7) else f
    parents_side_is_husband = rng.random() < 0.75
    for p in hh.members:
        family = None
        if p.role == "child" and p.father is not None and p.father.name.family:
            src = p.father if rng.random() < 0.95 or not (p.mother and p.mother.name.family) else p.mother
            family = src.name.family
        elif p.role in ("grandchild", "other") and head.name.family:
            family = head.name.family
        elif p.role == "parent" and p.sex == "male":
            side = head if parents_side_is_husband or len(hh.members) < 2 else hh.members[1]
            family = side.name.family
        p.name = names.person_name(rng, p.sex, p.birth.year, p.ethnicity, family)
        _register(plan, county.code, p, rng, ctr, child=p.age_on(plan.start) < 18)


def _register(plan: Plan, home: str, p: Person, rng: Random, ctr: Counters, child: bool) -> None:
    """Birthplace, identity number and phone of a person alive at the start (or arriving)."""
    mig = table("demography")["migration"]
    p_else = mig["born_elsewhere_in_province"] + mig["born_in_other_province"]
    if child:
        p_else /= 3
    p.birth_county = geography.birth_county_elsewhere(rng, plan.geo, home) if rng.random() < p_else else home
    p.id_number, p.birth = ctr.ids.allocate(p.birth_county, p.birth, p.sex)
    _give_phone(plan, p, rng, ctr, plan.start)


def _give_phone(plan: Plan, p: Person, rng: Random, ctr: Counters, on: date) -> None:
    cfg = table("demography")["phones"]
    a = p.age_on(on)
    if a < cfg["own_phone_from_age"]:
        return
    for k, share in sorted((int(k), v) for k, v in cfg["elderly_without_phone"].items())[::-1]:
        if a >= k:
            if rng.random() < share:
                return
            break
    p.phones.append((on, ctr.phones.new()))


def build_in_migrants(plan: Plan, town: Town, rng: Random, ctr: Counters, n_households: int) -> list[Household]:
    """Households arriving from outside the region during the run, settling in ``town``."""
    county = plan.geo.county(town.county)
    rate = table("demography")["migration"]["move_in_from_outside"]
    days = (plan.end - plan.start).days
    expected = rate * n_households * days / 365.25
    n = _poisson(rng, expected)
    out: list[Household] = []
    for _ in range(n):
        arrive = plan.start + timedelta(days=rng.randint(1, days))
        hh = Household(ctr.hid(), arrived=arrive)
        origin = (
            geography.other_province_county(rng, plan.geo)
            if rng.random() < 0.7
            else geography.birth_county_elsewhere(rng, plan.geo, county.code)
        )
        if rng.random() < 0.6:
            ha = rng.randint(24, 42)
            wa = max(20, ha - rng.randint(0, 5))
            h_birth = add_years(arrive, -ha) - timedelta(days=rng.randint(1, 364))
            w_birth = add_years(arrive, -wa) - timedelta(days=rng.randint(1, 364))
            h = Person(ctr.pid(), "male", h_birth, "", hh, "head")
            w = Person(ctr.pid(), "female", w_birth, "", hh, "spouse")
            h.spouse, w.spouse = w, h
            hh.members += [h, w]
            for _k in range(rng.choice((0, 1, 1, 2))):
                ka = rng.randint(0, max(0, min(12, wa - 20)))
                c = Person(
                    ctr.pid(),
                    rng.choice(("male", "female")),
                    add_years(arrive, -ka) - timedelta(days=rng.randint(1, 364)),
                    "",
                    hh,
                    "child",
                    mother=w,
                    father=h,
                )
                hh.members.append(c)
        else:
            a = rng.randint(18, 45)
            hh.members.append(
                Person(
                    ctr.pid(),
                    rng.choice(("male", "female")),
                    add_years(arrive, -a) - timedelta(days=rng.randint(1, 364)),
                    "",
                    hh,
                    "head",
                )
            )
        base = _ethnic(rng, county) if origin[:2] == county.code[:2] else "01"
        for p in hh.members:
            p.ethnicity = base
        fam: str | None = None
        for p in hh.members:
            family = fam if p.role == "child" else None
            p.name = names.person_name(rng, p.sex, p.birth.year, p.ethnicity, family)
            if p.role == "head":
                fam = p.name.family
            p.birth_county = origin
            p.id_number, p.birth = ctr.ids.allocate(origin, p.birth, p.sex)
            _give_phone(plan, p, rng, ctr, arrive)
        hh.residences.append(_new_residence(rng, arrive, county, town))
        out.append(hh)
    return out


def _poisson(rng: Random, lam: float) -> int:
    """Knuth's Poisson sampler for the small means used here; a normal approximation above 30."""
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, lam**0.5)))
    import math

    limit = math.exp(-lam)
    k, prod = 0, rng.random()
    while prod > limit:
        k += 1
        prod *= rng.random()
    return k


poisson = _poisson


# --- life events -----------------------------------------------------------------------------


def _asfr(a: int) -> float:
    return _band(table("demography")["fertility"]["asfr"], a, "rate")


def simulate_life(plan: Plan, hh: Household, rng: Random, ctr: Counters) -> None:
    """Deaths, births, moves and phone changes of one household over the run.

    Sets every member's ``first``/``last`` day in the region afterwards.
    """
    demo = table("demography")
    fert = demo["fertility"]
    mig = demo["migration"]
    phones = demo["phones"]
    start, end = plan.start, plan.end
    y = 0
    while True:
        ys = add_years(start, y)
        if ys > end:
            break
        ye = min(add_years(start, y + 1) - timedelta(days=1), end)
        y += 1
        if hh.arrived and hh.arrived > ye:
            continue
        span_start = max(ys, hh.arrived or ys)
        if hh.left and hh.left <= span_start:
            break
        ndays = (ye - span_start).days + 1
        scale = ndays / 365.25
        # the household's move first, so that births and deaths know where (and whether) it lives
        u = rng.random()
        r_region = mig["move_within_region"] if len(plan.geo.counties) > 1 else 0.0
        r_county = mig["move_within_county"]
        r_out = mig["move_out_of_region"]
        if u < (r_region + r_county + r_out) * scale:
            day = span_start + timedelta(days=rng.randrange(ndays))
            cur = hh.residences[-1]
            if day > cur.start:
                if u < r_out * scale:
                    hh.left = day
                elif u < (r_out + r_region) * scale:
                    other = [c for c in plan.geo.counties if c.code != cur.county.code]
                    hh.residences.append(_new_residence(rng, day, rng.choice(other)))
                else:
                    hh.residences.append(_new_residence(rng, day, cur.county))
        stop = min(ndays, (hh.left - span_start).days) if hh.left else ndays  # days in the region
        present = [p for p in hh.members if p.birth <= span_start and p.death is None]
        for p in present:
            if rng.random() < death_probability(p.age_on(span_start), p.sex) * scale:
                day = span_start + timedelta(days=rng.randrange(ndays))
                if (day - span_start).days < stop:
                    p.death = day
        yf = fert["year_factor"].get(str(ys.year), 1.0)
        parity = fert["parity_factor"]
        for w in present:
            h = w.spouse
            if w.sex != "female" or h is None or h.household is not hh:
                continue
            wa = w.age_on(span_start)
            if not 18 <= wa <= 49:
                continue
            married = max(0.3, married_share(wa) if wa >= 20 else 0.3)
            rate = _asfr(wa) / married * yf * parity[min(w.children, len(parity) - 1)]
            if rng.random() >= rate * scale:
                continue
            day = span_start + timedelta(days=rng.randrange(ndays))
            if w.births and (day - w.births[-1].day).days < 300:
                continue
            if (w.death and w.death <= day) or (day - span_start).days >= stop:
                continue
            _deliver(plan, hh, w, day, rng, ctr)
        for p in present:
            if p.phones and rng.random() < phones["yearly_change"] * scale:
                day = span_start + timedelta(days=rng.randrange(ndays))
                if day > p.phones[-1][0] and (p.death is None or day < p.death):
                    p.phones.append((day, ctr.phones.new()))
            elif not p.phones and p.age_on(ye) == phones["own_phone_from_age"] and p.age_on(span_start) < p.age_on(ye):
                _give_phone(plan, p, rng, ctr, ye)
    _close(plan, hh)


def _deliver(plan: Plan, hh: Household, w: Person, day: date, rng: Random, ctr: Counters) -> None:
    fert = table("demography")["fertility"]
    res = hh.residence_on(day)
    acc = plan.registry.access[res.village.code]
    levels = table("clinical")["maternal"]["delivery_levels"]
    where = rng.choices(list(levels), list(levels.values()))[0]
    hospital = {
        "primary": acc.primary,
        "county_general": acc.general,
        "county_mch": acc.mch,
        "prefecture": acc.pref_mch if rng.random() < 0.6 else acc.pref_general,
    }[where]
    if where == "primary" and res.county.urban:
        hospital = acc.mch
    gest = int(rng.gauss(276, 9)) if rng.random() > 0.07 else rng.randint(224, 258)
    birth = Birth(day, w, [], res, hospital.id, rng.random() < fert["cesarean_share"], min(gest, 294))
    n = 2 if rng.random() < fert["twins"] else 1
    h = w.spouse
    srb = fert["sex_ratio_at_birth"]
    lo, hi = fert["hukou_registration_days"]
    for _ in range(n):
        sex = "male" if rng.random() < srb / (100 + srb) else "female"
        eth = h.ethnicity if h else w.ethnicity
        if h and eth == "01" and w.ethnicity != "01" and rng.random() < 0.7:
            eth = w.ethnicity
        baby = Person(ctr.pid(), sex, day, eth, hh, "child", mother=w, father=h, born=birth)
        family = None
        if h is not None and h.name.family:
            family = h.name.family if rng.random() < 0.95 or not w.name.family else w.name.family
        baby.name = names.person_name(rng, sex, day.year, eth, family)
        baby.birth_county = res.county.code
        baby.id_number, baby.birth = ctr.ids.allocate(res.county.code, day, sex)
        baby.id_date = baby.birth + timedelta(days=rng.randint(lo, hi))
        birth.babies.append(baby)
        hh.members.append(baby)
    w.births.append(birth)


def _close(plan: Plan, hh: Household) -> None:
    last_day = plan.end if hh.left is None else hh.left - timedelta(days=1)
    for p in hh.members:
        p.first = max(plan.start, p.birth, hh.arrived or plan.start)
        p.last = min(last_day, p.death) if p.death else last_day
        if p.death and hh.left and p.death >= hh.left:
            p.death = None  # died after leaving: unknown to the region


@dataclass(frozen=True, slots=True)
class Span:
    """A stretch of days a person lived at one residence inside the region and the run."""

    start: date
    end: date  # inclusive
    residence: Residence


def spans(p: Person) -> list[Span]:
    """The person's residences clipped to their days in the region (empty if none)."""
    if p.last < p.first:
        return []
    out: list[Span] = []
    res = p.household.residences
    for i, r in enumerate(res):
        s = max(r.start, p.first)
        e = p.last if i + 1 == len(res) else min(p.last, res[i + 1].start - timedelta(days=1))
        if s <= e:
            out.append(Span(s, e, r))
    return out
