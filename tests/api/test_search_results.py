"""FHIR R4 search results through the HTTP API: _sort, paging, _total, _summary, _elements,
_include/_revinclude, POST _search, compartments and $everything (both backends).

https://hl7.org/fhir/R4/search.html — synthetic data only.
"""

from __future__ import annotations

from typing import Any

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SUBSETTED = "SUBSETTED"


def mk(api: Any, resource: dict[str, Any]) -> str:
    return str(api.create(resource)["id"])


def get(api: Any, url: str, expect: int = 200, **kw: Any) -> dict[str, Any]:
    if url.startswith("http://testserver"):
        url = url[len("http://testserver"):]
    return api.get(url if url.startswith("/") else "/fhir/" + url, expect=expect, **kw).json()  # type: ignore[no-any-return]


def matches(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def included(bundle: dict[str, Any]) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in bundle.get("entry", []) if e["search"]["mode"] == "include"}


def next_url(bundle: dict[str, Any]) -> str | None:
    return next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)


def all_pages(api: Any, url: str) -> tuple[list[str], int]:
    """Every match over the ``next`` links, in order, and the number of pages."""
    out: list[str] = []
    pages = 0
    nxt: str | None = url
    while nxt:
        b = get(api, nxt)
        out += matches(b)
        pages += 1
        nxt = next_url(b)
        assert pages < 100, "paging does not end"
    return out, pages


def obs(loinc: str = "8867-4", **kw: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": loinc}]}, **kw}


# -- _sort -------------------------------------------------------------------------------------------
def test_sort_string_date_token_id_and_missing_last(api: Any) -> None:
    def put(pid: str, **kw: Any) -> str:
        api.put(f"/fhir/Patient/{pid}", {"resourceType": "Patient", "id": pid, **kw}, expect=201)
        return pid

    s1 = put("p-c", name=[{"family": "Chen"}], birthDate="1980-01-01", gender="male")
    s2 = put("p-a", name=[{"family": "Adams"}], birthDate="1990-05-05", gender="female")
    s3 = put("p-e", name=[{"family": "Bai"}], birthDate="1985", gender="female")
    s4 = put("p-b", name=[{"family": "adams"}], birthDate="1970", gender="male")
    s5 = put("p-d", active=True)  # no name, birthDate or gender

    def order(sort: str) -> list[str]:
        return matches(get(api, f"Patient?_sort={sort}"))

    assert order("family") == [s2, s4, s3, s1, s5]  # ties by insertion; case-insensitive
    assert order("-family") == [s1, s3, s2, s4, s5]  # missing last either way
    assert order("family,-birthdate") == [s2, s4, s3, s1, s5]
    assert order("family,birthdate") == [s4, s2, s3, s1, s5]
    assert order("birthdate") == [s4, s1, s3, s2, s5]
    assert order("-birthdate") == [s2, s3, s1, s4, s5]
    assert order("gender,-family") == [s3, s2, s1, s4, s5]
    assert order("-gender,family") == [s4, s1, s2, s3, s5]
    assert order("_id") == ["p-a", "p-b", "p-c", "p-d", "p-e"]
    assert order("-_id") == ["p-e", "p-d", "p-c", "p-b", "p-a"]
    assert order("_lastUpdated") == [s1, s2, s3, s4, s5]
    assert order("-_lastUpdated") == [s5, s4, s3, s2, s1]
    # the same order over pages of 2
    for sort in ("family,-birthdate", "-birthdate", "-_id", "gender,-family"):
        paged, pages = all_pages(api, f"Patient?_sort={sort}&_count=2")
        assert paged == order(sort) and pages == 3, sort


def test_sort_number_quantity_reference(api: Any) -> None:
    def ra(p: float | None, subject: str) -> str:
        body: dict[str, Any] = {"resourceType": "RiskAssessment", "status": "final",
                                "subject": {"reference": subject}}
        if p is not None:
            body["prediction"] = [{"probabilityDecimal": p}]
        return mk(api, body)

    r1 = ra(0.5, "Patient/b")
    r2 = ra(0.05, "Patient/c")
    r3 = ra(None, "Patient/a")
    r4 = ra(0.75, "Group/g")
    assert matches(get(api, "RiskAssessment?_sort=probability")) == [r2, r1, r4, r3]
    assert matches(get(api, "RiskAssessment?_sort=-probability")) == [r4, r1, r2, r3]
    assert matches(get(api, "RiskAssessment?_sort=subject")) == [r3, r1, r2, r4]  # by target id
    assert all_pages(api, "RiskAssessment?_sort=-probability&_count=1") == ([r4, r1, r2, r3], 4)

    q1 = mk(api, obs(valueQuantity={"value": 7.5, "system": UCUM, "code": "mmol/L"}))
    q2 = mk(api, obs(valueQuantity={"value": -2, "system": UCUM, "code": "mmol/L"}))
    q3 = mk(api, obs(valueString="未检出"))
    q4 = mk(api, obs(valueQuantity={"value": 120, "system": UCUM, "code": "mmol/L"}))
    assert matches(get(api, "Observation?_sort=value-quantity")) == [q2, q1, q4, q3]
    assert matches(get(api, "Observation?_sort=-value-quantity")) == [q4, q1, q2, q3]
    assert all_pages(api, "Observation?_sort=value-quantity&_count=3") == ([q2, q1, q4, q3], 2)

    # Ranges: ascending by low end, descending by high end; an open end is -/+ infinity
    def cond(**onset: Any) -> str:
        return mk(api, {"resourceType": "Condition", "subject": {"reference": "Patient/x"}, **onset})

    def yrs(v: float) -> dict[str, Any]:
        return {"value": v, "system": UCUM, "code": "a"}

    c1 = cond(onsetAge=yrs(25))
    c2 = cond(onsetRange={"low": yrs(20), "high": yrs(30)})
    c3 = cond(onsetRange={"low": yrs(60)})
    c4 = cond(onsetRange={"high": yrs(10)})
    assert all_pages(api, "Condition?_sort=onset-age&_count=1") == ([c4, c2, c1, c3], 4)
    assert all_pages(api, "Condition?_sort=-onset-age&_count=1") == ([c3, c2, c1, c4], 4)


def test_sort_date_on_periods(api: Any) -> None:
    a = mk(api, obs(effectivePeriod={"start": "2020-01-01", "end": "2020-12-31"}))
    b = mk(api, obs(effectiveDateTime="2020-06-01T08:00:00+08:00"))
    c = mk(api, obs(effectivePeriod={"start": "2019-06-01"}))  # open end: the latest end
    d = mk(api, obs())
    e = mk(api, obs(effectivePeriod={"end": "2019-01-01"}))  # open start: the earliest start
    assert matches(get(api, "Observation?_sort=date")) == [e, c, a, b, d]
    assert matches(get(api, "Observation?_sort=-date")) == [c, a, b, e, d]
    assert all_pages(api, "Observation?_sort=-date&_count=2") == ([c, a, b, e, d], 3)
    assert all_pages(api, "Observation?_sort=date&_count=2") == ([e, c, a, b, d], 3)


def test_system_level_sort_and_paging(api: Any) -> None:
    p1 = mk(api, {"resourceType": "Patient", "name": [{"family": "Ye"}]})
    d1 = mk(api, {"resourceType": "Practitioner", "name": [{"family": "An"}]})
    p2 = mk(api, {"resourceType": "Patient", "name": [{"family": "Mo"}]})
    o1 = mk(api, obs())
    assert matches(get(api, "/fhir?_type=Patient,Practitioner&_sort=family")) == [d1, p2, p1]
    assert matches(get(api, "/fhir?_sort=-family&_type=Practitioner,Patient")) == [p1, p2, d1]
    assert matches(get(api, "/fhir?_type=Patient,Observation&_sort=-_lastUpdated")) == [o1, p2, p1]
    # (the types named: capabilities write master Persons and data-quality Tasks alongside)
    got, pages = all_pages(api, "/fhir?_type=Patient,Practitioner,Observation&_sort=_lastUpdated&_count=3")
    assert got == [p1, d1, p2, o1] and pages == 2
    assert get(api, "/fhir?_type=Patient,Observation&_sort=family", expect=400)["issue"][0]["expression"] == [
        "_sort"]


# -- paging ------------------------------------------------------------------------------------------
def test_paging_follows_next_to_the_end(api: Any) -> None:
    made = [mk(api, {"resourceType": "Patient", "name": [{"family": "吴", "given": [f"{i:02d}"]}],
                     "birthDate": f"19{60 + i % 7}-01-01"}) for i in range(13)]
    mk(api, {"resourceType": "Patient", "name": [{"family": "郑"}]})  # not a match
    got, pages = all_pages(api, "Patient?family=吴&_count=4")
    assert got == made and pages == 4
    got, pages = all_pages(api, "Patient?family=吴&_count=5&_sort=-birthdate,given")
    assert sorted(got) == sorted(made) and len(got) == 13 and pages == 3
    first = get(api, "Patient?family=吴&_count=13")
    assert matches(first) == made and next_url(first) is None and first["total"] == 13
    zero = get(api, "Patient?family=吴&_count=0&_total=accurate")
    assert zero["total"] == 13 and "entry" not in zero
    # the self link keeps the query; next carries a cursor and the same parameters
    b = get(api, "Patient?family=吴&_count=4&_sort=given")
    nxt = next_url(b)
    assert nxt is not None and "_cursor=" in nxt and "_count=4" in nxt and "_sort=given" in nxt
    self_link = next(link["url"] for link in b["link"] if link["relation"] == "self")
    assert self_link.startswith("http://testserver/fhir/Patient?") and "_cursor" not in self_link


def test_paging_is_stable_under_inserts(api: Any) -> None:
    def p(family: str) -> str:
        return mk(api, {"resourceType": "Patient", "name": [{"family": family}], "gender": "female"})

    originals = [p(f"Ma{c}") for c in "bcdefghij"]  # 9 matches, sorted by family and rid alike
    page = get(api, "Patient?gender=female&_count=3")
    seen = matches(page)
    assert seen == originals[:3]
    nxt = next_url(page)
    # new matches before and after the cursor: no earlier result repeats, none is skipped
    early = p("Maa")
    late = p("Maz")
    while nxt:
        page = get(api, nxt)
        seen += matches(page)
        nxt = next_url(page)
        if len(seen) == 6:
            p("Maa2")
    assert len(seen) == len(set(seen))
    assert seen[:9] == originals
    assert early in seen  # rid order: new rows come after the cursor
    assert late in seen

    # sorted by family: a new "Maa" sorts before the cursor and is not seen; nothing repeats
    page = get(api, "Patient?gender=female&_count=4&_sort=family")
    first = matches(page)
    assert first[0] == early
    p("Ma0")  # sorts first: before the cursor
    p("Mazz")  # sorts last: after the cursor
    rest, _ = all_pages(api, next_url(page) or "")
    assert not set(first) & set(rest)
    families = [get(api, f"Patient/{i}")["name"][0]["family"] for i in first + rest]
    assert families == sorted(families) and "Ma0" not in families and families[-1] == "Mazz"
    assert len(first + rest) == 13


# -- _total, _summary, _elements ------------------------------------------------------------------
def test_total_summary_elements(api: Any) -> None:
    div = '<div xmlns="http://www.w3.org/1999/xhtml">孙丽，女</div>'
    for i in range(3):
        mk(api, {"resourceType": "Patient", "text": {"status": "generated", "div": div},
                 "name": [{"family": "孙", "given": ["丽"]}], "gender": "female", "birthDate": f"198{i}-01-01",
                 "maritalStatus": {"text": "已婚"}, "photo": [{"title": "证件照"}]})
    mk(api, {"resourceType": "Patient", "name": [{"family": "钱"}]})

    b = get(api, "Patient?family=孙&_count=1&_total=accurate")
    assert b["total"] == 3 and len(matches(b)) == 1
    assert get(api, "Patient?family=孙&_count=1&_total=estimate")["total"] == 3
    assert len(matches(get(api, "Patient?family=孙&_total=none"))) == 3
    c = get(api, "Patient?family=孙&_summary=count")
    assert c["total"] == 3 and "entry" not in c

    s = get(api, "Patient?family=孙&_summary=true")
    for e in s["entry"]:
        r = e["resource"]
        assert {"name", "gender", "birthDate"} <= set(r) and not {"text", "maritalStatus", "photo"} & set(r)
        assert any(t["code"] == SUBSETTED for t in r["meta"]["tag"])
    t = get(api, "Patient?family=孙&_summary=text")
    for e in t["entry"]:
        assert {"text", "id", "meta"} <= set(e["resource"]) and "name" not in e["resource"]
        assert any(tag["code"] == SUBSETTED for tag in e["resource"]["meta"]["tag"])
    d = get(api, "Patient?family=孙&_summary=data")
    for e in d["entry"]:
        assert "text" not in e["resource"] and {"maritalStatus", "photo", "name"} <= set(e["resource"])
    assert "text" in get(api, "Patient?family=孙&_summary=false")["entry"][0]["resource"]
    el = get(api, "Patient?family=孙&_elements=gender,birthDate")
    for e in el["entry"]:
        assert set(e["resource"]) == {"resourceType", "id", "meta", "gender", "birthDate"}
        assert any(tag["code"] == SUBSETTED for tag in e["resource"]["meta"]["tag"])
    # the stored resource is unchanged
    full = get(api, f"Patient/{matches(el)[0]}")
    assert "maritalStatus" in full and "tag" not in full["meta"]


# -- _include, _revinclude, :iterate --------------------------------------------------------------------
def _care_world(api: Any) -> dict[str, str]:
    w: dict[str, str] = {}
    w["org"] = mk(api, {"resourceType": "Organization", "name": "青羊区妇幼保健院"})
    w["org2"] = mk(api, {"resourceType": "Organization", "name": "锦江区社区卫生服务中心"})
    w["dr"] = mk(api, {"resourceType": "Practitioner", "name": [{"family": "赵", "given": ["敏"]}]})
    w["role"] = mk(api, {"resourceType": "PractitionerRole", "practitioner": {"reference": f"Practitioner/{w['dr']}"},
                         "organization": {"reference": f"Organization/{w['org']}"}})
    w["pat"] = mk(api, {"resourceType": "Patient", "name": [{"family": "冯"}],
                        "managingOrganization": {"reference": f"Organization/{w['org2']}"}})
    w["mr"] = mk(api, {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                       "medicationCodeableConcept": {"text": "二甲双胍片"},
                       "subject": {"reference": f"Patient/{w['pat']}"},
                       "requester": {"reference": f"PractitionerRole/{w['role']}"}})
    w["mr2"] = mk(api, {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                        "medicationCodeableConcept": {"text": "阿卡波糖片"},
                        "subject": {"reference": f"Patient/{w['pat']}"},
                        "requester": {"reference": f"Practitioner/{w['dr']}"}})
    return w


def test_include_revinclude_iterate(api: Any) -> None:
    w = _care_world(api)
    mr, mr2 = w["mr"], w["mr2"]
    role, org, dr, pat = f"PractitionerRole/{w['role']}", f"Organization/{w['org']}", f"Practitioner/{w['dr']}", \
        f"Patient/{w['pat']}"

    b = get(api, f"MedicationRequest?_id={mr}&_include=MedicationRequest:requester")
    assert matches(b) == [mr] and included(b) == {role}
    b = get(api, f"MedicationRequest?_id={mr}&_include=MedicationRequest:requester"
                 "&_include:iterate=PractitionerRole:organization")
    assert matches(b) == [mr] and included(b) == {role, org}
    b = get(api, f"MedicationRequest?_id={mr}&_include=MedicationRequest:requester"
                 "&_include:iterate=PractitionerRole:organization,PractitionerRole:practitioner")
    assert included(b) == {role, org, dr}
    # without :iterate the second step does not run
    b = get(api, f"MedicationRequest?_id={mr}&_include=MedicationRequest:requester"
                 "&_include=PractitionerRole:organization")
    assert included(b) == {role}
    # target type
    b = get(api, "MedicationRequest?_include=MedicationRequest:requester:Practitioner")
    assert sorted(matches(b)) == sorted([mr, mr2]) and included(b) == {dr}
    b = get(api, "MedicationRequest?_include=MedicationRequest:subject:Patient&_include=MedicationRequest:requester")
    assert included(b) == {pat, role, dr}  # the patient once, though both requests point at it
    b = get(api, f"MedicationRequest?_id={mr}&_include=*")
    assert included(b) == {pat, role}
    # an included resource that is also a match is listed once, as a match
    b = get(api, f"Patient?_id={w['pat']}&_revinclude=MedicationRequest:subject")
    assert matches(b) == [w["pat"]] and included(b) == {f"MedicationRequest/{mr}", f"MedicationRequest/{mr2}"}
    b = get(api, f"Organization?_id={w['org']}&_revinclude=PractitionerRole:organization"
                 "&_revinclude:iterate=MedicationRequest:requester")
    assert included(b) == {role, f"MedicationRequest/{mr}"}
    b = get(api, f"Patient?_id={w['pat']}&_revinclude=MedicationRequest:subject"
                 "&_include:iterate=MedicationRequest:requester&_include=Patient:organization")
    assert included(b) == {f"MedicationRequest/{mr}", f"MedicationRequest/{mr2}", role, dr,
                           f"Organization/{w['org2']}"}
    b = get(api, f"PractitionerRole?_include=PractitionerRole:organization&_id={w['role']}")
    entries = [e["search"]["mode"] for e in b["entry"]]
    assert entries == ["match", "include"]
    # _summary=count never includes
    assert "entry" not in get(api, "MedicationRequest?_include=*&_summary=count")


def test_post_search_form_body(api: Any) -> None:
    a = mk(api, {"resourceType": "Patient", "name": [{"family": "韩", "given": ["梅"]}], "gender": "female"})
    mk(api, {"resourceType": "Patient", "name": [{"family": "韩", "given": ["雷"]}], "gender": "male"})
    r = api.c.post("/fhir/Patient/_search", data={"family": "韩", "gender": "female"},
                   headers={**api.h, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text
    assert matches(r.json()) == [a]
    r = api.c.post("/fhir/Patient/_search?family=韩", data={"given": "梅,雷", "_sort": "-given", "_count": "1"},
                   headers=api.h)
    b = r.json()
    assert r.status_code == 200 and len(matches(b)) == 1
    got, _ = all_pages(api, next_url(b) or "")
    assert len(got) == 1 and matches(b)[0] != got[0]
    r = api.c.post("/fhir/Patient/_search", data={"nonsense": "1"}, headers=api.h)
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["nonsense"]


# -- compartments, $everything ----------------------------------------------------------------------
def test_compartment_search(api: Any) -> None:
    pa = mk(api, {"resourceType": "Patient", "name": [{"family": "曹"}]})
    pb = mk(api, {"resourceType": "Patient", "name": [{"family": "邓"}]})
    enc = mk(api, {"resourceType": "Encounter", "status": "finished",
                   "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                   "subject": {"reference": f"Patient/{pa}"}})
    o1 = mk(api, obs("8867-4", subject={"reference": f"Patient/{pa}"}, encounter={"reference": f"Encounter/{enc}"}))
    o2 = mk(api, obs("8310-5", subject={"reference": f"Patient/{pa}"}))
    o3 = mk(api, obs("8867-4", subject={"reference": f"Patient/{pb}"}, performer=[{"reference": f"Patient/{pa}"}]))
    mk(api, obs("8867-4", subject={"reference": f"Patient/{pb}"}))
    assert set(matches(get(api, f"Patient/{pa}/Observation"))) == {o1, o2, o3}  # subject or performer
    assert matches(get(api, f"Patient/{pa}/Observation?code={LOINC}|8310-5")) == [o2]
    assert matches(get(api, f"Patient/{pa}/Encounter")) == [enc]
    assert matches(get(api, f"Encounter/{enc}/Observation")) == [o1]
    got, pages = all_pages(api, f"Patient/{pa}/Observation?_count=2")
    assert sorted(got) == sorted([o1, o2, o3]) and pages == 2
    get(api, "Patient/nobody/Observation", expect=404)


def test_everything_paging(api: Any) -> None:
    pa = mk(api, {"resourceType": "Patient", "name": [{"family": "彭"}]})
    pb = mk(api, {"resourceType": "Patient", "name": [{"family": "潘"}]})
    mine = {f"Patient/{pa}"}
    for i in range(5):
        mine.add(f"Observation/{mk(api, obs(subject={'reference': f'Patient/{pa}'}, valueString=str(i)))}")
    mine.add("Condition/" + mk(api, {"resourceType": "Condition", "subject": {"reference": f"Patient/{pa}"}}))
    mine.add("Encounter/" + mk(api, {
        "resourceType": "Encounter", "status": "finished", "subject": {"reference": f"Patient/{pa}"},
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"}}))
    mk(api, obs(subject={"reference": f"Patient/{pb}"}))
    # the master Person linked to the Patient is in its compartment (Person.link)
    mine |= {f"Person/{e['resource']['id']}" for e in get(api, f"/fhir/Person?link=Patient/{pa}")["entry"]}
    seen: list[str] = []
    nxt: str | None = f"/fhir/Patient/{pa}/$everything?_count=3"
    pages = 0
    while nxt:
        b = get(api, nxt)
        seen += [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in b.get("entry", [])]
        nxt = next_url(b)
        pages += 1
    assert len(seen) == len(set(seen)) and set(seen) == mine and pages == 3


def test_include_ignores_references_to_other_servers(api: Any) -> None:
    pa = mk(api, {"resourceType": "Patient", "name": [{"family": "曹"}]})
    ext = mk(api, obs(subject={"reference": f"http://external.example.org/fhir/Patient/{pa}"}))
    local = mk(api, obs(subject={"reference": f"Patient/{pa}"}))
    assert included(get(api, f"Observation?_id={local}&_include=Observation:subject")) == {f"Patient/{pa}"}
    assert included(get(api, f"Observation?_id={ext}&_include=Observation:subject")) == set()


def test_compartment_ignores_references_to_other_servers(api: Any) -> None:
    pa = mk(api, {"resourceType": "Patient", "name": [{"family": "曹"}]})
    mine = mk(api, obs(subject={"reference": f"Patient/{pa}"}))
    mk(api, obs(subject={"reference": f"http://external.example.org/fhir/Patient/{pa}"}))
    assert matches(get(api, f"Patient/{pa}/Observation")) == [mine]
