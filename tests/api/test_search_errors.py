"""Bad searches get a 400 OperationOutcome naming the parameter — never a 500 (both backends).

``Prefer: handling=lenient`` turns unknown parameters into warnings instead
(https://hl7.org/fhir/R4/search.html#errors).
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

LENIENT = {"Prefer": "handling=lenient"}


def bad(api: Any, query: str, expression: str | None = None) -> dict[str, Any]:
    url = "/fhir" + query if query.startswith("?") else "/fhir/" + query
    r = api.get(url)
    assert r.status_code == 400, f"{query} -> {r.status_code}: {r.text[:500]}"
    body: dict[str, Any] = r.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["severity"] in ("error", "fatal")
    if expression is not None:
        assert body["issue"][0].get("expression") == [expression], body
    return body


def matches(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def test_unknown_parameter_strict_and_lenient(api: Any) -> None:
    a = api.create({"resourceType": "Patient", "name": [{"family": "石"}], "gender": "male"})["id"]
    b = api.create({"resourceType": "Patient", "name": [{"family": "任"}]})["id"]
    body = bad(api, "Patient?foo=bar", "foo")
    assert body["issue"][0]["code"] == "not-supported"
    bad(api, "Patient?family=石&foo:exact=bar", "foo:exact")
    bad(api, "Observation?name=x", "name")  # a Patient parameter, not an Observation one
    bad(api, "Patient?_sort=foo", "_sort")
    bad(api, "Patient?_include=Patient:foo", "_include")
    bad(api, "Patient?_list=42", "_list")

    r = api.get("/fhir/Patient?foo=bar&gender=male", headers=LENIENT, expect=200).json()
    assert matches(r) == [a]
    outcome = [e["resource"] for e in r["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome and outcome[0]["issue"][0]["severity"] == "warning"
    assert outcome[0]["issue"][0]["expression"] == ["foo"]
    r = api.get("/fhir/Patient?foo=bar&_sort=nope", headers=LENIENT, expect=200).json()
    assert sorted(matches(r)) == sorted([a, b])
    # lenient does not excuse malformed values of known parameters
    assert api.get("/fhir/Patient?birthdate=soon", headers=LENIENT).status_code == 400


BAD_MODIFIERS_AND_CHAINS = [
    ("Patient?name:foo=x", "name:foo"),
    ("Patient?gender:exact=male", "gender:exact"),
    ("Patient?birthdate:exact=2020", "birthdate:exact"),
    ("Patient?organization:foo=1", "organization:foo"),
    ("Observation?subject:Organization=1", "subject:Organization"),  # not a target of subject
    ("Patient?_id:exact=1", "_id:exact"),
    ("Patient?active:missing=maybe", "active:missing"),
    ("Patient?family.name=x", "family.name"),  # chaining a string
    ("Observation?subject.name=x", "subject.name"),  # several target types: name one
    ("Observation?subject:missing.name=x", "subject:missing.name"),
    ("Patient?_type=Patient", "_type"),
]

MALFORMED = [
    "Patient?birthdate=2020-13-01",
    "Patient?birthdate=2020-02-30",
    "Patient?birthdate=soon",
    "Patient?birthdate=ge",
    "Patient?birthdate=gt20200101",
    "Patient?birthdate=2020-01-01T25:00:00Z",
    "Patient?_lastUpdated=yesterday",
    "RiskAssessment?probability=abc",
    "RiskAssessment?probability=gt",
    "RiskAssessment?probability=1.2.3",
    "RiskAssessment?probability=NaN",
    "RiskAssessment?probability=inf",
    "RiskAssessment?probability=1e999",
    "Observation?value-quantity=5.4|mg",
    "Observation?value-quantity=x||mg",
    "Observation?value-quantity=5|a|b|c",
    "Patient?identifier=a|b|c",
    "Patient?identifier:of-type=MR|123",
    "Observation?code-value-quantity=http://loinc.org|8480-6",
    "Observation?code-value-quantity=8480-6$abc",
    "Observation?subject=Foo/1",
    "Patient?_count=1001",
    "Patient?_count=-1",
    "Patient?_count=ten",
    "Patient?_summary=everything",
    "Patient?_total=some",
    "Patient?_include=patient",
    "Patient?_include=Nope:foo",
    "Patient?_has:Nope:subject:code=1",
    "Patient?_has:Observation:nope:code=1",
    "Patient?_has:Observation=1",
    "?_type=Nope",
    "?_type=Patient&birthdate=abc",
    "Patient?name=",
    "Patient?name=,",
]


def test_bad_modifiers_chains_and_malformed_values_are_400(api: Any) -> None:
    api.create({"resourceType": "Patient", "name": [{"family": "石"}], "birthDate": "2000-01-01"})
    for query, expression in BAD_MODIFIERS_AND_CHAINS:
        bad(api, query, expression)
    for query in MALFORMED:
        bad(api, query)


def test_bad_cursors_are_400(api: Any) -> None:
    for i in range(3):
        api.create({"resourceType": "Patient", "name": [{"family": f"F{i}"}], "birthDate": f"200{i}-01-01"})
    nxt = next(link["url"] for link in api.get("/fhir/Patient?_count=1&_sort=family", expect=200).json()["link"]
               if link["relation"] == "next")
    assert api.get(nxt.replace("http://testserver", ""), expect=200).json()["entry"]
    for c in ("!!!", "bm90IGpzb24", cursor([]), cursor({"a": 1}), cursor(["x"]), cursor([1, 2, 3]),
              cursor([[1], 2]), cursor([True])):
        bad(api, f"Patient?_cursor={c}", "_cursor")
    # a cursor of one sort used with another, or with values of the wrong kind
    for c in (cursor(["f1", 2]), cursor([None, 1]), cursor([1.5, 2])):
        bad(api, f"Patient?_sort=birthdate&_cursor={c}", "_cursor")
    bad(api, f"Patient?_sort=family&_cursor={cursor([5, 1])}", "_cursor")
    bad(api, f"Patient?_sort=family,birthdate&_cursor={cursor(['f', 'x', 1])}", "_cursor")
    bad(api, f"RiskAssessment?_sort=probability&_cursor={cursor(['x', 1])}", "_cursor")
    # a well-formed cursor of the right kinds pages on
    b = api.get(f"/fhir/Patient?_sort=family&_cursor={cursor(['f0', 10**6])}", expect=200).json()
    assert [e["resource"]["name"][0]["family"] for e in b["entry"]] == ["F1", "F2"]
    bad(api, f"_history?_cursor={cursor(['x', 1, 1])}", "_cursor")


def test_everything_bad_cursor_is_400(api: Any) -> None:
    pid = api.create({"resourceType": "Patient", "name": [{"family": "石"}]})["id"]
    r = api.get(f"/fhir/Patient/{pid}/$everything?_cursor={cursor(['x'])}")
    assert r.status_code == 400
