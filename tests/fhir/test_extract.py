"""Search-index extraction (``phip.fhir.search.extract``).

Hand-written synthetic resources (made-up people only) pin the row formats; the
official R4 examples check that every resource type indexes without error, that
the key gating loses no row, and that probe values are well formed.
"""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest

from phip.fhir import datetimes
from phip.fhir.definitions import resource_types
from phip.fhir.package import package_dir
from phip.fhir.search import extract as x
from phip.fhir.search.extract import MAX, MIN, composite_component_types, date_range, index_resource, probe_values

US = 1_000_000


def us(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    """Microseconds since the epoch of a UTC datetime (independent of the code under test)."""
    dt = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    return int(dt.timestamp()) * US


def rows(ix: x.ResourceIndex, table: str, param: str) -> list[tuple[Any, ...]]:
    return [r[1:] for r in getattr(ix, table) if r[0] == param]


PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "meta": {"profile": ["http://example.org/StructureDefinition/cn-patient"], "tag": [{"code": "synthetic"}]},
    "extension": [
        {
            # the url as R4's SearchParameter expression spells it
            "url": "http://hl7.org/fhir/StructureDefinition/patient-extensions-Patient-mothersMaidenName",
            "valueString": "Wang",
        }
    ],
    "identifier": [
        {
            "type": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NI"}],
                "text": "National ID",
            },
            "system": "urn:oid:2.16.156.10011.1.3",
            "value": "110101199003071234",
        },
        {"system": "http://example.org/mrn", "value": "MRN-1"},
    ],
    "active": True,
    "name": [
        {"use": "official", "family": "张", "given": ["伟"], "text": "张伟"},
        {"family": "Ｚｈａｎｇ", "given": ["José  María"], "prefix": ["Dr."]},
    ],
    "telecom": [
        {"system": "phone", "value": "+86 138 0000 0000"},
        {"system": "email", "value": "wei@example.org"},
    ],
    "gender": "male",
    "birthDate": "1990-03-07",
    "address": [
        {
            "line": ["建国路 1 号"],
            "city": "北京",
            "district": "朝阳区",
            "state": "北京市",
            "postalCode": "100020",
            "country": "CN",
            "use": "home",
        }
    ],
    "generalPractitioner": [{"reference": "Practitioner/dr1"}],
    "managingOrganization": {"reference": "Organization/org1"},
}

OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "o1",
    "status": "final",
    "category": [
        {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}
    ],
    "code": {
        "coding": [{"system": "http://loinc.org", "code": "85354-9", "display": "Blood pressure panel"}],
        "text": "BP",
    },
    "subject": {"reference": "Patient/p1"},
    "encounter": {"reference": "Encounter/e1"},
    "effectivePeriod": {"start": "2024-03-01T08:00:00+08:00"},
    "issued": "2024-03-01T09:00:00.250Z",
    "valueQuantity": {"value": 5.4, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"},
    "component": [
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "valueQuantity": {"value": 120, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
        },
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
            "valueQuantity": {"value": 80, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
        },
    ],
}

ENCOUNTER: dict[str, Any] = {
    "resourceType": "Encounter",
    "id": "e1",
    "status": "finished",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
    "subject": {"reference": "Patient/p1"},
    "participant": [{"individual": {"reference": "Practitioner/dr1"}}],
    "period": {"start": "2024-03-01", "end": "2024-03-02T10:30:00Z"},
    "length": {"value": 90, "unit": "min", "system": "http://unitsofmeasure.org", "code": "min"},
}


# --------------------------------------------------------------------------- Patient


def test_patient_strings() -> None:
    ix = index_resource(PATIENT)
    assert sorted(rows(ix, "strings", "family")) == [(0, "zhang", "Ｚｈａｎｇ"), (0, "张", "张")]
    assert sorted(rows(ix, "strings", "given")) == [(0, "jose maria", "José  María"), (0, "伟", "伟")]
    name = set(rows(ix, "strings", "name"))
    assert name == {
        (0, "张", "张"),
        (0, "伟", "伟"),
        (0, "张伟", "张伟"),
        (0, "zhang", "Ｚｈａｎｇ"),
        (0, "jose maria", "José  María"),
        (0, "dr.", "Dr."),
    }
    assert set(rows(ix, "strings", "address")) == {
        (0, "建国路 1 号", "建国路 1 号"),
        (0, "北京", "北京"),
        (0, "朝阳区", "朝阳区"),
        (0, "北京市", "北京市"),
        (0, "100020", "100020"),
        (0, "cn", "CN"),
    }
    assert rows(ix, "strings", "address-city") == [(0, "北京", "北京")]
    assert rows(ix, "strings", "address-postalcode") == [(0, "100020", "100020")]
    assert rows(ix, "strings", "mothersMaidenName") == [(0, "wang", "Wang")]


def test_patient_tokens() -> None:
    ix = index_resource(PATIENT)
    assert rows(ix, "tokens", "gender") == [(0, None, "male", None)]
    assert rows(ix, "tokens", "active") == [(0, None, "true", None)]
    assert rows(ix, "tokens", "deceased") == [(0, None, "false", None)]
    assert rows(ix, "tokens", "identifier") == [
        (0, "urn:oid:2.16.156.10011.1.3", "110101199003071234", "national id"),
        (0, "http://example.org/mrn", "MRN-1", None),
    ]
    assert rows(ix, "tokens", "identifier:of-type") == [
        (0, "http://terminology.hl7.org/CodeSystem/v2-0203", "NI|110101199003071234", None)
    ]
    assert rows(ix, "tokens", "phone") == [(0, "phone", "+86 138 0000 0000", None)]
    assert rows(ix, "tokens", "email") == [(0, "email", "wei@example.org", None)]
    assert len(rows(ix, "tokens", "telecom")) == 2
    assert rows(ix, "tokens", "address-use") == [(0, None, "home", None)]
    assert rows(ix, "tokens", "_tag") == [(0, None, "synthetic", None)]


def test_patient_dates_refs_uris() -> None:
    ix = index_resource(PATIENT)
    assert rows(ix, "dates", "birthdate") == [(0, us(1990, 3, 7), us(1990, 3, 8) - 1)]
    assert rows(ix, "refs", "general-practitioner") == [(0, "Practitioner", "dr1", None)]
    assert rows(ix, "refs", "organization") == [(0, "Organization", "org1", None)]
    assert rows(ix, "uris", "_profile") == [(0, "http://example.org/StructureDefinition/cn-patient")]
    assert ix.quantities == [] and ix.numbers == []


def test_skipped_params() -> None:
    ix = index_resource(PATIENT)
    params = {r[0] for table in ("strings", "tokens", "dates", "refs", "uris") for r in getattr(ix, table)}
    assert "_id" not in params and "_lastUpdated" not in params
    assert all(p.code not in ("_id", "_lastUpdated", "_text", "_content") for p in x.params_for("Patient"))
    assert all(p.type != "special" for p in x.params_for("Location"))  # Location.near is special


def test_deceased_variants() -> None:
    def deceased(extra: dict[str, Any]) -> list[tuple[Any, ...]]:
        return rows(index_resource({"resourceType": "Patient", **extra}), "tokens", "deceased")

    assert deceased({"deceasedBoolean": True}) == [(0, None, "true", None)]
    assert deceased({"deceasedDateTime": "2020-05"}) == [(0, None, "true", None)]
    assert deceased({"deceasedBoolean": False}) == [(0, None, "false", None)]
    ix = index_resource({"resourceType": "Patient", "deceasedDateTime": "2020-05"})
    assert rows(ix, "dates", "death-date") == [(0, us(2020, 5, 1), us(2020, 6, 1) - 1)]


# --------------------------------------------------------------------------- Observation


def test_observation_tokens_and_quantities() -> None:
    ix = index_resource(OBSERVATION)
    assert rows(ix, "tokens", "code") == [
        (0, "http://loinc.org", "85354-9", "blood pressure panel"),
        (0, None, None, "bp"),
    ]
    assert rows(ix, "tokens", "category") == [
        (0, "http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs", None)
    ]
    assert rows(ix, "quantities", "value-quantity") == [(0, 5.4, 5.4, "http://unitsofmeasure.org", "mmol/L", "mmol/L")]
    assert rows(ix, "quantities", "component-value-quantity") == [
        (0, 120.0, 120.0, "http://unitsofmeasure.org", "mm[Hg]", "mmHg"),
        (0, 80.0, 80.0, "http://unitsofmeasure.org", "mm[Hg]", "mmHg"),
    ]
    assert len(rows(ix, "quantities", "combo-value-quantity")) == 3
    assert rows(ix, "tokens", "component-code") == [
        (0, "http://loinc.org", "8480-6", None),
        (0, "http://loinc.org", "8462-4", None),
    ]


def test_observation_dates_and_refs() -> None:
    ix = index_resource(OBSERVATION)
    # open end -> MAX; +08:00 honoured
    assert rows(ix, "dates", "date") == [(0, us(2024, 3, 1, 0, 0, 0), MAX)]
    assert rows(ix, "refs", "subject") == [(0, "Patient", "p1", None)]
    assert rows(ix, "refs", "patient") == [(0, "Patient", "p1", None)]
    assert rows(ix, "refs", "encounter") == [(0, "Encounter", "e1", None)]


def test_observation_composites() -> None:
    ix = index_resource(OBSERVATION)
    # code-value-quantity on the Observation itself: one group
    assert rows(ix, "tokens", "code-value-quantity$0") == [
        (1, "http://loinc.org", "85354-9", "blood pressure panel"),
        (1, None, None, "bp"),
    ]
    assert rows(ix, "quantities", "code-value-quantity$1") == [
        (1, 5.4, 5.4, "http://unitsofmeasure.org", "mmol/L", "mmol/L")
    ]
    # one group per component, values kept together
    assert rows(ix, "tokens", "component-code-value-quantity$0") == [
        (1, "http://loinc.org", "8480-6", None),
        (2, "http://loinc.org", "8462-4", None),
    ]
    assert rows(ix, "quantities", "component-code-value-quantity$1") == [
        (1, 120.0, 120.0, "http://unitsofmeasure.org", "mm[Hg]", "mmHg"),
        (2, 80.0, 80.0, "http://unitsofmeasure.org", "mm[Hg]", "mmHg"),
    ]
    # combo: the Observation is node 1, its components nodes 2 and 3
    assert sorted({r[1] for r in ix.quantities if r[0] == "combo-code-value-quantity$1"}) == [1, 2, 3]
    # a composite whose components are not all present yields nothing
    assert rows(ix, "tokens", "code-value-concept$0") == []
    assert rows(ix, "tokens", "component-code-value-concept$0") == []
    # non-composite rows are grp 0, no modifier rows in composites
    assert all(r[1] == 0 for r in ix.tokens if "$" not in r[0])
    assert not [r for r in ix.tokens if "$" in r[0] and ":" in r[0]]


def test_composite_component_types() -> None:
    assert composite_component_types("Observation", "code-value-quantity") == (
        ("code-value-quantity$0", "token"),
        ("code-value-quantity$1", "quantity"),
    )
    assert composite_component_types("MolecularSequence", "chromosome-variant-coordinate") == (
        ("chromosome-variant-coordinate$0", "token"),
        ("chromosome-variant-coordinate$1", "number"),
        ("chromosome-variant-coordinate$2", "number"),
    )
    # R4 swaps the two component definitions of DocumentReference.relationship:
    # the types follow what the component expressions actually yield
    assert composite_component_types("DocumentReference", "relationship") == (
        ("relationship$0", "token"),
        ("relationship$1", "reference"),
    )
    assert composite_component_types("Observation", "code") == ()


def test_document_reference_relationship() -> None:
    doc = {
        "resourceType": "DocumentReference",
        "status": "current",
        "content": [{"attachment": {"url": "http://example.org/doc"}}],
        "relatesTo": [{"code": "replaces", "target": {"reference": "DocumentReference/d0"}}],
    }
    ix = index_resource(doc)
    assert rows(ix, "tokens", "relationship$0") == [(1, None, "replaces", None)]
    assert rows(ix, "refs", "relationship$1") == [(1, "DocumentReference", "d0", None)]
    assert ("relationship", "replaces$DocumentReference/d0") in probe_values(doc)


def test_molecular_sequence_composite_uses_percent_resource() -> None:
    seq = {
        "resourceType": "MolecularSequence",
        "coordinateSystem": 0,
        "referenceSeq": {"chromosome": {"coding": [{"system": "http://x", "code": "9"}]}},
        "variant": [{"start": 10, "end": 11}, {"start": 20, "end": 21}],
    }
    ix = index_resource(seq)
    assert rows(ix, "tokens", "chromosome-variant-coordinate$0") == [
        (1, "http://x", "9", None),
        (2, "http://x", "9", None),
    ]
    assert rows(ix, "numbers", "chromosome-variant-coordinate$1") == [(1, 10.0), (2, 20.0)]
    assert rows(ix, "numbers", "variant-start") == [(0, 10.0), (0, 20.0)]


# --------------------------------------------------------------------------- Encounter


def test_encounter() -> None:
    ix = index_resource(ENCOUNTER)
    assert rows(ix, "dates", "date") == [(0, us(2024, 3, 1), us(2024, 3, 2, 10, 30, 0) + US - 1)]
    assert rows(ix, "refs", "subject") == [(0, "Patient", "p1", None)]
    assert rows(ix, "refs", "patient") == [(0, "Patient", "p1", None)]
    assert rows(ix, "refs", "participant") == [(0, "Practitioner", "dr1", None)]
    assert rows(ix, "refs", "practitioner") == [(0, "Practitioner", "dr1", None)]
    assert rows(ix, "tokens", "class") == [(0, "http://terminology.hl7.org/CodeSystem/v3-ActCode", "AMB", None)]
    assert rows(ix, "quantities", "length") == [(0, 90.0, 90.0, "http://unitsofmeasure.org", "min", "min")]


# --------------------------------------------------------------------------- datatypes


def test_references() -> None:
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": "https://other.example.org/fhir/Patient/p9/_history/2"},
        "performer": [
            {"reference": "urn:uuid:6c1a7f0e-1111-4222-8333-944455556666"},
            {"reference": "#contained-1"},
            {"identifier": {"system": "urn:oid:1.2.3", "value": "D-7"}},
            {"reference": "Practitioner/dr1/_history/4"},
        ],
        "basedOn": [{"identifier": {"value": "ORDER-1"}}],
    }
    ix = index_resource(obs)
    url = "https://other.example.org/fhir/Patient/p9/_history/2"
    assert rows(ix, "refs", "subject") == [(0, "Patient", "p9", url)]
    assert rows(ix, "refs", "patient") == [(0, "Patient", "p9", url)]
    assert rows(ix, "refs", "performer") == [
        (0, None, None, "urn:uuid:6c1a7f0e-1111-4222-8333-944455556666"),
        (0, "Practitioner", "dr1", None),
    ]
    assert rows(ix, "tokens", "performer:identifier") == [(0, "urn:oid:1.2.3", "D-7", None)]
    assert rows(ix, "tokens", "based-on:identifier") == [(0, None, "ORDER-1", None)]


def test_canonical_with_version_gives_two_rows() -> None:
    plan = {
        "resourceType": "PlanDefinition",
        "status": "active",
        "library": ["http://example.org/Library/lib1|1.2.0"],
    }
    ix = index_resource(plan)
    assert set(rows(ix, "refs", "depends-on")) == {
        (0, "Library", "lib1", "http://example.org/Library/lib1|1.2.0"),
        (0, "Library", "lib1", "http://example.org/Library/lib1"),
    }


def test_money_range_age() -> None:
    item = {
        "resourceType": "ChargeItem",
        "status": "billable",
        "code": {"text": "x"},
        "subject": {"reference": "Patient/p1"},
        "priceOverride": {"value": 12.5, "currency": "CNY"},
        "factorOverride": 0.8,
        "quantity": {"value": 2},
    }
    ix = index_resource(item)
    assert rows(ix, "quantities", "price-override") == [(0, 12.5, 12.5, "urn:iso:std:iso:4217", "CNY", None)]
    assert rows(ix, "numbers", "factor-override") == [(0, 0.8)]
    assert rows(ix, "quantities", "quantity") == [(0, 2.0, 2.0, None, None, None)]
    cond = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/p1"},
        "onsetRange": {"low": {"value": 40, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"}},
        "abatementAge": {"value": 52, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"},
    }
    ix = index_resource(cond)
    assert rows(ix, "quantities", "onset-age") == [(0, 40.0, math.inf, "http://unitsofmeasure.org", "a", "a")]
    assert rows(ix, "quantities", "abatement-age") == [(0, 52.0, 52.0, "http://unitsofmeasure.org", "a", "a")]


def test_timing_events_and_bounds() -> None:
    req = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "occurrenceTiming": {
            "event": ["2024-01-05T10:00:00Z", "2024-01-06"],
            "repeat": {"boundsPeriod": {"end": "2024-02"}},
        },
    }
    ix = index_resource(req)
    assert set(rows(ix, "dates", "occurrence")) == {
        (0, us(2024, 1, 5, 10, 0, 0), us(2024, 1, 5, 10, 0, 0) + US - 1),
        (0, us(2024, 1, 6), us(2024, 1, 7) - 1),
        (0, MIN, us(2024, 3, 1) - 1),
    }


def test_codeable_concept_and_coding_rows_deduplicate() -> None:
    cond = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/p1"},
        "code": {
            "coding": [
                {"system": "http://snomed.info/sct", "code": "38341003", "display": "Hypertension"},
                {"system": "http://snomed.info/sct", "code": "38341003", "display": "Hypertension"},
                {"display": "High blood pressure"},
            ],
            "text": "  High   BLOOD pressure ",
        },
    }
    ix = index_resource(cond)
    assert rows(ix, "tokens", "code") == [
        (0, "http://snomed.info/sct", "38341003", "hypertension"),
        (0, None, None, "high blood pressure"),
    ]


def test_uri_and_number_params() -> None:
    vs = {"resourceType": "ValueSet", "status": "draft", "url": "http://example.org/ValueSet/vs1", "version": "1"}
    ix = index_resource(vs)
    assert rows(ix, "uris", "url") == [(0, "http://example.org/ValueSet/vs1")]
    assert rows(ix, "tokens", "version") == [(0, None, "1", None)]
    ra = {
        "resourceType": "RiskAssessment",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "prediction": [{"probabilityDecimal": 0.02}],
    }
    assert rows(index_resource(ra), "numbers", "probability") == [(0, 0.02)]


def test_unknown_type_and_bad_values_do_not_raise() -> None:
    assert index_resource({"resourceType": "NotAType", "id": "x"}).row_count() == 0
    assert index_resource({"id": "x"}).row_count() == 0
    bad = {
        "resourceType": "Patient",
        "birthDate": "not-a-date",
        "name": "not-a-list",
        "gender": 7,
        "telecom": [None, {"system": "phone"}],
        "managingOrganization": {"reference": 5},
    }
    ix = index_resource(bad)
    assert ix.dates == [] and ix.strings == [] and ix.refs == []
    assert rows(ix, "tokens", "gender") == [(0, None, "7", None)]


# --------------------------------------------------------------------------- text and dates


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("Zhang", "zhang"),
        ("  Zhang   Wei ", "zhang wei"),
        ("Ｚｈａｎｇ\u3000Ｗｅｉ", "zhang wei"),  # full-width letters and ideographic space
        ("José Müller", "jose muller"),
        ("张伟", "张伟"),
        ("北京市 朝阳区", "北京市 朝阳区"),
    ],
)
def test_normalize_text(raw: str, norm: str) -> None:
    assert x.normalize_text(raw) == norm


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("2013", us(2013, 1, 1), us(2014, 1, 1) - 1),
        ("2012-02", us(2012, 2, 1), us(2012, 3, 1) - 1),
        ("2013-12", us(2013, 12, 1), us(2014, 1, 1) - 1),
        ("2013-05-17", us(2013, 5, 17), us(2013, 5, 18) - 1),
        ("2013-05-17T10:20:30Z", us(2013, 5, 17, 10, 20, 30), us(2013, 5, 17, 10, 20, 30) + US - 1),
        ("2013-05-17T10:20:30", us(2013, 5, 17, 10, 20, 30), us(2013, 5, 17, 10, 20, 30) + US - 1),
        ("2013-05-17T10:20:30+08:00", us(2013, 5, 17, 2, 20, 30), us(2013, 5, 17, 2, 20, 30) + US - 1),
        ("2013-05-17T10:20:30-05:30", us(2013, 5, 17, 15, 50, 30), us(2013, 5, 17, 15, 50, 30) + US - 1),
        ("2013-05-17T10:20:30.5Z", us(2013, 5, 17, 10, 20, 30) + 500_000, us(2013, 5, 17, 10, 20, 30) + 599_999),
        ("2013-05-17T10:20:30.123456Z", us(2013, 5, 17, 10, 20, 30) + 123_456, us(2013, 5, 17, 10, 20, 30) + 123_456),
        ("1850-01-01", us(1850, 1, 1), us(1850, 1, 2) - 1),
    ],
)
def test_date_range(text: str, low: int, high: int) -> None:
    assert date_range(text) == (low, high)


@pytest.mark.parametrize("text", ["", "13", "2013-13", "2013-02-30", "2013-05-17T25:00:00Z", "yesterday", "2013/05/17"])
def test_date_range_rejects_invalid(text: str) -> None:
    assert date_range(text) is None


# --------------------------------------------------------------------------- probes


def test_probe_values_for_synthetic_resources() -> None:
    pp = probe_values(PATIENT)
    for probe in [
        ("gender", "male"),
        ("family", "张"),
        ("name", "张伟"),
        ("birthdate", "eq1990-03-07"),
        ("identifier", "urn:oid:2.16.156.10011.1.3|110101199003071234"),
        ("identifier:of-type", "http://terminology.hl7.org/CodeSystem/v2-0203|NI|110101199003071234"),
        ("phone", "+86 138 0000 0000"),
        ("organization", "Organization/org1"),
        ("deceased", "false"),
        ("_profile", "http://example.org/StructureDefinition/cn-patient"),
    ]:
        assert probe in pp, probe
    po = probe_values(OBSERVATION)
    for probe in [
        ("code", "http://loinc.org|85354-9"),
        ("code:text", "BP"),
        ("date", "ge2024-03-01T08:00:00+08:00"),
        ("value-quantity", "5.4|http://unitsofmeasure.org|mmol/L"),
        ("subject", "Patient/p1"),
        ("code-value-quantity", "http://loinc.org|85354-9$5.4|http://unitsofmeasure.org|mmol/L"),
        ("component-code-value-quantity", "http://loinc.org|8480-6$120|http://unitsofmeasure.org|mm[Hg]"),
    ]:
        assert probe in po, probe
    pe = probe_values(ENCOUNTER)
    assert ("date", "ge2024-03-01") in pe and ("date", "le2024-03-02T10:30:00Z") in pe
    assert len(pe) == len(set(pe))


def test_probe_values_escape_separators() -> None:
    pat = {"resourceType": "Patient", "name": [{"family": "a,b$c|d\\e"}], "identifier": [{"value": "1|2"}]}
    pp = probe_values(pat)
    assert ("family", "a\\,b\\$c\\|d\\\\e") in pp
    assert ("identifier", "1\\|2") in pp


# --------------------------------------------------------------------------- the R4 examples

SLOW_TYPES = {"StructureDefinition", "ValueSet", "CodeSystem", "SearchParameter", "ConceptMap"}


@cache
def _all_examples() -> tuple[tuple[str, dict[str, Any]], ...]:
    try:
        folder = Path(package_dir())
    except RuntimeError as e:  # pragma: no cover - depends on the machine
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(str(e))
    out = []
    for p in sorted(folder.glob("*.json")):
        doc = orjson.loads(p.read_bytes())
        if isinstance(doc, dict) and doc.get("resourceType") in resource_types():
            out.append((p.name, doc))
    return tuple(out)


def _examples(include_conformance: bool) -> list[tuple[str, dict[str, Any]]]:
    """The examples; with ``include_conformance``, also the first 100 of each
    conformance type (StructureDefinition, ValueSet…: 4,500 big resources)."""
    out = []
    seen: dict[str, int] = {}
    for name, doc in _all_examples():
        rt = doc["resourceType"]
        if rt in SLOW_TYPES:
            if not include_conformance or seen.get(rt, 0) >= 100:
                continue
            seen[rt] = seen.get(rt, 0) + 1
        out.append((name, doc))
    return out


def test_every_r4_example_indexes() -> None:
    examples = _examples(include_conformance=False)
    assert len(examples) > 700
    total = 0
    kinds: set[str] = set()
    for name, doc in examples:
        ix = index_resource(doc)
        total += ix.row_count()
        for table in ("strings", "tokens", "dates", "refs", "quantities", "numbers", "uris"):
            got = getattr(ix, table)
            assert len(got) == len(set(got)), (name, table)
            kinds.update(table for _ in got[:1])
        for _p, _g, lo, hi in ix.dates:
            assert lo <= hi, name
    assert total > 8000
    assert kinds == {"strings", "tokens", "dates", "refs", "quantities", "numbers", "uris"}


def test_key_gating_loses_no_row() -> None:
    """Skipping params whose first element is absent gives the same rows as evaluating all."""
    for name, doc in _examples(include_conformance=True):
        gated, full = x._extract(doc, None, True), x._extract(doc, None, False)
        for table in ("strings", "tokens", "dates", "refs", "quantities", "numbers", "uris"):
            assert set(getattr(gated, table)) == set(getattr(full, table)), (name, table)


def test_index_params_gives_the_same_rows_as_the_full_index_for_those_params() -> None:
    tables = ("strings", "tokens", "dates", "refs", "quantities", "numbers", "uris")
    checked = 0
    for name, doc in _examples(include_conformance=False):
        full = index_resource(doc)
        # every other param that has rows (a composite's rows are named code$j, a reference's
        # identifier rows code:identifier)
        def base(row: tuple[Any, ...]) -> str:
            return str(row[0]).split("$")[0].split(":")[0]

        codes = sorted({base(r) for t in tables for r in getattr(full, t)})
        wanted = frozenset(codes[::2])
        part = x.index_params(doc, wanted)
        for table in tables:
            rows_full = {r for r in getattr(full, table) if base(r) in wanted}
            assert set(getattr(part, table)) == rows_full, (name, table)
            checked += len(rows_full)
    assert checked > 3000
    assert x.index_params(PATIENT, frozenset()).row_count() == 0


_TABLES = ("strings", "tokens", "dates", "refs", "quantities", "numbers", "uris")


def _alias_rows(rt: str, ix: x.ResourceIndex, code: str, al: x.Alias) -> set[tuple[Any, ...]]:
    """The rows of alias ``code`` as the search side finds them in the stored rows ``ix``, named
    ``code`` again; a composite's as (component j, values) sets, one per value (grp)."""
    out: set[tuple[Any, ...]] = set()
    for table in _TABLES:
        for r in getattr(ix, table):
            name = str(r[0])
            if al.target is None:
                for b in al.bases:
                    for sfx in ("", ":of-type", ":identifier"):
                        if name == b + sfx:
                            out.add((table, code + sfx, *r[1:]))
            elif name == code or (name == al.bases[0] and table == "refs" and r[2] == al.target):
                out.add((table, code, *r[1:]))
            elif name.startswith(code + ":"):
                out.add((table, *r))
    return out


def _composite_values(ix: x.ResourceIndex, codes: tuple[str, ...]) -> set[frozenset[tuple[Any, ...]]]:
    groups: dict[tuple[str, int], set[tuple[Any, ...]]] = {}
    for table in _TABLES:
        for r in getattr(ix, table):
            fam, _, j = str(r[0]).partition("$")
            if j and fam in codes:
                groups.setdefault((fam, r[1]), set()).add((table, j, *r[2:]))
    return {frozenset(v) for v in groups.values()}


def test_aliases_are_derived_from_the_expressions() -> None:
    obs = x.aliases("Observation")
    assert obs["combo-code"] == x.Alias(("code", "component-code"))
    assert obs["combo-code-value-quantity"] == x.Alias(("code-value-quantity", "component-code-value-quantity"))
    assert obs["combo-value-quantity"] == x.Alias(("component-value-quantity", "value-quantity"))
    assert obs["patient"] == x.Alias(("subject",), "Patient")
    assert x.aliases("Encounter")["practitioner"] == x.Alias(("participant",), "Practitioner")
    assert x.aliases("Person")["relatedperson"] == x.Alias(("link",), "RelatedPerson")
    assert "subject" not in obs and "code" not in obs
    # DiagnosticReport.patient is subject.where(resolve() is Patient) too; Patient has no alias
    assert x.aliases("DiagnosticReport")["patient"].bases == ("subject",)
    assert x.aliases("Patient") == {}


def test_stored_rows_still_give_every_alias_its_rows() -> None:
    """On every R4 example: the rows the store keeps (``storable``) give each alias exactly the rows
    its own expression gives, read the way the search side reads them (its bases' rows, narrowed
    to the target type, plus its own kept rows)."""
    dropped = kept_own = checked = 0
    for name, doc in _examples(include_conformance=False):
        rt = doc["resourceType"]
        als = x.aliases(rt)
        if not als:
            continue
        full = index_resource(doc)
        stored = x.storable(rt, full)
        dropped += full.row_count() - stored.row_count()
        for code, al in als.items():
            if any(str(r[0]).startswith(code + "$") for t in _TABLES for r in getattr(full, t)):
                assert _composite_values(stored, al.bases) == _composite_values(full, (code,)), (name, code)
                checked += 1
                continue
            own = {(t, *r) for t in _TABLES for r in getattr(full, t)
                   if r[0] == code or str(r[0]).startswith(code + ":")}
            assert _alias_rows(rt, stored, code, al) == own, (name, code)
            kept_own += sum(1 for t in _TABLES for r in getattr(stored, t) if r[0] == code)
            checked += bool(own)
    assert checked > 400 and dropped > 800, (checked, dropped)
    assert kept_own < dropped / 20


def test_a_restriction_alias_keeps_the_rows_its_base_does_not_imply() -> None:
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "subject": {"reference": "urn:uuid:0f1e", "type": "Patient"},
           "performer": [{"reference": "Patient/p2"}]}
    full = index_resource(obs)
    assert rows(full, "refs", "patient") == [(0, None, None, "urn:uuid:0f1e")]
    stored = x.storable("Observation", full)
    assert rows(stored, "refs", "patient") == [(0, None, None, "urn:uuid:0f1e")]
    assert rows(stored, "refs", "subject") == [(0, None, None, "urn:uuid:0f1e")]
    obs["subject"] = {"reference": "Patient/p1"}
    stored = x.storable("Observation", index_resource(obs))
    assert rows(stored, "refs", "patient") == []
    assert rows(stored, "refs", "subject") == [(0, "Patient", "p1", None)]
    assert rows(index_resource(obs), "refs", "patient") == [(0, "Patient", "p1", None)]


def test_probes_of_the_r4_examples_are_well_formed() -> None:
    codes: dict[str, set[str]] = {}
    for name, doc in _examples(include_conformance=False):
        rt = doc["resourceType"]
        if rt not in codes:
            codes[rt] = {p.code for p in x.params_for(rt)}
        ix = index_resource(doc)
        probes = probe_values(doc)
        assert len(probes) == len(set(probes)), name
        if ix.row_count():
            assert probes, name
        for param, value in probes:
            assert param.split(":")[0] in codes[rt], (name, param)
            assert value, (name, param)
            assert "$" not in param


def test_dates_agree_with_the_query_side() -> None:
    """The indexer's date ranges equal ``phip.fhir.datetimes`` (used to parse search values)."""
    seen = 0
    for _name, doc in _examples(include_conformance=False):
        for param, value in probe_values(doc):
            if value[:2] in ("eq", "ge", "le") and value[2:3].isdigit() and "\\" not in value:
                text = value[2:]
                ours = date_range(text)
                if ours is None:
                    continue
                assert ours == datetimes.date_range(text), (param, text)
                seen += 1
    assert seen > 300
    for text in ("2016-12-31T23:59:60Z", "2000-02-29", "1900-02", "2024-03-01T00:00:00.000001-14:00", "0001"):
        assert date_range(text) == datetimes.date_range(text), text


def test_period_with_end_before_start_keeps_low_below_high() -> None:
    enc = {"resourceType": "Encounter", "status": "finished", "period": {"start": "2024-02-01", "end": "2024-01-01"}}
    assert rows(index_resource(enc), "dates", "date") == [(0, us(2024, 1, 1), us(2024, 2, 2) - 1)]


def test_no_probe_for_a_reference_a_search_cannot_name() -> None:
    lib = {
        "resourceType": "Library",
        "status": "active",
        "type": {"text": "x"},
        "relatedArtifact": [{"type": "predecessor", "resource": "library-helpers-v1"}],
    }
    assert rows(index_resource(lib), "refs", "predecessor") == [(0, None, None, "library-helpers-v1")]
    # a bare value in a reference search is an id, so no probe would find this row
    assert not [p for p in probe_values(lib) if p[0] == "predecessor"]


def test_no_module_names_an_alias_by_its_own_key() -> None:
    """Code that builds SQL on the index tables finds a parameter's rows with ``param_rows`` /
    ``rows_of``: an alias's own key (``pk("Person", "patient")``) holds almost none of them."""
    import re

    src = Path(x.__file__).resolve().parents[2]
    call = re.compile(r"""\b(?:pk|param_key)\(\s*"([A-Za-z]+)"\s*,\s*"([a-z][a-z0-9-]*)"\s*\)""")
    bad = [(str(f.relative_to(src)), rt, code) for f in sorted(src.rglob("*.py"))
           for rt, code in call.findall(f.read_text()) if code in x.aliases(rt)]
    assert not bad
