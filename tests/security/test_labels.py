"""The label rules' shortcut (a record whose JSON text names no code system of a rule gets no label)
gives the labels the full look gives, on every R4 example of a labelled type."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from phip.security.labels import LabelRules


def _rules(systems: list[str]) -> LabelRules:
    return LabelRules({
        "sensitivity_system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
        "confidentiality": {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"},
        "systems": {"broad": systems},
        "params": {"codes": {"Condition": ["code"], "Observation": ["code", "value-concept"],
                             "Encounter": ["reason-code"], "MedicationRequest": ["code"], "Procedure": ["code"]}},
        "rules": [{"label": "PSY", "ranges": [["0", "9"]], "systems": ["broad"], "params": "codes"},
                  {"label": "HIV", "ranges": [["A", "Z"]], "systems": ["broad"], "params": "codes"}],
    })


def _full(rules: LabelRules, doc: dict[str, Any]) -> list[str]:
    rules.__dict__["needles"] = None  # the rules' own look, with no shortcut
    try:
        return rules.labels_for(doc)
    finally:
        del rules.__dict__["needles"]


def test_the_shortcut_labels_as_the_full_look_on_the_r4_examples() -> None:
    from phip.fhir.package import package_dir

    try:
        files = sorted(package_dir(fetch=False).glob("*-*.json"))
    except RuntimeError as exc:
        pytest.skip(f"R4 examples not cached: {exc}")
    rules = _rules(["http://snomed.info/sct", "http://loinc.org", "http://hl7.org/fhir/sid/icd-10",
                    "http://www.nlm.nih.gov/research/umls/rxnorm"])
    assert rules.needles is not None
    seen = labelled = 0
    for path in files:
        doc = orjson.loads(path.read_bytes())
        if doc.get("resourceType") not in rules.types:
            continue
        seen += 1
        got = rules.labels_for(doc)
        assert got == _full(rules, doc), path.name
        labelled += bool(got)
    assert seen > 100 and 30 < labelled < seen  # both ways out of the shortcut are taken


def test_a_resource_without_a_rules_system_gets_no_label_and_one_with_it_does() -> None:
    rules = LabelRules.load()
    cond = {"resourceType": "Condition", "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": "urn:oid:2.16.156.10011.2.3.3.11", "code": "F20.0"}]}}
    assert rules.labels_for(cond) == ["PSY"]
    other = {**cond, "code": {"coding": [{"system": "http://snomed.info/sct", "code": "F20.0"}]}}
    assert rules.labels_for(other) == [] == _full(rules, other)


def test_a_system_json_would_escape_turns_the_shortcut_off(tmp_path: Path) -> None:
    rules = _rules(['urn:x:"quoted"', "http://loinc.org"])
    assert rules.needles is None
    obs = {"resourceType": "Observation", "code": {"coding": [{"system": 'urn:x:"quoted"', "code": "1"}]}}
    assert rules.labels_for(obs) == ["PSY"]
