"""The live feed: records created with server-assigned ids (POST, transaction Bundles) are checked
together before the transaction commits — the same findings, institutions and counters as records
written one at a time (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid
from typing import Any

from tests.quality.test_flow import GOOD_ID, _encounter, _now, _org, _patient


def _entry(res: dict[str, Any], full: str | None = None, method: str = "POST",
           url: str | None = None) -> dict[str, Any]:
    res = {k: v for k, v in res.items() if k != "id"} if method == "POST" else res
    return {"fullUrl": full or f"urn:uuid:{uuid.uuid4()}", "resource": res,
            "request": {"method": method, "url": url or res["resourceType"]}}


def _tx(api: Any, *entries: dict[str, Any]) -> list[str]:
    out = api.post("/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)},
                   expect=200).json()
    return [e["response"]["location"].split("/_history")[0] for e in out["entry"]]


def _received(api: Any, inst: str) -> int:
    rows = api.get(f"/quality/scorecard?institution={inst}", expect=200).json()["institutions"]
    return sum(r["received"] for r in rows)


def test_a_duplicate_in_one_bundle_is_found_on_the_later_entry(api: Any) -> None:
    _org(api)
    api.put("/fhir/Patient/p5", _patient("p5", GOOD_ID), expect=201)
    start = _now(-1)
    first, second = _tx(api, _entry(_encounter("x", "p5", start)), _entry(_encounter("y", "p5", start)))
    dup = api.get("/quality/findings?rule=uniqueness.Encounter", expect=200).json()["findings"]
    assert [(x["resource"], x["status"], x["institution"]) for x in dup] == [(second, "open", "h1")]
    assert first not in {x["resource"] for x in dup}


def test_a_new_record_duplicating_an_older_one_is_the_duplicate_whatever_the_ids(api: Any) -> None:
    _org(api)
    api.put("/fhir/Patient/p6", _patient("p6", GOOD_ID), expect=201)
    start = _now(-1)
    # the older record's id is longer than a server-assigned one, and sorts after it
    older = "older-" + "z" * 40
    api.put(f"/fhir/Encounter/{older}", _encounter(older, "p6", start), expect=201)
    new = api.post("/fhir/Encounter", _encounter("ignored", "p6", start), expect=201).json()["id"]
    dup = api.get("/quality/findings?rule=uniqueness.Encounter", expect=200).json()["findings"]
    assert [(x["resource"], x["status"]) for x in dup] == [(f"Encounter/{new}", "open")]
    assert f"Encounter/{older}" in dup[0]["message"]


def test_records_of_one_bundle_inherit_institutions_and_lives_from_each_other(api: Any) -> None:
    _org(api, "h1")
    _org(api, "h2")
    pat = _patient("ignored", GOOD_ID, org="h2")
    pfull, efull = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
    enc = _encounter("ignored", "x", _now(-1))
    enc["subject"] = {"reference": pfull}
    # an observation without a performer: its institution is its encounter's (h1), not its patient's (h2)
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "体温"},
           "subject": {"reference": pfull}, "encounter": {"reference": efull}, "effectiveDateTime": _now(-0.5)}
    # a condition dated before the patient was born: found against the patient written in the same Bundle
    cond = {"resourceType": "Condition", "subject": {"reference": pfull}, "encounter": {"reference": efull},
            "code": {"coding": [{"system": "urn:oid:2.16.156.10011.2.3.3.11", "code": "J06.9"}]},
            "onsetDateTime": "1970-01-02", "recordedDate": _now(-0.5), "recorder": {"reference": "Practitioner/d1"}}
    h1, h2 = _received(api, "h1"), _received(api, "h2")
    locs = _tx(api, _entry(pat, pfull), _entry(enc, efull), _entry(obs), _entry(cond))
    assert _received(api, "h2") == h2 + 1  # the Patient
    assert _received(api, "h1") == h1 + 3  # the Encounter, and what inherits it
    got = api.get(f"/quality/findings?resource={locs[3]}", expect=200).json()["findings"]
    assert [(x["rule"], x["institution"]) for x in got] == [("consistency.Condition.event-in-life", "h1")]
    assert api.get(f"/quality/findings?resource={locs[2]}", expect=200).json()["total"] == 0


def test_a_new_record_and_an_update_in_one_bundle(api: Any) -> None:
    """An update in the same transaction is checked after the new records before it (a transaction
    writes its POSTs first): it sees their rows."""
    _org(api)
    api.put("/fhir/Patient/p7", _patient("p7", GOOD_ID), expect=201)
    start = _now(-1)
    efull = f"urn:uuid:{uuid.uuid4()}"
    obs = {"resourceType": "Observation", "id": "o7", "status": "final", "code": {"text": "体温"},
           "subject": {"reference": "Patient/p7"}, "encounter": {"reference": efull},
           "effectiveDateTime": _now(-0.5)}
    h1 = _received(api, "h1")
    # the PUT of an existing encounter with the same key as the new one: the update is the older record
    api.put("/fhir/Encounter/e7", _encounter("e7", "p7", start), expect=201)
    _tx(api, _entry(_encounter("ignored", "p7", start), efull),
        _entry(obs, method="PUT", url="Observation/o7"),
        _entry(_encounter("e7", "p7", start), method="PUT", url="Encounter/e7"))
    assert _received(api, "h1") == h1 + 3  # e7 (once: its update replaces its count), the new encounter, o7
    dup = api.get("/quality/findings?rule=uniqueness.Encounter", expect=200).json()["findings"]
    assert len(dup) == 1 and dup[0]["resource"] != "Encounter/e7"
