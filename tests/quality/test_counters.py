"""The per institution × type × day counters of REST writes: written at the end of each transaction,
equal to what the stored quality rows add up to, and (PostgreSQL) not a queue for concurrent writers."""

from __future__ import annotations

import threading
import time
from typing import Any

from phip.quality.tables import FLAG_DIMENSIONS
from tests.quality.test_flow import BAD_ID, GOOD_ID, _encounter, _now, _org, _patient


def _recount(node: Any) -> dict[tuple[str, str, int], tuple[int, ...]]:
    flags = ", ".join(f"SUM(f_{d})" for d in FLAG_DIMENSIONS)
    with node.store.engine.connect() as conn:
        return {(r[0], r[1], int(r[2])): tuple(int(x) for x in r[3:]) for r in conn.exec_driver_sql(
            f"SELECT institution, rtype, day, COUNT(*), {flags} FROM quality_resource "
            "GROUP BY institution, rtype, day")}


def _counters(node: Any) -> dict[tuple[str, str, int], tuple[int, ...]]:
    cols = ", ".join(f"f_{d}" for d in FLAG_DIMENSIONS)
    with node.store.engine.connect() as conn:
        return {(r[0], r[1], int(r[2])): tuple(int(x) for x in r[3:]) for r in conn.exec_driver_sql(
            f"SELECT institution, rtype, day, received, {cols} FROM quality_counter") if any(r[3:])}


def test_counters_add_up_to_the_stored_rows_after_creates_fixes_regressions_and_deletes(api: Any, node: Any) -> None:
    _org(api)
    api.put("/fhir/Patient/p1", _patient("p1", BAD_ID), expect=201)
    no_phone = _patient("p2", GOOD_ID)
    no_phone.pop("telecom")  # a completeness finding
    api.put("/fhir/Patient/p2", no_phone, expect=201)
    # a transaction Bundle: several records of one institution and day, one of them flagged
    entries = []
    for k in range(4):
        enc = _encounter(f"e{k}", "p2")
        if k == 3:
            enc.pop("serviceType")
        entries.append({"resource": enc, "request": {"method": "PUT", "url": f"Encounter/e{k}"}})
    api.post("/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": entries}, expect=200)
    assert _counters(node) == _recount(node)
    # fixed, broken again, updated twice in one transaction, deleted
    api.put("/fhir/Patient/p1", _patient("p1", GOOD_ID), expect=200)
    assert _counters(node) == _recount(node)
    api.put("/fhir/Patient/p1", _patient("p1", BAD_ID), expect=200)
    fixed = _encounter("e3", "p2")
    twice = [{"resource": _encounter("e0", "p2", _now(-3)), "request": {"method": "PUT", "url": "Encounter/e0"}},
             {"resource": fixed, "request": {"method": "PUT", "url": "Encounter/e3"}}]
    api.post("/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": twice}, expect=200)
    api.delete("/fhir/Encounter/e1", expect=204)
    assert _counters(node) == _recount(node)
    rows = _counters(node)
    assert sum(v[0] for k, v in rows.items() if k[1] == "Encounter") == 3  # e0, e2, e3 (e1 deleted)
    assert sum(v[1] for k, v in rows.items() if k[1] == "Encounter") == 0  # e3's department came


def test_a_writer_is_not_held_behind_another_open_transaction_of_the_same_institution(node: Any) -> None:
    if node.store.dialect.name != "postgresql":
        return  # SQLite: one writer at a time, by design
    repo = node.store.repository()
    repo.update("Organization", "h1", {"resourceType": "Organization", "id": "h1", "name": "医院h1"})
    repo.update("Patient", "p1", _patient("p1", GOOD_ID))
    opened, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with node.store.write_tx():
                node.store.repository().create("Encounter", _encounter("x", "p1"))
                opened.set()
                release.wait(20)
        except BaseException as e:  # reported by the test
            errors.append(e)
            opened.set()

    t = threading.Thread(target=first)
    t.start()
    try:
        assert opened.wait(20)
        started = time.monotonic()
        done = threading.Event()

        def second() -> None:
            try:
                node.store.repository().create("Encounter", _encounter("y", "p1"))
            except BaseException as e:
                errors.append(e)
            done.set()

        threading.Thread(target=second, daemon=True).start()
        # it commits while the first is still open (it used to wait on the day's counter row)
        assert done.wait(10), "the second writer waited for the first transaction"
        assert time.monotonic() - started < 10
    finally:
        release.set()
        t.join(30)
    assert not errors
    assert _counters(node) == _recount(node)


def test_records_after_their_patients_update_in_one_bundle_are_judged_against_the_update(api: Any) -> None:
    _org(api)
    api.put("/fhir/Patient/p3", _patient("p3", GOOD_ID), expect=201)  # born 1980-05-17

    def cond(cid: str) -> dict[str, Any]:
        return {"resourceType": "Condition", "id": cid, "subject": {"reference": "Patient/p3"},
                "code": {"coding": [{"system": "urn:oid:2.16.156.10011.2.3.3.11", "code": "J06.9"}]},
                "onsetDateTime": "1979-03-01", "recordedDate": _now(-0.5),
                "recorder": {"reference": "Practitioner/d1"}, "encounter": {"reference": "Encounter/e9"}}

    earlier = _patient("p3", GOOD_ID, birthDate="1975-01-01")
    entries = [{"resource": _encounter("e9", "p3"), "request": {"method": "PUT", "url": "Encounter/e9"}},
               {"resource": cond("ca"), "request": {"method": "PUT", "url": "Condition/ca"}},
               {"resource": earlier, "request": {"method": "PUT", "url": "Patient/p3"}},
               {"resource": cond("cb"), "request": {"method": "PUT", "url": "Condition/cb"}}]
    api.post("/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": entries}, expect=200)

    def rules(cid: str) -> set[str]:
        return {x["rule"] for x in api.get(f"/quality/findings?resource=Condition/{cid}&status=open",
                                           expect=200).json()["findings"]}

    assert "consistency.Condition.event-in-life" in rules("ca")  # judged before the update: born 1980
    assert "consistency.Condition.event-in-life" not in rules("cb")  # after it: born 1975
