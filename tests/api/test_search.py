"""FHIR R4 search through the HTTP API, per parameter type (https://hl7.org/fhir/R4/search.html).

Every test runs on SQLite and PostgreSQL (the ``api`` fixture) and asserts the exact set
of ids a query matches.  All data is synthetic.  Result handling (sort, paging, _include,
_summary…) is in ``test_search_results.py``; error answers in ``test_search_errors.py``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ID_SYS = "urn:oid:2.16.156.10011.1.3"  # 居民身份证 (synthetic numbers only)
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
TAG_SYS = "urn:phip:test"
EXT_BASE = "http://external.example.org/fhir"


def q(path: str, *pairs: tuple[str, str]) -> str:
    """``path?k=v&…`` with every key and value percent-encoded (``+``, ``\\``, ``,`` survive)."""
    return path + "?" + urlencode(list(pairs), quote_via=quote, safe=":")


def url(query: str) -> str:
    """``/fhir/Type?…`` for a type-level query, ``/fhir?…`` for a system-level one (``?…``)."""
    return "/fhir" + query if query.startswith("?") else "/fhir/" + query


def ids(api: Any, query: str) -> set[str]:
    bundle = api.get(url(query), expect=200).json()
    got = [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]
    assert len(got) == len(set(got)), f"{query}: duplicate entries {got}"
    return set(got)


def mk(api: Any, resource: dict[str, Any]) -> str:
    return str(api.create(resource)["id"])


def patient(**kw: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", **kw}


def obs(loinc: str = "8867-4", **kw: Any) -> dict[str, Any]:
    """An Observation coded ``loinc`` (``code=`` in ``kw`` replaces the whole CodeableConcept)."""
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": loinc}]}, **kw}


def qty(value: float, code: str | None = "mg", system: str | None = UCUM, unit: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"value": value}
    if unit is not None:
        out["unit"] = unit
    if system is not None:
        out["system"] = system
    if code is not None:
        out["code"] = code
    return out


# -- string --------------------------------------------------------------------------------------
def test_string_starts_with_case_accent_width_insensitive(api: Any) -> None:
    muller = mk(api, patient(name=[{"family": "Müller", "given": ["Ëva"]}]))
    evans = mk(api, patient(name=[{"family": "Evans", "given": ["Mark"]}]))
    zhang = mk(api, patient(name=[{"family": "张", "given": ["伟"], "text": "张伟"}]))
    wang = mk(api, patient(name=[{"family": "ＷＡＮＧ", "given": ["Xiao Ming"]}]))  # full-width letters
    mk(api, patient(gender="unknown"))  # no name at all

    assert ids(api, "Patient?name=eva") == {muller, evans}  # starts-with, any name part
    assert ids(api, q("Patient", ("name", "ËVA"))) == {muller, evans}
    assert ids(api, q("Patient", ("given", "eva"))) == {muller}
    assert ids(api, q("Patient", ("family", "mul"))) == {muller}  # ü ~ u
    assert ids(api, q("Patient", ("family", "MÜLLER"))) == {muller}
    assert ids(api, "Patient?family=ller") == set()  # not a prefix
    assert ids(api, "Patient?family=wang") == {wang}
    assert ids(api, q("Patient", ("family", "ｗａｎｇ"))) == {wang}
    assert ids(api, q("Patient", ("name", "张"))) == {zhang}
    assert ids(api, q("Patient", ("name", "张伟"))) == {zhang}  # HumanName.text
    assert ids(api, q("Patient", ("given", "伟"))) == {zhang}
    assert ids(api, q("Patient", ("family", "伟"))) == set()
    assert ids(api, q("Patient", ("name", "xiao  MING"))) == {wang}  # white space folded
    # :exact is case-, accent- and width-sensitive and whole-value
    assert ids(api, q("Patient", ("family:exact", "Müller"))) == {muller}
    assert ids(api, q("Patient", ("family:exact", "müller"))) == set()
    assert ids(api, q("Patient", ("family:exact", "Muller"))) == set()
    assert ids(api, q("Patient", ("family:exact", "Mül"))) == set()
    assert ids(api, q("Patient", ("name:exact", "张伟"))) == {zhang}
    # :contains anywhere, still case/accent-insensitive
    assert ids(api, q("Patient", ("family:contains", "LLE"))) == {muller}
    assert ids(api, q("Patient", ("name:contains", "an"))) == {evans, wang}
    assert ids(api, q("Patient", ("name:contains", "伟"))) == {zhang}
    assert ids(api, q("Patient", ("name:contains", "%"))) == set()  # LIKE wildcards are literal
    assert ids(api, q("Patient", ("name:contains", "_"))) == set()


def test_string_address_parts(api: Any) -> None:
    a = mk(api, patient(address=[{"line": ["人民南路四段1号"], "city": "成都市", "district": "武侯区",
                                   "state": "四川省", "postalCode": "610041", "country": "CN"}]))
    b = mk(api, patient(address=[{"city": "Chengdu", "text": "No. 9 Tianfu Ave, Chengdu"}]))
    c = mk(api, patient(address=[{"city": "São Paulo", "country": "BR"}]))
    assert ids(api, q("Patient", ("address-city", "成都"))) == {a}
    assert ids(api, q("Patient", ("address-city", "chengdu"))) == {b}
    assert ids(api, q("Patient", ("address-city", "sao"))) == {c}
    assert ids(api, q("Patient", ("address", "武侯"))) == {a}  # district
    assert ids(api, q("Patient", ("address", "人民南路"))) == {a}  # line
    assert ids(api, q("Patient", ("address", "6100"))) == {a}  # postal code
    assert ids(api, q("Patient", ("address", "四川"))) == {a}  # state
    assert ids(api, q("Patient", ("address", "no. 9"))) == {b}  # text
    assert ids(api, q("Patient", ("address-postalcode", "610041"))) == {a}
    assert ids(api, q("Patient", ("address-country", "cn"))) == {a}
    assert ids(api, q("Patient", ("address-state", "成都"))) == set()
    assert ids(api, q("Patient", ("address:contains", "天府"))) == set()
    # (not on the text or lines: encryption at rest seals them, :contains cannot see into them)
    assert ids(api, q("Patient", ("address:contains", "hengd"))) == {b}


# -- token ---------------------------------------------------------------------------------------
def test_token_identifier_forms(api: Any) -> None:
    a = mk(api, patient(identifier=[{"system": ID_SYS, "value": "110101199003070011",
                                     "type": {"coding": [{"system": V2_0203, "code": "NI"}], "text": "National ID"}}]))
    b = mk(api, patient(identifier=[{"value": "MRN-0002"}]))
    c = mk(api, patient(identifier=[{"system": "urn:phip:mrn", "value": "110101199003070011",
                                     "type": {"coding": [{"system": V2_0203, "code": "MR"}]}}]))
    d = mk(api, patient(identifier=[{"system": "urn:phip:mrn", "value": "a|b,c$d\\e"}]))
    assert ids(api, q("Patient", ("identifier", f"{ID_SYS}|110101199003070011"))) == {a}
    assert ids(api, q("Patient", ("identifier", "110101199003070011"))) == {a, c}
    assert ids(api, q("Patient", ("identifier", "|MRN-0002"))) == {b}
    assert ids(api, q("Patient", ("identifier", "|110101199003070011"))) == set()
    assert ids(api, q("Patient", ("identifier", "urn:phip:mrn|"))) == {c, d}
    assert ids(api, q("Patient", ("identifier", "MRN-0002"))) == {b}
    assert ids(api, q("Patient", ("identifier", "mrn-0002"))) == set()  # tokens are case-sensitive
    assert ids(api, q("Patient", ("identifier", "MRN"))) == set()  # and exact
    # escaped separators inside the value: \| \, \$ \\
    assert ids(api, q("Patient", ("identifier", r"urn:phip:mrn|a\|b\,c\$d\\e"))) == {d}
    assert ids(api, q("Patient", ("identifier", r"a\|b\,c\$d\\e"))) == {d}
    # :of-type system|code|value
    assert ids(api, q("Patient", ("identifier:of-type", f"{V2_0203}|NI|110101199003070011"))) == {a}
    assert ids(api, q("Patient", ("identifier:of-type", f"{V2_0203}|MR|110101199003070011"))) == {c}
    assert ids(api, q("Patient", ("identifier:of-type", f"{V2_0203}|MR|MRN-0002"))) == set()
    # :text on the identifier's type text
    assert ids(api, q("Patient", ("identifier:text", "national"))) == {a}
    # :not includes resources without any identifier
    e = mk(api, patient(gender="male"))
    assert ids(api, q("Patient", ("identifier:not", f"{ID_SYS}|110101199003070011"))) == {b, c, d, e}


def test_token_code_boolean_not_text(api: Any) -> None:
    f1 = mk(api, patient(gender="female", active=True))
    f2 = mk(api, patient(gender="female", active=False))
    m = mk(api, patient(gender="male"))
    none = mk(api, patient(name=[{"family": "无"}]))
    assert ids(api, "Patient?gender=female") == {f1, f2}
    assert ids(api, "Patient?gender=female,male") == {f1, f2, m}
    assert ids(api, "Patient?gender:not=female") == {m, none}
    assert ids(api, "Patient?gender:not=female,male") == {none}  # :not of a list: none of them
    assert ids(api, "Patient?gender=http://hl7.org/fhir/administrative-gender|female") == set()  # code, no system
    assert ids(api, "Patient?gender=|female") == {f1, f2}
    assert ids(api, "Patient?active=true") == {f1}
    assert ids(api, "Patient?active=false") == {f2}
    assert ids(api, "Patient?active:not=true") == {f2, m, none}
    assert ids(api, "Patient?active:missing=true") == {m, none}

    hr = mk(api, obs("8867-4", code={"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"},
                                                  {"system": "urn:phip:local", "code": "HR"}], "text": "心率"}))
    bt = mk(api, obs("8310-5", code={"coding": [{"system": LOINC, "code": "8310-5", "display": "Body temperature"}]}))
    txt = mk(api, obs(code={"text": "血糖"}))
    assert ids(api, f"Observation?code={LOINC}|8867-4") == {hr}
    assert ids(api, "Observation?code=urn:phip:local|HR") == {hr}
    assert ids(api, "Observation?code=HR") == {hr}
    assert ids(api, f"Observation?code={LOINC}|HR") == set()  # system and code of one coding
    assert ids(api, f"Observation?code={LOINC}|") == {hr, bt}
    assert ids(api, f"Observation?code:not={LOINC}|8867-4") == {bt, txt}
    assert ids(api, "Observation?code:text=heart") == {hr}
    assert ids(api, "Observation?code:text=BODY%20TEMP") == {bt}
    assert ids(api, q("Observation", ("code:text", "心率"))) == {hr}
    assert ids(api, q("Observation", ("code:text", "血"))) == {txt}


def test_token_contactpoint(api: Any) -> None:
    a = mk(api, patient(telecom=[{"system": "phone", "value": "13800138000", "use": "mobile"},
                                 {"system": "email", "value": "zhang.wei@example.org"}]))
    b = mk(api, patient(telecom=[{"system": "email", "value": "13800138000"}]))  # odd, but a value
    c = mk(api, patient(telecom=[{"system": "phone", "value": "028-85501234"}]))
    assert ids(api, "Patient?telecom=13800138000") == {a, b}
    assert ids(api, "Patient?phone=13800138000") == {a}
    assert ids(api, "Patient?email=13800138000") == {b}
    assert ids(api, "Patient?email=zhang.wei@example.org") == {a}
    assert ids(api, "Patient?telecom=zhang.wei@example.org") == {a}
    assert ids(api, "Patient?phone=028-85501234,13800138000") == {a, c}
    assert ids(api, "Patient?phone=1380013800") == set()  # tokens are exact
    assert ids(api, "Patient?email:missing=true") == {c}


def test_meta_tag_security_profile_source(api: Any) -> None:
    profile = "http://example.org/fhir/StructureDefinition/cn-patient"
    conf = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
    a = mk(api, patient(meta={"tag": [{"system": TAG_SYS, "code": "t1"}], "profile": [profile],
                              "security": [{"system": conf, "code": "R"}], "source": "http://his.example.org/emr#a1"}))
    b = mk(api, patient(meta={"tag": [{"system": "urn:other", "code": "t1"}],
                              "profile": [profile + "-child"], "source": "http://his.example.org/lis#b"}))
    c = mk(api, patient(meta={"security": [{"system": conf, "code": "N"}]}))
    o = mk(api, obs(meta={"tag": [{"system": TAG_SYS, "code": "t1"}]}))
    assert ids(api, f"Patient?_tag={TAG_SYS}|t1") == {a}
    assert ids(api, "Patient?_tag=t1") == {a, b}
    assert ids(api, f"Patient?_tag:not={TAG_SYS}|t1") == {b, c}
    assert ids(api, f"Patient?_security={conf}|R") == {a}
    assert ids(api, f"Patient?_security={conf}|") == {a, c}
    assert ids(api, f"Patient?_profile={profile}") == {a}  # uri: exact
    assert ids(api, f"Patient?_profile:below={profile}") == {a, b}
    assert ids(api, "Patient?_profile:missing=true") == {c}
    assert ids(api, "Patient?_source=http://his.example.org/emr%23a1") == {a}
    assert ids(api, "Patient?_source:below=http://his.example.org/") == {a, b}
    assert ids(api, f"Observation?_tag={TAG_SYS}|t1") == {o}
    # system level, with and without _type
    assert ids(api, f"?_tag={TAG_SYS}|t1") == {a, o}
    assert ids(api, f"?_type=Observation&_tag={TAG_SYS}|t1") == {o}
    assert ids(api, f"?_tag={TAG_SYS}|t1&_type=Patient") == {a}


# -- date ------------------------------------------------------------------------------------------
def test_date_prefixes_partial_precision(api: Any) -> None:
    day = mk(api, patient(birthDate="1990-03-07"))
    month = mk(api, patient(birthDate="1990-03"))
    year = mk(api, patient(birthDate="1990"))
    later = mk(api, patient(birthDate="1991-01-01"))
    early = mk(api, patient(birthDate="1970-01-01"))
    mk(api, patient(gender="male"))  # no birthDate: matched by no comparison

    def bd(v: str) -> set[str]:
        return ids(api, f"Patient?birthdate={v}")

    assert bd("1990") == {day, month, year}
    assert bd("eq1990-03") == {day, month}
    assert bd("1990-03-07") == {day}
    assert bd("ne1990-03-07") == {month, year, later, early}
    assert bd("gt1990-03-07") == {month, year, later}  # their range reaches past the day
    assert bd("lt1990-03-07") == {month, year, early}
    assert bd("ge1990-03-07") == {day, month, year, later}
    assert bd("le1990-03-07") == {day, month, year, early}
    assert bd("sa1990-03-07") == {later}
    assert bd("eb1990-03-07") == {early}
    assert bd("eb1991") == {day, month, year, early}
    assert bd("sa1990") == {later}
    assert bd("gt1990") == {later}
    assert bd("lt1990") == {early}
    assert bd("ap1990-03-07") == {day, month, year, later}  # ±10% of the distance to now
    assert bd("1990-03-07,1991-01-01") == {day, later}
    assert ids(api, "Patient?birthdate=ge1990&birthdate=lt1991") == {day, month, year}
    # each prefix alone: 1990 reaches past both ends of March
    assert ids(api, "Patient?birthdate=ge1990-03-01T00:00:00Z&birthdate=le1990-03-31T23:59:59Z") == {day, month, year}


def test_datetime_period_instant_timezones(api: Any) -> None:
    o1 = mk(api, obs(effectiveDateTime="2021-06-01T08:30:00+08:00"))  # 00:30Z
    o2 = mk(api, obs(effectiveDateTime="2021-06-01T23:30:00Z"))
    o3 = mk(api, obs(effectiveDateTime="2021-06-01"))
    o4 = mk(api, obs(effectivePeriod={"start": "2021-05-30", "end": "2021-06-02"}))
    o5 = mk(api, obs(effectivePeriod={"start": "2021-06-01T10:00:00Z"}))  # open end
    o6 = mk(api, obs(effectivePeriod={"end": "2021-05-01"}))  # open start
    o7 = mk(api, obs(effectiveInstant="2021-06-01T00:00:00.500Z"))
    mk(api, obs())  # no date

    def d(v: str) -> set[str]:
        return ids(api, q("Observation", ("date", v)))

    assert d("2021-06-01") == {o1, o2, o3, o7}
    assert d("2021") == {o1, o2, o3, o4, o7}
    assert d("ne2021") == {o5, o6}
    assert d("2021-06-01T08:30:00+08:00") == {o1}
    assert d("2021-06-01T00:30:00Z") == {o1}
    assert d("2021-06-01T08:30+08:00") == {o1}  # minute precision
    assert d("2021-06-01T00:00:00Z") == {o7}  # second precision contains the instant
    assert d("2021-06-01T00:00:00.500Z") == {o7}
    assert d("ge2021-06-01T12:00:00Z") == {o2, o3, o4, o5}
    assert d("ge2021-06-01T09:00:00+08:00") == {o2, o3, o4, o5}
    assert d("lt2021-06-01T00:00:00Z") == {o4, o6}
    assert d("gt2021-06-01") == {o4, o5}
    assert d("sa2021-05-31") == {o1, o2, o3, o5, o7}
    assert d("eb2021-06-01") == {o6}
    assert d("le2021-05") == {o6}
    assert d("eb2021-05-31T00:00:00Z") == {o6}
    assert d("sa2021-06-01T12:00:00+08:00") == {o2, o5}  # starting after 04:00:00Z
    # an unencoded '+' arrives as a space: read it as the timezone sign
    assert ids(api, "Observation?date=ge2021-06-01T09:00:00+08:00") == {o2, o3, o4, o5}


def test_last_updated(api: Any) -> None:
    made = [api.create(patient(gender="male")) for _ in range(3)]
    lus = [m["meta"]["lastUpdated"] for m in made]
    pids = [m["id"] for m in made]
    assert lus == sorted(lus) and len(set(lus)) == 3
    assert ids(api, q("Patient", ("_lastUpdated", f"gt{lus[0]}"))) == set(pids[1:])
    assert ids(api, q("Patient", ("_lastUpdated", f"ge{lus[1]}"))) == set(pids[1:])
    assert ids(api, q("Patient", ("_lastUpdated", f"lt{lus[1]}"))) == {pids[0]}
    assert ids(api, q("Patient", ("_lastUpdated", lus[1]))) == {pids[1]}
    assert ids(api, q("Patient", ("_lastUpdated", f"ne{lus[1]}"))) == {pids[0], pids[2]}
    year = lus[0][:4]
    assert ids(api, f"Patient?_lastUpdated={year}") == set(pids)
    assert ids(api, f"Patient?_lastUpdated=lt{year}") == set()
    assert ids(api, q("Patient", ("_lastUpdated", f"ge{lus[0]}"), ("_lastUpdated", f"le{lus[1]}"))) == set(pids[:2])
    # system level (Persons and Tasks that capabilities write alongside are other types)
    assert ids(api, q("", ("_type", "Patient"), ("_lastUpdated", f"gt{lus[1]}"))) == {pids[2]}


# -- number, quantity, composite ------------------------------------------------------------------
def test_quantity_implicit_precision_prefixes_units(api: Any) -> None:
    q1 = mk(api, obs(valueQuantity=qty(5.4)))
    q2 = mk(api, obs(valueQuantity=qty(5.40)))
    q3 = mk(api, obs(valueQuantity=qty(5.35)))
    q4 = mk(api, obs(valueQuantity=qty(5.46)))
    q5 = mk(api, obs(valueQuantity=qty(5.449)))
    q6 = mk(api, obs(valueQuantity=qty(100, "mm[Hg]", unit="mmHg")))
    q7 = mk(api, obs(valueQuantity=qty(5.4, None, None, unit="mg")))  # unit text only
    mk(api, obs(valueString="阴性"))

    def vq(v: str) -> set[str]:
        return ids(api, q("Observation", ("value-quantity", v)))

    assert vq("5.4") == {q1, q2, q3, q5, q7}  # [5.35, 5.45)
    assert vq("5.40") == {q1, q2, q7}  # [5.395, 5.405)
    assert vq("5.46") == {q4}
    assert vq("5") == {q1, q2, q3, q4, q5, q7}  # [4.5, 5.5)
    assert vq(f"5.4|{UCUM}|mg") == {q1, q2, q3, q5}
    assert vq("5.4||mg") == {q1, q2, q3, q5, q7}  # code or unit
    assert vq(f"5.4|{UCUM}|g") == set()
    assert vq("gt5.4") == {q4, q5, q6}
    assert vq("lt5.4") == {q3}
    assert vq("ge5.4") == {q1, q2, q4, q5, q6, q7}
    assert vq("le5.35") == {q3}
    assert vq("ne5.4") == {q4, q6}
    assert vq("sa5.45") == {q4, q6}
    assert vq("eb5.4") == {q3}
    assert vq("ap100") == {q6}
    assert vq(f"100|{UCUM}|mm[Hg]") == {q6}
    assert vq("100||mmHg") == {q6}
    assert vq(f"gt50|{UCUM}|mm[Hg]") == {q6}
    assert vq("5.40,100") == {q1, q2, q6, q7}
    assert ids(api, "Observation?value-quantity=gt5.36&value-quantity=lt5.45") == {q1, q2, q5, q7}


def test_quantity_range_and_age(api: Any) -> None:
    def yrs(v: float) -> dict[str, Any]:
        return qty(v, "a", unit="岁")

    age = mk(api, {"resourceType": "Condition", "subject": {"reference": "Patient/x"}, "onsetAge": yrs(25)})
    rng = mk(api, {"resourceType": "Condition", "subject": {"reference": "Patient/x"},
                   "onsetRange": {"low": yrs(20), "high": yrs(30)}})
    open_hi = mk(api, {"resourceType": "Condition", "subject": {"reference": "Patient/x"},
                       "onsetRange": {"low": yrs(60)}})

    def oa(v: str) -> set[str]:
        return ids(api, q("Condition", ("onset-age", v)))

    assert oa("25") == {age}
    assert oa(f"25|{UCUM}|a") == {age}
    assert oa("25||min") == set()
    assert oa("gt28") == {rng, open_hi}
    assert oa("lt22") == {rng}
    assert oa("ge70") == {open_hi}
    assert oa("le25") == {age, rng}
    assert oa("ne25") == {rng, open_hi}


def test_number_probability(api: Any) -> None:
    def ra(*p: float) -> dict[str, Any]:
        return {"resourceType": "RiskAssessment", "status": "final", "subject": {"reference": "Patient/x"},
                "prediction": [{"probabilityDecimal": v} for v in p]}

    r1 = mk(api, ra(0.25))
    r2 = mk(api, ra(0.3))
    r3 = mk(api, ra(0.35))
    r4 = mk(api, ra(0.05, 0.9))
    r5 = mk(api, {"resourceType": "RiskAssessment", "status": "final", "subject": {"reference": "Patient/x"}})

    def p(v: str) -> set[str]:
        return ids(api, f"RiskAssessment?probability={v}")

    assert p("0.3") == {r1, r2}  # [0.25, 0.35)
    assert p("0.30") == {r2}
    assert p("0.35") == {r3}
    assert p("gt0.3") == {r3, r4}
    assert p("ge0.3") == {r2, r3, r4}
    assert p("lt0.3") == {r1, r4}
    assert p("le0.25") == {r1, r4}
    assert p("ne0.30") == {r1, r3, r4}
    assert p("0.9") == {r4}
    assert p("ap0.3") == {r2}  # ±10%
    assert p("1") == {r4}  # [0.5, 1.5)
    # AND over repeats: each may be met by another prediction of the same resource
    assert ids(api, "RiskAssessment?probability=gt0.1&probability=lt0.5") == {r1, r2, r3, r4}
    assert ids(api, "RiskAssessment?probability:missing=true") == {r5}


def test_composite_code_value_quantity(api: Any) -> None:
    sys_ = mk(api, obs("8480-6", valueQuantity=qty(120, "mm[Hg]")))
    hr = mk(api, obs("8867-4", valueQuantity=qty(72, "/min")))
    panel = mk(api, obs("85354-9", component=[
        {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]}, "valueQuantity": qty(130, "mm[Hg]")},
        {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]}, "valueQuantity": qty(85, "mm[Hg]")},
    ]))

    def cvq(param: str, v: str) -> set[str]:
        return ids(api, q("Observation", (param, v)))

    assert cvq("code-value-quantity", f"{LOINC}|8480-6$120") == {sys_}
    assert cvq("code-value-quantity", f"{LOINC}|8480-6$gt100") == {sys_}
    assert cvq("code-value-quantity", f"{LOINC}|8480-6$72") == set()  # value of another observation
    assert cvq("code-value-quantity", f"8867-4$lt100|{UCUM}|/min") == {hr}
    assert cvq("code-value-quantity", f"{LOINC}|8480-6$120,{LOINC}|8867-4$72") == {sys_, hr}
    assert cvq("code-value-quantity", f"{LOINC}|8480-6$130") == set()  # panel has no value of its own
    # both components must come from the same component
    assert cvq("combo-code-value-quantity", f"{LOINC}|8480-6$130") == {panel}
    assert cvq("combo-code-value-quantity", f"{LOINC}|8480-6$85") == set()
    assert cvq("combo-code-value-quantity", f"{LOINC}|8462-4$85") == {panel}
    assert cvq("combo-code-value-quantity", f"{LOINC}|8480-6$ge120") == {sys_, panel}
    assert cvq("component-code-value-quantity", f"{LOINC}|8480-6$gt100") == {panel}
    assert cvq("component-code-value-quantity", f"{LOINC}|8462-4$120") == set()
    assert ids(api, "Observation?code-value-quantity:missing=true") == {panel}
    assert ids(api, "Observation?component-code-value-quantity:missing=false") == {panel}


def test_composite_group_characteristic_value(api: Any) -> None:
    def group(*chars: tuple[str, str]) -> dict[str, Any]:
        return {"resourceType": "Group", "type": "person", "actual": True, "characteristic": [
            {"code": {"coding": [{"system": "urn:phip:char", "code": c}]},
             "valueCodeableConcept": {"coding": [{"system": "urn:phip:val", "code": v}]}, "exclude": False}
            for c, v in chars]}

    g1 = mk(api, group(("gender", "female"), ("age-group", "adult")))
    g2 = mk(api, group(("gender", "male"), ("age-group", "female")))  # crossing values
    assert ids(api, "Group?characteristic-value=gender$female") == {g1}
    assert ids(api, "Group?characteristic-value=urn:phip:char|gender$urn:phip:val|male") == {g2}
    assert ids(api, "Group?characteristic-value=age-group$female") == {g2}
    assert ids(api, "Group?characteristic-value=gender$adult") == set()
    assert ids(api, "Group?characteristic-value=gender$female,gender$male") == {g1, g2}
    assert ids(api, "Group?characteristic-value=gender$female&characteristic-value=age-group$adult") == {g1}
    assert ids(api, "Group?value=female") == {g1, g2}


# -- reference -------------------------------------------------------------------------------------
def _ref_world(api: Any) -> dict[str, str]:
    w: dict[str, str] = {}
    w["org"] = mk(api, {"resourceType": "Organization", "name": "武侯区卫生院"})
    w["dr"] = mk(api, {"resourceType": "Practitioner", "name": [{"family": "李", "given": ["娜"]}]})
    w["pa"] = mk(api, patient(name=[{"family": "张", "given": ["伟"]}],
                              identifier=[{"system": ID_SYS, "value": "510104199001010011"}],
                              managingOrganization={"reference": f"Organization/{w['org']}"},
                              generalPractitioner=[{"reference": f"Practitioner/{w['dr']}"}]))
    w["pb"] = mk(api, patient(name=[{"family": "Smith", "given": ["Anna"]}]))
    w["g"] = mk(api, {"resourceType": "Group", "type": "person", "actual": True})
    w["oa"] = mk(api, obs("8867-4", subject={"reference": f"Patient/{w['pa']}"}))
    w["ob"] = mk(api, obs("8310-5", subject={"reference": f"Patient/{w['pb']}"},
                          performer=[{"reference": f"Practitioner/{w['dr']}"}]))
    # an absolute reference to another server, whose last segments happen to be pa's type and id
    w["oc"] = mk(api, obs("2339-0", subject={"reference": f"{EXT_BASE}/Patient/{w['pa']}"}))
    w["od"] = mk(api, obs("8867-4", subject={"reference": f"Group/{w['g']}"}))
    w["oe"] = mk(api, obs("8867-4", subject={"identifier": {"system": ID_SYS, "value": "510104199001010011"}}))
    w["of"] = mk(api, obs("8867-4"))  # no subject
    return w


def test_reference_forms(api: Any) -> None:
    w = _ref_world(api)
    pa = w["pa"]
    assert ids(api, f"Observation?subject=Patient/{pa}") == {w["oa"]}
    assert ids(api, f"Observation?subject={pa}") == {w["oa"]}
    assert ids(api, f"Observation?subject:Patient={pa}") == {w["oa"]}
    assert ids(api, f"Observation?subject:Group={pa}") == set()
    assert ids(api, f"Observation?subject:Group={w['g']}") == {w["od"]}
    assert ids(api, f"Observation?subject=Group/{w['g']},Patient/{w['pb']}") == {w["od"], w["ob"]}
    assert ids(api, f"Observation?subject={EXT_BASE}/Patient/{pa}") == {w["oc"]}
    assert ids(api, f"Observation?patient=Patient/{pa}") == {w["oa"]}
    assert ids(api, f"Observation?patient={pa}") == {w["oa"]}
    assert ids(api, f"Observation?performer=Practitioner/{w['dr']}") == {w["ob"]}
    assert ids(api, f"Observation?subject:identifier={ID_SYS}|510104199001010011") == {w["oe"]}
    assert ids(api, "Observation?subject:identifier=510104199001010011") == {w["oe"]}
    assert ids(api, "Observation?subject:missing=true") == {w["of"]}  # oe has a subject (identifier only)
    assert ids(api, f"Observation?subject=Patient/{pa}/_history/1") == {w["oa"]}
    assert ids(api, f"Patient?organization=Organization/{w['org']}") == {pa}
    assert ids(api, f"Patient?general-practitioner={w['dr']}") == {pa}


def test_reference_absolute_url_of_this_server(api: Any) -> None:
    w = _ref_world(api)
    local = mk(api, obs("8867-4", subject={"reference": f"http://testserver/fhir/Patient/{w['pa']}"}))
    assert ids(api, f"Observation?subject=http://testserver/fhir/Patient/{w['pa']}") == {w["oa"], local}
    assert ids(api, f"Observation?subject=Patient/{w['pa']}") == {w["oa"], local}


def test_reference_chains(api: Any) -> None:
    w = _ref_world(api)
    assert ids(api, q("Observation", ("subject:Patient.name", "张"))) == {w["oa"]}  # not oc (external)
    assert ids(api, q("Observation", ("subject:Patient.name", "anna"))) == {w["ob"]}
    assert ids(api, q("Observation", ("patient.name", "张"))) == {w["oa"]}  # patient targets Patient here
    assert ids(api, q("Observation", ("patient.identifier", f"{ID_SYS}|510104199001010011"))) == {w["oa"]}
    assert ids(api, q("Observation", ("performer:Practitioner.family", "李"))) == {w["ob"]}
    assert ids(api, q("Patient", ("organization.name", "武侯"))) == {w["pa"]}  # single-target param
    assert ids(api, q("Patient", ("organization.name", "卫生院"))) == set()
    assert ids(api, q("Patient", ("general-practitioner:Practitioner.name", "李"))) == {w["pa"]}
    assert ids(api, q("Observation", ("subject:Patient.name", "张"), ("code", f"{LOINC}|8310-5"))) == set()
    assert ids(api, q("Observation", ("subject:Patient.name", "张,anna"))) == {w["oa"], w["ob"]}
    # a deleted target no longer matches
    api.delete(f"/fhir/Patient/{w['pb']}", expect=204)
    assert ids(api, q("Observation", ("subject:Patient.name", "anna"))) == set()


def test_reverse_chain_has(api: Any) -> None:
    w = _ref_world(api)
    assert ids(api, f"Patient?_has:Observation:patient:code={LOINC}|8867-4") == {w["pa"]}
    assert ids(api, f"Patient?_has:Observation:subject:code={LOINC}|8310-5") == {w["pb"]}
    assert ids(api, f"Patient?_has:Observation:subject:code={LOINC}|2339-0") == set()  # oc is external
    assert ids(api, f"Group?_has:Observation:subject:code={LOINC}|8867-4") == {w["g"]}
    assert ids(api, f"Practitioner?_has:Observation:performer:code={LOINC}|8310-5") == {w["dr"]}
    assert ids(api, f"Patient?_has:Observation:subject:code={LOINC}|8867-4,{LOINC}|8310-5") == {w["pa"], w["pb"]}
    assert ids(api, f"Patient?_has:Observation:subject:code={LOINC}|8310-5&name=smith") == {w["pb"]}
    assert ids(api, f"Patient?_has:Observation:subject:code={LOINC}|8310-5&name=张") == set()
    api.delete(f"/fhir/Observation/{w['ob']}", expect=204)
    assert ids(api, f"Patient?_has:Observation:subject:code={LOINC}|8310-5") == set()


def test_canonical_and_uri(api: Any) -> None:
    lib = "http://example.org/fhir/Library/lib-a"

    def plan(**kw: Any) -> dict[str, Any]:
        return {"resourceType": "PlanDefinition", "status": "active", **kw}

    pd1 = mk(api, plan(relatedArtifact=[{"type": "depends-on", "resource": f"{lib}|1.0"}]))
    pd2 = mk(api, plan(library=[lib]))
    pd3 = mk(api, plan(library=["http://example.org/fhir/Library/lib-b|2.0"]))
    assert ids(api, f"PlanDefinition?depends-on={lib}") == {pd1, pd2}
    assert ids(api, f"PlanDefinition?depends-on={lib}|1.0") == {pd1}
    assert ids(api, f"PlanDefinition?depends-on={lib}|2.0") == set()
    assert ids(api, "PlanDefinition?depends-on=http://example.org/fhir/Library/lib-b|2.0") == {pd3}

    qbase = "http://example.org/fhir/Questionnaire"

    def quest(url: str, version: str) -> dict[str, Any]:
        return {"resourceType": "Questionnaire", "status": "active", "url": url, "version": version}

    q1 = mk(api, quest(f"{qbase}/phq-9", "1.0"))
    q2 = mk(api, quest(f"{qbase}/phq-9", "2.0"))
    q3 = mk(api, quest(f"{qbase}/gad-7", "1.0"))
    q4 = mk(api, quest("urn:uuid:5b1f5a7e-52b0-4d7e-9f1e-0d3c4b9a1c11", "1.0"))
    assert ids(api, f"Questionnaire?url={qbase}/phq-9") == {q1, q2}
    assert ids(api, f"Questionnaire?url={qbase}/phq-9|2.0") == {q2}
    assert ids(api, f"Questionnaire?url={qbase}/phq-9|3.0") == set()
    assert ids(api, f"Questionnaire?url={qbase}/phq") == set()  # uri: exact, not starts-with
    assert ids(api, f"Questionnaire?url={qbase.upper()}/phq-9") == set()
    assert ids(api, f"Questionnaire?url:below={qbase}/") == {q1, q2, q3}
    assert ids(api, f"Questionnaire?url:below={qbase}") == {q1, q2, q3}
    assert ids(api, f"Questionnaire?url:above={qbase}/phq-9/_history/2") == {q1, q2}
    assert ids(api, f"Questionnaire?url:above={qbase}/gad-7/extra") == {q3}
    assert ids(api, "Questionnaire?url=urn:uuid:5b1f5a7e-52b0-4d7e-9f1e-0d3c4b9a1c11") == {q4}
    assert ids(api, "Questionnaire?version=1.0") == {q1, q3, q4}
    assert ids(api, f"Questionnaire?url={qbase}/phq-9,{qbase}/gad-7|1.0") == {q1, q2, q3}


# -- :missing, _id, _text, _content, _type ---------------------------------------------------------
def test_missing_on_several_types(api: Any) -> None:
    full = mk(api, patient(name=[{"family": "周"}], birthDate="2000-01-01", gender="female",
                           address=[{"city": "绵阳市"}], managingOrganization={"reference": "Organization/o1"}))
    empty = mk(api, patient(active=True))
    assert ids(api, "Patient?name:missing=true") == {empty}
    assert ids(api, "Patient?name:missing=false") == {full}
    assert ids(api, "Patient?birthdate:missing=true") == {empty}
    assert ids(api, "Patient?gender:missing=false") == {full}
    assert ids(api, "Patient?organization:missing=true") == {empty}
    assert ids(api, "Patient?address-city:missing=false") == {full}
    assert ids(api, "Patient?active:missing=false") == {empty}
    assert ids(api, "Patient?birthdate:missing=true&gender:missing=true") == {empty}
    withq = mk(api, obs(valueQuantity=qty(1)))
    without = mk(api, obs(valueString="阳性"))
    assert ids(api, "Observation?value-quantity:missing=true") == {without}
    assert ids(api, "Observation?value-quantity:missing=false") == {withq}
    assert ids(api, "Observation?value-string:missing=false") == {without}


def test_id_text_content_and_system_type(api: Any) -> None:
    div = '<div xmlns="http://www.w3.org/1999/xhtml">患者王芳，2型糖尿病随访 (Diabetes follow-up)</div>'
    a = mk(api, patient(text={"status": "generated", "div": div}, name=[{"family": "王", "given": ["芳"]}]))
    b = mk(api, patient(name=[{"family": "Diabetes", "given": ["Dora"]}]))
    c = mk(api, patient(name=[{"family": "Rossi"}]))
    o = mk(api, obs(subject={"reference": f"Patient/{a}"}, valueString="糖尿病"))
    assert ids(api, f"Patient?_id={a}") == {a}
    assert ids(api, f"Patient?_id={a},{c}") == {a, c}
    assert ids(api, f"Patient?_id={a}&_id={c}") == set()
    assert ids(api, "Patient?_id=nope") == set()
    assert ids(api, f"Patient?_id={o}") == set()
    assert ids(api, q("Patient", ("_text", "糖尿病"))) == {a}
    assert ids(api, q("Patient", ("_text", "DIABETES"))) == {a}  # narrative only, case-insensitive
    assert ids(api, q("Patient", ("_content", "diabetes"))) == {a, b}
    assert ids(api, q("Patient", ("_content", "rossi"))) == {c}
    assert ids(api, q("Patient", ("_content", "resourceType"))) == set()  # element names are not content
    assert ids(api, q("Patient", ("_content", "family"))) == set()
    assert ids(api, q("Observation", ("_content", "糖尿病"))) == {o}
    assert ids(api, q("Patient", ("_text", "100%"))) == set()
    # system level
    assert ids(api, f"?_type=Patient,Observation&_id={a},{o}") == {a, o}
    assert ids(api, f"?_type=Patient&_id={a},{o}") == {a}
    assert ids(api, f"?_id={o},{c}") == {o, c}
    assert ids(api, q("", ("_type", "Patient"), ("name", "rossi"))) == {c}
    assert ids(api, q("", ("name", "rossi"), ("_type", "Patient"))) == {c}  # _type may come last
    assert ids(api, q("", ("_content", "糖尿病"))) == {a, o}
    bundle = api.get(url(f"?_type=Patient,Observation&_id={a},{o}"), expect=200).json()
    assert {e["resource"]["resourceType"] for e in bundle["entry"]} == {"Patient", "Observation"}


def test_or_and_escaped_comma(api: Any) -> None:
    both = mk(api, patient(name=[{"family": "Li,Na"}]))
    li = mk(api, patient(name=[{"family": "Li"}]))
    na = mk(api, patient(name=[{"family": "Na"}]))
    two = mk(api, patient(name=[{"family": "Li"}, {"family": "Na", "given": ["Wen"]}]))
    assert ids(api, q("Patient", ("family", "Li\\,Na"))) == {both}
    assert ids(api, q("Patient", ("family", "Li,Na"))) == {both, li, na, two}
    assert ids(api, q("Patient", ("family:exact", "Li\\,Na"))) == {both}
    assert ids(api, q("Patient", ("family:exact", "Li,Na"))) == {li, na, two}
    assert ids(api, q("Patient", ("family", "li"), ("family", "na"))) == {two}  # AND across repeats
    assert ids(api, q("Patient", ("family", "li"), ("given", "wen"))) == {two}
    assert ids(api, q("Patient", ("family", "li\\,"), ("family", "na"))) == set()
    assert ids(api, q("Patient", ("family", "zzz,li\\,na"))) == {both}
    assert ids(api, q("Patient", ("family", "li,"))) == {both, li, two}  # an empty alternative is no wildcard
    assert ids(api, q("Patient", ("family", ",zzz"))) == set()


def test_location_near(api: Any) -> None:
    """``near`` (the R4 special parameter): Locations within a distance of a point."""

    def loc(name: str, lat: float, lon: float) -> str:
        return api.create({"resourceType": "Location", "name": name,
                           "position": {"latitude": lat, "longitude": lon}})["id"]  # type: ignore[no-any-return]

    centre = loc("中心", 30.6598, 104.0633)
    near = loc("两公里", 30.6778, 104.0633)  # 0.018° north: about 2.0 km
    far = loc("二十公里", 30.8398, 104.0633)  # about 20 km
    api.create({"resourceType": "Location", "name": "无坐标"})
    assert set(api.ids("Location?near=30.6598|104.0633|1|km")) == {centre}
    assert set(api.ids("Location?near=30.6598|104.0633|2.5|km")) == {centre, near}
    assert set(api.ids("Location?near=30.6598|104.0633|25000|m")) == {centre, near, far}
    assert set(api.ids("Location?near=30.6598|104.0633")) == {centre}  # default 1 km
    api.search("Location?near=abc|1", expect=400)
    api.search("Location?near=30|104|1|parsec", expect=400)
