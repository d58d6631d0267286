"""Bulk Data Access v2 $export: kick-off, status polling, files under the same auth."""

from __future__ import annotations

import time
from typing import Any

import orjson


def _wait(api: Any, location: str) -> Any:
    path = location.replace("http://testserver", "")
    for _ in range(200):
        r = api.get(path)
        if r.status_code != 202:
            return r
        time.sleep(0.05)
    raise AssertionError("export did not finish")


def test_system_patient_group_export(api: Any) -> None:
    p1 = api.create({"resourceType": "Patient", "gender": "male"})["id"]
    p2 = api.create({"resourceType": "Patient", "gender": "female"})["id"]
    api.create({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "subject": {"reference": f"Patient/{p1}"}})
    api.create({"resourceType": "Observation", "status": "final", "code": {"text": "y"},
                "subject": {"reference": f"Patient/{p2}"}})
    api.create({"resourceType": "Organization", "name": "org"})
    g = api.create({"resourceType": "Group", "type": "person", "actual": True,
                    "member": [{"entity": {"reference": f"Patient/{p1}"}}]})["id"]

    r = api.get("/fhir/$export", headers={"Prefer": "respond-async"}, expect=202)
    manifest = _wait(api, r.headers["Content-Location"]).json()
    counts = {o["type"]: o["count"] for o in manifest["output"]}
    # each Patient is linked to its master Person (the master patient index), exported too; so are the
    # data-quality Tasks raised on these deliberately incomplete records
    tasks = counts.pop("Task", 0)
    assert counts == {"Patient": 2, "Person": 2, "Observation": 2, "Organization": 1, "Group": 1}
    assert tasks == api.get("/fhir/Task?_summary=count", expect=200).json()["total"]
    assert manifest["requiresAccessToken"] is True
    url = next(o["url"] for o in manifest["output"] if o["type"] == "Observation")
    assert api.c.get(url.replace("http://testserver", "")).status_code == 401  # same auth
    lines = api.get(url.replace("http://testserver", ""), expect=200).content.splitlines()
    assert {orjson.loads(x)["subject"]["reference"] for x in lines} == {f"Patient/{p1}", f"Patient/{p2}"}

    r = api.get("/fhir/Patient/$export?_type=Patient,Observation", expect=202)
    counts = {o["type"]: o["count"] for o in _wait(api, r.headers["Content-Location"]).json()["output"]}
    assert counts == {"Patient": 2, "Observation": 2}

    r = api.get(f"/fhir/Group/{g}/$export", expect=202)
    out = _wait(api, r.headers["Content-Location"]).json()["output"]
    # the Group itself is in its member's Patient compartment (CompartmentDefinition-patient: Group.member),
    # and so is the member's master Person (Person.link)
    assert {o["type"]: o["count"] for o in out} == {"Patient": 1, "Observation": 1, "Group": 1, "Person": 1}

    api.get("/fhir/$export?_type=Nope", expect=400)
    api.get("/fhir/$export?_since=yesterday", expect=400)
    r = api.get("/fhir/$export", expect=202)
    api.delete(r.headers["Content-Location"].replace("http://testserver", ""), expect=202)
    api.get("/fhir/$export-status/unknown", expect=404)
