"""Loading content: the shipped tables once per version, operator files (ICD-10 national clinical
edition, essential drugs, GB/T 2260 history, FHIR resources), and the init opt-out."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from phip.terminology import content as C
from phip.terminology.loader import load_dir, load_divisions, load_drugs, load_icd10, load_shipped, loaded_version
from tests.terminology.conftest import ICD10_CN


def test_shipped_loaded_once_per_version(node: Any) -> None:
    if os.environ.get("PHIP_TERMINOLOGY_ON_INIT") != "0":
        assert loaded_version(node.store, "shipped") == C.CONTENT_VERSION  # phip init loaded them
    load_shipped(node.store)
    again = load_shipped(node.store)
    assert again.skipped
    forced = load_shipped(node.store, force=True)
    assert forced.written == 0 and forced.unchanged == len(C.shipped())  # identical content: no new versions


def test_national_icd10_edition_becomes_current(node: Any, tmp_path: Path) -> None:
    f = tmp_path / "icd10-cn.csv"
    f.write_text("编码,名称\nA00,霍乱\nA00.0,古典生物型霍乱\nA00.000,古典生物型霍乱(示例)\nI10,特发性(原发性)高血压\n"
                 "I10.x00,高血压\n", encoding="utf-8")
    rep = load_icd10(node.store, f, version="国家临床版2.0", effective="2018-06-01")
    assert rep.written == 1
    svc = node.ext["terminology"]
    svc.refresh()
    cs = svc.codesystem(ICD10_CN)
    assert cs.version == "国家临床版2.0" and cs.content == "complete"
    assert svc.validate_code(ICD10_CN, "I10.x00") and svc.lookup(ICD10_CN, "A00") == "霍乱"
    assert not svc.validate_code(ICD10_CN, "B01")  # not in this (tiny) edition
    assert svc.subsumes(ICD10_CN, "A00.0", "A00.000") == "subsumes"  # parent inferred from the code
    assert svc.validate_code(C.ICD10_WHO, "B01")  # the WHO system is unaffected
    assert "WHO-2019" in svc.codesystem_versions(ICD10_CN)  # older version still answerable


def test_drug_list_and_division_history(node: Any, tmp_path: Path) -> None:
    drugs = tmp_path / "drugs.tsv"
    drugs.write_text("编码\t药品名称\t剂型\nYP001\t阿莫西林胶囊\t胶囊剂\n", encoding="utf-8")
    load_drugs(node.store, drugs, version="2018-full")
    hist = tmp_path / "hist.csv"
    hist.write_text("code,name,valid_from,valid_to,successor,successor_name\n"
                    "513229,马尔康县,1980-01-01,2015-11-18,513201,马尔康市\n", encoding="utf-8")
    load_divisions(node.store, hist, version="2024-history")
    svc = node.ext["terminology"]
    svc.refresh()
    assert svc.lookup(C.DRUG, "YP001") == "阿莫西林胶囊"
    assert svc.concept(C.DRUG, "YP001").properties["dosageForm"] == "胶囊剂"
    assert svc.concept(C.DIVISION, "513229").inactive
    assert [m.target_code for m in svc.translate(C.DIVISION, "513229")] == ["513201"]
    assert svc.concept(C.DIVISION, "510122").inactive  # the shipped history is kept


def test_load_dir_and_bad_files(node: Any, tmp_path: Path) -> None:
    vs = {"resourceType": "ValueSet", "id": "sz-id-types", "url": "urn:example:vs:sz-id", "status": "active",
          "compose": {"include": [{"system": "urn:oid:2.16.156.10011.2.3.1.1"},
                                  {"system": "urn:example:cs:sz", "concept": [{"code": "109"}]}]}}
    (tmp_path / "vs.json").write_text(json.dumps(vs), encoding="utf-8")
    load_dir(node.store, tmp_path)
    svc = node.ext["terminology"]
    assert svc.validate_code("urn:oid:2.16.156.10011.2.3.1.1", "01", "urn:example:vs:sz-id")
    assert svc.validate_code("urn:example:cs:sz", "109", "urn:example:vs:sz-id")
    (tmp_path / "empty.csv").write_text("x,y\n1,2\n")
    from phip.fhir.errors import FhirError

    with pytest.raises(FhirError):
        load_icd10(node.store, tmp_path / "empty.csv", version="x")


def test_opt_out_of_loading_at_init(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PHIP_TERMINOLOGY_ON_INIT=0 (or load_on_init = false): nothing is written at init, yet the
    service still answers from the shipped tables (they are its base layer)."""
    from phip.node.node import init_node

    monkeypatch.setenv("PHIP_TERMINOLOGY_ON_INIT", "0")
    node = init_node(tmp_path / "n", region="510104")
    try:
        with node.store.read_conn() as conn:
            n = conn.execute(sa.text("SELECT count(*) FROM resources WHERE type = 'CodeSystem'")).scalar()
        assert n == 0
        svc = node.ext["terminology"]
        assert svc.validate_code("urn:oid:2.16.156.10011.2.3.3.4", "1")
        assert svc.lookup("urn:oid:2.16.156.10011.2.3.3.3", "01") == "汉族"
        load_shipped(node.store)  # `phip terminology load` later
        with node.store.read_conn() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM resources WHERE type = 'CodeSystem'")).scalar() > 10
    finally:
        node.close()


def test_cli_load_and_lookup(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from phip.cli.main import app
    from phip.node.node import init_node

    init_node(tmp_path / "n", region="510104").close()
    runner = CliRunner()
    r = runner.invoke(app, ["terminology", "load", "--data", str(tmp_path / "n")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["terminology", "lookup", "urn:oid:2.16.156.10011.2.3.3.3", "01", "--data",
                            str(tmp_path / "n")])
    assert r.exit_code == 0 and "汉族" in r.output
    r = runner.invoke(app, ["terminology", "lookup", "urn:oid:2.16.156.10011.2.3.3.4", "5", "--data",
                            str(tmp_path / "n")])
    assert r.exit_code == 1


def test_reloading_shipped_keeps_operator_tables(node: Any, tmp_path: Path) -> None:
    drugs = tmp_path / "drugs.csv"
    drugs.write_text("code,name\nYP002,布洛芬片\n", encoding="utf-8")
    load_drugs(node.store, drugs, version="2018-full")
    load_shipped(node.store, force=True)
    svc = node.ext["terminology"]
    svc.refresh()
    assert svc.lookup(C.DRUG, "YP002") == "布洛芬片"
    assert svc.codesystem(C.DRUG).version == "2018-full"
