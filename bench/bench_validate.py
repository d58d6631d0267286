"""Benchmark the FHIR R4 validator (``phip.fhir.validation.validate``).

Prints resources per second and microseconds per resource for:

- every official R4 example (from the cached ``hl7.fhir.r4.examples`` package,
  conformance resources included: big StructureDefinitions make this slower than
  clinical data), parsed once up front so only validation is timed;
- typical clinical resources: a synthetic Patient and a vital-sign Observation
  as a bulk import would carry them (with and without a generated narrative),
  and the spec's ``Patient-example`` and ``Observation-example``.

The bulk-import budget is 3,000 resources/s including storage, so validation
should stay well under 100 µs for a typical resource (target < 40 µs).

Run: ``python bench/bench_validate.py [--seconds 1.0]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import orjson

from phip.fhir.package import package_dir
from phip.fhir.validation import validate

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "syn-000123",
    "meta": {"versionId": "1", "lastUpdated": "2024-03-01T10:00:00.000+08:00"},
    "identifier": [
        {
            "use": "usual",
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
            "system": "urn:oid:1.2.36.146.595.217.0.1",
            "value": "SYN-000123",
        }
    ],
    "active": True,
    "name": [{"use": "official", "family": "Synthetic", "given": ["Jane", "Q"]}],
    "telecom": [{"system": "phone", "value": "555-0100", "use": "home"}],
    "gender": "female",
    "birthDate": "1970-01-01",
    "address": [
        {
            "use": "home",
            "line": ["1 Example Street"],
            "city": "Sampletown",
            "postalCode": "99999",
            "country": "XX",
        }
    ],
    "managingOrganization": {"reference": "Organization/org-1"},
}

OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "syn-obs-1",
    "status": "final",
    "category": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "vital-signs",
                    "display": "Vital Signs",
                }
            ]
        }
    ],
    "code": {
        "coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}],
        "text": "Heart rate",
    },
    "subject": {"reference": "Patient/syn-000123"},
    "encounter": {"reference": "Encounter/syn-enc-1"},
    "effectiveDateTime": "2024-03-01T09:30:00+08:00",
    "issued": "2024-03-01T09:31:00.000+08:00",
    "performer": [{"reference": "Practitioner/syn-pr-1"}],
    "valueQuantity": {
        "value": 72,
        "unit": "beats/minute",
        "system": "http://unitsofmeasure.org",
        "code": "/min",
    },
}

NARRATIVE = {
    "status": "generated",
    "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>Jane Q Synthetic, female, born 1970-01-01</p></div>',
}


def rate(name: str, resources: list[dict[str, Any]], seconds: float, check: Callable[[], None] | None = None) -> None:
    """Validate ``resources`` round-robin for about ``seconds``; print the rate."""
    n = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        for r in resources:
            validate(r)
        n += len(resources)
        now = time.perf_counter()
        if now >= end:
            break
    per = (now - start) / n
    print(f"{name:<48} {1 / per:>10,.0f} resources/s  {per * 1e6:>8.1f} µs/resource  (n={n})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = ap.parse_args()

    for r in (PATIENT, OBSERVATION):
        issues = validate(r)
        assert not issues, issues
    with_text = [{**PATIENT, "text": NARRATIVE}, {**OBSERVATION, "text": NARRATIVE}]

    pkg = package_dir()
    examples = [orjson.loads(p.read_bytes()) for p in sorted(pkg.glob("*-*.json"))]
    clinical = [
        r
        for r in examples
        if r["resourceType"]
        not in ("StructureDefinition", "SearchParameter", "CodeSystem", "ValueSet", "ConceptMap",
                "OperationDefinition", "CapabilityStatement", "ImplementationGuide", "NamingSystem",
                "CompartmentDefinition", "StructureMap", "GraphDefinition", "MessageDefinition")
    ]
    spec_patient = orjson.loads((pkg / "Patient-example.json").read_bytes())
    spec_obs = orjson.loads((pkg / "Observation-example.json").read_bytes())

    validate(PATIENT)  # build the tables outside the timing
    rate("synthetic Patient", [PATIENT], args.seconds)
    rate("synthetic Observation (vital sign)", [OBSERVATION], args.seconds)
    rate("synthetic Patient + Observation, with narrative", with_text, args.seconds)
    rate("spec Patient-example", [spec_patient], args.seconds)
    rate("spec Observation-example", [spec_obs], args.seconds)
    rate(f"R4 examples, non-conformance ({len(clinical)})", clinical, max(args.seconds, 2.0))
    rate(f"R4 examples, all ({len(examples)})", examples, max(args.seconds, 3.0))


if __name__ == "__main__":
    main()
