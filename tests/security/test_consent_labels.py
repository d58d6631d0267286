"""Security labels at write, Consent on read and search, break-glass, masking."""

from __future__ import annotations

from typing import Any

from tests.security.conftest import World, condition, ids

V3 = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"


def labels(doc: dict[str, Any]) -> set[str]:
    return {c["code"] for c in (doc.get("meta") or {}).get("security", [])}


def consent(cid: str, pid: str, provision: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Consent", "id": cid, "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{pid}"}, "provision": provision}


def test_labels_assigned_at_write_by_rules(world: World) -> None:
    repo = world.node.store.repository()
    psy = repo.update("Condition", "c1", condition("c1", "pA", "F32.1")).row.resource()
    assert labels(psy) == {"PSY", "R"}
    hiv = repo.read("Condition", "cB").resource()
    assert labels(hiv) == {"HIV", "R"}
    eth = repo.update("Condition", "c2", condition("c2", "pA", "F10.2")).row.resource()
    assert labels(eth) == {"PSY", "ETH", "R"}
    plain = repo.update("Condition", "c3", condition("c3", "pA", "I10")).row.resource()
    assert labels(plain) == set()
    rx = {"resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
          "medicationCodeableConcept": {"coding": [{"system": "http://www.whocc.no/atc", "code": "J05AR03"}]},
          "subject": {"reference": "Patient/pA"}}
    assert "HIV" in labels(repo.update("MedicationRequest", "m1", rx).row.resource())
    # a label the sender set is kept; the search index sees the labels
    assert ids(world.api("admin").search(f"Condition?_security={V3}|PSY")) == {"c1", "c2"}


def test_labels_after_import(world: World, tmp_path: Any) -> None:
    import orjson

    f = tmp_path / "c.ndjson"
    f.write_bytes(orjson.dumps(condition("imp1", "pA", "B23.0")) + b"\n")
    _import(world, f)
    doc = world.node.store.repository().read("Condition", "imp1").resource()
    assert "HIV" in labels(doc)


def _import(world: World, f: Any) -> None:
    from rich.console import Console

    from phip.importer.console import import_files

    import_files(world.node.store, [f], Console(quiet=True))


def test_consent_denies_outside_recording_institution(world: World) -> None:
    repo = world.node.store.repository()
    doc = world.api("clinician", "dr", org="Organization/hospA")
    doc.get("/fhir/Observation/oA2", expect=200)  # pA2 (hospital B's record) is linked to pA
    repo.update("Consent", "k1", consent("k1", "pA2", {"type": "deny"}))
    r = doc.get("/fhir/Observation/oA2", expect=403)
    assert r.headers["x-phip-rule"] == "consent"
    assert "oA2" not in ids(doc.search("Observation"))
    # the recording institution itself still sees its records
    repo.update("Encounter", "eB2", {"resourceType": "Encounter", "status": "finished",
                                     "class": {"code": "AMB"}, "subject": {"reference": "Patient/pA2"},
                                     "serviceProvider": {"reference": "Organization/hospB"}, "id": "eB2",
                                     "period": {"start": "2026-01-01"}})
    world.api("clinician", "drB", org="Organization/hospB").get("/fhir/Observation/oA2", expect=200)
    # a permit for a named organization
    repo.update("Consent", "k1", consent("k1", "pA2", {"type": "deny", "provision": [
        {"type": "permit", "actor": [{"role": {"text": "recipient"},
                                      "reference": {"reference": "Organization/hospA"}}]}]}))
    doc.get("/fhir/Observation/oA2", expect=200)
    # break-glass overrides consent, and is visible on the principal for audit
    repo.update("Consent", "k1", consent("k1", "pA2", {"type": "deny"}))
    doc.get("/fhir/Observation/oA2", expect=403)
    doc.get("/fhir/Observation/oA2", headers={"X-Break-Glass": "unconscious patient in ED"}, expect=200)
    # withdrawing the consent (inactive) lifts the denial
    repo.update("Consent", "k1", {**consent("k1", "pA2", {"type": "deny"}), "status": "inactive"})
    doc.get("/fhir/Observation/oA2", expect=200)


def test_consent_denies_sensitive_categories(world: World) -> None:
    repo = world.node.store.repository()
    repo.update("Condition", "cPsy", condition("cPsy", "pA2", "F20.0"))
    repo.update("Condition", "cFlu", condition("cFlu", "pA2", "J10"))
    doc = world.api("clinician", "dr", org="Organization/hospA")
    assert {"cPsy", "cFlu"} <= ids(doc.search("Condition?_count=100"))
    repo.update("Consent", "k2", consent("k2", "pA", {"type": "permit", "provision": [
        {"type": "deny", "securityLabel": [{"system": V3, "code": "PSY"}]}]}))
    got = ids(doc.search("Condition?_count=100&_total=accurate"))
    assert "cPsy" not in got and "cFlu" in got
    assert doc.search("Condition?_summary=count")["total"] == len(got)
    r = doc.get("/fhir/Condition/cPsy", expect=403)
    assert r.headers["x-phip-rule"] == "consent"
    # public health is not subject to consent (legal reporting), nor is the node
    world.api("public-health", "cdc", region="510105").get("/fhir/Condition/cPsy", expect=200)
    world.api("node", "n").get("/fhir/Condition/cPsy", expect=200)


def test_break_glass_grants_and_is_recorded(world: World) -> None:
    from phip.api.context import current_principal

    doc = world.api("clinician", "dr", org="Organization/hospA")
    doc.get("/fhir/Patient/pB", expect=403)
    seen: list[Any] = []

    from phip.core.hooks import Point

    world.node.store.hooks.register(Point.AFTER_READ, lambda kind, rows: seen.append(current_principal.get()))
    reason = "%E6%98%8F%E8%BF%B7"  # 昏迷, percent-encoded UTF-8
    doc.get("/fhir/Patient/pB", headers={"X-Break-Glass": reason}, expect=200)
    assert seen and seen[-1].break_glass == "昏迷" and seen[-1].purpose_of_use == "ETREAT"
    assert "pB" in ids(doc.get("/fhir/Patient?_count=100", headers={"X-Break-Glass": "mass casualty"}).json())
    # a token may carry break-glass too; roles that may not break glass get nothing from it
    tok = world.api("clinician", "dr", org="Organization/hospA", purpose_of_use="ETREAT", break_glass="ED")
    tok.get("/fhir/Patient/pB", expect=200)
    world.api("insurer", "i", org="Organization/ins1").get("/fhir/Patient/pB",
                                                            headers={"X-Break-Glass": "x"}, expect=403)


def test_masking_by_role(world: World) -> None:
    admin = world.api("admin").get("/fhir/Patient/pA", expect=200).json()
    real_id = admin["identifier"][0]["value"]
    real_phone = admin["telecom"][0]["value"]
    doc = world.api("clinician", "dr", org="Organization/hospA")
    seen = doc.get("/fhir/Patient/pA", expect=200).json()
    assert seen["identifier"][0]["value"] == real_id[:6] + "********" + real_id[-4:]
    assert seen["telecom"][0]["value"] == real_phone  # a clinician needs to call
    ins = world.api("insurer", "i", org="Organization/ins1")
    seen = ins.get("/fhir/Patient/pI", expect=200).json()
    assert seen["telecom"][0]["value"].count("*") == 4 and seen["telecom"][0]["value"].startswith("138")
    assert seen["address"][0]["line"] == ["****"] and seen["address"][0]["text"].endswith("****")
    # search results are masked too
    b = doc.search("Patient?_id=pA")
    assert "********" in b["entry"][0]["resource"]["identifier"][0]["value"]
    # a resident sees their own record unmasked
    me = world.api("resident", "r", person="Person/res1")
    mine = me.get("/fhir/Patient/pR", expect=200).json()
    assert "*" not in mine["identifier"][0]["value"]
    # writing back a masked resource keeps the real values
    seen = doc.get("/fhir/Patient/pA", expect=200).json()
    seen["gender"] = "other"
    out = doc.put("/fhir/Patient/pA", seen, expect=200).json()
    assert "*" in out["identifier"][0]["value"]
    stored = world.node.store.repository().read("Patient", "pA").resource()
    assert stored["identifier"][0]["value"] == real_id and stored["gender"] == "other"


def test_regions_and_consents_after_import(world: World, tmp_path: Any) -> None:
    import orjson
    from tests.security.conftest import patient

    f = tmp_path / "p.ndjson"
    no_address = {k: v for k, v in patient("pImp2", "hospB", "510105").items() if k != "address"}
    rows = [patient("pImp", "hospB", "510105"), no_address,
            consent("kImp", "pA2", {"type": "deny"})]
    f.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    _import(world, f)
    cdc = world.api("public-health", "cdc", region="510105")
    cdc.get("/fhir/Patient/pImp", expect=200)
    cdc.get("/fhir/Patient/pImp2", expect=200)  # region of its managing organization
    world.api("public-health", "cdc", region="510104").get("/fhir/Patient/pImp", expect=403)
    doc = world.api("clinician", "dr", org="Organization/hospA")
    assert doc.get("/fhir/Observation/oA2").headers.get("x-phip-rule") == "consent"


def test_consent_reaches_a_record_linked_later(world: World) -> None:
    """A Consent covers the resident's records linked to them after it was written: a master
    Person written (by the master index, or by hand) evaluates the Consents of its Patients again."""
    import sqlalchemy as sa
    from tests.security.conftest import observation, patient

    from phip.security.tables import consent as CT

    repo = world.node.store.repository()
    repo.update("Consent", "k9", consent("k9", "pA", {"type": "deny"}))
    doc = world.api("clinician", "dr", org="Organization/hospA")
    # a new record of the same resident at hospital B, linked later to the resident's Person
    repo.update("Patient", "pA3", patient("pA3", "hospB", "510105"))
    repo.update("Observation", "oA3", observation("oA3", "pA3"))
    repo.update("Person", "perA", {"resourceType": "Person", "id": "perA", "link": [
        {"target": {"reference": f"Patient/{p}"}} for p in ("pA", "pA2", "pA3")]})
    with world.node.store.engine.connect() as conn:
        covered = {r[0] for r in conn.execute(sa.select(CT.c.patient_id).where(CT.c.consent_id == "k9"))}
    assert {"pA", "pA2", "pA3"} <= covered
    # hospital A treated pA, so it may see the resident's records, but the Consent keeps hospital
    # B's new record (outside the recording institution) from it
    r = doc.get("/fhir/Observation/oA3", expect=403)
    assert r.headers["x-phip-rule"] == "consent"
    # taken out of the Person again: the Consent no longer covers it
    repo.update("Person", "perA", {"resourceType": "Person", "id": "perA", "link": [
        {"target": {"reference": f"Patient/{p}"}} for p in ("pA", "pA2")]})
    with world.node.store.engine.connect() as conn:
        covered = {r[0] for r in conn.execute(sa.select(CT.c.patient_id).where(CT.c.consent_id == "k9"))}
    assert "pA3" not in covered


def test_another_processs_consent_drops_this_processs_cached_decisions(world: World) -> None:
    """Positive decisions are cached per process; a Consent written by another worker process (seen
    here as a change-feed entry this process's hooks never saw) drops them within a second."""
    from phip.security import access

    doc = world.api("clinician", "dr", org="Organization/hospA")
    doc.get("/fhir/Observation/oA2", expect=200)  # now cached as allowed
    policy = world.node.store.access
    # "another process": the Consent row and its change-feed entry, without this process's hooks
    with world.node.store.write_tx() as tx:
        from phip.security.derived import write_consent

        write_consent(tx.conn, "kx", consent("kx", "pA2", {"type": "deny"}))
    assert policy.decisions  # still cached: nothing told this process
    with world.node.store.write_tx() as tx:
        from phip.store import schema as S

        seq = tx.conn.execute(S.changes.select().order_by(S.changes.c.seq.desc()).limit(1)).first()
        tx.conn.execute(S.changes.insert().values(seq=(seq.seq if seq else 0) + 1, rid=1, type="Consent", id="kx",
                                                  version=1, deleted=False, ts=0))
    policy._next_sync = 0.0  # as a second later
    assert access.SYNC_SECONDS <= 1.0
    r = doc.get("/fhir/Observation/oA2", expect=403)
    assert r.headers["x-phip-rule"] == "consent"
