"""The `phip` CLI contract: init, token, import (rejects, resume, atomic bundles), export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from phip.cli.main import app
from phip.importer import loader
from phip.importer.loader import Importer

runner = CliRunner()


def _patient(i: int) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": f"p{i}", "gender": "female" if i % 2 else "male",
            "name": [{"family": "样", "given": [f"{i}"]}], "birthDate": "1985-01-02"}


def test_init_refuses_to_overwrite_and_token(tmp_path: Path) -> None:
    data = tmp_path / "n"
    r = runner.invoke(app, ["init", "--data", str(data), "--level", "county", "--region", "510104", "--name", "t"])
    assert r.exit_code == 0, r.output
    assert (data / "phip.toml").exists() and list((data / "keys").glob("*.pem"))
    r = runner.invoke(app, ["init", "--data", str(data)])
    assert r.exit_code == 1 and "refusing to overwrite" in r.output
    r = runner.invoke(app, ["init", "--data", str(tmp_path / "m"), "--level", "village"])
    assert r.exit_code == 1 and "--level" in r.output
    r = runner.invoke(app, ["token", "--data", str(data), "--role", "admin", "--ttl", "60"])
    assert r.exit_code == 0 and r.output.count(".") == 2
    r = runner.invoke(app, ["token", "--data", str(data), "--role", "wizard"])
    assert r.exit_code == 1 and "unknown role" in r.output
    r = runner.invoke(app, ["token", "--data", str(tmp_path / "none"), "--role", "admin"])
    assert r.exit_code == 1 and "not a phip node" in r.output


def test_import_reports_rejects_with_file_and_line(node: Any, tmp_path: Path) -> None:
    f = tmp_path / "Patient.ndjson"
    lines = [orjson.dumps(_patient(1)), b"{broken", orjson.dumps({**_patient(2), "gender": "x"}),
             orjson.dumps(_patient(3)), b"", orjson.dumps({"resourceType": "Nope"}), b'{"name": "a manifest"}']
    f.write_bytes(b"\n".join(lines) + b"\n")
    r = runner.invoke(app, ["import", "--data", str(node.data), str(f)])
    assert r.exit_code == 2, r.output
    assert f"REJECTED {f}:2: not valid JSON" in r.output
    assert f"REJECTED {f}:3: Patient.gender" in r.output
    assert f"REJECTED {f}:6: unknown resourceType 'Nope'" in r.output
    assert f"REJECTED {f}:7: no resourceType: not a FHIR resource" in r.output
    assert "loaded 2" in r.output
    ids = {row.id for row in node.store.repository().search(
        node.store.repository().parser().parse("Patient", [])).rows}
    assert ids == {"p1", "p3"}


def test_import_resumes_after_interruption(node: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "many.ndjson"
    f.write_bytes(b"\n".join(orjson.dumps({k: v for k, v in _patient(i).items() if k != "id"})
                             for i in range(50)) + b"\n")
    monkeypatch.setattr(loader, "BATCH", 10)
    seen = {"bytes": 0}

    def boom(n: int) -> None:
        seen["bytes"] += n
        if seen["bytes"] > f.stat().st_size // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Importer(node.store, on_progress=boom).import_file(f)
    repo = node.store.repository()
    partial = len(repo.search(repo.parser().parse("Patient", [("_count", "100")])).rows)
    assert 0 < partial < 50 and partial % 10 == 0
    imp = Importer(node.store)
    imp.import_file(f)
    total = repo.search(repo.parser().parse("Patient", [("_count", "100")])).rows
    assert len(total) == 50  # server-assigned ids, yet nothing loaded twice
    assert imp.report.skipped_done == partial and imp.report.loaded == 50 - partial
    again = Importer(node.store)
    again.import_file(f)
    assert again.report.loaded == 0


def test_transaction_bundle_file_is_never_half_loaded(node: Any, tmp_path: Path) -> None:
    good = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {k: v for k, v in _patient(7).items() if k != "id"}, "request": {"method": "POST",
                                                                                      "url": "Patient"}}]}
    bad = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {k: v for k, v in _patient(8).items() if k != "id"}, "request": {"method": "POST",
                                                                                      "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "gender": "x"}, "request": {"method": "POST", "url": "Patient"}}]}
    (tmp_path / "a.json").write_bytes(orjson.dumps(good))
    (tmp_path / "b.json").write_bytes(orjson.dumps(bad))
    r = runner.invoke(app, ["import", "--data", str(node.data), str(tmp_path)])
    assert r.exit_code == 2
    assert "b.json:1: Bundle.entry[1]" in r.output
    repo = node.store.repository()
    names = [row.resource()["name"][0]["given"][0] for row in repo.search(repo.parser().parse("Patient", [])).rows]
    assert names == ["7"]


def test_export_writes_ndjson_per_type(node: Any, tmp_path: Path) -> None:
    repo = node.store.repository()
    for i in range(3):
        repo.update("Patient", f"p{i}", _patient(i))
    repo.create("Organization", {"resourceType": "Organization", "name": "测试医院"})
    out = tmp_path / "out"
    r = runner.invoke(app, ["export", "--data", str(node.data), "--out", str(out)])
    assert r.exit_code == 0, r.output
    names = {p.name for p in out.iterdir()}
    # with what capabilities wrote alongside: master Persons, data-quality Tasks
    assert {"Organization.ndjson", "Patient.ndjson"} <= names <= {"Organization.ndjson", "Patient.ndjson",
                                                                 "Person.ndjson", "Task.ndjson"}
    rows = [orjson.loads(x) for x in (out / "Patient.ndjson").read_bytes().splitlines()]
    assert sorted(x["id"] for x in rows) == ["p0", "p1", "p2"]
    out2 = tmp_path / "out2"
    r = runner.invoke(app, ["export", "--data", str(node.data), "--out", str(out2), "--type", "Organization"])
    assert [p.name for p in out2.iterdir()] == ["Organization.ndjson"]
    r = runner.invoke(app, ["export", "--data", str(node.data), "--out", str(out2), "--type", "Bogus"])
    assert r.exit_code == 1 and "Bogus" in r.output
    r = runner.invoke(app, ["export", "--data", str(node.data), "--out", str(tmp_path / "o3"),
                            "--since", "2999-01-01"])
    assert r.exit_code == 0 and not list((tmp_path / "o3").iterdir())


def test_parallel_import_path_matches_serial(node: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation and indexing in the worker process give the same store as the serial path."""
    monkeypatch.setattr(loader, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(loader, "BATCH", 7)
    f = tmp_path / "mixed.ndjson"
    rows = [orjson.dumps({k: v for k, v in _patient(i).items() if k != "id"}) for i in range(30)]
    rows[5] = orjson.dumps({**_patient(99), "gender": "x"})
    rows[11] = b"{nope"
    f.write_bytes(b"\n".join(rows) + b"\n")
    imp = Importer(node.store)
    try:
        imp.import_file(f)
    finally:
        imp.close()
    assert imp.report.loaded == 28
    rejected = [(r.line, r.reason.split(":")[0]) for r in imp.report.rejected]
    assert rejected == [(6, "Patient.gender"), (12, "not valid JSON")]
    repo = node.store.repository()
    # the index rows came from the worker: searches find the loaded resources
    assert len(repo.search(repo.parser().parse("Patient", [("family", "样"), ("_count", "100")])).rows) == 28
    assert len(repo.search(repo.parser().parse("Patient", [("gender", "male"), ("_count", "100")])).rows) == 15
