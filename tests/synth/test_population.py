"""Residents and households: census structure, identity numbers, families, life events."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date

from phip.cn import gb11643, regions
from phip.synth.population import age

from .conftest import END, PERSONS, Region


def _initial(region: Region) -> list[dict[str, str]]:
    start = region.summary.start.isoformat()
    return [p for p in region.people.values() if p["first_seen"] == start]


def test_residents_at_start_match_the_requested_number(region: Region) -> None:
    assert len(_initial(region)) == PERSONS == region.summary.residents
    assert region.summary.people == len(region.people)


def test_age_structure_is_close_to_the_2020_census(region: Region) -> None:
    start = region.summary.start
    ages = [age(date.fromisoformat(p["birth_date"]), start) for p in _initial(region)]
    n = len(ages)
    # census 2020: 17.95% under 15, 13.50% aged 65+; binomial SE at n=3000 is about 0.7 pp
    assert abs(sum(a < 15 for a in ages) / n - 0.1795) < 0.025
    assert abs(sum(a >= 65 for a in ages) / n - 0.135) < 0.025
    assert abs(sum(15 <= a < 60 for a in ages) / n - 0.6335) < 0.03
    assert max(ages) < 100


def test_sex_ratio_is_about_105(region: Region) -> None:
    init = _initial(region)
    males = sum(p["sex"] == "male" for p in init)
    ratio = 100 * males / (len(init) - males)
    assert 97 < ratio < 113, ratio


def test_identity_numbers_are_valid_unique_and_consistent(region: Region) -> None:
    seen = set()
    local = 0
    for p in region.people.values():
        check = gb11643.validate(p["id_number"], today=END, known_area=regions.is_known)
        assert check.valid, (p["person_id"], check.errors)
        assert check.birth_date == date.fromisoformat(p["birth_date"])
        assert check.sex == p["sex"]
        assert check.area_code == p["birth_county"]
        seen.add(p["id_number"])
        local += regions.get(p["birth_county"]).province_code == "510000"  # type: ignore[union-attr]
    assert len(seen) == len(region.people)
    assert local / len(region.people) > 0.85  # most residents were born in Sichuan


def test_households_have_realistic_size_and_roles(region: Region) -> None:
    start = region.summary.start.isoformat()
    rows = [r for r in region.truth("households") if r["from_date"] == start]
    sizes = Counter(Counter(r["household_id"] for r in rows).values())
    n_households = sum(sizes.values())
    mean = sum(k * v for k, v in sizes.items()) / n_households
    assert 2.1 < mean < 3.0, mean  # census 2020: 2.62
    assert 0.15 < sizes[1] / n_households < 0.40  # one-person households (census: 25%)
    assert sum(v for k, v in sizes.items() if k >= 5) > 0  # three-generation families exist
    roles = Counter(r["role"] for r in rows)
    assert roles["head"] == n_households
    assert roles["child"] > roles["parent"] > 0


def test_children_live_with_parents_of_plausible_age_and_share_the_family_name(region: Region) -> None:
    people = region.people
    same_name = total = 0
    for p in people.values():
        mother = people.get(p["mother_id"])
        father = people.get(p["father_id"])
        if mother is None or father is None:
            continue
        born = date.fromisoformat(p["birth_date"])
        mother_age = age(date.fromisoformat(mother["birth_date"]), born)
        assert 17 <= mother_age <= 45, (p["person_id"], mother_age)
        assert mother["household_id"] == p["household_id"] == father["household_id"]
        assert mother["sex"] == "female" and father["sex"] == "male"
        if p["ethnicity"] == "01":
            total += 1
            same_name += p["name"][0] == father["name"][0]
    assert total > 300
    assert same_name / total > 0.9  # children take the father's surname (a few the mother's)


def test_births_deaths_and_moves_happen_at_plausible_rates(region: Region) -> None:
    s = region.summary
    person_years = s.residents * 4
    births_per_1000 = 1000 * s.births / person_years
    deaths_per_1000 = 1000 * s.deaths / person_years
    assert 3 < births_per_1000 < 14, births_per_1000  # crude birth rate 2021-2024: 6-8 per 1000
    assert 3 < deaths_per_1000 < 12, deaths_per_1000  # crude death rate about 7 per 1000
    moves = region.truth("moves")
    assert any(m["to_village"] == "outside" for m in moves)
    assert any(m["from_village"] == "outside" for m in moves)
    assert any(m["from_village"] not in ("outside",) and m["to_village"] != "outside" for m in moves)
    reasons = Counter(p["end_reason"] for p in region.people.values())
    assert reasons["died"] == s.deaths and reasons["moved_out"] == s.moved_out


def test_newborns_get_identity_numbers_of_their_birth_county(region: Region) -> None:
    start = region.summary.start.isoformat()
    babies = [p for p in region.people.values() if p["birth_date"] >= start and p["first_seen"] == p["birth_date"]]
    assert len(babies) == region.summary.births > 20
    by_household = defaultdict(list)
    for r in region.truth("households"):
        by_household[r["household_id"]].append(r)
    for b in babies:
        assert b["id_number"][6:14] == b["birth_date"].replace("-", "")
        assert b["mother_id"], b["person_id"]
