"""Create, read, vread, update, patch, delete, history and the conditional forms, on both backends."""

from __future__ import annotations

from typing import Any

import pytest

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": "110101199003070011"}],
    "name": [{"family": "测试", "given": ["甲"]}],
    "gender": "female",
    "birthDate": "1990-03-07",
}


def test_create_read_vread(api: Any) -> None:
    r = api.post("/fhir/Patient", PATIENT, expect=201)
    body = r.json()
    pid = body["id"]
    assert r.headers["ETag"] == 'W/"1"'
    assert r.headers["Location"].endswith(f"/fhir/Patient/{pid}/_history/1")
    assert "Last-Modified" in r.headers
    assert body["meta"]["versionId"] == "1"
    got = api.get(f"/fhir/Patient/{pid}", expect=200).json()
    # what was stored comes back unchanged apart from meta
    assert {k: v for k, v in got.items() if k not in ("id", "meta")} == PATIENT
    assert api.get(f"/fhir/Patient/{pid}/_history/1", expect=200).json() == got
    api.get(f"/fhir/Patient/{pid}/_history/2", expect=404)
    api.get("/fhir/Patient/does-not-exist", expect=404)
    api.get("/fhir/NotAType/1", expect=404)


def test_update_versions_and_if_match(api: Any) -> None:
    pid = api.create(PATIENT)["id"]
    changed = {**PATIENT, "id": pid, "gender": "male"}
    r = api.put(f"/fhir/Patient/{pid}", changed, headers={"If-Match": 'W/"1"'}, expect=200)
    assert r.json()["meta"]["versionId"] == "2"
    # stale version
    r = api.put(f"/fhir/Patient/{pid}", {**changed, "gender": "other"}, headers={"If-Match": 'W/"1"'}, expect=412)
    assert r.json()["resourceType"] == "OperationOutcome"
    assert api.get(f"/fhir/Patient/{pid}").json()["gender"] == "male"
    # an identical update makes no new version
    r = api.put(f"/fhir/Patient/{pid}", changed, expect=200)
    assert r.json()["meta"]["versionId"] == "2"
    # id mismatch
    api.put(f"/fhir/Patient/{pid}", {**changed, "id": "other"}, expect=400)


def test_client_assigned_id_and_delete(api: Any) -> None:
    r = api.put("/fhir/Patient/p-1", {**PATIENT, "id": "p-1"}, expect=201)
    assert r.json()["id"] == "p-1"
    api.delete("/fhir/Patient/p-1", expect=204)
    r = api.get("/fhir/Patient/p-1", expect=410)
    assert r.json()["issue"][0]["code"] == "deleted"
    hist = api.get("/fhir/Patient/p-1/_history", expect=200).json()
    assert [e["response"]["status"] for e in hist["entry"]] == ["204 No Content", "201 Created"]
    assert api.ids("Patient?_id=p-1") == []
    # re-create after delete
    r = api.put("/fhir/Patient/p-1", {**PATIENT, "id": "p-1"}, expect=201)
    assert r.json()["meta"]["versionId"] == "3"
    api.delete("/fhir/Patient/nope", expect=404)


def test_patch(api: Any) -> None:
    pid = api.create(PATIENT)["id"]
    ops = [{"op": "replace", "path": "/gender", "value": "male"}, {"op": "add", "path": "/active", "value": True}]
    r = api.req("PATCH", f"/fhir/Patient/{pid}", content=__import__("json").dumps(ops).encode(),
                headers={"Content-Type": "application/json-patch+json"}, expect=200)
    assert r.json()["gender"] == "male" and r.json()["active"] is True and r.json()["meta"]["versionId"] == "2"
    bad = [{"op": "replace", "path": "/gender", "value": "nonsense"}]
    r = api.req("PATCH", f"/fhir/Patient/{pid}", content=__import__("json").dumps(bad).encode(),
                headers={"Content-Type": "application/json-patch+json"}, expect=422)
    assert r.json()["issue"][0]["expression"] == ["Patient.gender"]
    r = api.req("PATCH", f"/fhir/Patient/{pid}", content=b'[{"op":"remove","path":"/nothing"}]',
                headers={"Content-Type": "application/json-patch+json"}, expect=422)


def test_prefer(api: Any) -> None:
    r = api.post("/fhir/Patient", PATIENT, headers={"Prefer": "return=minimal"}, expect=201)
    assert r.content == b"" and "Location" in r.headers
    r = api.post("/fhir/Patient", PATIENT, headers={"Prefer": "return=OperationOutcome"}, expect=201)
    assert r.json()["resourceType"] == "OperationOutcome"


def test_conditional_create_update_delete(api: Any) -> None:
    h = {"If-None-Exist": "identifier=urn:oid:2.16.156.10011.1.3|110101199003070011"}
    first = api.post("/fhir/Patient", PATIENT, headers=h, expect=201).json()
    again = api.post("/fhir/Patient", PATIENT, headers=h, expect=200).json()
    assert again["id"] == first["id"]
    q = "identifier=urn:oid:2.16.156.10011.1.3|110101199003070011"
    r = api.put(f"/fhir/Patient?{q}", {**PATIENT, "active": True}, expect=200).json()
    assert r["id"] == first["id"] and r["active"] is True
    r = api.put("/fhir/Patient?identifier=x|none", {**PATIENT, "gender": "male"}, expect=201).json()
    assert r["id"] != first["id"]
    api.post("/fhir/Patient", PATIENT, expect=201)
    api.post("/fhir/Patient", PATIENT, headers=h, expect=412)  # two match now
    api.delete(f"/fhir/Patient?{q}", expect=412)
    api.delete("/fhir/Patient?identifier=x|none", expect=200)
    assert api.ids("Patient?identifier=x|none") == []


def test_history_type_system_since(api: Any) -> None:
    a = api.create(PATIENT)["id"]
    api.put(f"/fhir/Patient/{a}", {**PATIENT, "id": a, "active": False}, expect=200)
    api.create({"resourceType": "Organization", "name": "测试卫生院"})
    h = api.get("/fhir/Patient/_history", expect=200).json()
    assert h["type"] == "history" and len(h["entry"]) == 2
    assert h["entry"][0]["resource"]["meta"]["versionId"] == "2"  # newest first
    s = api.get("/fhir/_history?_count=1", expect=200).json()
    assert len(s["entry"]) == 1
    nxt = next(link["url"] for link in s["link"] if link["relation"] == "next")
    seen = [s["entry"][0]["fullUrl"]]
    while nxt:
        page = api.get(nxt.replace("http://testserver", ""), expect=200).json()
        seen += [e["fullUrl"] for e in page.get("entry", [])]
        nxt = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    # plus what capabilities wrote alongside: the master Person the index keeps for the Patient, the
    # data-quality Tasks of findings on these records
    extra = sum(len(api.get(f"/fhir/{t}/_history?_count=1000", expect=200).json().get("entry", []))
                for t in ("Person", "Task"))
    assert len([u for u in seen if "/Person/" not in u and "/Task/" not in u]) == 3
    assert len(seen) == 3 + extra
    lu = h["entry"][0]["resource"]["meta"]["lastUpdated"]
    since = api.get(f"/fhir/Patient/{a}/_history?_since={lu}", expect=200).json()
    assert [e["resource"]["meta"]["versionId"] for e in since["entry"]] == ["2"]
    old = api.get(f"/fhir/Patient/{a}/_history?_at={h['entry'][1]['resource']['meta']['lastUpdated']}").json()
    assert [e["resource"]["meta"]["versionId"] for e in old["entry"]] == ["1"]


def test_validation_errors_name_the_path(api: Any) -> None:
    r = api.post("/fhir/Patient", {"resourceType": "Patient", "gender": "man", "birthDate": "1980-13-01"},
                 expect=422)
    exprs = {e for i in r.json()["issue"] for e in i.get("expression", [])}
    assert {"Patient.gender", "Patient.birthDate"} <= exprs
    api.post("/fhir/Patient", {"resourceType": "Observation"}, expect=400)
    api.req("POST", "/fhir/Patient", content=b"{not json", headers={"Content-Type": "application/fhir+json"},
            expect=400)
    assert api.ids("Patient") == []


def test_auth_required(api: Any) -> None:
    r = api.c.get("/fhir/Patient")
    assert r.status_code == 401 and r.json()["resourceType"] == "OperationOutcome"
    r = api.c.get("/fhir/Patient", headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401
    assert api.c.get("/fhir/metadata").status_code == 200
    assert api.c.get("/healthz").json()["status"] == "ok"


def test_meta_operations(api: Any) -> None:
    pid = api.create(PATIENT)["id"]
    tag = {"system": "urn:phip:test", "code": "t1"}
    body = {"resourceType": "Parameters", "parameter": [{"name": "meta", "valueMeta": {"tag": [tag]}}]}
    r = api.post(f"/fhir/Patient/{pid}/$meta-add", body, expect=200).json()
    assert r["parameter"][0]["valueMeta"]["tag"] == [tag]
    assert api.ids("Patient?_tag=urn:phip:test|t1") == [pid]
    assert api.get(f"/fhir/Patient/{pid}").json()["meta"]["versionId"] == "1"
    api.post(f"/fhir/Patient/{pid}/$meta-delete", body, expect=200)
    assert api.ids("Patient?_tag=urn:phip:test|t1") == []
    assert "tag" not in api.get(f"/fhir/Patient/{pid}/$meta").json()["parameter"][0]["valueMeta"]


def test_validate_operation(api: Any) -> None:
    ok = api.post("/fhir/Patient/$validate", PATIENT, expect=200).json()
    assert all(i["severity"] not in ("error", "fatal") for i in ok["issue"])
    bad = api.post("/fhir/Patient/$validate", {**PATIENT, "gender": "x"}, expect=200).json()
    assert any(i["severity"] == "error" and i["expression"] == ["Patient.gender"] for i in bad["issue"])
    assert api.ids("Patient") == []


def test_query_timeout_is_a_clear_error(node: Any) -> None:
    from phip.fhir.errors import FhirError
    from phip.store.repository import Settings, Store

    store = node.store
    repo = store.repository()
    with repo.transaction():
        div = '<div xmlns="http://www.w3.org/1999/xhtml">' + "x" * 8000 + "</div>"
        for i in range(500):
            repo.create("Patient", {"resourceType": "Patient", "name": [{"family": f"n{i:04d}"}],
                                    "text": {"status": "generated", "div": div}})
    store2 = Store(node.config.db, Settings(query_timeout_ms=1))
    repo2 = store2.repository()
    try:
        # a deliberately costly search: substring over every stored document, sorted
        req = repo2.parser().parse("Patient", [("_content", "zzz-not-there"), ("_sort", "-name"),
                                               ("_total", "accurate")])
        with pytest.raises(FhirError) as info:
            repo2.search(req)  # scanning 4 MB of documents takes far more than 1 ms
        assert info.value.status == 408 and info.value.issues[0].code == "too-costly"
        assert "1 ms" in info.value.issues[0].diagnostics
    finally:
        store2.dispose()


def test_body_size_limit(api: Any) -> None:
    big = b'{"resourceType": "Patient", "text": {"status": "generated", "div": "' + b"x" * (51 * 1024 * 1024) + b'"}}'
    r = api.req("POST", "/fhir/Patient", content=big, headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 413 and r.json()["issue"][0]["code"] == "too-costly"


def test_reference_integrity_strict(node: Any) -> None:
    from phip.fhir.errors import FhirError
    from phip.store.repository import Settings, Store

    strict = Store(node.config.db, Settings(reference_integrity="strict"))
    repo = strict.repository()
    try:
        obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
               "subject": {"reference": "Patient/missing"}}
        with pytest.raises(FhirError) as info:
            repo.create("Observation", obs)
        assert info.value.status == 422
        assert info.value.issues[0].expression == "Observation.subject.reference"
        repo.update("Patient", "present", {"resourceType": "Patient", "id": "present"})
        assert repo.create("Observation", {**obs, "subject": {"reference": "Patient/present"}}).status == 201
        # inside one transaction, a reference to a resource created later in it resolves
        with repo.transaction():
            repo.create("Observation", {**obs, "subject": {"reference": "Patient/later"}})
            repo.update("Patient", "later", {"resourceType": "Patient", "id": "later"})
        # external and contained references are not checked
        repo.create("Observation", {**obs, "subject": {"reference": "http://elsewhere.example/fhir/Patient/1"}})
        repo.delete("Patient", "present")
        with pytest.raises(FhirError):  # deleted targets do not resolve
            repo.create("Observation", {**obs, "subject": {"reference": "Patient/present"}})
    finally:
        strict.dispose()
