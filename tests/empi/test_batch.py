"""The batch path: `phip import` links in one batch before it returns; rebuild keeps decisions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .builders import P, rid, zhang_san
from .test_linking import person_of


def _import(node: Any, pats: list[dict[str, Any]], tmp: Path) -> None:
    from phip.importer.loader import Importer

    f = tmp / "p.ndjson"
    f.write_text("\n".join(json.dumps(p, ensure_ascii=False) for p in pats))
    imp = Importer(node.store, parallel=False)
    imp.import_file(f)
    imp.finish()
    imp.close()


def test_import_links_in_batch(api: Any, node: Any, tmp_path: Path) -> None:
    n = rid("510104", "1980-03-04", 123)
    pats = [zhang_san().id("a").idno(n).build(), zhang_san().id("b").idno(n).mrn("510104-wsy", "7").build(),
            P("李娜", family="李", given="娜").id("c").born("1999-09-09").sex("female").build()]
    _import(node, pats, tmp_path)
    assert person_of(api, "a")["id"] == person_of(api, "b")["id"] != person_of(api, "c")["id"]
    assert {lk["assurance"] for lk in person_of(api, "a")["link"]} == {"level4"}
    # a second import links new records against the existing index
    _import(node, [zhang_san().id("d").idno(n).build()], tmp_path)
    assert person_of(api, "d")["id"] == person_of(api, "a")["id"]


def test_rebuild_keeps_person_ids_and_manual_decisions(api: Any, node: Any) -> None:
    from phip.empi.batch import rebuild

    n = rid("510104", "1980-03-04", 123)
    for pid in ("a", "b"):
        api.put(f"/fhir/Patient/{pid}", zhang_san().id(pid).idno(n).build(), expect=201)
    api.put("/fhir/Patient/c", P("刘洋", family="刘", given="洋").id("c").born("1988-08-08").sex("female")
            .build(), expect=201)
    api.put("/fhir/Patient/d", P("王芳", family="王", given="芳").id("d").born("1966-06-06").sex("female")
            .build(), expect=201)
    before = {p: person_of(api, p)["id"] for p in "abcd"}
    api.post("/fhir/empi/unlink", {"patient": "b", "reason": "not the same"}, expect=200)
    api.post("/fhir/empi/link", {"patient": "d", "other": "c", "reason": "same person, renamed"}, expect=200)
    rep = rebuild(node.ext["empi"])
    assert rep.records == 4
    after = {p: person_of(api, p)["id"] for p in "abcd"}
    assert after["a"] == before["a"]
    assert after["b"] != after["a"]  # unlink obeyed although the ID numbers are equal
    assert after["c"] == after["d"]  # manual link kept
    rep2 = rebuild(node.ext["empi"])
    assert rep2.persons_created == 0 and rep2.persons_deleted == 0
    assert {p: person_of(api, p)["id"] for p in "abcd"} == after


def test_cli_status_and_review(node: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from phip.cli.main import app

    repo = node.store.repository()
    repo.create("Patient", P("刘洋", family="刘", given="洋").born("1988-08-08").sex("female")
                .addr("510104", "新华路1号").build())
    repo.create("Patient", P("刘洋", family="刘", given="洋").born("1988-08-08").sex("female")
                .addr("510129", "东岭镇").build())
    data = str(node.data)
    r = CliRunner().invoke(app, ["empi", "status", "--data", data])
    assert r.exit_code == 0, r.output
    assert "open reviews" in r.output
    r = CliRunner().invoke(app, ["empi", "review", "list", "--data", data])
    assert r.exit_code == 0 and "Patient/" in r.output, r.output
    from phip.empi.steward import review_items

    with node.store.engine.connect() as conn:
        item = review_items(conn)[0]["id"]
    r = CliRunner().invoke(app, ["empi", "review", "reject", str(item), "--data", data, "--by", "steward",
                                 "--reason", "different people"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["empi", "review", "reject", str(item), "--data", data])
    assert r.exit_code == 1


def test_a_large_import_links_before_its_search_indexes_are_built(api: Any, node: Any, tmp_path: Path,
                                                                  monkeypatch: Any) -> None:
    """The Persons go in while the value indexes are deferred (their rows are sorted into the indexes
    with the rest, not inserted into built ones), and are found by search afterwards."""
    import sqlalchemy as sa

    from phip.importer.loader import Importer
    from phip.store import schema as S

    n = rid("510104", "1980-03-04", 123)
    pats = [zhang_san().id("a").idno(n).build(), zhang_san().id("b").idno(n).mrn("510104-wsy", "7").build(),
            P("李娜", family="李", given="娜").id("c").born("1999-09-09").sex("female").build()]
    f = tmp_path / "p.ndjson"
    f.write_text("\n".join(json.dumps(p, ensure_ascii=False) for p in pats))
    store = node.store
    persons_at_build: list[int] = []
    ensure = store.ensure_indexes

    def counting(*a: Any, **k: Any) -> int:
        with store.engine.connect() as conn:
            persons_at_build.append(conn.execute(sa.select(sa.func.count()).select_from(S.resources).where(
                S.resources.c.type == "Person")).scalar_one())
        return ensure(*a, **k)

    monkeypatch.setattr(store, "ensure_indexes", counting)
    Importer(store, parallel=False).import_all([f], defer_indexes=True)
    assert persons_at_build == [2]
    person = person_of(api, "a")
    assert person["id"] == person_of(api, "b")["id"] != person_of(api, "c")["id"]
    found = api.get("/fhir/Person?link=Patient/c").json()
    assert [e["resource"]["id"] for e in found.get("entry", [])] == [person_of(api, "c")["id"]]
