"""Work the node does for a caller's write before its commit (the quality engine's checks of a
transaction's new records, the Tasks they open) runs with the node's rights and is not audited as
the caller's own writes — as the same work done in a hook of the write."""

from __future__ import annotations

from typing import Any

from tests.security.conftest import World, patient


def test_a_clinicians_new_record_gets_its_findings_task(world: World) -> None:
    doc = patient("ignored", "hospB", "510105")
    del doc["id"]
    doc["identifier"][0]["value"] = doc["identifier"][0]["value"][:17] + "X"  # a bad check digit
    clinician = world.api("clinician", "doc-b", org="Organization/hospB")
    pid = clinician.post("/fhir/Patient", doc, expect=201).json()["id"]
    admin = world.api("admin", "a")
    found = admin.get(f"/quality/findings?resource=Patient/{pid}&rule=conformance.Patient.id-number",
                      expect=200).json()["findings"]
    assert len(found) == 1 and found[0]["task"]
    task = admin.get(f"/fhir/{found[0]['task']}", expect=200).json()
    assert task["owner"] == {"reference": "Organization/hospB"} and task["for"] == {"reference": f"Patient/{pid}"}
    audit: Any = world.node.ext.get("audit")
    if audit is not None:  # the Task is the node's write, not the clinician's
        audit.flush()
        import sqlalchemy as sa

        from phip.audit.chain import content_of
        from phip.audit.schema import audit_events as AE

        with world.node.store.engine.connect() as conn:
            mine = [content_of(r).decode()
                    for r in conn.execute(sa.select(AE).where(AE.c.who == "doc-b", AE.c.kind == "create"))]
        assert len(mine) == 1 and f"Patient/{pid}" in mine[0]
        assert not any("Task/" in c for c in mine)
