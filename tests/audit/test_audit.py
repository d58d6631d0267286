"""Audit: completeness (each access to personal data is one AuditEvent naming the right patient),
the hash chain and its tamper detection, archiving, the AuditEvent search and the access log."""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from phip.audit import chain, packing
from phip.audit.packing import pack
from phip.audit.schema import audit_events as AE


def _patient(api: Any, family: str = "Zhang") -> str:
    return str(api.create({"resourceType": "Patient", "name": [{"family": family, "given": ["San"]}],
                           "gender": "male", "birthDate": "1980-01-02"})["id"])


def _obs(api: Any, pid: str) -> str:
    return str(api.create({"resourceType": "Observation", "status": "final",
                           "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                           "subject": {"reference": f"Patient/{pid}"},
                           "valueQuantity": {"value": 72, "unit": "/min"}})["id"])


def _events(node: Any, **where: Any) -> list[dict[str, Any]]:
    node.ext["audit"].flush()
    q = sa.select(AE.c.content, AE.c.zcontent).order_by(AE.c.seq)
    for k, v in where.items():
        q = q.where(AE.c[k] == v)
    with node.store.engine.connect() as conn:
        return [orjson.loads(chain.content_of(r)) for r in conn.execute(q)]


def _patient_of(ev: dict[str, Any]) -> str | None:
    for e in ev.get("entity") or ():
        if e.get("role", {}).get("code") == "1":
            return str(e["what"]["reference"])
    return None


def test_each_access_is_one_balp_event(api: Any, node: Any) -> None:
    a, b = _patient(api, "Li"), _patient(api, "Wang")
    oa, ob = _obs(api, a), _obs(api, b)
    creates = [e for e in _events(node, kind="create")  # (not the Person the EMPI derives)
               if any(x["what"]["reference"].startswith("Observation/") for x in e["entity"] if "what" in x)
               or e["entity"][-1]["what"]["reference"].startswith("Patient/")]
    assert sorted(_patient_of(e) or "" for e in creates) == sorted([f"Patient/{a}", f"Patient/{b}"] * 2)
    assert all(e["action"] == "C" and e["outcome"] == "0" for e in creates)

    before = len(_events(node))
    api.get(f"/fhir/Patient/{a}", expect=200)  # the read fast path
    api.get(f"/fhir/Observation/{ob}?_elements=status", expect=200)  # the routed read
    reads = _events(node)[before:]
    assert [(e["action"], _patient_of(e)) for e in reads] == [("R", f"Patient/{a}"), ("R", f"Patient/{b}")]
    ev = reads[1]
    assert ev["subtype"][0]["code"] == "read"
    assert any(x.get("what", {}).get("reference") == f"Observation/{ob}" for x in ev["entity"])
    user = next(x for x in ev["agent"] if x["requestor"])
    assert user["who"]["identifier"]["value"] == "test-admin"
    assert user["role"][0]["coding"][0]["code"] == "admin"
    assert any(x.get("network", {}).get("address") for x in ev["agent"])
    assert "IHE.BasicAudit.PatientRead" in ev["meta"]["profile"][0]

    # a search: one event per patient in the result, carrying the query
    before = len(_events(node))
    api.get("/fhir/Observation?code=8867-4", expect=200)
    found = _events(node)[before:]
    assert sorted(_patient_of(e) or "" for e in found) == sorted([f"Patient/{a}", f"Patient/{b}"])
    assert all(e["action"] == "E" and e["subtype"][0]["code"] == "search-type" for e in found)
    q = next(x for x in found[0]["entity"] if x["role"]["code"] == "24")
    assert base64.b64decode(q["query"]).decode() == "/fhir/Observation?code=8867-4"

    # update, delete
    before = len(_events(node))
    api.delete(f"/fhir/Observation/{oa}", expect=204)
    doc = api.get(f"/fhir/Patient/{b}", expect=200).json()
    doc["gender"] = "female"
    api.put(f"/fhir/Patient/{b}", doc, expect=200)
    later = _events(node)[before:]
    assert [(e["action"], _patient_of(e)) for e in later] == [
        ("D", f"Patient/{a}"), ("R", f"Patient/{b}"), ("U", f"Patient/{b}")]

    # $everything and a history read
    before = len(_events(node))
    api.get(f"/fhir/Patient/{b}/$everything", expect=200)
    api.get(f"/fhir/Patient/{b}/_history", expect=200)
    assert [_patient_of(e) for e in _events(node)[before:]] == [f"Patient/{b}", f"Patient/{b}"]


def test_failures_and_authentication_are_audited(api: Any, node: Any) -> None:
    pid = _patient(api)
    r = api.c.get(f"/fhir/Patient/{pid}", headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401
    failed = _events(node, kind="auth-failure")
    assert len(failed) == 1 and failed[0]["outcome"] == "4"
    if "security" in node.ext:  # a failed login at the token endpoint names who tried, from where
        r = api.c.post("/auth/token", data={"grant_type": "password", "username": "mallory", "password": "x"})
        assert r.status_code in (400, 401)
        login = _events(node, kind="auth-failure")[-1]
        user = next(x for x in login["agent"] if x["requestor"])
        assert user["who"]["identifier"]["value"] == "mallory" and login["outcome"] == "4"
    api.get("/fhir/Patient/nobody-here", expect=404)
    miss = _events(node, outcome=4, kind="read")
    assert [_patient_of(e) for e in miss] == ["Patient/nobody-here"]
    # a rejected write is recorded as a failure that was not committed
    api.post("/fhir/Observation", {"resourceType": "Observation", "status": "bogus", "code": {"text": "x"},
                                    "subject": {"reference": f"Patient/{pid}"}}, expect=422)
    bad = _events(node, kind="create", outcome=4)
    assert len(bad) == 1


def test_non_personal_data_is_not_audited(api: Any, node: Any) -> None:
    api.create({"resourceType": "Organization", "name": "County Hospital"})
    api.get("/fhir/Organization", expect=200)
    assert _events(node) == []


def test_audit_event_search_and_access_log(api: Any, node: Any) -> None:
    a, b = _patient(api, "Li"), _patient(api, "Wang")
    api.get(f"/fhir/Patient/{a}", expect=200)
    clin = node.tokens.issue("clinician", "dr-chen", org="Organization/h1")
    r = api.c.get(f"/fhir/Patient/{a}", headers={"Authorization": f"Bearer {clin}"})
    assert r.status_code in (200, 403)
    bundle = api.get(f"/fhir/AuditEvent?patient=Patient/{a}&action=R", expect=200).json()
    who = [next(x for x in e["resource"]["agent"] if x["requestor"])["who"]["identifier"]["value"]
           for e in bundle["entry"]]
    assert who == ["dr-chen", "test-admin"]  # newest first
    assert api.get(f"/fhir/AuditEvent?patient={b}&action=R", expect=200).json()["entry"] == []
    one = bundle["entry"][0]["resource"]["id"]
    assert api.get(f"/fhir/AuditEvent/{one}", expect=200).json()["id"] == one
    api.get("/fhir/AuditEvent?bogus=1", expect=400)
    # auditing is not for clinicians
    assert api.c.get("/fhir/AuditEvent", headers={"Authorization": f"Bearer {clin}"}).status_code == 403
    # the resident whose Person links to the Patient sees who looked; another resident does not
    person = api.create({"resourceType": "Person", "link": [{"target": {"reference": f"Patient/{a}"}}]})["id"]
    mine = node.tokens.issue("resident", "resident-a", person=f"Person/{person}")
    r = api.c.get(f"/fhir/Patient/{a}/$access-log", headers={"Authorization": f"Bearer {mine}"})
    assert r.status_code == 200, r.text
    assert any(next(x for x in e["resource"]["agent"] if x["requestor"])["who"]["identifier"]["value"] == "dr-chen"
               for e in r.json()["entry"])
    r = api.c.get(f"/fhir/Patient/{b}/$access-log", headers={"Authorization": f"Bearer {mine}"})
    assert r.status_code == 403
    # audit records are not resources: no history, no change feed entries for them
    assert api.get("/fhir/AuditEvent/_history", expect=None).status_code in (400, 404, 405, 422)
    feed = api.get("/fhir/$changes?since=0&_count=1000", expect=200).json()
    assert not any("AuditEvent" in str(e) for e in feed.get("entry", []))


def test_submitted_audit_events_join_the_chain(api: Any, node: Any) -> None:
    ev = {"resourceType": "AuditEvent", "type": {"system": "http://dicom.nema.org/resources/ontology/DCM",
                                                 "code": "110110"},
          "recorded": "2026-01-01T00:00:00Z", "agent": [{"requestor": True, "who": {"display": "HIS"}}],
          "source": {"observer": {"display": "County Hospital HIS"}},
          "entity": [{"what": {"reference": "Patient/p1"}}]}
    api.post("/fhir/AuditEvent", ev, expect=201)
    bad = api.post("/fhir/AuditEvent", {**ev, "recorded": "not a date"}, expect=422).json()
    assert bad["resourceType"] == "OperationOutcome"
    api.post("/fhir/AuditEvent", {"resourceType": "Patient"}, expect=400)
    assert [_patient_of(e) for e in _events(node, kind="submitted")] == ["Patient/p1"]


# -- the chain ------------------------------------------------------------------------------------
def _fill(api: Any, node: Any, n: int = 6) -> None:
    pid = _patient(api)
    for _ in range(n - 1):
        api.get(f"/fhir/Patient/{pid}", expect=200)
    node.ext["audit"].flush()


def _verify(node: Any) -> chain.Verdict:
    return chain.verify(node.store.engine, node.ext["audit"].public_keys)


def _exec(node: Any, sql: str, **kw: Any) -> None:
    with node.store.engine.begin() as conn:
        conn.execute(sa.text(sql), kw)


def _text(rec: Any) -> str:
    return chain.content_of(rec).decode()


def _rewrite(node: Any, seq: int, content: str, **columns: Any) -> None:
    """What someone with write access to the database could do: store other content for a record
    (packed, as the trail stores it), and other columns."""
    with node.store.engine.begin() as conn:
        conn.execute(AE.update().where(AE.c.seq == seq).values(zcontent=pack(content.encode()), content=None,
                                                               **columns))


def test_intact_chain_verifies_with_checkpoints(api: Any, node: Any) -> None:
    node.ext["audit"].checkpoint_every = 2
    _fill(api, node)
    v = _verify(node)
    assert v.ok, v.message()
    assert v.checked == 6


def test_events_are_stored_packed_and_older_text_rows_still_count(api: Any, node: Any) -> None:
    _fill(api, node, 6)
    with node.store.engine.connect() as conn:
        recs = conn.execute(sa.select(AE).order_by(AE.c.seq)).all()
    assert len(recs) >= 6
    for r in recs:  # packed: a fraction of the JSON, which is what the hash covers
        assert r.content is None and r.zcontent is not None
        text = packing.unpack(r.zcontent)
        assert orjson.loads(text)["id"] == str(r.seq)
        assert chain.link(r.prev_hash, text) == r.hash
        assert len(r.zcontent) * 4 < len(text), (len(r.zcontent), len(text))
    # a row as written before audit_0002 (the JSON as text) verifies and is served like the others
    old = recs[2]
    _exec(node, "UPDATE audit_events SET content = :c, zcontent = NULL WHERE seq = :s", c=_text(old), s=old.seq)
    v = _verify(node)
    assert v.ok, v.message()
    got = api.get(f"/fhir/AuditEvent/{old.seq}", expect=200).json()
    assert got == orjson.loads(_text(old))
    found = api.get("/fhir/AuditEvent?_count=100", expect=200).json()["entry"]
    assert {e["resource"]["id"] for e in found} >= {str(r.seq) for r in recs}
    # a packed value that does not unpack is named, not a crash
    _exec(node, "UPDATE audit_events SET zcontent = :z WHERE seq = :s", z=b"\x01garbage", s=recs[4].seq)
    v = _verify(node)
    assert not v.ok and v.first_bad == recs[4].seq and "damaged" in v.reason


def test_the_packing_dictionary_never_changes() -> None:
    import hashlib

    # rows packed with dictionary 1 must unpack for as long as the trail is kept
    pinned = "b451e4b4eec232ce539c425afa77b0999f8739bcb1a613280b1b335b9f7ce007"
    assert hashlib.sha256(packing.DICTIONARY_1).hexdigest() == pinned
    assert packing.unpack(packing.pack(b'{"resourceType":"AuditEvent"}')) == b'{"resourceType":"AuditEvent"}'
    with pytest.raises(ValueError, match="unknown audit packing"):
        packing.unpack(b"\x02" + packing.pack(b"{}")[1:])


@pytest.mark.parametrize("tamper", ["edit", "edit-rehash", "delete", "reorder", "column", "truncate"])
def test_tampering_names_the_first_bad_record(api: Any, node: Any, tamper: str) -> None:
    node.ext["audit"].checkpoint_seconds = 1e9  # only the first flush signs
    node.ext["audit"].checkpoint_every = 10**9
    _fill(api, node, 8)
    with node.store.engine.connect() as conn:
        recs = {r.seq: r for r in conn.execute(sa.select(AE))}
    if tamper == "edit":
        c = _text(recs[4]).replace('"R"', '"C"')
        assert c != _text(recs[4])
        _rewrite(node, 4, c)
        expect = 4
    elif tamper == "edit-rehash":
        c = _text(recs[4]).replace("test-admin", "somebody-else")
        assert c != _text(recs[4])
        _rewrite(node, 4, c, hash=chain.link(recs[4].prev_hash, c.encode()))
        expect = 4
    elif tamper == "delete":
        _exec(node, "DELETE FROM audit_events WHERE seq = 5")
        expect = 5
    elif tamper == "reorder":
        for seq, other in ((3, 6), (6, 3)):
            r = recs[other]
            _rewrite(node, seq, _text(r), hash=r.hash, prev_hash=r.prev_hash)
        expect = 3
    elif tamper == "column":
        _exec(node, "UPDATE audit_events SET who = 'nobody' WHERE seq = 7")
        expect = 7
    else:
        _exec(node, "DELETE FROM audit_events WHERE seq >= 7")
        expect = 7
    v = _verify(node)
    assert not v.ok
    assert v.first_bad == expect, v.message()


def test_forged_checkpoint_is_caught(api: Any, node: Any) -> None:
    _fill(api, node, 3)
    _exec(node, "UPDATE audit_checkpoints SET hash = :h", h="f" * 64)
    v = _verify(node)
    assert not v.ok and "signature" in v.reason


def test_archive_keeps_the_chain_verifiable(api: Any, node: Any, tmp_path: Path) -> None:
    _fill(api, node, 5)
    _fill(api, node, 4)
    got = chain.archive(node.store.engine, node.ext["audit"].key, tmp_path / "arch", upto=5)
    assert got is not None
    path, first, last = got
    assert (first, last) == (1, 5)
    v = _verify(node)
    assert v.ok and v.checked == 4, v.message()
    assert chain.verify_archive(path, node.ext["audit"].public_keys).ok
    _fill(api, node, 2)
    assert _verify(node).ok
    # deleting the oldest kept record is still caught after the archive
    _exec(node, "DELETE FROM audit_events WHERE seq = 6")
    assert _verify(node).first_bad == 6
    # an edited archive is caught
    import gzip

    with gzip.open(path) as f:
        lines = f.read().replace(b"test-admin", b"other-admin")
    with gzip.open(path, "wb") as f:
        f.write(lines)
    assert not chain.verify_archive(path, node.ext["audit"].public_keys).ok


def test_cli_verify_and_archive(api: Any, node: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from phip.cli.main import app

    _fill(api, node, 6)
    node.close()
    run = CliRunner()
    r = run.invoke(app, ["audit", "verify", "--data", str(node.data)])
    assert r.exit_code == 0, r.output
    r = run.invoke(app, ["audit", "archive", "--data", str(node.data), "--upto", "3", "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    archive = next((tmp_path / "a").glob("*.ndjson.gz"))
    r = run.invoke(app, ["audit", "verify", "--data", str(node.data), "--archive", str(archive)])
    assert r.exit_code == 0, r.output
    with node.store.engine.connect() as conn:
        rec = conn.execute(sa.select(AE).where(AE.c.seq == 5)).one()
    assert "test-admin" in _text(rec)
    _rewrite(node, 5, _text(rec).replace("test-admin", "x"))
    r = run.invoke(app, ["audit", "verify", "--data", str(node.data)])
    assert r.exit_code == 1
    assert "FIRST BAD RECORD 5" in r.output


def test_break_glass_is_audited_with_its_reason_and_shown_to_the_resident(api: Any, node: Any) -> None:
    import inspect

    if "break_glass" not in inspect.signature(node.tokens.issue).parameters:
        pytest.skip("the token service has no break-glass claims")
    pid = _patient(api)
    tok = node.tokens.issue("clinician", "dr-er", org="Organization/er", purpose_of_use="ETREAT",
                            break_glass="unconscious patient in the emergency room")
    r = api.c.get(f"/fhir/Patient/{pid}", headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 200, r.text
    ev = _events(node, kind="break-glass")
    assert len(ev) == 1 and ev[0]["action"] == "R" and _patient_of(ev[0]) == f"Patient/{pid}"
    user = next(x for x in ev[0]["agent"] if x["requestor"])
    assert user["purposeOfUse"][0]["coding"][0]["code"] == "ETREAT"
    assert "unconscious" in user["policy"][0]
    org = next(x for x in ev[0]["agent"] if x.get("who", {}).get("reference") == "Organization/er")
    assert org["type"]["coding"][0]["code"] == "PROV"
    log = api.get(f"/fhir/Patient/{pid}/$access-log", expect=200).json()
    assert any(e["resource"]["subtype"][0]["code"] == "read" and
               next(x for x in e["resource"]["agent"] if x["requestor"]).get("purposeOfUse")
               for e in log["entry"])


def test_queries_on_the_trail_do_not_hold_id_or_phone_numbers(api: Any, node: Any) -> None:
    pid = str(api.create({"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": "51010419800102001X"}],
                          "telecom": [{"system": "phone", "value": "13800001234"}]})["id"])
    api.get("/fhir/Patient?identifier=51010419800102001X&phone=13800001234", expect=200)
    ev = _events(node, kind="search-type")
    assert [_patient_of(e) for e in ev] == [f"Patient/{pid}"]
    q = base64.b64decode(next(x for x in ev[0]["entity"] if x["role"]["code"] == "24")["query"]).decode()
    assert q == "/fhir/Patient?identifier=510104********001X&phone=138****1234"
    with node.store.engine.connect() as conn:
        raw = " ".join(_text(r) for r in conn.execute(sa.select(AE.c.content, AE.c.zcontent)))
    assert "51010419800102001X" not in raw and "13800001234" not in raw


_KILLED = """
import os, signal, sys
from pathlib import Path
from phip.node.node import Node
node = Node.open(Path(sys.argv[1]))
svc = node.ext["audit"]
svc.flush_interval = 3600.0  # nothing reaches the chain by the timer
for i in range(int(sys.argv[2])):
    svc.event("read", patient=f"p{i}", what=f"Patient/p{i}", query="Patient?identifier=51010419800102001X",
              source="127.0.0.1")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_process_loses_no_access(node: Any) -> None:
    """Accesses buffered by a process killed with SIGKILL before its buffer reached the chain are
    written from its journal when the node next opens; the chain still verifies."""
    import subprocess
    import sys

    from phip.audit.service import AuditService

    node.ext["audit"].flush()
    with node.store.engine.connect() as conn:
        before = conn.execute(sa.select(sa.func.count()).select_from(AE)).scalar_one()
    r = subprocess.run([sys.executable, "-c", _KILLED, str(node.data), "25"], capture_output=True, timeout=120)
    assert r.returncode == -9, r.stderr.decode()[-2000:]
    journals = list((node.data / "audit").glob("journal-*.jsonl"))
    assert journals and sum(len(p.read_bytes().splitlines()) for p in journals) == 25
    assert b"51010419800102001X" not in b"".join(p.read_bytes() for p in journals)  # journaled masked
    with node.store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(AE)).scalar_one() == before
    svc = AuditService(node)  # the next start recovers them
    with node.store.engine.connect() as conn:
        rows = conn.execute(sa.select(AE.c.patient).where(AE.c.seq > before).order_by(AE.c.seq)).all()
    assert [r[0] for r in rows] == [f"p{i}" for i in range(25)]
    assert not list((node.data / "audit").glob("journal-*.jsonl"))
    assert _verify(node).ok
    assert svc.recover() == 0  # nothing twice


def test_a_journal_already_in_the_chain_is_not_written_twice(node: Any) -> None:
    """The process died between the chain's commit and the deletion of its journal file."""
    from phip.audit.events import Pending
    from phip.audit.journal import Journal
    from phip.audit.service import AuditService

    svc = node.ext["audit"]
    recs = [Pending(1_700_000_000_000_000 + i, "read", 0, f"q{i}", f"Patient/q{i}", None, "dr", "clinician",
                    None, None, None, None, None) for i in range(3)]
    j = Journal(node.data / "audit")
    for p in recs:
        j.write(p)
    chain.append(node.store.engine, recs[:2], svc.node_name, svc.key)  # two made it to the chain
    import os

    os.close(j.fd)  # the process is gone: its lock with it
    AuditService(node)
    with node.store.engine.connect() as conn:
        got = [r[0] for r in conn.execute(sa.select(AE.c.patient).where(AE.c.patient.like("q%")).order_by(AE.c.seq))]
    assert got == ["q0", "q1", "q2"]


def test_the_flush_queues_with_the_stores_writers(node: Any) -> None:
    """On SQLite the audit chain is written in the writers' queue (the store's WriterLock), not by
    polling SQLite's busy handler: a flush that comes while a write transaction is open waits in
    that queue, and goes in as soon as the writer is done (on PostgreSQL it does not wait).  Inside
    a write transaction of its own thread the queue is not taken again (no deadlock)."""
    from phip.audit.events import Pending

    store = node.store
    sqlite = store.dialect.name == "sqlite"
    svc = node.ext["audit"]
    svc.flush()
    inside, done = threading.Event(), threading.Event()

    def writer() -> None:
        with store.write_tx():
            inside.set()
            done.wait(10)

    w = threading.Thread(target=writer)
    w.start()
    assert inside.wait(10)
    with svc._lock:
        svc._buf.append(Pending(1_700_000_000_000_000, "read", 0, "w1", "Patient/w1", None, "dr", "clinician",
                                None, None, None, None, None))
    f = threading.Thread(target=svc.flush)
    f.start()
    if sqlite:
        deadline = time.monotonic() + 10
        while store._write_lock.waiting() < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store._write_lock.waiting() == 1  # the flush waits in the writers' queue
        assert f.is_alive()
    else:  # PostgreSQL: many writers at once, the chain's own row lock orders the appends
        f.join(10)
        assert not f.is_alive()
    done.set()
    w.join(10)
    f.join(10)
    assert not f.is_alive()
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(AE.c.patient).where(AE.c.patient == "w1")).all() == [("w1",)]
    with store.write_tx(), store.queued_write():  # its own transaction: nothing more to take
        pass
    assert _verify(node).ok


def test_a_reader_of_the_trail_sees_what_is_still_buffered(api: Any, node: Any) -> None:
    """The timer writes the buffer to the chain only every ``flush_interval_ms``; a search of the
    trail writes it first, so what was just done is on the trail whatever the interval."""
    svc = node.ext["audit"]
    svc.flush_interval = 3600.0
    svc._wake.set()  # a flush thread already running goes back to waiting, now for an hour
    time.sleep(0.2)
    svc._wake.clear()  # (no thread yet: the first record starts one, which must not flush at once)
    svc.flush()
    pid = _patient(api, "Zhao")
    with svc._lock:
        assert any(p.patient == pid for p in svc._buf)  # not on the chain yet
    found = api.get(f"/fhir/AuditEvent?patient=Patient/{pid}", expect=200).json()
    assert [e["resource"]["action"] for e in found.get("entry", [])] == ["C"]
