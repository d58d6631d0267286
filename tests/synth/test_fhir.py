"""The output is valid FHIR R4 and its references resolve."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson

from phip.fhir.validation import errors

from .conftest import Region


def _references(obj: Any, out: list[str]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "reference" and isinstance(v, str):
                out.append(v)
            else:
                _references(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _references(v, out)


def _periods(obj: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(obj, dict):
        if isinstance(obj.get("start"), str) and isinstance(obj.get("end"), str):
            out.append((obj["start"], obj["end"]))
        for v in obj.values():
            _periods(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _periods(v, out)


def test_every_reference_resolves_and_ids_are_unique(region: Region) -> None:
    ids: set[str] = set()
    refs: list[str] = []
    dupes = 0
    for _org, res in region.iter():
        key = f"{res['resourceType']}/{res['id']}"
        dupes += key in ids
        ids.add(key)
        _references(res, refs)
    assert dupes == 0
    missing = [r for r in refs if r not in ids]
    assert not missing, missing[:10]
    assert len(refs) > len(ids)


def test_a_sample_of_every_type_validates_without_errors(region: Region) -> None:
    """Every 7th resource of each file, and all of the rare types (the full check is in test_determinism)."""
    checked: Counter[str] = Counter()
    for f in region.files():
        with open(f, "rb") as fh:
            for i, line in enumerate(fh):
                res = orjson.loads(line)
                if i % 7 and checked[res["resourceType"]] > 500:
                    continue
                problems = errors(res)
                assert not problems, (f, res["id"], problems[:3])
                checked[res["resourceType"]] += 1
    expected = {
        "Organization",
        "Location",
        "Practitioner",
        "PractitionerRole",
        "Patient",
        "RelatedPerson",
        "Group",
        "Encounter",
        "Condition",
        "Observation",
        "DiagnosticReport",
        "MedicationRequest",
        "Procedure",
        "Immunization",
        "Composition",
        "ServiceRequest",
        "Coverage",
        "Claim",
        "ClaimResponse",
    }
    assert expected <= set(checked), expected - set(checked)


def test_periods_start_before_they_end(region: Region) -> None:
    periods: list[tuple[str, str]] = []
    for _org, res in region.iter("Encounter"):
        _periods(res, periods)
    for _org, res in region.iter("Patient"):
        _periods(res, periods)
    assert periods
    assert all(s[:10] <= e[:10] and (len(s) != len(e) or s <= e) for s, e in periods)


def test_identifiers_follow_the_node_conventions(region: Region) -> None:
    for org, res in region.iter("Patient"):
        systems = {i["system"] for i in res["identifier"]}
        assert f"urn:phip:org:{org}:mrn" in systems
        assert systems <= {f"urn:phip:org:{org}:mrn", "urn:oid:2.16.156.10011.1.3"}
        assert res["managingOrganization"]["reference"] == f"Organization/{org}"
        for ext in res["extension"]:
            assert ext["url"] in ("urn:phip:ext:sex-gbt2261", "urn:phip:ext:ethnicity")
    for org, res in region.iter("Organization"):
        assert res["id"] == org


def test_resources_sit_in_their_institutions_folder(region: Region) -> None:
    for org, res in region.iter("Encounter"):
        assert res["serviceProvider"]["reference"] == f"Organization/{org}"
    for org, res in region.iter("Immunization"):
        assert res["patient"]["reference"].startswith(f"Patient/{org}-")
    for org, res in region.iter("ClaimResponse"):
        assert res["insurer"]["reference"] == f"Organization/{org}"
