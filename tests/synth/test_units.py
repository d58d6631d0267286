"""Unit tests of the generator's parts (no full run)."""

from __future__ import annotations

import math
from datetime import date
from random import Random

import pytest
from pypinyin import lazy_pinyin

from phip.cn import gb11643, regions
from phip.synth import chronic, defects, geography, infectious, names
from phip.synth.defects import DefectRates
from phip.synth.plan import make_plan
from phip.synth.population import Person, age
from phip.synth.tables import table


def test_geography_uses_real_counties_and_grows_with_the_population() -> None:
    small = geography.plan("51", 3000, Random(1))
    big = geography.plan("51", 200_000, Random(1))
    assert len(small.counties) == 2 and len(big.counties) > len(small.counties)
    for geo in (small, big):
        codes = [c.code for c in geo.counties]
        assert codes == sorted(set(codes))
        for c in geo.counties:
            r = regions.get(c.code)
            assert r is not None and r.level == "county" and r.name == c.name
            assert c.address_prefix.startswith("四川省")
        assert geo.counties[0].prefecture == "510100"  # the capital is always in
        assert any(not c.urban for c in geo.counties)  # and at least one rural county
        assert sum(c.population for c in geo.counties) == sum(t.population for t in geo.towns)
        chunks = [t.chunk for t in geo.towns]
        assert chunks == list(range(len(chunks)))
    assert sum(c.population for c in big.counties) == 200_000


def test_geography_of_a_municipality_and_unknown_codes() -> None:
    geo = geography.plan("11", 5000, Random(3))
    assert all(c.code.startswith("11") for c in geo.counties)
    with pytest.raises(ValueError):
        geography.plan("99", 100, Random(1))


def test_minority_areas_get_their_ethnic_mix() -> None:
    liangshan = dict(geography.ethnic_mix("513401"))
    assert liangshan["07"] == pytest.approx(0.55, abs=0.01)  # Yi, first in the table
    chengdu = geography.ethnic_mix("510104")
    assert chengdu[0][0] == "01" and chengdu[0][1] > 0.95


def test_id_allocator_never_repeats_across_slots_even_when_crowded() -> None:
    slots = 40
    seen = set()
    for slot in range(slots):
        ids = names.IdAllocator(slot, slots)
        for _ in range(30):  # far more than a slot's share for one key: birth dates move on
            number, born = ids.allocate("510104", date(1990, 5, 17), "female")
            check = gb11643.validate(number, today=date(2025, 1, 1))
            assert check.valid and check.sex == "female" and check.birth_date == born
            assert number not in seen
            seen.add(number)
    assert len(seen) == slots * 30


def test_phone_numbers_are_unique_and_use_the_unallocated_prefix() -> None:
    book = names.PhoneBook(7)
    numbers = [book.new() for _ in range(5000)]
    assert len(set(numbers)) == 5000
    assert all(len(n) == 11 and n.startswith("15407") for n in numbers)


def test_names_follow_era_and_ethnicity() -> None:
    rng = Random(5)
    han = [names.person_name(rng, "female", 2015, "01") for _ in range(200)]
    assert all(n.family and n.text == n.family + n.given and 1 <= len(n.given) <= 2 for n in han)
    tibetan = names.person_name(rng, "male", 1980, "04")
    assert tibetan.family is None and len(tibetan.text) == 4
    yi = names.person_name(rng, "female", 1980, "07")
    assert yi.family in table("names")["yi"]["clans"]
    top = {n.family for n in han}
    assert {"王", "李", "张"} & top


def test_homophone_groups_share_their_reading() -> None:
    for group in table("names")["homophones"]["groups"]:
        readings = {lazy_pinyin(c)[0] for c in group}
        assert len(readings) == 1, group
    out = defects.homophone(Random(1), "丽华")
    assert out is not None and out != "丽华" and lazy_pinyin(out) == lazy_pinyin("丽华")


def test_defect_functions() -> None:
    assert defects.traditional("张丽华") == "張麗華"
    assert defects.traditional("王一") is None
    assert defects.swap_day_month(date(1980, 3, 5)) == date(1980, 5, 3)
    assert defects.swap_day_month(date(1980, 3, 25)) is None
    assert defects.swap_day_month(date(1980, 4, 4)) is None
    rng = Random(2)
    number = gb11643.generate("510104", date(1985, 6, 1), 123)
    for _ in range(300):
        bad = defects.mistype_id(rng, number)
        assert bad != number and len(bad) == 18
        assert not gb11643.validate(bad, today=date(2025, 1, 1)).valid


def test_defect_rates_are_validated() -> None:
    assert DefectRates.none().late_upload == 0.0
    assert DefectRates.from_dict({"late_upload": 0.2}).late_upload == 0.2
    with pytest.raises(ValueError):
        DefectRates.from_dict({"late_upload": 2})
    with pytest.raises(ValueError):
        DefectRates.from_dict({"typo": 0.1})


def test_chronic_onset_sampling_reproduces_the_prevalence_curve() -> None:
    rng = Random(11)
    for key in ("hypertension", "diabetes"):
        for a in (40, 60, 75):
            p = Person("x", "male", date(1950, 1, 1), "01", None, "head")  # type: ignore[arg-type]
            p.last = date(2100, 1, 1)
            n = 6000
            hits = 0
            for _ in range(n):
                c = chronic.plan_conditions(p, rng).get(key)
                hits += c is not None and age(p.birth, c.onset) < a
            expected = chronic.prevalence(key, a, "male")
            assert abs(hits / n - expected) < 4 * math.sqrt(expected * (1 - expected) / n) + 0.01, (key, a)


def test_infectious_rates_average_to_the_tabled_incidence() -> None:
    keys, per_band = infectious._rates()
    shares = infectious._pyramid_band_shares()
    diseases = table("infectious")["diseases"]
    for j, k in enumerate(keys):
        mean = sum(per_band[i][j] * shares[i] for i in range(len(shares)))
        assert mean == pytest.approx(diseases[k]["per100k"] / 1e5, rel=1e-9)


def test_immunization_schedule_2021_matches_the_reference() -> None:
    ed = next(e for e in table("immunization")["editions"] if e["edition"] == "2021")
    sched = {(v, d): m for v, d, m in ed["doses"]}
    assert sched[("HepB", 1)] == 0 and sched[("HepB", 2)] == 1 and sched[("HepB", 3)] == 6
    assert [sched[("IPV", d)] for d in (1, 2)] == [2, 3]
    assert [sched[("bOPV", d)] for d in (1, 2)] == [4, 48]
    assert [sched[("DTaP", d)] for d in (1, 2, 3, 4)] == [3, 4, 5, 18]
    assert [sched[("MMR", d)] for d in (1, 2)] == [8, 18]
    assert sched[("DT", 1)] == 72 and sched[("HepA-L", 1)] == 18
    assert [sched[("MPSV-A", d)] for d in (1, 2)] == [6, 9]
    assert [sched[("MPSV-AC", d)] for d in (1, 2)] == [36, 72]


def test_plan_is_a_pure_function_of_its_parameters() -> None:
    a = make_plan(5000, 3, years=2, end=date(2023, 6, 30))
    b = make_plan(5000, 3, years=2, end=date(2023, 6, 30))
    assert a.start == date(2021, 7, 1)
    assert [t.name for t in a.geo.towns] == [t.name for t in b.geo.towns]
    assert [(s.id, s.id_number, s.name.text) for s in a.registry.staff] == [
        (s.id, s.id_number, s.name.text) for s in b.registry.staff
    ]
    assert a.outbreaks == b.outbreaks
    assert a.slots == len(a.geo.towns) + 1
