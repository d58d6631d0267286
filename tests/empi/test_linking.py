"""Every Patient write links exactly one master Person, in the write's transaction; the hard cases."""

from __future__ import annotations

from typing import Any

from .builders import P, rid, zhang_san


def person_of(api: Any, pid: str) -> dict[str, Any]:
    b = api.search(f"Person?link=Patient/{pid}")
    people = [e["resource"] for e in b.get("entry", [])]
    assert len(people) == 1, f"Patient/{pid} is linked to {len(people)} Persons"
    return people[0]


def assurance(person: dict[str, Any], pid: str) -> str:
    return next(lk["assurance"] for lk in person["link"] if lk["target"]["reference"] == f"Patient/{pid}")


def test_create_links_a_new_person_with_golden_record(api: Any) -> None:
    n = rid("510104", "1980-03-04", 123)
    p = api.create(zhang_san().idno(n).mrn("510104-rmyy", "1").build())
    person = person_of(api, p["id"])
    assert person["name"][0]["text"] == "张三丰"
    assert person["birthDate"] == "1980-03-04" and person["gender"] == "male"
    assert person["identifier"][0]["value"] == n
    assert assurance(person, p["id"]) == "level2"


def test_same_id_number_is_deterministic_level4(api: Any) -> None:
    n = rid("510104", "1980-03-04", 123)
    a = api.create(zhang_san().idno(n).mrn("510104-rmyy", "1").build())
    # another desk: traditional characters, no phone, another record number
    b = api.create(P("張三豐", family="張", given="三豐").born("1980-03-04").sex("male").idno(n)
                   .mrn("510104-wsy", "9").build())
    pa, pb = person_of(api, a["id"]), person_of(api, b["id"])
    assert pa["id"] == pb["id"]
    assert assurance(pb, b["id"]) == "level4"
    assert len(pb["link"]) == 2


def test_put_and_transaction_paths_link_too(api: Any) -> None:
    n = rid("510104", "1975-01-02", 35)
    api.put("/fhir/Patient/p-put", P("李四", family="李", given="四").id("p-put").born("1975-01-02").sex("male")
            .idno(n).build(), expect=201)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "request": {"method": "POST", "url": "Patient"},
        "resource": P("李四", family="李", given="四").born("1975-01-02").sex("male").idno(n).build()}]}
    r = api.post("/fhir", bundle, expect=200).json()
    new_id = r["entry"][0]["response"]["location"].split("/")[1]
    assert person_of(api, "p-put")["id"] == person_of(api, new_id)["id"]


def test_invalid_id_never_blocks_and_is_not_a_key(api: Any) -> None:
    good = rid("510104", "1980-03-04", 123)
    bad = good[:-1] + ("1" if good[-1] != "1" else "2")
    r = api.post("/fhir/Patient", zhang_san().idno(bad).build(), headers={"Prefer": "return=OperationOutcome"},
                 expect=201)
    oo = r.json()
    assert any(i.get("details", {}).get("coding", [{}])[0].get("code") == "PHIP-4001" or "PHIP-4001" in str(i)
               for i in oo["issue"]), oo
    # a different person carrying the same invalid number is not linked by it
    other = api.create(P("李娜", family="李", given="娜").born("1999-09-09").sex("female").idno(bad).build())
    first = api.search("Patient?_count=10")["entry"]
    ids = [e["resource"]["id"] for e in first]
    persons = {person_of(api, i)["id"] for i in ids}
    assert len(persons) == 2 and other["id"] in ids


def test_mistyped_id_with_same_demographics_links(api: Any) -> None:
    good = rid("510104", "1980-03-04", 123)
    typo = good[:10] + good[11] + good[10] + good[12:]  # two digits swapped
    a = api.create(zhang_san().idno(good).build())
    b = api.create(zhang_san().idno(typo).build())
    assert person_of(api, a["id"])["id"] == person_of(api, b["id"])["id"]


def test_twins_are_two_people(api: Any) -> None:
    home = ("510104", "建设街道安源社区新华路8号")
    def mk(given: str, _seq: int) -> P:
        return (P("王" + given, family="王", given=given).born("2020-06-01").sex("male")
                .phone("15400002222").addr(*home))

    a = api.create(mk("浩然", 11).idno(rid("510104", "2020-06-01", 11)).build())
    b = api.create(mk("浩宇", 13).idno(rid("510104", "2020-06-01", 13)).build())
    # and without ID numbers (children often have none)
    c = api.create(mk("子轩", 0).build())
    d = api.create(mk("子涵", 0).build())
    persons = {person_of(api, x["id"])["id"] for x in (a, b, c, d)}
    assert len(persons) == 4


def test_newborn_under_mothers_id_is_never_merged_with_the_mother(api: Any) -> None:
    m = rid("510104", "1990-07-23", 372)
    mother = api.create(P("周璐萌", family="周", given="璐萌").born("1990-07-23").sex("female").idno(m)
                        .phone("15400003333").addr("510104", "新华路9号").build())
    son = api.create(P("周璐萌之子").born("2025-05-18").sex("male").idno(m).build())
    daughter = api.create(P("周璐萌之女").born("2025-05-18").sex("female").idno(m).build())
    persons = {person_of(api, x["id"])["id"] for x in (mother, son, daughter)}
    assert len(persons) == 3
    assert "identifier" not in person_of(api, son["id"])  # the mother's number is not the child's key


def test_common_names_in_one_county_stay_apart(api: Any) -> None:
    ids = []
    for i, born in enumerate(("1980-01-05", "1985-07-19", "1992-11-30")):
        p = P("张伟", family="张", given="伟").born(born).sex("male").addr("510104", f"新华路{i + 1}号")
        ids.append(api.create(p.build())["id"])
    assert len({person_of(api, i)["id"] for i in ids}) == 3


def test_id_card_and_passport_are_one_person(api: Any) -> None:
    a = api.create(zhang_san().idno(rid("510104", "1980-03-04", 123)).build())
    b = api.create(zhang_san().passport("E12345678").build())
    assert person_of(api, a["id"])["id"] == person_of(api, b["id"])["id"]
    person = person_of(api, a["id"])
    assert {i["value"] for i in person["identifier"]} == {rid("510104", "1980-03-04", 123), "E12345678"}


def test_delete_and_update_keep_one_person_each(api: Any) -> None:
    n = rid("510104", "1980-03-04", 123)
    a = api.create(zhang_san().idno(n).build())
    b = api.create(zhang_san().idno(n).build())
    shared = person_of(api, a["id"])["id"]
    # b was a different person after all: corrected demographics and number
    fixed = P("李娜", family="李", given="娜").id(b["id"]).born("1999-09-09").sex("female") \
        .idno(rid("510104", "1999-09-09", 124)).build()
    api.put(f"/fhir/Patient/{b['id']}", fixed, expect=200)
    assert person_of(api, b["id"])["id"] != shared
    assert len(person_of(api, a["id"])["link"]) == 1
    api.delete(f"/fhir/Patient/{b['id']}", expect=204)
    assert api.search(f"Person?link=Patient/{b['id']}").get("total", 0) == 0


def test_records_with_and_without_a_number_meet(api: Any) -> None:
    """A record with a trusted number searches the broad blocks of the records without one (and the
    reverse): both orders link."""
    n = rid("510104", "1980-03-04", 123)
    a = api.create(zhang_san().build())  # no number
    b = api.create(zhang_san().idno(n).build())
    assert person_of(api, a["id"])["id"] == person_of(api, b["id"])["id"]
    c = api.create(zhang_san().idno(n).mrn("510104-wsy", "3").build())
    d = api.create(zhang_san().mrn("510104-zyy", "4").build())
    assert len({person_of(api, x["id"])["id"] for x in (a, b, c, d)}) == 1
