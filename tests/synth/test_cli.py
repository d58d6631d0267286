"""The ``synth`` Typer command, mounted on a Typer app of the test's own."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from phip.synth import defects as dq
from phip.synth.cli import synth

app = typer.Typer()
app.command("synth")(synth)
app.command("noop")(lambda: None)  # a second command keeps "synth" a sub-command, as in the main CLI


def _invoke(*args: str) -> object:
    return CliRunner().invoke(app, ["synth", *args])


def test_cli_writes_a_region_with_manifest_and_truth(tmp_path: Path) -> None:
    out = tmp_path / "r"
    result = _invoke(
        "--out",
        str(out),
        "--persons",
        "300",
        "--seed",
        "5",
        "--years",
        "1",
        "--end",
        "2022-06-30",
        "--no-progress",
        "--workers",
        "1",
    )
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert "300 residents" in result.output  # type: ignore[attr-defined]
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["parameters"]["end"] == "2022-06-30"
    assert manifest["parameters"]["start"] == "2021-07-01"
    assert manifest["parameters"]["province"] == "510000"
    folders = {p.name for p in out.iterdir() if p.is_dir()}
    assert {i["id"] for i in manifest["institutions"] if i["resources"]} <= folders
    assert (out / "truth" / "persons.csv").exists()


def test_cli_no_defects_and_rate_overrides(tmp_path: Path) -> None:
    out = tmp_path / "clean"
    result = _invoke(
        "--out",
        str(out),
        "--persons",
        "300",
        "--seed",
        "5",
        "--years",
        "1",
        "--no-defects",
        "--no-progress",
        "--workers",
        "1",
    )
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    with open(out / "truth" / "quality_defects.csv", encoding="utf-8") as f:
        kinds = {r["defect"] for r in csv.DictReader(f)}
    assert kinds <= {dq.OUTDATED_PHONE, dq.OUTDATED_ADDRESS}  # natural, not injected
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert all(not i["local_codes"] for i in manifest["institutions"])

    rates = tmp_path / "rates.json"
    rates.write_text(json.dumps({"late_upload": 0.5, "local_codes": 0}), encoding="utf-8")
    out2 = tmp_path / "half-late"
    result = _invoke(
        "--out",
        str(out2),
        "--persons",
        "300",
        "--seed",
        "5",
        "--years",
        "1",
        "--defect-rates",
        str(rates),
        "--no-progress",
        "--workers",
        "1",
    )
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    manifest = json.loads((out2 / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["parameters"]["defects"]["late_upload"] == 0.5
    assert manifest["parameters"]["defects"]["name_homophone"] == dq.DefectRates().name_homophone


def test_cli_errors_are_reported(tmp_path: Path) -> None:
    out = tmp_path / "x"
    out.mkdir()
    (out / "keep").write_text("x")
    result = _invoke("--out", str(out), "--persons", "10", "--seed", "1", "--no-progress")
    assert result.exit_code == 2
    result = _invoke("--out", str(tmp_path / "y"), "--persons", "10", "--seed", "1", "--province", "99")
    assert result.exit_code == 2
    result = _invoke("--out", str(tmp_path / "z"), "--persons", "10", "--seed", "1", "--end", "2020-13-01")
    assert result.exit_code == 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"nonsense": 1}), encoding="utf-8")
    result = _invoke("--out", str(tmp_path / "w"), "--persons", "10", "--seed", "1", "--defect-rates", str(bad))
    assert result.exit_code == 2
