"""Tests of the FHIR R4 validator (``phip.fhir.validation``).

Hand-written synthetic resources (made-up people only) check each rule, with the
issue code and FHIRPath expression the rule must report; then every official R4
example must validate, except the few listed (with their reason) in
``expected_rejections.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from phip.fhir.definitions import types
from phip.fhir.validation import Issue, errors, is_valid, prepare, validate
from phip.fhir.validation.checks import check_coding
from phip.fhir.validation.primitives import compile_spec, primitives
from phip.fhir.validation.schema import PRIM, Slot
from tests.fhir.expected_rejections import EXPECTED_REJECTIONS

XHTML = "http://www.w3.org/1999/xhtml"


def patient(**extra: Any) -> dict[str, Any]:
    """A valid synthetic Patient (not a real person), plus ``extra`` properties."""
    res: dict[str, Any] = {
        "resourceType": "Patient",
        "id": "syn-1",
        "identifier": [{"system": "urn:oid:1.2.3.4", "value": "SYN-0001"}],
        "active": True,
        "name": [{"use": "official", "family": "Testperson", "given": ["Alex", "Q"]}],
        "telecom": [{"system": "phone", "value": "555-0100", "use": "home"}],
        "gender": "female",
        "birthDate": "1970-01-01",
        "address": [{"line": ["1 Example Street"], "city": "Sampletown", "postalCode": "99999"}],
        "managingOrganization": {"reference": "Organization/org-1"},
    }
    res.update(extra)
    return res


def observation(**extra: Any) -> dict[str, Any]:
    """A valid synthetic heart-rate Observation, plus ``extra`` properties."""
    res: dict[str, Any] = {
        "resourceType": "Observation",
        "id": "obs-1",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": "Patient/syn-1"},
        "effectiveDateTime": "2024-03-01T09:30:00+08:00",
        "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
    }
    res.update(extra)
    return res


def only(issues: list[Issue], code: str, expression: str) -> Issue:
    """Assert ``issues`` is exactly one error with ``code`` at ``expression``; return it."""
    assert len(issues) == 1, issues
    issue = issues[0]
    assert (issue.severity, issue.code, issue.expression) == ("error", code, expression), issue
    assert (issue.diagnostics and issue.diagnostics[0].isupper()) or issue.diagnostics[0] == "'", issue
    return issue


def at(issues: list[Issue], expression: str) -> list[Issue]:
    return [i for i in issues if i.expression == expression]


# --- valid resources -------------------------------------------------------------------


def test_valid_patient_and_observation() -> None:
    assert validate(patient()) == []
    assert validate(observation()) == []
    assert is_valid(patient())


def test_valid_patient_with_everything_optional() -> None:
    res = patient(
        meta={"versionId": "3", "lastUpdated": "2024-03-01T10:00:00.123+08:00", "profile": ["http://x.org/p"]},
        text={"status": "generated", "div": f'<div xmlns="{XHTML}"><p>Alex <b>Testperson</b></p></div>'},
        extension=[{"url": "http://example.org/fhir/ext/nickname", "valueString": "Al"}],
        deceasedBoolean=False,
        multipleBirthInteger=2,
        contact=[{"relationship": [{"text": "friend"}], "gender": "other"}],
        communication=[{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en"}]}}],
        photo=[{"contentType": "image/png", "data": "iVBORw0KGgo=", "size": 8}],
        link=[{"other": {"reference": "Patient/syn-2"}, "type": "seealso"}],
    )
    assert validate(res) == []


def test_issue_is_frozen_and_serialises() -> None:
    issue = validate(patient(gender="x"))[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        issue.code = "other"  # type: ignore[misc]
    assert issue.to_json() == {
        "severity": "error",
        "code": "code-invalid",
        "diagnostics": issue.diagnostics,
        "expression": ["Patient.gender"],
    }


# --- resourceType and id ---------------------------------------------------------------


def test_resource_type_missing_unknown_or_abstract() -> None:
    only(validate({"id": "x"}), "required", "Resource")
    issue = only(validate({"resourceType": "Pateint"}), "not-supported", "Resource")
    assert "Pateint" in issue.diagnostics
    only(validate({"resourceType": "DomainResource"}), "not-supported", "Resource")
    only(validate({"resourceType": 3}), "not-supported", "Resource")
    only(validate(["not", "an", "object"]), "structure", "Resource")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad_id", ["has space", "x" * 65, "a/b", "", "ünï"])
def test_bad_resource_id(bad_id: str) -> None:
    only(validate(patient(id=bad_id)), "value", "Patient.id")


def test_good_resource_ids() -> None:
    for good in ("a", "A-1.b", "x" * 64, "123"):
        assert validate(patient(id=good)) == [], good


def test_element_id_is_a_string_not_an_id() -> None:
    # Element.id is a string (spaces allowed), only Resource.id is an id.
    res = patient(name=[{"id": "name one", "family": "Testperson"}])
    assert validate(res) == []


# --- properties and cardinality --------------------------------------------------------


def test_unknown_property() -> None:
    issue = only(validate(patient(favouriteColour="blue")), "structure", "Patient.favouriteColour")
    assert "favouriteColour" in issue.diagnostics


def test_unknown_property_in_datatype_and_backbone() -> None:
    res = patient(name=[{"family": "Testperson", "middle": "Q"}], contact=[{"nickname": "Al"}])
    issues = validate(res)
    assert {i.expression for i in issues} == {"Patient.name[0].middle", "Patient.contact[0].nickname"}
    assert all(i.code == "structure" for i in issues)


def test_single_value_where_array_expected() -> None:
    issue = only(validate(patient(name={"family": "Testperson"})), "structure", "Patient.name")
    assert "array" in issue.diagnostics
    only(validate(patient(name=[{"family": "Testperson", "given": "Alex"}])), "structure", "Patient.name[0].given")


def test_array_where_single_value_expected() -> None:
    issue = only(validate(patient(gender=["female"])), "structure", "Patient.gender")
    assert "not be a JSON array" in issue.diagnostics
    only(validate(patient(birthDate=["1970-01-01"])), "structure", "Patient.birthDate")
    only(
        validate(patient(managingOrganization=[{"reference": "Organization/1"}])),
        "structure",
        "Patient.managingOrganization",
    )


def test_missing_required_observation_status_and_code() -> None:
    res = observation()
    del res["status"], res["code"]
    issues = validate(res)
    assert sorted((i.code, i.expression) for i in issues) == [
        ("required", "Observation.code"),
        ("required", "Observation.status"),
    ]


def test_required_in_backbone_and_datatype() -> None:
    only(validate(patient(link=[{"type": "seealso"}])), "required", "Patient.link[0].other")
    only(validate(patient(extension=[{"valueString": "x"}])), "required", "Patient.extension[0].url")


def test_required_primitive_satisfied_by_extension_only() -> None:
    # A mandatory primitive may be present as its "_status" extension alone (json.html#primitive).
    res = observation()
    del res["status"]
    res["_status"] = {
        "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]
    }
    assert validate(res) == []


# --- choice types ----------------------------------------------------------------------


def test_bad_choice_type() -> None:
    res = observation()
    res["valueFoo"] = res.pop("valueQuantity")
    issue = only(validate(res), "structure", "Observation.valueFoo")
    assert "valueQuantity" in issue.diagnostics and "value[x]" in issue.diagnostics


def test_choice_type_not_allowed_for_element() -> None:
    # deceased[x] is boolean | dateTime: a string is not one of them.
    only(validate(patient(deceasedString="yes")), "structure", "Patient.deceasedString")


def test_two_variants_of_one_choice() -> None:
    res = observation(valueString="72 bpm")
    issues = validate(res)
    assert len(issues) == 1 and issues[0].code == "structure"
    assert issues[0].expression in ("Observation.valueString", "Observation.valueQuantity")
    assert "only one type" in issues[0].diagnostics


def test_missing_required_choice() -> None:
    comm = {"resourceType": "Communication", "status": "completed", "payload": [{}]}
    only(validate(comm), "structure", "Communication.payload[0]")  # empty object
    comm["payload"] = [{"id": "p1"}]
    issue = only(validate(comm), "required", "Communication.payload[0].content")
    assert "content[x]" in issue.diagnostics
    comm["payload"] = [{"contentString": "hello"}]
    assert validate(comm) == []


def test_choice_expression_uses_concrete_name() -> None:
    res = observation(valueQuantity={"value": "72", "unit": "/min"})
    issue = only(validate(res), "value", "Observation.valueQuantity.value")
    assert "number" in issue.diagnostics


# --- primitive values ------------------------------------------------------------------


def test_bad_birth_date() -> None:
    issue = only(validate(patient(birthDate="1970-13-01")), "value", "Patient.birthDate")
    assert "1970-13-01" in issue.diagnostics and "date" in issue.diagnostics


@pytest.mark.parametrize("value", ["1970-02-30", "1971-02-29", "1970-04-31", "70-01-01", "1970-1-1", "1970-01-01T"])
def test_bad_dates(value: str) -> None:
    only(validate(patient(birthDate=value)), "value", "Patient.birthDate")


@pytest.mark.parametrize("value", ["1970", "1970-01", "1972-02-29", "2000-02-29", "1970-12-31"])
def test_good_dates(value: str) -> None:
    assert validate(patient(birthDate=value)) == []


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("2024-03-01T09:30:00+08:00", True),
        ("2024-03-01T09:30:00.123Z", True),
        ("2024-03-01", True),
        ("2024", True),
        ("2024-03-01T09:30:00", False),  # a time needs a time zone
        ("2024-03-01T25:00:00Z", False),
        ("2024-03-01 09:30:00Z", False),
    ],
)
def test_date_times(value: str, ok: bool) -> None:
    issues = validate(observation(effectiveDateTime=value))
    if ok:
        assert issues == []
    else:
        only(issues, "value", "Observation.effectiveDateTime")


def test_instant_needs_full_precision() -> None:
    assert validate(observation(issued="2024-03-01T09:30:00.000+08:00")) == []
    only(validate(observation(issued="2024-03-01")), "value", "Observation.issued")


def test_json_kinds_of_primitives() -> None:
    only(validate(patient(active="true")), "value", "Patient.active")
    only(validate(patient(active=1)), "value", "Patient.active")
    only(validate(patient(birthDate=19700101)), "value", "Patient.birthDate")
    only(validate(patient(gender=True)), "value", "Patient.gender")
    only(validate(patient(multipleBirthInteger=1.5)), "value", "Patient.multipleBirthInteger")
    only(validate(patient(multipleBirthInteger=True)), "value", "Patient.multipleBirthInteger")
    assert validate(observation(valueQuantity={"value": 72.5})) == []
    only(validate(observation(valueQuantity={"value": True})), "value", "Observation.valueQuantity.value")


def test_integer_ranges() -> None:
    only(validate(patient(multipleBirthInteger=2**31)), "value", "Patient.multipleBirthInteger")
    assert validate(patient(multipleBirthInteger=-(2**31))) == []
    only(validate(patient(photo=[{"size": -1}])), "value", "Patient.photo[0].size")  # unsignedInt
    assert validate(patient(photo=[{"size": 0}])) == []
    res = observation(component=[{"code": {"text": "x"}, "valueSampledData": _sampled(0)}])
    only(validate(res), "value", "Observation.component[0].valueSampledData.dimensions")  # positiveInt
    assert validate(observation(component=[{"code": {"text": "x"}, "valueSampledData": _sampled(1)}])) == []


def _sampled(dimensions: int) -> dict[str, Any]:
    return {"origin": {"value": 0}, "period": 10, "dimensions": dimensions, "data": "1 2 3"}


def test_string_forms() -> None:
    only(validate(patient(name=[{"family": ""}])), "value", "Patient.name[0].family")
    only(validate(patient(name=[{"family": "Test\x01person"}])), "value", "Patient.name[0].family")
    only(validate(patient(name=[{"family": "Test\ud800"}])), "value", "Patient.name[0].family")
    assert validate(patient(name=[{"text": "line one\nline two\ttabbed"}])) == []
    assert validate(patient(name=[{"family": "测试", "given": ["名 字"]}])) == []
    only(validate(patient(identifier=[{"system": "urn:oid:1.2.3 4"}])), "value", "Patient.identifier[0].system")
    url = "http://example.org/fhir/ext"
    assert validate(patient(extension=[{"url": url, "valueOid": "urn:oid:2.16.156"}])) == []
    only(
        validate(patient(extension=[{"url": url, "valueOid": "urn:oid:2.x"}])), "value", "Patient.extension[0].valueOid"
    )
    uuid = "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"
    assert validate(patient(extension=[{"url": url, "valueUuid": uuid}])) == []
    upper = [{"url": url, "valueUuid": uuid.upper()}]
    only(validate(patient(extension=upper)), "value", "Patient.extension[0].valueUuid")
    only(validate(patient(gender=" female")), "value", "Patient.gender")  # code: no leading space
    only(validate(patient(photo=[{"data": "not base64!"}])), "value", "Patient.photo[0].data")


def test_empty_string_in_array_names_the_index() -> None:
    issue = only(validate(patient(name=[{"given": ["Alex", ""]}])), "value", "Patient.name[0].given[1]")
    assert "empty" in issue.diagnostics


# --- nulls, empties and primitive extensions ----------------------------------------------


def test_empty_values() -> None:
    only(validate(patient(name=[])), "structure", "Patient.name")
    only(validate(patient(name=[{}])), "structure", "Patient.name[0]")
    only(validate(patient(managingOrganization={})), "structure", "Patient.managingOrganization")
    only(validate(patient(gender=None)), "structure", "Patient.gender")
    only(validate(patient(name=None)), "structure", "Patient.name")
    only(validate(patient(name=[None])), "structure", "Patient.name[0]")


def test_primitive_extension_single() -> None:
    ext = {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1970-01-01T08:00:00Z"}
    assert validate(patient(_birthDate={"extension": [ext]})) == []
    only(validate(patient(_birthDate={})), "structure", "Patient.birthDate")
    only(validate(patient(_birthDate=[{"id": "a"}])), "structure", "Patient.birthDate")
    bad = {"url": "http://example.org/x", "valueDateTime": "yesterday"}
    only(validate(patient(_birthDate={"extension": [bad]})), "value", "Patient.birthDate.extension[0].valueDateTime")
    only(validate(patient(_name=[{"id": "x"}])), "structure", "Patient._name")  # name is not a primitive


def test_primitive_extension_arrays_aligned() -> None:
    ext = {"extension": [{"url": "http://example.org/initial", "valueBoolean": True}]}
    ok = patient(name=[{"given": ["Alex", None], "_given": [None, ext]}])
    assert validate(ok) == []
    ok2 = patient(name=[{"given": ["Alex", "Q"], "_given": [None, ext]}])
    assert validate(ok2) == []
    # a null with nothing in _given
    only(validate(patient(name=[{"given": ["Alex", None]}])), "structure", "Patient.name[0].given[1]")
    # both null at the same index
    both = patient(name=[{"given": ["Alex", None], "_given": [ext, None]}])
    only(validate(both), "structure", "Patient.name[0].given[1]")
    # lengths differ
    short = patient(name=[{"given": ["Alex", "Q"], "_given": [ext]}])
    issue = only(validate(short), "structure", "Patient.name[0].given")
    assert "aligned" in issue.diagnostics
    # _given only (no values) is fine when no item is null
    assert validate(patient(name=[{"_given": [ext]}])) == []


# --- complex datatypes, extensions ----------------------------------------------------------


def test_extension_rules() -> None:
    url = "http://example.org/fhir/ext"
    both = {"url": url, "valueString": "x", "extension": [{"url": "a", "valueString": "y"}]}
    issue = only(validate(patient(extension=[both])), "invariant", "Patient.extension[0]")
    assert "ext-1" in issue.diagnostics
    only(validate(patient(extension=[{"url": url}])), "invariant", "Patient.extension[0]")
    only(validate(patient(extension=[{"url": url, "valueFoo": 1}])), "structure", "Patient.extension[0].valueFoo")
    nested = {"url": url, "extension": [{"url": "part", "valueCodeableConcept": {"text": "x"}}]}
    assert validate(patient(extension=[nested])) == []
    deep = {"url": url, "extension": [{"url": "part", "valueQuantity": {"value": "1"}}]}
    only(
        validate(patient(modifierExtension=[deep])),
        "value",
        "Patient.modifierExtension[0].extension[0].valueQuantity.value",
    )


def test_resource_type_inside_a_datatype_is_unknown() -> None:
    res = patient(managingOrganization={"resourceType": "Organization", "reference": "Organization/1"})
    only(validate(res), "structure", "Patient.managingOrganization.resourceType")


# --- narrative -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("div", "code"),
    [
        ("<p>no div</p>", "value"),
        ("<div>no namespace</div>", "value"),
        (f'<div xmlns="{XHTML}"><p>unclosed</div>', "value"),
        (f'<div xmlns="{XHTML}"><p>&nbsp;</p></div>', "value"),  # HTML entities are not XML
        (f'<div xmlns="{XHTML}"><script>alert(1)</script></div>', "invariant"),
        (f'<div xmlns="{XHTML}"><p onclick="x()">hi</p></div>', "invariant"),
        (f'<div xmlns="{XHTML}">   </div>', "invariant"),
    ],
)
def test_bad_narrative(div: str, code: str) -> None:
    only(validate(patient(text={"status": "generated", "div": div})), code, "Patient.text.div")


def test_narrative_status_and_div_required() -> None:
    div = f'<div xmlns="{XHTML}">ok</div>'
    only(validate(patient(text={"status": "made-up", "div": div})), "code-invalid", "Patient.text.status")
    only(validate(patient(text={"status": "generated"})), "required", "Patient.text.div")
    assert validate(patient(text={"status": "additional", "div": div})) == []


# --- bindings --------------------------------------------------------------------------------


def test_bad_gender_code() -> None:
    issue = only(validate(patient(gender="F")), "code-invalid", "Patient.gender")
    assert "'F'" in issue.diagnostics and "administrative-gender" in issue.diagnostics


def test_required_binding_in_backbone_and_datatype() -> None:
    only(validate(patient(contact=[{"gender": "woman"}])), "code-invalid", "Patient.contact[0].gender")
    only(validate(patient(telecom=[{"system": "pager-ish"}])), "code-invalid", "Patient.telecom[0].system")
    only(validate(observation(status="done")), "code-invalid", "Observation.status")


def test_required_binding_on_codeable_concept() -> None:
    system = "http://terminology.hl7.org/CodeSystem/condition-clinical"
    cond: dict[str, Any] = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/syn-1"},
        "clinicalStatus": {"coding": [{"system": system, "code": "active"}]},
    }
    assert validate(cond) == []
    bad = copy.deepcopy(cond)
    bad["clinicalStatus"]["coding"][0]["code"] = "sort-of"
    issue = only(validate(bad), "code-invalid", "Condition.clinicalStatus")
    assert "sort-of" in issue.diagnostics
    text_only = dict(cond, clinicalStatus={"text": "active"})
    only(validate(text_only), "code-invalid", "Condition.clinicalStatus")
    two = dict(cond, clinicalStatus={"coding": [{"code": "local"}, {"system": system, "code": "resolved"}]})
    assert validate(two) == []


def test_binding_to_unexpanded_value_set_is_skipped() -> None:
    # Attachment.contentType is bound (required) to mime types, which the spec cannot expand.
    assert validate(patient(photo=[{"contentType": "application/x-anything"}])) == []


# --- references ----------------------------------------------------------------------------


def test_reference_to_disallowed_target() -> None:
    issue = only(
        validate(observation(subject={"reference": "Medication/1"})), "invalid", "Observation.subject.reference"
    )
    assert "Medication" in issue.diagnostics and "Patient" in issue.diagnostics


def test_reference_forms() -> None:
    for ref in ("Patient/1", "Group/g/_history/2", "#contained", "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"):
        res = observation(subject={"reference": ref})
        if ref.startswith("#"):
            res["contained"] = [{"resourceType": "Patient", "id": "contained"}]
        assert validate(res) == [], ref
    # absolute URLs, conditional references and Reference(Any) are not checked
    assert validate(observation(subject={"reference": "http://other.org/fhir/Medication/1"})) == []
    assert validate(observation(subject={"reference": "Patient?identifier=urn:oid:1.2|SYN-1"})) == []
    assert validate(observation(focus=[{"reference": "Medication/1"}])) == []
    only(
        validate(observation(subject={"type": "Medication", "identifier": {"value": "1"}})),
        "invalid",
        "Observation.subject.type",
    )
    only(
        validate(patient(generalPractitioner=[{"reference": "Patient/2"}])),
        "invalid",
        "Patient.generalPractitioner[0].reference",
    )


# --- contained and nested resources ---------------------------------------------------------


def test_bad_contained_resource() -> None:
    res = observation(
        subject={"reference": "#p1"},
        contained=[{"resourceType": "Patient", "id": "p1", "gender": "unknown-ish"}],
    )
    only(validate(res), "code-invalid", "Observation.contained[0].gender")
    unknown = observation(subject={"reference": "#p1"}, contained=[{"resourceType": "Nobody", "id": "p1"}])
    only(validate(unknown), "not-supported", "Observation.contained[0]")
    untyped = observation(subject={"reference": "#p1"}, contained=[{"id": "p1"}])
    only(validate(untyped), "required", "Observation.contained[0]")


def test_contained_invariants() -> None:
    unreferenced = observation(contained=[{"resourceType": "Patient", "id": "p1"}])
    issue = only(validate(unreferenced), "invariant", "Observation.contained[0]")
    assert "dom-3" in issue.diagnostics
    nested = observation(
        subject={"reference": "#p1"},
        contained=[
            {
                "resourceType": "Patient",
                "id": "p1",
                "meta": {"versionId": "1"},
                "contained": [{"resourceType": "Organization", "id": "o1"}],
                "managingOrganization": {"reference": "#o1"},
            }
        ],
    )
    exprs = {(i.code, i.expression) for i in validate(nested)}
    assert ("invariant", "Observation.contained[0].contained") in exprs  # dom-2
    assert ("invariant", "Observation.contained[0].meta.versionId") in exprs  # dom-4
    back = observation(
        contained=[
            {
                "resourceType": "Provenance",
                "id": "pv",
                "target": [{"reference": "#"}],
                "recorded": "2024-01-01T00:00:00Z",
                "agent": [{"who": {"display": "x"}}],
            }
        ]
    )
    assert validate(back) == []  # refers to its container


def test_bundle_entries_are_validated_as_resources() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0", "resource": patient()},
            {"resource": observation(status="bogus")},
            {"resource": patient(name="Alex")},
        ],
    }
    issues = validate(bundle)
    assert sorted((i.code, i.expression) for i in issues) == [
        ("code-invalid", "Bundle.entry[1].resource.status"),
        ("structure", "Bundle.entry[2].resource.name"),
    ]
    issues = validate(dict(bundle, type="pile", entry=[]))
    assert sorted((i.code, i.expression) for i in issues) == [
        ("code-invalid", "Bundle.type"),
        ("structure", "Bundle.entry"),
    ]


def test_parameters_resource_and_parts() -> None:
    params = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "patient", "resource": patient(gender="x")},
            {"name": "count", "valueInteger": 3},
            {"name": "group", "part": [{"name": "inner", "valueString": ""}]},
        ],
    }
    issues = validate(params)
    assert sorted((i.code, i.expression) for i in issues) == [
        ("code-invalid", "Parameters.parameter[0].resource.gender"),
        ("value", "Parameters.parameter[2].part[0].valueString"),
    ]


def test_content_reference_elements() -> None:
    q = {
        "resourceType": "Questionnaire",
        "status": "active",
        "item": [
            {
                "linkId": "1",
                "type": "group",
                "item": [{"linkId": "1.1", "type": "string"}, {"type": "string", "colour": "red"}],
            }
        ],
    }
    issues = validate(q)
    assert sorted((i.code, i.expression) for i in issues) == [
        ("required", "Questionnaire.item[0].item[1].linkId"),
        ("structure", "Questionnaire.item[0].item[1].colour"),
    ]


def test_errors_helper_filters_to_errors() -> None:
    assert errors(patient(gender="x")) == validate(patient(gender="x"))
    assert not is_valid(patient(gender="x"))


def test_coding_with_required_binding() -> None:
    # No base R4 Coding element has an expandable required binding; check the rule directly.
    slot = Slot("code", "code", "Thing.code", PRIM, False)
    slot.codes, slot.binding = frozenset({"a", "b"}), "http://example.org/ValueSet/ab"
    issues: list[Issue] = []
    check_coding({"system": "http://example.org", "code": "a"}, "Thing.code", issues, slot)
    assert issues == []
    check_coding({"code": "c"}, "Thing.code", issues, slot)
    check_coding({"display": "no code"}, "Thing.code", issues, slot)
    assert [(i.code, i.expression) for i in issues] == [
        ("code-invalid", "Thing.code.code"),
        ("code-invalid", "Thing.code"),
    ]


def test_too_deeply_nested() -> None:
    ext: dict[str, Any] = {"url": "http://example.org/x", "valueString": "leaf"}
    for _ in range(3000):
        ext = {"url": "http://example.org/x", "extension": [ext]}
    only(validate(patient(extension=[ext])), "too-costly", "Patient")


def test_prepare_builds_every_type() -> None:
    prepare()
    assert validate({"resourceType": "VisionPrescription", "status": "draft"}) != []


# --- primitive fast paths ------------------------------------------------------------------


def test_fast_paths_imply_valid() -> None:
    """A primitive's C-level fast test may only accept values its exact check accepts."""
    rng = random.Random(5)
    alphabet = "aZ09-.:/ \t\n\r\x0b\x0c\x01\x7f\u00a0é中+=#"
    accepted = 0
    for name, prim in primitives().items():
        if prim.fast is None:
            continue
        for _ in range(3000):
            value = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))
            if prim.fast(value):
                accepted += 1
                assert prim.check(value) is None, (name, value)
    assert accepted > 1000


def test_base64_check_is_the_spec_regex() -> None:
    spec = compile_spec(types()["base64Binary"].regex or "").fullmatch
    check = primitives()["base64Binary"].check
    rng = random.Random(3)
    for _ in range(20000):
        value = "".join(rng.choice("ab+/=  \n\t\x0b\x01é") for _ in range(rng.randint(1, 14)))
        assert (check(value) is None) == (spec(value) is not None), repr(value)
    big = "QUJD" * 250_000 + " " + "REVG\n" * 1000
    assert check(big) is None


# --- the official R4 examples -------------------------------------------------------------------


def _examples_dir() -> Path:
    from phip.fhir.package import package_dir

    try:
        return package_dir(fetch=False)
    except RuntimeError as exc:
        pytest.skip(f"R4 examples not cached: {exc}")


def test_r4_examples() -> None:
    """Every R4 example validates, except the listed ones, which fail for the listed reason."""
    files = sorted(_examples_dir().glob("*-*.json"))
    assert len(files) > 5000
    unexpected: dict[str, list[str]] = {}
    wrong_reason: dict[str, list[str]] = {}
    for path in files:
        resource = orjson.loads(path.read_bytes())
        errs = [i for i in validate(resource) if i.severity == "error"]
        reason = EXPECTED_REJECTIONS.get(path.name)
        if reason is None:
            if errs:
                unexpected[path.name] = [f"{i.expression}: {i.diagnostics}" for i in errs[:5]]
        elif reason.split(": ", 1)[0] not in {i.expression for i in errs}:
            wrong_reason[path.name] = [f"{i.expression}: {i.diagnostics}" for i in errs[:5]]
    assert not unexpected, f"examples rejected but not in EXPECTED_REJECTIONS: {unexpected}"
    assert not wrong_reason, f"listed examples not rejected for the listed reason: {wrong_reason}"
    names = {p.name for p in files}
    assert set(EXPECTED_REJECTIONS) <= names, set(EXPECTED_REJECTIONS) - names


def test_expected_rejections_are_few_and_explained() -> None:
    assert len(EXPECTED_REJECTIONS) <= 30
    for name, reason in EXPECTED_REJECTIONS.items():
        assert name.endswith(".json") and len(reason) > 20, name


def _nodes(value: Any, path: str, out: list[tuple[str, Any, str]]) -> list[tuple[str, Any, str]]:
    """(kind, handle, FHIRPath) of every object and primitive in a resource."""
    if isinstance(value, dict):
        out.append(("object", value, path))
        for k, v in value.items():
            name = k.lstrip("_")
            if isinstance(v, list):
                for i, item in enumerate(v):
                    if isinstance(item, dict):
                        _nodes(item, f"{path}.{name}[{i}]", out)
            elif isinstance(v, dict):
                _nodes(v, f"{path}.{name}", out)
            elif k != "resourceType" and not k.startswith("_"):
                out.append(("primitive", (value, k), f"{path}.{k}"))
    return out


def test_injected_errors_are_found_where_injected() -> None:
    """Break one element of valid examples; the validator must report an error at that element."""
    rng = random.Random(11)
    files = [p for p in sorted(_examples_dir().glob("*-*.json")) if p.name not in EXPECTED_REJECTIONS]
    checked = 0
    for path in rng.sample(files, 300):
        resource = orjson.loads(path.read_bytes())
        broken = copy.deepcopy(resource)
        kind, handle, expr = rng.choice(_nodes(broken, broken["resourceType"], []))
        if kind == "object":
            handle["zzUnknown"] = 1
            expr += ".zzUnknown"
        else:
            obj, key = handle
            value = obj[key]
            obj[key] = [value] if isinstance(value, str) else str(value)
        issues = validate(broken)
        assert any(i.expression == expr for i in issues), (path.name, expr, issues[:3])
        checked += 1
    assert checked == 300


def test_never_raises_on_mangled_examples() -> None:
    junk: list[Any] = [None, [], {}, "", 0, -1, 2**40, 1.5, True, [None], [[]], [{}], {"a": 1}, "x", [1]]
    junk += [{"resourceType": "Patient"}, {"id": "x"}, "#", {"coding": [{"code": []}]}, {"reference": 5}]
    rng = random.Random(2)
    for path in rng.sample(sorted(_examples_dir().glob("*-*.json")), 200):
        resource = orjson.loads(path.read_bytes())
        for _ in range(3):
            broken = copy.deepcopy(resource)
            objects = [h for kind, h, _ in _nodes(broken, "", []) if kind == "object"]
            for _ in range(rng.randint(1, 4)):
                target = rng.choice(objects)
                key = rng.choice(list(target))
                target[key] = copy.deepcopy(rng.choice(junk))
            for issue in validate(broken):
                assert issue.severity == "error" and issue.code and issue.diagnostics
