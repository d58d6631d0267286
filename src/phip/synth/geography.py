"""The simulated region: a real province with a subset of its real prefectures and counties.

Counties come from GB/T 2260 (:mod:`phip.cn.regions`).  How many are simulated grows with the
number of residents (about ``sqrt(N)/40``, at least two): always the capital prefecture's first
urban district, then counties taken round-robin from a few prefectures chosen by the seed, each
prefecture starting with its seat (the first 区, where its prefecture-level institutions are).
Below the county the divisions are synthetic: townships (镇/乡) or street offices (街道) with
9-digit codes and villages (村) or communities (社区) with 12-digit codes, following the layout
of the statistical division codes (01x-09x streets, 1xx towns, 2xx townships; 2xx villages,
0xx communities) [M].  A township is also the unit of work: one chunk of the simulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from random import Random

from phip.cn import regions
from phip.synth.tables import table

MAX_CHUNKS = 90
"""Upper bound on townships (chunks); the ID sequence space is split between them."""
MAX_COUNTIES = 60
"""Upper bound on simulated counties, so townships (about 60 plus rounding) stay under MAX_CHUNKS."""


@dataclass(slots=True)
class Village:
    code: str
    name: str
    clinic: str | None = None  # org id of the village clinic (rural villages only)


@dataclass(slots=True)
class Town:
    code: str
    name: str
    county: str
    chunk: int
    population: int
    villages: list[Village] = field(default_factory=list)
    centre: str = ""  # org id of the township health centre / community health centre


@dataclass(slots=True)
class County:
    code: str
    name: str
    prefecture: str  # prefecture code (the province code for municipalities)
    prefecture_name: str
    province: str
    province_name: str
    urban: bool
    population: int
    ethnic: tuple[tuple[str, float], ...]  # (GB 3304 code, cumulative share 0..1)
    towns: list[Town] = field(default_factory=list)

    address_prefix: str = ""  # province + prefecture + county as written in an address

    def __post_init__(self) -> None:
        self.address_prefix = regions.full_name(self.code)


@dataclass(slots=True)
class Geography:
    province: regions.Region
    counties: list[County]
    seats: dict[str, str]  # prefecture code -> seat county code (prefecture institutions)
    capital: str  # capital prefecture code

    def county(self, code: str) -> County:
        for c in self.counties:
            if c.code == code:
                return c
        raise KeyError(code)

    @property
    def towns(self) -> list[Town]:
        return [t for c in self.counties for t in c.towns]


def _prefectures(province: str) -> list[regions.Region]:
    kids = regions.children(province)
    prefs = [r for r in kids if r.level == "prefecture" and regions.counties_of(r.code)]
    if any(r.level == "county" for r in kids) and not prefs:
        return [regions.get(province)]  # type: ignore[list-item]  # municipality: one "prefecture"
    return prefs


def _counties_of(pref: regions.Region) -> list[regions.Region]:
    if pref.level == "province":
        return [r for r in regions.children(pref.code) if r.level == "county"]
    return list(regions.counties_of(pref.code))


def _seat(counties: list[regions.Region]) -> regions.Region:
    for r in counties:
        if r.name.endswith("区"):
            return r
    return counties[0]


def ethnic_mix(county_code: str) -> tuple[tuple[str, float], ...]:
    """Cumulative ethnicity shares for a county: the most specific prefix in ethnicity.json wins."""
    shares = table("ethnicity")["shares"]
    mix = shares["default"]
    for n in (6, 4, 2):
        if county_code[:n] in shares:
            mix = shares[county_code[:n]]
            break
    total = sum(mix.values())
    acc = 0.0
    out = []
    for code, w in mix.items():
        acc += w / total
        out.append((code, acc))
    return tuple(out)


def _split(total: int, weights: list[float]) -> list[int]:
    """Largest-remainder split of ``total`` in proportion to ``weights`` (deterministic)."""
    s = sum(weights)
    raw = [total * w / s for w in weights]
    out = [int(x) for x in raw]
    rest = total - sum(out)
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - out[i]), i))
    for i in order[:rest]:
        out[i] += 1
    return out


def _place_name(rng: Random, used: set[str], suffix: str) -> str:
    names = table("names")["places"]
    first, second = names["first"], names["second"]
    for _ in range(200):
        n = rng.choice(first) + rng.choice(second) + suffix
        if n not in used:
            used.add(n)
            return n
    n = f"{rng.choice(first)}{len(used)}{suffix}"
    used.add(n)
    return n


def chunk_size(persons: int) -> int:
    """Residents per township: 2,000 for small runs, growing so there are at most ~60 chunks."""
    return max(2000, math.ceil(persons / 60))


def plan(province: str, persons: int, rng: Random) -> Geography:
    """Choose the counties and lay out townships and villages for ``persons`` residents."""
    prov_code = province if len(province) == 6 else province[:2] + "0000"
    prov = regions.get(prov_code)
    if prov is None or prov.level != "province":
        raise ValueError(f"unknown province code {province!r}")
    prefs = _prefectures(prov_code)
    if not prefs:
        raise ValueError(f"province {province} has no counties in GB/T 2260")
    all_counties = sum(len(_counties_of(p)) for p in prefs)
    n_counties = max(2, min(all_counties, MAX_COUNTIES, round(math.sqrt(persons) / 40)))
    capital = prefs[0]
    others = prefs[1:]
    n_pref = max(1, min(len(prefs), math.ceil(n_counties / 3)))
    chosen = [capital, *rng.sample(others, min(len(others), n_pref - 1))]
    queues: list[list[regions.Region]] = []
    seats: dict[str, str] = {}
    for p in chosen:
        cs = _counties_of(p)
        seat = _seat(cs)
        seats[p.code] = seat.code
        rest = [c for c in cs if c.code != seat.code]
        rng.shuffle(rest)
        rural = [c for c in rest if not c.name.endswith("区")]
        if rural:  # the second county of a prefecture is rural, so even small runs have villages
            rest.remove(rural[0])
            rest.insert(0, rural[0])
        queues.append([seat, *rest])
    picked: list[tuple[regions.Region, regions.Region]] = []
    while len(picked) < n_counties and any(queues):
        for p, q in zip(chosen, queues, strict=True):
            if q and len(picked) < n_counties:
                picked.append((p, q.pop(0)))
    picked.sort(key=lambda pc: pc[1].code)
    weights = [(1.3 if c.name.endswith("区") else 1.0) * rng.uniform(0.7, 1.3) for _, c in picked]
    pops = _split(persons, weights)
    size = chunk_size(persons)
    counties: list[County] = []
    chunk = 0
    for (pref, c), pop in zip(picked, pops, strict=True):
        urban = c.name.endswith("区")
        county = County(
            code=c.code,
            name=c.name,
            prefecture=pref.code,
            prefecture_name=pref.name if pref.level == "prefecture" else prov.name,
            province=prov.code,
            province_name=prov.name,
            urban=urban,
            population=pop,
            ethnic=ethnic_mix(c.code),
        )
        n_towns = max(1, round(pop / size))
        town_pops = _split(pop, [rng.uniform(0.8, 1.2) for _ in range(n_towns)])
        used: set[str] = set()
        for i, tpop in enumerate(town_pops):
            if urban:
                tname = rng.choice(table("names")["places"]["roads"]) + "街道"
                if tname in used:
                    tname = _place_name(rng, used, "街道")
                used.add(tname)
                tcode = f"{c.code}{i + 1:03d}"
            else:
                township = rng.random() < 0.2
                tname = _place_name(rng, used, "乡" if township else "镇")
                tcode = f"{c.code}{(200 if township else 100) + i + 1:03d}"
            town = Town(code=tcode, name=tname, county=c.code, chunk=chunk, population=tpop)
            chunk += 1
            n_vill = max(2, min(12, tpop // 400))
            vused: set[str] = set()
            for j in range(n_vill):
                if urban:
                    town.villages.append(Village(f"{tcode}{j + 1:03d}", _place_name(rng, vused, "社区")))
                else:
                    town.villages.append(Village(f"{tcode}{200 + j + 1:03d}", _place_name(rng, vused, "村")))
            county.towns.append(town)
        counties.append(county)
    if chunk > MAX_CHUNKS:
        raise ValueError(f"{chunk} townships exceed the {MAX_CHUNKS} the ID sequence space allows")
    return Geography(province=prov, counties=counties, seats=seats, capital=capital.code)


def birth_county_elsewhere(rng: Random, geo: Geography, home: str) -> str:
    """A county code for a resident born outside their home county (GB/T 2260, current edition).

    Mostly the same province, weighted to the home prefecture; otherwise a neighbouring province
    from demography.json.
    """
    mig = table("demography")["migration"]
    p_in = mig["born_elsewhere_in_province"]
    p_out = mig["born_in_other_province"]
    if rng.random() < p_in / (p_in + p_out):
        home_pref = regions.prefecture_of(home)
        if home_pref is not None and rng.random() < 0.5:
            pool = [r.code for r in regions.counties_of(home_pref.code) if r.code != home]
        else:
            pool = [r.code for r in regions.counties_of(geo.province.code) if r.code != home]
        if pool:
            return rng.choice(pool)
    return other_province_county(rng, geo)


def other_province_county(rng: Random, geo: Geography) -> str:
    """A county in another province, chosen by the weights in demography.json."""
    provs = table("demography")["migration"]["other_provinces"]
    codes = [p for p in provs if p + "0000" != geo.province.code]
    weights = [provs[p] for p in codes]
    prov = rng.choices(codes, weights)[0]
    pool = regions.counties_of(prov + "0000")
    return rng.choice(pool).code
