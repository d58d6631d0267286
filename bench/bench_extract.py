"""Benchmark search-index extraction (``phip.fhir.search.extract.index_resource``).

Prints resources/s, rows/s and µs per resource for (1) the official R4 examples
(conformance resources and all) and (2) typical synthetic Patient, Observation
and Encounter resources, each measured after a warm-up so per-type compilation
is excluded (it happens once per type per process).

Times are process CPU time (``time.process_time``), best of 3, so other
processes on a shared machine disturb them less; the first line prints the cost
of an empty Python call as a yardstick of the machine's speed at the time.

Run: ``python bench/bench_extract.py [--repeat N]``
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from phip.fhir.package import package_dir
from phip.fhir.search.extract import index_resource

CONFORMANCE = {"StructureDefinition", "ValueSet", "CodeSystem", "SearchParameter", "ConceptMap"}


def synthetic() -> dict[str, dict[str, Any]]:
    """Typical clinical resources (synthetic people only)."""
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "meta": {"lastUpdated": "2024-03-01T10:00:00Z", "profile": ["http://example.org/fhir/Patient"]},
        "identifier": [
            {
                "use": "official",
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NI"}]},
                "system": "urn:oid:2.16.156.10011.1.3",
                "value": "110101199003071234",
            },
            {"system": "http://example.org/mrn", "value": "MRN-0001"},
        ],
        "active": True,
        "name": [{"use": "official", "family": "张", "given": ["伟"], "text": "张伟"}],
        "telecom": [{"system": "phone", "value": "+86 138 0000 0000", "use": "mobile"}],
        "gender": "male",
        "birthDate": "1990-03-07",
        "address": [
            {
                "line": ["朝阳区建国路 1 号"],
                "city": "北京",
                "district": "朝阳区",
                "postalCode": "100020",
                "country": "CN",
            }
        ],
        "managingOrganization": {"reference": "Organization/org1"},
    }
    observation = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": "http://loinc.org", "code": "2339-0", "display": "Glucose [Mass/volume] in Blood"}],
            "text": "Glucose",
        },
        "subject": {"reference": "Patient/p1"},
        "encounter": {"reference": "Encounter/e1"},
        "effectiveDateTime": "2024-03-01T08:30:00+08:00",
        "issued": "2024-03-01T09:00:00.000+08:00",
        "performer": [{"reference": "Practitioner/pr1"}],
        "valueQuantity": {
            "value": 5.4,
            "unit": "mmol/L",
            "system": "http://unitsofmeasure.org",
            "code": "mmol/L",
        },
        "interpretation": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                        "code": "N",
                    }
                ]
            }
        ],
    }
    encounter = {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "185349003"}]}],
        "subject": {"reference": "Patient/p1"},
        "participant": [{"individual": {"reference": "Practitioner/pr1"}}],
        "period": {"start": "2024-03-01T08:00:00+08:00", "end": "2024-03-01T08:45:00+08:00"},
        "serviceProvider": {"reference": "Organization/org1"},
    }
    return {"Patient": patient, "Observation": observation, "Encounter": encounter}


def load_examples() -> list[dict[str, Any]]:
    out = []
    for f in sorted(Path(package_dir()).glob("*.json")):
        d = orjson.loads(f.read_bytes())
        if isinstance(d, dict) and "resourceType" in d:
            out.append(d)
    return out


def measure(resources: list[dict[str, Any]], repeat: int) -> tuple[float, int]:
    """Seconds for ``repeat`` passes over ``resources`` and rows per pass."""
    for r in resources:  # warm-up: compile the per-type plans
        index_resource(r)
    rows = sum(index_resource(r).row_count() for r in resources)
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        for _ in range(repeat):
            for r in resources:
                index_resource(r)
        best = min(best, time.process_time() - t0)
    return best, rows


def report(label: str, resources: list[dict[str, Any]], repeat: int) -> None:
    secs, rows = measure(resources, repeat)
    n = len(resources) * repeat
    print(
        f"{label:<38} {len(resources):>5} res  {rows / len(resources):7.1f} rows/res  "
        f"{n / secs:10,.0f} res/s  {rows * repeat / secs:12,.0f} rows/s  {secs / n * 1e6:8.1f} µs/res"
    )


def call_ns() -> float:
    """ns per empty Python function call: a yardstick for how busy/fast the machine is."""

    def f() -> None:
        pass

    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(200_000):
            f()
        best = min(best, time.process_time() - t0)
    return best / 200_000 * 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=1, help="passes over the examples")
    args = ap.parse_args()
    print(f"machine yardstick: {call_ns():.0f} ns per empty Python call (CPU time, best of 5)")
    t0 = time.process_time()
    examples = load_examples()
    t_first = time.process_time()
    for r in examples:
        index_resource(r)
    cold = time.process_time() - t_first
    print(f"loaded {len(examples)} examples in {t_first - t0:.2f}s; first pass incl. compiling {cold:.2f}s")
    kinds = Counter(r["resourceType"] for r in examples)
    print(f"{len(kinds)} resource types")
    report("R4 examples (all)", examples, args.repeat)
    clinical = [r for r in examples if r["resourceType"] not in CONFORMANCE]
    report("R4 examples (non-conformance)", clinical, args.repeat)
    report("R4 conformance resources", [r for r in examples if r["resourceType"] in CONFORMANCE], args.repeat)
    syn = synthetic()
    for name, res in syn.items():
        report(f"synthetic {name}", [res], 20000)
    report("synthetic Patient+Observation+Encounter", list(syn.values()), 10000)


if __name__ == "__main__":
    main()
