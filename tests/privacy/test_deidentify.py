"""De-identified export: direct identifiers gone, keyed pseudonyms and shifted dates consistent
within a patient, k-anonymity over (age band, sex, county) with suppression and a report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from phip.privacy import deidentify as D

KEY = b"k" * 32


def _patient(i: int, county: str, gender: str, birth: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": f"p{i}", "gender": gender, "birthDate": birth,
            "name": [{"family": "测", "given": [f"试{i}"]}],
            "identifier": [{"system": "urn:phip:id-card", "value": f"5101041980010{i:05d}"}],
            "telecom": [{"system": "phone", "value": f"1380000{i:04d}"}],
            "address": [{"extension": [{"url": "urn:phip:ext:division-code", "valueCode": county}],
                         "line": [f"人民路{i}号"], "text": f"四川省成都市人民路{i}号", "district": "锦江区",
                         "postalCode": "610000"}],
            "text": {"status": "generated", "div": f"<div xmlns=\"http://www.w3.org/1999/xhtml\">试{i}</div>"}}


def _obs(i: int) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": f"o{i}", "status": "final", "code": {"text": "bp"},
            "subject": {"reference": f"Patient/p{i}"}, "effectiveDateTime": "2025-03-10T08:00:00+08:00",
            "issued": "2025-03-11T09:00:00+08:00", "note": [{"text": f"试{i} says hello"}]}


@pytest.fixture
def loaded(node: Any) -> Any:
    repo = node.store.repository()
    people = [(i, "510104", "male", "1980-05-01") for i in range(6)]  # a class of 6
    people += [(10 + i, "510129", "female", "1950-02-02") for i in range(2)]  # a class of 2: suppressed
    for i, county, g, b in people:
        repo.update("Patient", f"p{i}", _patient(i, county, g, b))
        repo.update("Observation", f"o{i}", _obs(i))
    repo.create("Organization", {"resourceType": "Organization", "name": "County Hospital"})
    return node


def test_deidentified_research_extract(loaded: Any, tmp_path: Path) -> None:
    prof = D.load_profile("research")
    out = tmp_path / "out"
    rep = D.run(loaded.store, out, prof, KEY)
    text = (out / "Patient.ndjson").read_text() + (out / "Observation.ndjson").read_text()
    for secret in ("试", "5101041980010", "1380000", "人民路", "610000", "p0\"", "Patient/p0"):
        assert secret not in text, secret
    pats = [orjson.loads(x) for x in (out / "Patient.ndjson").read_text().splitlines()]
    obs = [orjson.loads(x) for x in (out / "Observation.ndjson").read_text().splitlines()]
    assert len(pats) == 6 and len(obs) == 6
    assert rep.patients == 8 and rep.patients_suppressed == 2
    assert rep.resources_suppressed >= 4  # 2 patients, 2 observations (+ what other capabilities derived)
    assert rep.classes_suppressed == [{"class": {"age_band": "70-79", "sex": "female", "county": "510129"},
                                       "size": 2}]
    assert rep.k_reached == 6
    p = pats[0]
    assert p["birthDate"] == "1980"
    assert p["address"] == [{"extension": [{"url": "urn:phip:ext:division-code", "valueCode": "510104"}],
                             "district": "锦江区"}]
    assert p["id"].startswith("ps-")
    # the pseudonym is keyed and stable; references follow it
    ids = {x["id"] for x in pats}
    assert {o["subject"]["reference"].split("/")[1] for o in obs} == ids
    again = tmp_path / "again"
    D.run(loaded.store, again, prof, KEY)
    assert (again / "Patient.ndjson").read_text() == (out / "Patient.ndjson").read_text()
    other = tmp_path / "other"
    D.run(loaded.store, other, prof, b"x" * 32)
    assert (other / "Patient.ndjson").read_text() != (out / "Patient.ndjson").read_text()
    # dates shift by the same number of days within a patient's record (intervals stay true)
    o = obs[0]
    assert o["effectiveDateTime"] != "2025-03-10T08:00:00+08:00"
    assert "note" not in o
    from datetime import date

    eff, iss = date.fromisoformat(o["effectiveDateTime"][:10]), date.fromisoformat(o["issued"][:10])
    assert (iss - eff).days == 1
    report = orjson.loads((out / "deidentification-report.json").read_bytes())
    assert report["patients_suppressed"] == 2
    assert (out / "Organization.ndjson").exists()


def test_generalizing_profile_and_custom_profile(loaded: Any, tmp_path: Path) -> None:
    rep = D.run(loaded.store, tmp_path / "s", D.load_profile("statistics"), KEY)
    assert rep.patients_suppressed == 8  # k = 10: every class is too small
    custom = tmp_path / "mine.json"
    custom.write_text('{"name": "mine", "k": 2, "dates": {"mode": "generalize", "precision": "year"}, '
                      '"quasi_identifiers": ["sex"], "remove": {"*": ["text", "note"]}}')
    rep = D.run(loaded.store, tmp_path / "m", D.load_profile(str(custom)), KEY)
    assert rep.patients_suppressed == 0
    obs = orjson.loads((tmp_path / "m" / "Observation.ndjson").read_text().splitlines()[0])
    assert obs["effectiveDateTime"] == "2025"
    with pytest.raises(D.ProfileError):
        D.load_profile("no-such-profile")


def test_cli_export_deidentify(loaded: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from phip.cli.main import app

    loaded.close()
    r = CliRunner().invoke(app, ["export", "--data", str(loaded.data), "--out", str(tmp_path / "x"),
                                 "--deidentify", "research"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "x" / "deidentification-report.json").exists()
    r = CliRunner().invoke(app, ["export", "--data", str(loaded.data), "--out", str(tmp_path / "y"),
                                 "--deidentify", "nope"])
    assert r.exit_code == 1
