"""Token search with the terminology service: ``:below``, ``:above``, ``:in`` and ``:not-in``
(https://hl7.org/fhir/R4/search.html#token), on both backends."""

from __future__ import annotations

from typing import Any

from tests.terminology.conftest import ICD10_CN

BARE_OID = ICD10_CN.removeprefix("urn:oid:")  # the NamingSystem's other name for the same code system


def _condition(api: Any, code: str, system: str = ICD10_CN) -> str:
    patient = api.create({"resourceType": "Patient", "name": [{"text": "测试乙"}]})["id"]
    return str(api.create({
        "resourceType": "Condition",
        "subject": {"reference": f"Patient/{patient}"},
        "code": {"coding": [{"system": system, "code": code}]},
    })["id"])


def test_below_and_above_follow_the_code_system_hierarchy(api: Any) -> None:
    cholera = _condition(api, "A00.1")
    cholera_unspecified = _condition(api, "A00", system=BARE_OID)  # same system under its other name
    typhoid = _condition(api, "A01.0")
    chickenpox = _condition(api, "B01.9")
    assert sorted(api.ids(f"Condition?code:below={ICD10_CN}|A00")) == sorted([cholera, cholera_unspecified])
    # a block and a chapter of ICD-10 (intestinal infectious diseases A00-A09; chapter I A00-B99)
    assert sorted(api.ids(f"Condition?code:below={ICD10_CN}|A00-A09")) == sorted(
        [cholera, cholera_unspecified, typhoid])
    assert sorted(api.ids(f"Condition?code:below={ICD10_CN}|I&_count=100")) == sorted(
        [cholera, cholera_unspecified, typhoid, chickenpox])
    # :above: the code and everything that subsumes it
    assert api.ids(f"Condition?code:above={ICD10_CN}|A00.9") == [cholera_unspecified]
    assert sorted(api.ids(f"Condition?code:above={BARE_OID}|A00.1")) == sorted([cholera, cholera_unspecified])
    # combined with another criterion, and with :missing-free plain token search unchanged
    assert api.ids(f"Condition?code:below={ICD10_CN}|A00&code={ICD10_CN}|A00.1") == [cholera]


def test_in_and_not_in_a_value_set_stored_on_the_node(api: Any) -> None:
    cholera = _condition(api, "A00.1")
    measles = _condition(api, "B05.9")
    chickenpox = _condition(api, "B01.9")
    patient = api.create({"resourceType": "Patient", "name": [{"text": "测试丙"}]})["id"]
    uncoded = api.create({"resourceType": "Condition", "subject": {"reference": f"Patient/{patient}"},
                          "code": {"text": "未编码"}})["id"]
    api.create({
        "resourceType": "ValueSet", "url": "urn:test:vs:watched", "version": "1", "status": "active",
        "compose": {"include": [
            {"system": ICD10_CN, "filter": [{"property": "concept", "op": "is-a", "value": "A00"}]},
            {"system": ICD10_CN, "concept": [{"code": "B05.9"}]},
        ]},
    })
    assert sorted(api.ids("Condition?code:in=urn:test:vs:watched")) == sorted([cholera, measles])
    assert sorted(api.ids("Condition?code:in=urn:test:vs:watched|1")) == sorted([cholera, measles])
    assert sorted(api.ids("Condition?code:not-in=urn:test:vs:watched")) == sorted([chickenpox, uncoded])
    # several value sets are ORed; an empty value set matches nothing
    api.create({"resourceType": "ValueSet", "url": "urn:test:vs:empty", "status": "active",
                "compose": {"include": [{"system": ICD10_CN, "concept": [{"code": "Z99.9"}]}]}})
    assert api.ids("Condition?code:in=urn:test:vs:empty") == []


def test_bad_code_set_searches_are_400_naming_the_parameter(api: Any) -> None:
    _condition(api, "A00.1")
    for query, words in [
        ("Condition?code:in=urn:test:vs:nothing", "not known"),
        (f"Condition?code:below={ICD10_CN}|NOT-A-CODE", "not a code"),
        ("Condition?code:below=A00", "system|code"),
        ("Condition?code:above=urn:example:unknown|X", "not a code"),
    ]:
        oo = api.get(f"/fhir/{query}", expect=400).json()
        assert oo["resourceType"] == "OperationOutcome"
        assert words in oo["issue"][0]["diagnostics"], (query, oo)
        assert oo["issue"][0]["expression"][0].startswith("code:"), oo


def test_without_the_terminology_service_the_modifiers_are_refused_or_ignored_when_lenient() -> None:
    import pytest

    from phip.fhir.errors import FhirError
    from phip.fhir.search.query import Parser

    with pytest.raises(FhirError) as e:
        Parser().parse("Condition", [("code:in", "urn:test:vs:watched")])
    assert e.value.status == 400 and "needs the terminology service" in str(e.value.outcome())
    req = Parser(lenient=True).parse("Condition", [("code:below", f"{ICD10_CN}|A00")])
    assert req.criteria == [] and "ignored" in req.warnings[0].diagnostics
