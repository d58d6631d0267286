"""The per-record checks, without a database."""

from __future__ import annotations

from datetime import date
from typing import Any

from phip.cn import gb11643
from phip.quality.checks import HOUR_US, Checker, parse_time
from phip.quality.rules import load

RECEIVED = parse_time("2024-03-01T12:00:00+08:00") or 0
ID_SYS = "urn:oid:2.16.156.10011.1.3"


def _id(birth: date, seq: int) -> str:
    return gb11643.generate("510104", birth, seq)


def patient(**kw: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "resourceType": "Patient", "id": "p1",
        "identifier": [{"system": ID_SYS, "value": _id(date(1980, 5, 17), 123)}],
        "name": [{"text": "王小明", "family": "王", "given": ["小明"]}],
        "gender": "male", "birthDate": "1980-05-17",
        "telecom": [{"system": "phone", "value": "13800001111"}],
        "address": [{"text": "四川省成都市锦江区"}],
        "managingOrganization": {"reference": "Organization/o1"},
    }
    p.update(kw)
    return {k: v for k, v in p.items() if v is not None}


def rules_of(res: dict[str, Any], received: int = RECEIVED, checker: Checker | None = None) -> set[str]:
    ck = checker or Checker(load())
    return {f.rule for f in ck.check(res["resourceType"], res["id"], res, received).findings}


def test_a_clean_patient_has_no_findings() -> None:
    assert rules_of(patient()) == set()


def test_id_number_checks() -> None:
    good = _id(date(1980, 5, 17), 123)
    bad = good[:10] + ("1" if good[10] != "1" else "2") + good[11:]
    assert "conformance.Patient.id-number" in rules_of(patient(identifier=[{"system": ID_SYS, "value": bad}]))
    # sex parity: 123 is odd (male); a woman with it is inconsistent
    assert "consistency.Patient.id-sex" in rules_of(patient(gender="female"))
    # birth date vs the number; day and month swapped
    assert "consistency.Patient.id-birthdate" in rules_of(patient(birthDate="1980-05-18"))
    swapped = _id(date(1980, 3, 4), 123)
    assert "consistency.Patient.id-birthdate" in rules_of(
        patient(identifier=[{"system": ID_SYS, "value": swapped}], birthDate="1980-04-03"))
    # missing, except for a newborn in its first days
    assert "completeness.Patient.identifier" in rules_of(patient(identifier=[]))
    newborn = patient(identifier=[], birthDate="2024-02-28")
    assert "completeness.Patient.identifier" not in rules_of(newborn)


def test_names_and_phones() -> None:
    assert "conformance.Patient.placeholder-name" in rules_of(patient(name=[{"text": "李红之子"}]))
    assert "conformance.Patient.traditional-name" in rules_of(patient(name=[{"text": "陳國華"}]))
    assert "conformance.Patient.phone" in rules_of(patient(telecom=[{"system": "phone", "value": "12345"}]))
    assert rules_of(patient(telecom=[{"system": "phone", "value": "028-85551234"}])) == set()
    assert "completeness.Patient.telecom" in rules_of(patient(telecom=None))


def test_code_bindings_use_the_terminology_service_when_present() -> None:
    sex = {"url": "urn:phip:ext:sex-gbt2261",
           "valueCodeableConcept": {"coding": [{"system": "urn:oid:2.16.156.10011.2.3.3.4", "code": "3"}]}}
    # without a service: the shipped fallback table (0, 1, 2, 9)
    assert "conformance.Patient.sex-gbt2261" in rules_of(patient(extension=[sex]))

    class Tables:
        """A terminology service that knows the sex table and says 3 is in it."""

        def is_known_system(self, system: str) -> bool:
            return system == "urn:oid:2.16.156.10011.2.3.3.4"

        def valueset(self, url: str) -> None:
            return None

        def validate_code(self, system: str, code: str, valueset_url: str | None = None) -> dict[str, Any]:
            return {"result": code in ("0", "1", "2", "3", "9")}

    assert "conformance.Patient.sex-gbt2261" not in rules_of(patient(extension=[sex]),
                                                              checker=Checker(load(), Tables()))
    cond = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": "urn:oid:2.16.156.10011.2.3.3.11", "code": "not-a-code"}]},
            "onsetDateTime": "2024-03-01", "recordedDate": "2024-03-01T10:00:00+08:00",
            "recorder": {"reference": "Practitioner/d1"}}
    assert "conformance.Condition.diagnosis-icd10" in rules_of(cond)


def test_value_set_checks_split_between_the_import_worker_and_the_writer() -> None:
    """The codes gathered without the terminology service (the import worker) give the findings of
    the whole check (the writer): same rules, paths and messages, the first bad code of a binding."""
    ck = Checker(load())
    sex = {"url": "urn:phip:ext:sex-gbt2261",
           "valueCodeableConcept": {"coding": [{"system": "urn:oid:2.16.156.10011.2.3.3.4", "code": "1"},
                                               {"system": "urn:oid:2.16.156.10011.2.3.3.4", "code": "7"}]}}
    icd = "urn:oid:2.16.156.10011.2.3.3.11"
    cases = [
        patient(), patient(extension=[sex]), patient(extension=[sex, dict(sex)]),
        {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
         "code": {"coding": [{"system": icd, "code": "I10"}, {"system": icd, "code": "bad"},
                             {"system": icd, "code": "worse"}, {"system": "http://other", "code": "x"}]}},
        {"resourceType": "Condition", "id": "c2", "code": {"coding": [{"system": icd, "code": "E11.9"}]}},
    ]
    seen = set()
    for res in cases:
        whole: list[Any] = []
        ck.check_codes(res["resourceType"], res, whole)
        split: list[Any] = []
        ck.check_candidates(res["resourceType"], ck.code_candidates(res["resourceType"], res), split)
        assert split == whole
        seen.update((f.rule, f.message) for f in whole)
    assert {r for r, _m in seen} == {"conformance.Patient.sex-gbt2261", "conformance.Condition.diagnosis-icd10"}
    assert any("'7'" in m for _r, m in seen) and any("'bad'" in m for _r, m in seen)
    assert not ck.code_candidates("Condition", {"resourceType": "Condition", "code": {"coding": [
        {"system": "http://other", "code": "x"}]}})


def test_completeness_conditions() -> None:
    obs = {"resourceType": "Observation", "id": "o1", "status": "final",
           "category": [{"coding": [{"code": "survey"}]}], "code": {"text": "x"},
           "effectiveDateTime": "2024-03-01T10:00:00+08:00"}
    assert "completeness.Observation.performer" not in rules_of(obs)
    obs["category"] = [{"coding": [{"code": "vital-signs"}]}]
    assert "completeness.Observation.performer" in rules_of(obs)


def test_vital_signs_and_date_order() -> None:
    bp = {"resourceType": "Observation", "id": "o1", "status": "final", "performer": [{"reference": "Practitioner/1"}],
          "category": [{"coding": [{"code": "vital-signs"}]}], "code": {"coding": [{"code": "85354-9"}]},
          "effectiveDateTime": "2024-03-01T10:00:00+08:00",
          "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                         "valueQuantity": {"value": 420, "unit": "mm[Hg]", "code": "mm[Hg]"}}]}
    assert "consistency.Observation.vital-range" in rules_of(bp)
    bp["component"][0]["valueQuantity"]["value"] = 135
    assert "consistency.Observation.vital-range" not in rules_of(bp)
    enc = {"resourceType": "Encounter", "id": "e1", "status": "finished", "class": {"code": "AMB"},
           "period": {"start": "2024-03-01T10:00:00+08:00", "end": "2024-03-01T09:00:00+08:00"},
           "participant": [{}], "serviceType": {"text": "内科"}, "serviceProvider": {"reference": "Organization/o1"}}
    assert "consistency.Encounter.period.start-before-period.end" in rules_of(enc)


def test_timeliness_24_hours_and_2_for_class_a() -> None:
    cond = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": "urn:oid:2.16.156.10011.2.3.3.11", "code": "J06.9"}]},
            "onsetDateTime": "2024-03-01", "recordedDate": "2024-03-01T08:00:00+08:00",
            "recorder": {"reference": "Practitioner/d1"}}
    event = parse_time("2024-03-01T08:00:00+08:00") or 0
    assert "timeliness.Condition" not in rules_of(cond, event + 23 * HOUR_US)
    assert "timeliness.Condition" in rules_of(cond, event + 25 * HOUR_US)
    cond["code"]["coding"][0]["code"] = "A00.9"  # cholera: 2 hours
    assert "timeliness.Condition" not in rules_of(cond, event + 1 * HOUR_US)
    assert "timeliness.Condition" in rules_of(cond, event + 3 * HOUR_US)


def test_institution_is_read_from_the_resource() -> None:
    ck = Checker(load())
    enc = {"resourceType": "Encounter", "id": "e1", "serviceProvider": {"reference": "Organization/h1"}}
    assert ck.institution("Encounter", "e1", enc) == ("h1", None)
    obs = {"resourceType": "Observation", "id": "o1", "performer": [{"reference": "Practitioner/d1"}],
           "encounter": {"reference": "Encounter/e1"}}
    assert ck.institution("Observation", "o1", obs) == (None, "Encounter/e1")
    rx = {"resourceType": "MedicationRequest", "id": "m1",
          "identifier": [{"system": "urn:phip:org:h2:rx", "value": "1"}]}
    assert ck.institution("MedicationRequest", "m1", rx) == ("h2", None)
    src = {"resourceType": "Condition", "id": "c1", "meta": {"source": "Organization/h3"}}
    assert ck.institution("Condition", "c1", src) == ("h3", None)


def test_upload_rate_against_the_trailing_mean() -> None:
    from phip.quality.engine import upload_rate

    # 10 a day for 28 days, then 5 a day for a week: half the expected volume in that week
    daily = {20240101 + i: 10 for i in range(28)}
    daily.update({20240129 + i: 5 for i in range(3)})
    daily.update({20240201 + i: 5 for i in range(4)})
    rate = upload_rate(daily, 28, None, 20240129, 20240204)
    assert rate is not None and 0.45 < rate < 0.6
    assert upload_rate(daily, 28, None, 20240101, 20240128) is None  # no full baseline yet
    assert upload_rate(daily, 28, 5.0, 20240129, 20240204) == 1.0  # a fixed expectation of 5 a day
