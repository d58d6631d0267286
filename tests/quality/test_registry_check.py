"""A hospital's record of a resident against the population registry's record (与全员人口库比对):
the same ID number with another name, phone or current address is a consistency finding, on the
REST path and in the import's batch phase; nothing is flagged when they agree, when the registry
record is inactive, or when the record has no valid ID number.  Keys are stored hashed/blinded."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from phip.cn import gb11643

ID_SYS = "urn:oid:2.16.156.10011.1.3"
ID_A = gb11643.generate("510104", date(1980, 5, 17), 123)
ID_B = gb11643.generate("510104", date(1975, 2, 3), 201)
Z200 = {"coding": [{"system": "urn:phip:cs:org-type", "code": "Z200", "display": "卫生健康行政部门"}]}
LINE = "光明街道梅泉社区建设路127号9栋3单元703室"


def _orgs(api: Any) -> None:
    api.put("/fhir/Organization/wjj", {"resourceType": "Organization", "id": "wjj", "name": "锦江区卫生健康局",
                                       "type": [Z200]}, expect=201)
    api.put("/fhir/Organization/h1", {"resourceType": "Organization", "id": "h1", "name": "医院"}, expect=201)


def _patient(pid: str, org: str, idno: str = ID_A, name: str = "王小明", phone: str = "15400112648",
             line: str = LINE, **kw: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "resourceType": "Patient", "id": pid,
        "identifier": [{"system": ID_SYS, "value": idno}],
        "name": [{"use": "official", "text": name, "family": name[0], "given": [name[1:]]}],
        "gender": "male" if int(idno[16]) % 2 else "female", "birthDate": f"{idno[6:10]}-{idno[10:12]}-{idno[12:14]}",
        "telecom": [{"system": "phone", "value": phone}],
        "address": [{"use": "home", "text": "四川省成都市锦江区" + line, "line": [line], "district": "锦江区"}],
        "managingOrganization": {"reference": f"Organization/{org}"},
    }
    p.update(kw)
    return p


def _rules(api: Any, pid: str) -> set[str]:
    body = api.get(f"/quality/findings?subject=Patient/{pid}&status=open", expect=200).json()
    return {f["rule"] for f in body["findings"] if ".registry-" in f["rule"]}


def test_rest_writes_are_compared_with_the_registry(api: Any, node: Any) -> None:
    _orgs(api)
    api.put("/fhir/Patient/reg-a", _patient("reg-a", "wjj"), expect=201)
    api.put("/fhir/Patient/same", _patient("same", "h1"), expect=201)
    assert _rules(api, "same") == set()
    api.put("/fhir/Patient/homophone", _patient("homophone", "h1", name="王晓明"), expect=201)
    assert _rules(api, "homophone") == {"consistency.Patient.registry-name"}
    api.put("/fhir/Patient/old", _patient("old", "h1", phone="15400000000", line="新华路326号3栋"), expect=201)
    assert _rules(api, "old") == {"consistency.Patient.registry-phone", "consistency.Patient.registry-address"}
    msg = api.get("/quality/findings?subject=Patient/old&rule=consistency.Patient.registry-phone",
                  expect=200).json()["findings"][0]
    assert "全员人口库" in msg["message"] and "Patient/reg-a" in msg["message"] and msg["path"] == "Patient.telecom"
    # corrected by the institution: re-checked and resolved
    api.put("/fhir/Patient/old", _patient("old", "h1"), expect=200)
    assert _rules(api, "old") == set()
    # the registry's own records are the reference, never flagged; no registry record: nothing to say
    assert _rules(api, "reg-a") == set()
    api.put("/fhir/Patient/other", _patient("other", "h1", idno=ID_B, name="李芳"), expect=201)
    assert _rules(api, "other") == set()
    # an inactive registry record (moved away) is no reference
    api.put("/fhir/Patient/reg-b", _patient("reg-b", "wjj", idno=ID_B, name="李芳", active=False), expect=201)
    api.put("/fhir/Patient/other2", _patient("other2", "h1", idno=ID_B, name="李芳芳"), expect=201)
    assert _rules(api, "other2") == set()
    # neither the ID number nor the phone is stored in the quality tables
    with node.store.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT * FROM quality_resource").all()
    for row in rows:
        assert ID_A not in str(row), row
    raw = str(rows)
    assert "15400112648" not in raw and LINE not in raw


def import_findings(node: Any, docs: list[dict[str, Any]], tmp_path: Path, rules: str) -> set[tuple[str, str]]:
    """Import ``docs`` as one NDJSON file; the open findings (resource id, rule) whose rule is LIKE ``rules``."""
    from phip.importer.loader import Importer
    from phip.quality.tables import quality_finding as QF

    f = tmp_path / "all.ndjson"
    f.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs))
    imp = Importer(node.store)
    imp.import_file(f)
    imp.finish()
    imp.close()
    with node.store.engine.connect() as conn:
        return {(r[0], r[1]) for r in conn.execute(sa.select(QF.c.rid, QF.c.rule).where(
            QF.c.rule.like(rules), QF.c.status == "open"))}


def test_import_batch_phase_compares_with_the_registry(node: Any, tmp_path: Path) -> None:
    docs = [
        {"resourceType": "Organization", "id": "wjj", "name": "卫健局", "type": [Z200]},
        {"resourceType": "Organization", "id": "h1", "name": "医院"},
        # the hospital's records come before the registry's in the files: the batch phase sees all
        _patient("h-ok", "h1"), _patient("h-phone", "h1", phone="15400000000"),
        _patient("h-name", "h1", name="王小鸣"),
        _patient("h-noid", "h1", name="王晓明", identifier=[]),
        _patient("reg-a", "wjj"),
    ]
    got = import_findings(node, docs, tmp_path, "consistency.Patient.registry-%")
    assert got == {("h-phone", "consistency.Patient.registry-phone"), ("h-name", "consistency.Patient.registry-name")}


def test_records_without_their_own_number_are_compared_through_the_master_index(api: Any, node: Any) -> None:
    _orgs(api)
    api.put("/fhir/Patient/reg-a", _patient("reg-a", "wjj"), expect=201)
    # no ID number at the hospital, another phone: the master index links it to the resident
    noid = _patient("noid", "h1", phone="15400000000")
    del noid["identifier"]
    api.put("/fhir/Patient/noid", noid, expect=201)
    assert _rules(api, "noid") == {"consistency.Patient.registry-phone"}
    # a mistyped number (check character wrong): likewise
    typo = ID_A[:17] + ("0" if ID_A[17] != "0" else "1")
    api.put("/fhir/Patient/typo", _patient("typo", "h1", idno=typo, line="新华路326号3栋"), expect=201)
    assert _rules(api, "typo") == {"consistency.Patient.registry-address"}
    # someone else without a number: not linked, so not compared
    stranger = _patient("stranger", "h1", name="赵强", birthDate="1966-01-01", phone="15400000001")
    del stranger["identifier"]
    api.put("/fhir/Patient/stranger", stranger, expect=201)
    assert _rules(api, "stranger") == set()
