"""Truth files agree with the output, and every injected defect is what the truth says it is."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta

from phip.cn import gb11643
from phip.synth import defects as dq
from phip.synth.truth import HEADERS

from .conftest import END, Region


def test_truth_files_have_the_documented_columns(region: Region) -> None:
    for name, cols in HEADERS.items():
        with open(region.root / "truth" / f"{name}.csv", encoding="utf-8") as f:
            assert f.readline().rstrip("\n").split(",") == list(cols)


def test_every_person_record_is_in_persons_csv_and_vice_versa(region: Region) -> None:
    rows = region.truth("persons")
    mapped = {(r["org_id"], r["resource_type"], r["resource_id"]) for r in rows}
    assert len(mapped) == len(rows)
    present = set()
    for org, res in region.iter("Patient"):
        present.add((org, "Patient", res["id"]))
        mrn = next(i["value"] for i in res["identifier"] if i["system"].endswith(":mrn"))
        assert f"{res['id']}".endswith(mrn)
    for org, res in region.iter("RelatedPerson"):
        present.add((org, "RelatedPerson", res["id"]))
    assert mapped == present
    assert {r["person_id"] for r in rows} <= set(region.people)


def test_residents_are_registered_at_several_institutions(region: Region) -> None:
    per_person = Counter(r["person_id"] for r in region.truth("persons") if r["resource_type"] == "Patient")
    assert sum(per_person.values()) / len(per_person) > 2.5
    assert max(per_person.values()) >= 6
    orgs = defaultdict(set)
    for r in region.truth("persons"):
        orgs[r["person_id"]].add(r["org_id"])
    assert sum(len(v) >= 4 for v in orgs.values()) > 0.3 * len(orgs)


def test_registry_records_carry_the_true_identity(region: Region) -> None:
    for org, res in region.iter("Patient"):
        if not org.endswith("-wjj"):
            continue
        person = region.people[region.person_of(f"Patient/{res['id']}")]
        ids = [i["value"] for i in res["identifier"] if i["system"] == "urn:oid:2.16.156.10011.1.3"]
        assert ids == [person["id_number"]]
        assert res["name"][0]["text"] == person["name"]
        assert res["birthDate"] == person["birth_date"] and res["gender"] == person["sex"]


def _identifier(res: dict, system: str) -> str | None:  # type: ignore[type-arg]
    return next((i["value"] for i in res.get("identifier", []) if i["system"] == system), None)


def test_each_defect_row_describes_the_record(region: Region) -> None:
    patients = region.load("Patient")
    rows = region.truth("quality_defects")
    kinds = Counter(r["defect"] for r in rows)
    for kind in (
        dq.HOMOPHONE,
        dq.TRADITIONAL,
        dq.ID_MISSING,
        dq.ID_MISTYPED,
        dq.NEWBORN_MOTHER_ID,
        dq.MISSING,
        dq.OUTDATED_PHONE,
        dq.OUTDATED_ADDRESS,
        dq.LATE_UPLOAD,
    ):
        assert kinds[kind] > 0, kind
    id_system = "urn:oid:2.16.156.10011.1.3"
    for r in rows:
        if r["resource_type"] != "Patient":
            continue
        res = patients[r["resource_id"]]
        person = region.people[region.person_of(f"Patient/{res['id']}")]
        d = r["defect"]
        if d in (dq.HOMOPHONE, dq.TRADITIONAL):
            assert res["name"][0]["text"] == r["recorded_value"] != person["name"] == r["true_value"]
        elif d == dq.ID_MISSING:
            assert _identifier(res, id_system) is None and r["true_value"] == person["id_number"]
        elif d == dq.ID_MISTYPED:
            assert _identifier(res, id_system) == r["recorded_value"]
            assert not gb11643.validate(r["recorded_value"], today=END).valid
        elif d == dq.NEWBORN_MOTHER_ID:
            assert _identifier(res, id_system) == r["recorded_value"] == region.people[person["mother_id"]]["id_number"]
        elif d == dq.DAY_MONTH_SWAPPED:
            assert res["birthDate"] == r["recorded_value"] and r["true_value"] == person["birth_date"]
        elif d == dq.MISSING:
            assert r["element"] not in res
        elif d == dq.OUTDATED_PHONE:
            assert res["telecom"][0]["value"] == r["recorded_value"] != r["true_value"]
        elif d == dq.DUPLICATE:
            assert r["true_value"] in patients and r["true_value"] != res["id"]


def test_clean_patient_records_match_the_person(region: Region) -> None:
    defective = {r["resource_id"] for r in region.truth("quality_defects") if r["resource_type"] == "Patient"}
    checked = 0
    for res in region.load("Patient").values():
        if res["id"] in defective:
            continue
        person = region.people[region.person_of(f"Patient/{res['id']}")]
        assert res["name"][0]["text"] == person["name"]
        assert res["gender"] == person["sex"]
        assert res["birthDate"] == person["birth_date"]
        idno = _identifier(res, "urn:oid:2.16.156.10011.1.3")
        assert idno in (None, person["id_number"])  # newborns before their birth registration have none
        checked += 1
    assert checked > 0.7 * len(region.load("Patient"))


def test_late_uploads_are_late_and_others_are_not(region: Region) -> None:
    late = {
        r["resource_id"]
        for r in region.truth("quality_defects")
        if r["defect"] == dq.LATE_UPLOAD and r["resource_type"] == "Encounter"
    }
    assert late
    for _org, enc in region.iter("Encounter"):
        start = datetime.fromisoformat(enc["period"]["start"])
        uploaded = datetime.fromisoformat(enc["meta"]["lastUpdated"])
        if enc["id"] in late:
            assert uploaded - start >= timedelta(days=8) or uploaded.date() == END
        else:
            assert timedelta(0) < uploaded - start <= timedelta(days=1)


def test_local_code_lists_are_used_and_mapped(region: Region) -> None:
    maps = defaultdict(dict)
    for r in region.truth("local_codes"):
        maps[(r["org_id"], r["domain"])][r["local_code"]] = (r["standard_system"], r["standard_code"])
    assert maps
    used = 0
    for org, cond in region.iter("Condition"):
        system = cond["code"]["coding"][0]["system"]
        if system.startswith(f"urn:phip:org:{org}:cs:"):
            code = cond["code"]["coding"][0]["code"]
            assert code in maps[(org, "diagnosis")]
            used += 1
        else:
            assert (org, "diagnosis") not in maps
            assert system == "urn:oid:2.16.156.10011.2.3.3.11"
    assert used > 0
