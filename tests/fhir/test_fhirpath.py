"""The FHIRPath subset evaluator (``phip.fhir.fhirpath``).

Every R4 SearchParameter expression (and every composite component expression)
must compile; evaluation is checked on hand-written synthetic resources (made-up
people only), including the FHIR type each node carries.
"""

from __future__ import annotations

from typing import Any

import pytest

from phip.fhir import fhirpath as fp
from phip.fhir.definitions import search_params
from phip.fhir.fhirpath import FhirPathError, Node, compile, compile_for_type, evaluate, parse_reference

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "meta": {"profile": ["http://example.org/StructureDefinition/cn-patient"]},
    "extension": [
        {"url": "http://example.org/ext/ethnicity", "valueCodeableConcept": {"text": "Han"}},
        {"url": "http://example.org/ext/birth-order", "valueInteger": 2},
    ],
    "identifier": [
        {
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NI"}]},
            "system": "urn:oid:2.16.156.10011.1.3",
            "value": "110101199003071234",
        },
        {"system": "http://example.org/mrn", "value": "MRN-1"},
    ],
    "active": True,
    "name": [
        {"use": "official", "family": "张", "given": ["伟"], "text": "张伟"},
        {"use": "nickname", "given": ["Wei", "Zhang"]},
    ],
    "telecom": [
        {"system": "phone", "value": "+86 138 0000 0000"},
        {"system": "email", "value": "wei@example.org"},
    ],
    "gender": "male",
    "birthDate": "1990-03-07",
    "deceasedBoolean": False,
    "address": [{"line": ["建国路 1 号"], "city": "北京", "postalCode": "100020", "country": "CN"}],
    "generalPractitioner": [{"reference": "Practitioner/dr1"}],
    "managingOrganization": {"reference": "Organization/org1", "display": "Example Hospital"},
}

OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "o1",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}], "text": "Blood pressure"},
    "subject": {"reference": "Patient/p1"},
    "effectivePeriod": {"start": "2024-03-01T08:00:00+08:00"},
    "valueQuantity": {"value": 5.4, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"},
    "component": [
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "valueQuantity": {"value": 120, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
        },
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
            "valueString": "not measured",
        },
    ],
}


def values(resource: dict[str, Any], expr: str) -> list[Any]:
    return [n.value for n in evaluate(resource, expr)]


def types_of(resource: dict[str, Any], expr: str) -> list[str]:
    return [n.type for n in evaluate(resource, expr)]


# --------------------------------------------------------------------------- compiling


def test_every_r4_search_parameter_expression_compiles() -> None:
    exprs: list[str] = []
    params = search_params()
    assert len(params) == 1390
    for p in params:
        if p.expression:
            exprs.append(p.expression)
        exprs.extend(e for _url, e in p.component)
    failures = []
    for e in exprs:
        try:
            compile(e)
        except FhirPathError as err:  # pragma: no cover - reported below
            failures.append(f"{e}: {err}")
    assert not failures, failures[:10]
    # 1,384 params have an expression; the 46 composites add their components
    assert len(exprs) > 1384 + 2 * 46 - 1


def test_every_expression_compiles_for_each_of_its_base_types() -> None:
    for p in search_params():
        if not p.expression:
            continue
        for base in p.base:
            if base in ("Resource", "DomainResource"):
                continue
            c = compile_for_type(p.expression, base)
            assert c is not None or (p.code, base) == ("part-agree", "Patient"), (p.code, base)


@pytest.mark.parametrize(
    "expr",
    [
        "Patient.name.select(given)",  # unsupported function
        "Patient.birthDate + 1 year",  # arithmetic
        "Patient.birthDate > @2000-01-01",  # date literal
        "Patient.name[",  # syntax
        "Patient.name.where()",
        "%unknown",
        "Patient.name[Patient.id]",  # non-literal index
        "Patient ## name",
    ],
)
def test_unsupported_syntax_raises_a_clear_error(expr: str) -> None:
    with pytest.raises(FhirPathError):
        compile(expr)


def test_evaluate_compiles_once() -> None:
    expr = "Patient.name.family | Patient.name.given"
    evaluate(PATIENT, expr)
    first = fp._CACHE[expr]
    evaluate(PATIENT, expr)
    assert fp._CACHE[expr] is first


# --------------------------------------------------------------------------- paths and types


def test_paths_carry_values_and_fhir_types() -> None:
    assert values(PATIENT, "Patient.name.given") == ["伟", "Wei", "Zhang"]
    assert types_of(PATIENT, "Patient.name") == ["HumanName", "HumanName"]
    assert types_of(PATIENT, "Patient.name.family") == ["string"]
    assert types_of(PATIENT, "Patient.gender") == ["code"]
    assert types_of(PATIENT, "Patient.birthDate") == ["date"]
    assert types_of(PATIENT, "Patient.identifier") == ["Identifier", "Identifier"]
    assert types_of(PATIENT, "Patient.identifier.type") == ["CodeableConcept"]
    assert types_of(PATIENT, "Patient.identifier.type.coding") == ["Coding"]
    assert types_of(PATIENT, "Patient.telecom") == ["ContactPoint", "ContactPoint"]
    assert types_of(PATIENT, "Patient.managingOrganization") == ["Reference"]
    assert types_of(PATIENT, "Patient.active") == ["boolean"]
    assert types_of(PATIENT, "Resource.meta.profile") == ["canonical"]
    assert types_of(OBSERVATION, "Observation.effective") == ["Period"]
    assert types_of(OBSERVATION, "Observation.component") == ["BackboneElement", "BackboneElement"]


def test_node_api() -> None:
    [n] = evaluate(PATIENT, "Patient.managingOrganization")
    assert isinstance(n, Node)
    assert n.value == {"reference": "Organization/org1", "display": "Example Hospital"}
    assert n.type == "Reference"
    assert "Reference" in repr(n)


def test_resource_type_as_first_step() -> None:
    assert values(PATIENT, "Patient.gender") == ["male"]
    assert values(PATIENT, "Observation.status") == []
    assert values(OBSERVATION, "Patient.gender") == []
    assert values(PATIENT, "Resource.id") == ["p1"]
    assert values(PATIENT, "DomainResource.id") == ["p1"]
    assert values(PATIENT, "Patient") == [PATIENT]
    assert types_of(PATIENT, "Patient") == ["Patient"]


def test_choice_types_resolve_from_the_json_key() -> None:
    assert types_of(OBSERVATION, "Observation.value") == ["Quantity"]
    assert values(OBSERVATION, "Observation.value.value") == [5.4]
    assert types_of(OBSERVATION, "Observation.component.value") == ["Quantity", "string"]
    assert values(OBSERVATION, "Observation.component.value.as(Quantity).value") == [120]
    assert values(OBSERVATION, "(Observation.component.value as string)") == ["not measured"]
    assert values(OBSERVATION, "Observation.component.value.ofType(string)") == ["not measured"]
    assert values(OBSERVATION, "(Observation.value as Quantity).unit") == ["mmol/L"]
    assert values(OBSERVATION, "Observation.value.as(CodeableConcept)") == []
    assert values(OBSERVATION, "Observation.value as string") == []
    assert types_of(PATIENT, "Patient.deceased") == ["boolean"]
    # System type names (the spec writes value.as(DateTime))
    obs = {"resourceType": "Observation", "valueDateTime": "2024-01-02"}
    assert types_of(obs, "Observation.value.as(DateTime)") == ["dateTime"]
    assert values(obs, "Observation.value.as(FHIR.dateTime)") == ["2024-01-02"]


def test_as_matches_subtypes() -> None:
    cond = {"resourceType": "Condition", "onsetAge": {"value": 52, "unit": "a"}}
    assert types_of(cond, "Condition.onset") == ["Age"]
    assert types_of(cond, "Condition.onset.as(Quantity)") == ["Age"]
    assert types_of(cond, "Condition.onset.as(Age)") == ["Age"]
    assert values(cond, "Condition.onset.as(Range)") == []
    assert values(PATIENT, "Patient.gender.as(string)") == ["male"]  # code derives from string
    assert values(PATIENT, "Patient.gender is code") == [True]
    assert values(PATIENT, "Patient.gender is string") == [True]
    assert values(PATIENT, "Patient.gender is boolean") == [False]
    assert fp.is_subtype("Age", "Quantity")
    assert not fp.is_subtype("Quantity", "Age")


def test_contained_and_inline_resources_take_their_type_from_resource_type() -> None:
    bundle = {
        "resourceType": "Bundle",
        "entry": [
            {"resource": {"resourceType": "Composition", "id": "c1", "status": "final"}},
            {"resource": {"resourceType": "Patient", "id": "p1", "gender": "female"}},
        ],
    }
    assert types_of(bundle, "Bundle.entry[0].resource") == ["Composition"]
    assert types_of(bundle, "Bundle.entry.resource") == ["Composition", "Patient"]
    assert values(bundle, "Bundle.entry.resource.gender") == ["female"]
    assert values(bundle, "Bundle.entry[1].resource.status") == []
    assert values(bundle, "Bundle.entry.resource.ofType(Patient).id") == ["p1"]


def test_backbone_and_content_reference_elements() -> None:
    q = {
        "resourceType": "Questionnaire",
        "item": [{"linkId": "1", "item": [{"linkId": "1.1", "item": [{"linkId": "1.1.1", "type": "string"}]}]}],
    }
    assert values(q, "Questionnaire.item.item.item.linkId") == ["1.1.1"]
    assert types_of(q, "Questionnaire.item.item.item.type") == ["code"]


def test_union_deduplicates() -> None:
    assert values(PATIENT, "Patient.gender | Patient.gender") == ["male"]
    assert values(PATIENT, "Patient.name.family | Patient.name.given") == ["张", "伟", "Wei", "Zhang"]
    assert len(evaluate(PATIENT, "Patient.name | Patient.name")) == 2


def test_where_equality_and_boolean_logic() -> None:
    assert values(PATIENT, "Patient.telecom.where(system='phone').value") == ["+86 138 0000 0000"]
    assert values(PATIENT, "Patient.telecom.where(system='fax')") == []
    assert values(PATIENT, "Patient.telecom.where(system!='phone').value") == ["wei@example.org"]
    assert values(PATIENT, "Patient.name.where(use='official' and family='张').text") == ["张伟"]
    assert values(PATIENT, "Patient.name.where(use='x' or use='nickname').given") == ["Wei", "Zhang"]
    assert values(PATIENT, "Patient.gender = 'male'") == [True]
    assert values(PATIENT, "Patient.gender != 'male'") == [False]
    assert values(PATIENT, "Patient.gender = 'female'") == [False]
    assert values(PATIENT, "Patient.active = true") == [True]
    assert values(PATIENT, "Patient.photo = 'x'") == []  # empty operand: empty result
    assert values(PATIENT, "Patient.name.given.first() = 'Wei'") == [False]
    assert values(PATIENT, "Patient.active.not()") == [False]
    assert values(PATIENT, "Patient.active and Patient.photo.exists()") == [False]
    assert values(PATIENT, "Patient.active or Patient.photo") == [True]
    assert values(PATIENT, "Patient.multipleBirth and true") == []  # empty and true = empty
    assert values(PATIENT, "Patient.gender in ('male' | 'female')") == [True]
    assert values(PATIENT, "Patient.name.count()") == [2]
    assert values(PATIENT, "Patient.gender ~ 'MALE'") == [True]


def test_deceased_search_expression() -> None:
    expr = "Patient.deceased.exists() and Patient.deceased != false"
    assert values(PATIENT, expr) == [False]
    assert values({"resourceType": "Patient"}, expr) == [False]
    assert values({"resourceType": "Patient", "deceasedBoolean": True}, expr) == [True]
    assert values({"resourceType": "Patient", "deceasedDateTime": "2020-01-01"}, expr) == [True]


def test_exists_empty_not_first_indexer() -> None:
    assert values(PATIENT, "Patient.name.exists()") == [True]
    assert values(PATIENT, "Patient.photo.exists()") == [False]
    assert values(PATIENT, "Patient.photo.empty()") == [True]
    assert values(PATIENT, "Patient.name.empty()") == [False]
    assert values(PATIENT, "Patient.name.empty().not()") == [True]
    assert values(PATIENT, "Patient.name.exists(use = 'nickname')") == [True]
    assert values(PATIENT, "Patient.name.exists(use = 'maiden')") == [False]
    assert values(PATIENT, "Patient.name.first().family") == ["张"]
    assert values(PATIENT, "Patient.name.given.last()") == ["Zhang"]
    assert values(PATIENT, "Patient.name[1].given[0]") == ["Wei"]
    assert values(PATIENT, "Patient.name[5]") == []
    assert values(PATIENT, "Patient.photo.first()") == []


def test_extension_and_has_extension() -> None:
    ext = evaluate(PATIENT, "Patient.extension('http://example.org/ext/birth-order')")
    assert [n.type for n in ext] == ["Extension"]
    assert values(PATIENT, "Patient.extension('http://example.org/ext/birth-order').value") == [2]
    assert types_of(PATIENT, "Patient.extension('http://example.org/ext/ethnicity').value") == ["CodeableConcept"]
    assert values(PATIENT, "Patient.extension('http://example.org/ext/none')") == []
    assert values(PATIENT, "Patient.hasExtension('http://example.org/ext/ethnicity')") == [True]
    assert values(PATIENT, "Patient.hasExtension('http://example.org/ext/none')") == [False]
    qr = {
        "resourceType": "QuestionnaireResponse",
        "item": [
            {
                "linkId": "a",
                "extension": [{"url": "http://x/isSubject", "valueBoolean": True}],
                "answer": [{"valueReference": {"reference": "Patient/p1"}}, {"valueString": "x"}],
            },
            {"linkId": "b", "answer": [{"valueReference": {"reference": "Patient/p2"}}]},
        ],
    }
    expr = "QuestionnaireResponse.item.where(hasExtension('http://x/isSubject')).answer.value.ofType(Reference)"
    assert values(qr, expr) == [{"reference": "Patient/p1"}]


@pytest.mark.parametrize(
    ("ref", "is_patient"),
    [
        ({"reference": "Patient/p1"}, True),
        ({"reference": "Patient/p1/_history/3"}, True),
        ({"reference": "https://fhir.example.org/r4/Patient/p1"}, True),
        ({"reference": "urn:uuid:6c1a7f0e-1111-4222-8333-944455556666", "type": "Patient"}, True),
        ({"identifier": {"value": "X"}, "type": "Patient"}, True),
        ({"reference": "urn:uuid:6c1a7f0e-1111-4222-8333-944455556666"}, False),
        ({"reference": "Group/g1"}, False),
        ({"reference": "#contained"}, False),
        ({"display": "someone"}, False),
    ],
)
def test_resolve_is_type(ref: dict[str, Any], is_patient: bool) -> None:
    acct = {"resourceType": "Account", "subject": [ref]}
    got = values(acct, "Account.subject.where(resolve() is Patient)")
    assert got == ([ref] if is_patient else [])
    resolvable = ("reference" in ref and not ref["reference"].startswith(("urn:", "#"))) or "type" in ref
    expected_is = [is_patient] if resolvable else []  # unresolvable: resolve() is empty
    assert values(acct, "Account.subject.resolve() is Patient") == expected_is


def test_literals_and_percent_resource() -> None:
    assert values(PATIENT, "'a\\'b'") == ["a'b"]
    assert values(PATIENT, "true") == [True]
    assert values(PATIENT, "42") == [42]
    assert values(PATIENT, "-1.5") == [-1.5]
    assert values(PATIENT, "{}") == []
    assert values(PATIENT, "%resource.id") == ["p1"]
    seq = {
        "resourceType": "MolecularSequence",
        "referenceSeq": {"chromosome": {"text": "chr 9"}},
        "variant": [{"start": 1, "end": 2}, {"start": 5, "end": 6}],
    }
    [variant, _] = fp.compile("MolecularSequence.variant").evaluate(seq)
    comp = fp.compile("%resource.referenceSeq.chromosome")
    root = Node.root(seq)
    assert [n.value for n in comp.evaluate_node(variant, root)] == [{"text": "chr 9"}]
    assert [n.value for n in fp.compile("start").evaluate_node(variant, root)] == [1]


def test_compile_for_type_keeps_only_the_parts_of_that_type() -> None:
    expr = "Patient.name.family | Practitioner.name.family | RelatedPerson.name.family"
    pat = compile_for_type(expr, "Patient")
    prac = compile_for_type(expr, "Practitioner")
    assert pat is not None and prac is not None
    practitioner = {"resourceType": "Practitioner", "name": [{"family": "Li"}]}
    assert [n.value for n in pat.evaluate(PATIENT)] == ["张"]
    assert [n.value for n in prac.evaluate(practitioner)] == ["Li"]
    assert compile_for_type(expr, "Observation") is None
    assert pat.first_keys == frozenset({"name"})
    # choice keys, narrowed by as()
    vq = compile_for_type("(Observation.value as Quantity) | (Observation.value as SampledData)", "Observation")
    assert vq is not None and vq.first_keys == frozenset({"valueQuantity", "valueSampledData"})
    # an expression that yields a value on an empty resource cannot be gated
    dec = compile_for_type("Patient.deceased.exists() and Patient.deceased != false", "Patient")
    assert dec is not None and dec.first_keys is None
    assert [n.value for n in dec.evaluate({"resourceType": "Patient"})] == [False]
    # Resource-level parameters apply to every type
    prof = compile_for_type("Resource.meta.profile", "Observation")
    assert prof is not None and prof.first_keys == frozenset({"meta"})


def test_output_types_from_the_definitions() -> None:
    assert fp.output_types("Observation.value", "Observation") >= {"Quantity", "CodeableConcept", "string"}
    assert fp.output_types("value.as(Quantity)", "Observation", "Observation.component") == {"Quantity"}
    assert fp.output_types("code", "DocumentReference", "DocumentReference.relatesTo") == {"code"}
    assert fp.output_types("target", "DocumentReference", "DocumentReference.relatesTo") == {"Reference"}


@pytest.mark.parametrize(
    ("ref", "parsed"),
    [
        ("Patient/p1", ("Patient", "p1", None)),
        ("Patient/p1/_history/2", ("Patient", "p1", None)),
        ("http://a.org/fhir/Patient/p1", ("Patient", "p1", "http://a.org/fhir/Patient/p1")),
        ("http://a.org/fhir/Patient/p1/_history/2", ("Patient", "p1", "http://a.org/fhir/Patient/p1/_history/2")),
        ("urn:uuid:1234", (None, None, "urn:uuid:1234")),
        ("urn:oid:1.2.3", (None, None, "urn:oid:1.2.3")),
        ("http://hl7.org/fhir/ValueSet/x", ("ValueSet", "x", "http://hl7.org/fhir/ValueSet/x")),
        ("http://example.org/not/a/reference", (None, None, "http://example.org/not/a/reference")),
        ("Foo/bar", (None, None, "Foo/bar")),
        ("#c1", None),
        ("", None),
    ],
)
def test_parse_reference(ref: str, parsed: tuple[str | None, str | None, str | None] | None) -> None:
    assert parse_reference(ref) == parsed


def test_evaluation_does_not_depend_on_json_key_order() -> None:
    reordered = dict(reversed(list(OBSERVATION.items())))
    for expr in ("Observation.code.coding.code", "Observation.component.value", "Observation.effective.start"):
        assert values(reordered, expr) == values(OBSERVATION, expr)


def test_null_entries_of_primitive_arrays_are_skipped() -> None:
    pat = {"resourceType": "Patient", "name": [{"given": [None, "Wei"], "_given": [{"id": "a"}, None]}]}
    assert values(pat, "Patient.name.given") == ["Wei"]
