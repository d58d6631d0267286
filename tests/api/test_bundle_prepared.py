"""Transaction Bundles whose entries are prepared (references rewritten, validated) before the write
lock and whose responses are built after it: same outcome, same order, same hooks as entry by entry."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from phip.core.hooks import Point, WriteEvent


def _patient(ident: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": "urn:phip:test:mrn", "value": ident}],
            "name": [{"family": "样例", "given": ["丙"]}], "gender": "female", "birthDate": "1980-02-03"}


def _obs(subject: str, encounter: str | None = None, kg: int = 60) -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": "Observation", "status": "final",
                           "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                           "subject": {"reference": subject}, "valueQuantity": {"value": kg, "unit": "kg"}}
    if encounter:
        out["encounter"] = {"reference": encounter}
    return out


def _visit(n_obs: int, tag: str) -> list[dict[str, Any]]:
    """A new patient, an encounter and ``n_obs`` observations, with urn:uuid references."""
    p, enc = f"urn:uuid:7a000000-0000-4000-8000-{tag:0>12}", f"urn:uuid:7b000000-0000-4000-8000-{tag:0>12}"
    entries: list[dict[str, Any]] = [
        {"fullUrl": p, "resource": _patient(f"mrn-{tag}"), "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": enc, "resource": {"resourceType": "Encounter", "status": "finished",
                                      "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                                "code": "AMB"}, "subject": {"reference": p}},
         "request": {"method": "POST", "url": "Encounter"}},
    ]
    entries += [{"resource": _obs(p, enc, 50 + k), "request": {"method": "POST", "url": "Observation"}}
                for k in range(n_obs)]
    return entries


def _counts(node: Any) -> dict[str, int]:
    """Rows of every table but the audit trail's (a refused request is audited)."""
    eng = node.store.engine
    names = [n for n in sa.inspect(eng).get_table_names() if not n.startswith("audit") and n != "alembic_version"]
    with eng.connect() as conn:
        return {n: int(conn.exec_driver_sql(f'SELECT COUNT(*) FROM "{n}"').scalar_one()) for n in names}


def test_failing_twentieth_entry_leaves_nothing(api: Any, node: Any) -> None:
    api.create(_patient("before"))  # the node has data (and a master Person, findings…) already
    before = _counts(node)
    feed = api.get("/fhir/$changes?since=0&_count=1000").json()["entry"]
    entries = _visit(17, "1")
    entries.append({"resource": {"resourceType": "Observation", "status": "no-such-status",
                                 "code": {"text": "bad"}}, "request": {"method": "POST", "url": "Observation"}})
    assert len(entries) == 20
    r = api.post("/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": entries}, expect=422).json()
    assert r["issue"][0]["expression"][0].startswith("Bundle.entry[19]")
    assert _counts(node) == before  # nothing of the 19 good entries, nor of their hooks' work, stayed
    assert api.get("/fhir/$changes?since=0&_count=1000").json()["entry"] == feed
    assert api.ids("Patient?identifier=mrn-1") == []


def test_errors_come_in_processing_order(api: Any) -> None:
    """Every entry is validated up front, but an entry's error is raised at its turn: a DELETE runs
    before the POSTs, a POST before a PUT."""
    bad_post = {"resource": {"resourceType": "Patient", "gender": "bad"},
                "request": {"method": "POST", "url": "Patient"}}
    bad_put = {"resource": {"resourceType": "Patient", "id": "p9", "gender": "worse"},
               "request": {"method": "PUT", "url": "Patient/p9"}}
    missing_delete = {"request": {"method": "DELETE", "url": "Patient/none"}}
    r = api.post("/fhir", {"resourceType": "Bundle", "type": "transaction",
                           "entry": [bad_post, missing_delete]}, expect=404).json()
    assert r["issue"][0]["expression"][0].startswith("Bundle.entry[1]")
    r = api.post("/fhir", {"resourceType": "Bundle", "type": "transaction",
                           "entry": [bad_put, bad_post]}, expect=422).json()
    assert r["issue"][0]["expression"][0].startswith("Bundle.entry[1]")
    wrong_type = {"resource": _patient("t"), "request": {"method": "POST", "url": "Observation"}}
    r = api.post("/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": [wrong_type]}, expect=400).json()
    assert "does not match the URL type" in r["issue"][0]["diagnostics"]


def test_hooks_see_every_entry_in_order(api: Any, node: Any) -> None:
    seen: list[tuple[str, str, str]] = []
    before: list[str] = []

    def before_write(_tx: Any, rtype: str, resource: dict[str, Any], method: str) -> None:
        if rtype in ("Patient", "Encounter", "Observation"):
            before.append(rtype)
            resource.setdefault("meta", {}).setdefault("tag", []).append({"system": "urn:phip:test", "code": "seen"})

    def after_write(_tx: Any, ev: WriteEvent) -> None:
        if ev.resource_type in ("Patient", "Encounter", "Observation"):
            assert ev.resource is not None
            seen.append((ev.resource_type, ev.id, ev.resource["meta"]["tag"][-1]["code"]))

    hooks = node.store.hooks
    hooks.register(Point.BEFORE_WRITE, before_write)
    hooks.register(Point.AFTER_WRITE, after_write)
    entries = _visit(18, "2")
    out = api.post("/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": entries}, expect=200).json()
    written = [(e["resource"]["resourceType"], e["resource"]["id"]) for e in out["entry"]]
    assert len(written) == 20
    assert [(t, i) for t, i, _tag in seen] == written  # every entry, in the bundle's (POST) order
    assert {tag for _t, _i, tag in seen} == {"seen"} and len(before) == 20
    for e in out["entry"]:  # the response shows what was stored: the hook's tag, the rewritten references
        assert e["response"]["status"] == "201 Created"
        assert {"system": "urn:phip:test", "code": "seen"} in e["resource"]["meta"]["tag"]
    pid, eid = written[0][1], written[1][1]
    obs = [e["resource"] for e in out["entry"][2:]]
    assert {o["subject"]["reference"] for o in obs} == {f"Patient/{pid}"}
    assert {o["encounter"]["reference"] for o in obs} == {f"Encounter/{eid}"}
    assert sorted(api.ids(f"Observation?subject=Patient/{pid}")) == sorted(o["id"] for o in obs)
    stored = api.get(f"/fhir/Observation/{obs[0]['id']}").json()
    assert stored["meta"]["versionId"] == "1" and stored["encounter"]["reference"] == f"Encounter/{eid}"


def test_prepared_entries_follow_a_conditional_create_match(api: Any) -> None:
    """A conditional create that finds its resource maps the urn:uuid to it: entries referring to that
    urn are rewritten again (not the prepared copy); the others keep theirs."""
    existing = api.create(_patient("m7"))["id"]
    p_new, p_match = "urn:uuid:7c000000-0000-4000-8000-000000000001", "urn:uuid:7c000000-0000-4000-8000-000000000002"
    entries = [
        {"fullUrl": p_new, "resource": _patient("m8"), "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": p_match, "resource": _patient("m7"),
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:phip:test:mrn|m7"}},
        {"resource": _obs(p_match), "request": {"method": "POST", "url": "Observation"}},
        {"resource": _obs(p_new), "request": {"method": "POST", "url": "Observation"}},
    ]
    out = api.post("/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": entries}, expect=200).json()
    assert [e["response"]["status"] for e in out["entry"]] == ["201 Created", "200 OK", "201 Created", "201 Created"]
    new_id = out["entry"][0]["resource"]["id"]
    assert out["entry"][1]["resource"]["id"] == existing
    assert out["entry"][2]["resource"]["subject"]["reference"] == f"Patient/{existing}"
    assert out["entry"][3]["resource"]["subject"]["reference"] == f"Patient/{new_id}"
    assert api.get(f"/fhir/Observation/{out['entry'][2]['resource']['id']}").json()["subject"]["reference"] == \
        f"Patient/{existing}"


def test_index_rows_as_a_fresh_extraction(api: Any, node: Any) -> None:
    """The index rows computed before the write lock are the ones the write would have computed, and
    a hook that changes a resource makes the write index the changed resource."""
    from phip.fhir.search.extract import index_resource, storable
    from phip.store import schema as S
    from phip.store.repository import _INDEX_COLUMNS

    def tag_encounters(_tx: Any, rtype: str, resource: dict[str, Any], method: str) -> None:
        if rtype == "Encounter":
            resource.setdefault("meta", {}).setdefault("tag", []).append({"system": "urn:phip:test", "code": "enc"})

    node.store.hooks.register(Point.BEFORE_WRITE, tag_encounters)
    out = api.post("/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": _visit(4, "3")},
                   expect=200).json()
    written = [(e["resource"]["resourceType"], e["resource"]["id"]) for e in out["entry"]]
    kinds = {"string": "strings", "token": "tokens", "date": "dates", "reference": "refs",
             "quantity": "quantities", "number": "numbers", "uri": "uris"}
    with node.store.engine.connect() as conn:
        for rtype, rid in written[1:]:  # the Encounter and the Observations (the Patient's are sealed)
            rec = conn.execute(sa.select(S.resources.c.rid, S.resources.c.content).where(
                S.resources.c.type == rtype, S.resources.c.id == rid)).one()
            doc = api.get(f"/fhir/{rtype}/{rid}").json()
            ix = storable(rtype, index_resource(doc))
            for kind, attr in kinds.items():
                table = S.INDEX_TABLES[kind]
                cols = _INDEX_COLUMNS[kind][1:]
                got = sorted(tuple(r) for r in conn.execute(
                    sa.select(*[table.c[c] for c in cols]).where(table.c.rid == rec.rid)))
                want = sorted((S.param_key(rtype, p), *rest) for p, *rest in getattr(ix, attr))
                assert got == want, (rtype, kind)
    eid = written[1][1]
    assert api.ids("Encounter?_tag=urn:phip:test|enc") == [eid]
    heavier = sorted(e["resource"]["id"] for e in out["entry"][2:] if e["resource"]["valueQuantity"]["value"] > 51)
    assert len(heavier) == 2
    assert sorted(api.ids(f"Observation?encounter=Encounter/{eid}&value-quantity=gt51")) == heavier


def test_prepared_results_reach_after_write(api: Any, node: Any) -> None:
    """PREPARE_WRITE runs before the lock with each entry's id; its result reaches AFTER_WRITE for that
    entry, unless a BEFORE_WRITE hook changed the resource (then None: the hook computes it itself)."""
    calls: list[tuple[str, str]] = []

    def prepare(rtype: str, rid: str, res: dict[str, Any]) -> Any:
        calls.append((rtype, rid))
        return (rtype, rid, res.get("id"), len(res.get("meta", {}).get("tag", [])))

    def tag_encounters(_tx: Any, rtype: str, resource: dict[str, Any], method: str) -> None:
        if rtype == "Encounter":
            resource.setdefault("meta", {}).setdefault("tag", []).append({"system": "urn:phip:test", "code": "enc"})

    got: dict[tuple[str, str], Any] = {}

    def after_write(_tx: Any, ev: WriteEvent) -> None:
        if ev.resource_type in ("Patient", "Encounter", "Observation"):
            got[(ev.resource_type, ev.id)] = ev.prepared

    hooks = node.store.hooks
    hooks.register_prepare("test", prepare)
    hooks.register(Point.BEFORE_WRITE, tag_encounters)
    hooks.register(Point.AFTER_WRITE, after_write)
    out = api.post("/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": _visit(3, "4")},
                   expect=200).json()
    written = [(e["resource"]["resourceType"], e["resource"]["id"]) for e in out["entry"]]
    assert calls == written  # each entry once, with the id it was written with
    for rtype, rid in written:
        if rtype == "Encounter":
            assert got[(rtype, rid)] is None  # changed by a BEFORE_WRITE hook: not the prepared resource
        else:
            assert got[(rtype, rid)]["test"] == (rtype, rid, rid, 0)
    pid = api.create(_patient("plain"))["id"]
    assert got[("Patient", pid)] is None  # a write outside a transaction Bundle is not prepared


def test_capabilities_prepared_as_in_the_transaction(node: Any) -> None:
    """The quality engine's and the master index's prepared work equals what their AFTER_WRITE hooks
    compute from the stored resource (findings in the same order, value-set checks included)."""
    import dataclasses

    from phip.empi.engine import PREPARED as EMPI_PREPARED
    from phip.empi.normalize import features
    from phip.quality.engine import PREPARED as QUALITY_PREPARED

    quality = node.ext["quality"]
    icd = "urn:oid:2.16.156.10011.2.3.3.11"
    sex = {"url": "urn:phip:ext:sex-gbt2261",
           "valueCodeableConcept": {"coding": [{"system": "urn:oid:2.16.156.10011.2.3.3.4", "code": "7"}]}}
    docs = [
        {**_patient("q1"), "telecom": [{"system": "phone", "value": "12345"}], "name": [{"text": "李红之子"}],
         "extension": [sex], "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": "110101199003071234"}]},
        {"resourceType": "Condition", "subject": {"reference": "Patient/p1"},
         "code": {"coding": [{"system": icd, "code": "bad"}]}, "recordedDate": "2020-01-01"},
        _obs("Patient/p1", "Encounter/e1"),
        {"resourceType": "Encounter", "status": "finished", "subject": {"reference": "Patient/p1"},
         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}},
    ]
    for k, res in enumerate(docs):
        rtype, rid = res["resourceType"], f"x{k}"
        pre = node.store.hooks.prepare(rtype, rid, {**res, "id": rid})
        stored = {"resourceType": rtype, "id": rid, "meta": {"versionId": "1", "lastUpdated": "2026-01-02T03:04:05Z"},
                  **{key: v for key, v in res.items() if key != "resourceType"}}
        ev = WriteEvent(rtype, rid, 1, "POST", stored, pre)
        qpre = pre[QUALITY_PREPARED]
        want = quality.checker.check(rtype, rid, stored, qpre[0])
        assert quality._facts(ev, qpre[0], qpre) == want
        if rtype == "Patient":
            assert len(want.findings) >= 3
            f = dataclasses.replace(pre[EMPI_PREPARED], updated=stored["meta"]["lastUpdated"])
            assert f == features(stored)
        else:
            assert pre[EMPI_PREPARED] is None
    assert "conformance.Condition.diagnosis-icd10" in [
        f.rule for f in quality.checker.check("Condition", "x1", docs[1], 0).findings]


def test_inherited_institutions_of_a_bundle(api: Any, node: Any) -> None:
    """A record that names no institution takes its encounter's (or subject's) as stored when it is
    written, else ``unknown``; its findings and their Tasks go to that institution."""
    from phip.quality.tables import quality_finding as QF
    from phip.quality.tables import quality_resource as QR

    api.req("PUT", "/fhir/Organization/o1", json={"resourceType": "Organization", "id": "o1", "name": "一院"},
            expect=201)
    p, enc = "urn:uuid:7d000000-0000-4000-8000-000000000001", "urn:uuid:7d000000-0000-4000-8000-000000000002"
    entries = [
        {"fullUrl": p, "resource": {**_patient("inh"), "managingOrganization": {"reference": "Organization/o1"}},
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": enc, "resource": {"resourceType": "Encounter", "status": "finished",
                                      "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                                "code": "AMB"},
                                      "subject": {"reference": p}, "serviceProvider": {"reference": "Organization/o1"}},
         "request": {"method": "POST", "url": "Encounter"}},
        # (a quantity without its UCUM code: a finding) the institution through the encounter
        {"resource": _obs(p, enc), "request": {"method": "POST", "url": "Observation"}},
        # an encounter this node does not hold: unknown
        {"resource": _obs(p, "Encounter/elsewhere"), "request": {"method": "POST", "url": "Observation"}},
        # through the subject
        {"resource": _obs(p), "request": {"method": "POST", "url": "Observation"}},
    ]
    out = api.post("/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": entries}, expect=200).json()
    ids = [e["resource"]["id"] for e in out["entry"]]
    with node.store.engine.connect() as conn:
        inst = dict(conn.execute(sa.select(QR.c.rid, QR.c.institution).where(QR.c.rid.in_(ids))).all())
        tasks = dict(conn.execute(sa.select(QF.c.rid, QF.c.task).where(QF.c.rid.in_(ids[2:4]),
                                                                        QF.c.rule.like("%valueQuantity%"))).all())
    assert [inst[i] for i in ids] == ["o1", "o1", "o1", "unknown", "o1"]
    assert set(tasks) == {ids[2], ids[3]}
    owner = api.get(f"/fhir/Task/{tasks[ids[2]]}").json()["owner"]["reference"]
    assert owner == "Organization/o1"
    assert "owner" not in api.get(f"/fhir/Task/{tasks[ids[3]]}").json()  # unknown: no owner
    # a plain write afterwards inherits the same way
    later = api.create(_obs(f"Patient/{ids[0]}", f"Encounter/{ids[1]}"))["id"]
    with node.store.engine.connect() as conn:
        assert conn.execute(sa.select(QR.c.institution).where(QR.c.rid == later)).scalar_one() == "o1"


def test_prepare_many_runs_each_function_over_all_and_leaves_out_what_raised(node: Any) -> None:
    order: list[tuple[str, str]] = []

    def first(rtype: str, rid: str, _res: dict[str, Any]) -> str:
        order.append(("first", rid))
        if rid == "b":
            raise ValueError("cannot prepare b")
        return f"1{rid}"

    def second(rtype: str, rid: str, _res: dict[str, Any]) -> str:
        order.append(("second", rid))
        return f"2{rid}"

    hooks = node.store.hooks
    hooks._prepare[:] = []
    hooks.register_prepare("first", first)
    hooks.register_prepare("second", second)
    items = [("Patient", r, {"resourceType": "Patient", "id": r}) for r in ("a", "b", "c")]
    got = hooks.prepare_many(items)
    assert got == [{"first": "1a", "second": "2a"}, {"second": "2b"}, {"first": "1c", "second": "2c"}]
    assert got == [hooks.prepare(*it) for it in items]  # the same as one resource at a time
    assert order[:6] == [("first", "a"), ("first", "b"), ("first", "c"), ("second", "a"), ("second", "b"),
                         ("second", "c")]
    hooks._prepare[:] = []
    assert hooks.prepare_many(items) == [None, None, None]
