"""The official R4 examples through the store, on SQLite and PostgreSQL.

``hl7.fhir.r4.examples@4.0.1`` (fetched once from the npm registry and cached) holds
every example of the specification.  Each one either is stored and reads back
identically (apart from ``meta.versionId``/``lastUpdated``), or is rejected for the
reason listed in ``expected_rejections.py``.  Then one generic, data-driven check:
every stored example is found by every search parameter whose expression yields a
value in it (the probe values come from the indexer's own view of the resource,
and each is run as a real search through the parser and the SQL compiler).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from phip.fhir import definitions as defs
from phip.fhir.errors import FhirError
from phip.fhir.package import package_dir
from phip.fhir.search.extract import probe_values
from phip.store.repository import Settings, Store
from tests.conftest import PG_ADMIN, _pg_available
from tests.fhir.expected_rejections import EXPECTED_REJECTIONS


def _examples() -> list[Path]:
    try:
        folder = package_dir()
    except RuntimeError as e:  # pragma: no cover - depends on the machine
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(str(e))
    out = []
    for p in sorted(folder.glob("*.json")):
        doc = orjson.loads(p.read_bytes())
        if isinstance(doc, dict) and doc.get("resourceType") in defs.resource_types():
            out.append(p)
    return out


def _strip_meta(doc: dict[str, Any]) -> dict[str, Any]:
    out = dict(doc)
    meta = {k: v for k, v in (out.pop("meta", None) or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        out["meta"] = meta
    return out


CONFORMANCE = {"StructureDefinition", "SearchParameter", "CodeSystem", "ValueSet", "ConceptMap",
               "CompartmentDefinition", "OperationDefinition", "CapabilityStatement", "ImplementationGuide"}


class Loaded:
    def __init__(self, store: Store, stored: dict[str, dict[str, Any]], rejected: dict[str, FhirError]) -> None:
        self.store = store
        self.stored = stored  # file name -> original resource
        self.rejected = rejected


@pytest.fixture(
    scope="module",
    # each backend's tests stay on one xdist worker (./dev test uses --dist loadgroup): the load is built once
    params=[pytest.param("sqlite", marks=pytest.mark.xdist_group("examples-sqlite")),
            pytest.param("postgresql", marks=pytest.mark.xdist_group("examples-postgresql"))],
)
def loaded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    files = _examples()
    dropdb: str | None = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('examples')}/ex.db"
    else:
        err = _pg_available()
        if err is not None:
            if os.environ.get("CI") == "true":
                pytest.fail(f"PostgreSQL is required under CI=true: {err}")
            pytest.skip(err)
        dropdb = f"phip_examples_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{dropdb}"'))
        url = PG_ADMIN.rsplit("/", 1)[0] + "/" + dropdb
    store = Store(url, Settings(validate=True, reference_integrity="lenient"))
    store.migrate()
    repo = store.repository()
    stored: dict[str, dict[str, Any]] = {}
    rejected: dict[str, FhirError] = {}
    for k in range(0, len(files), 200):
        # validation errors are raised before anything is written, so one transaction per 200 is safe
        with repo.transaction():
            for p in files[k : k + 200]:
                doc = orjson.loads(p.read_bytes())
                try:
                    if isinstance(doc.get("id"), str):
                        repo.update(doc["resourceType"], doc["id"], doc)
                    else:
                        repo.create(doc["resourceType"], doc)
                    stored[p.name] = doc
                except FhirError as e:
                    rejected[p.name] = e
    yield Loaded(store, stored, rejected)
    store.dispose()
    if dropdb:
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{dropdb}" WITH (FORCE)'))
        admin.dispose()


def test_every_example_is_stored_or_rejected_as_expected(loaded: Loaded) -> None:
    assert len(loaded.stored) + len(loaded.rejected) > 5000
    unexpected = {f: e.issues[0].diagnostics for f, e in loaded.rejected.items() if f not in EXPECTED_REJECTIONS}
    assert not unexpected, f"{len(unexpected)} examples rejected unexpectedly: {list(unexpected.items())[:20]}"
    accepted_but_listed = sorted(set(EXPECTED_REJECTIONS) - set(loaded.rejected))
    assert not accepted_but_listed, f"listed as invalid but accepted: {accepted_but_listed}"
    for f, e in loaded.rejected.items():
        path = EXPECTED_REJECTIONS[f].split(":", 1)[0]
        exprs = [i.expression or "" for i in e.issues]
        assert any(path == x or path.startswith(x) or x.startswith(path) for x in exprs), (
            f"{f}: rejected for {exprs} ({e.issues[0].diagnostics}), expected {EXPECTED_REJECTIONS[f]}"
        )
        assert e.status in (400, 422)


def test_every_stored_example_reads_back_identically(loaded: Loaded) -> None:
    repo = loaded.store.repository()
    bad = []
    for name, doc in loaded.stored.items():
        got = repo.read(doc["resourceType"], doc["id"]).resource() if doc.get("id") else None
        if got is None:
            continue
        if _strip_meta(got) != _strip_meta(doc):
            bad.append(name)
    assert not bad, f"{len(bad)} examples changed on the way through the store: {bad[:20]}"


def test_every_example_is_found_by_each_of_its_search_parameters(loaded: Loaded) -> None:
    repo = loaded.store.repository()
    parser = repo.parser()
    failures: list[str] = []
    probes = 0
    for name, doc in loaded.stored.items():
        rtype, rid = doc["resourceType"], doc.get("id")
        if not rid:
            continue
        seen: set[tuple[str, str]] = set()
        params_done: set[str] = set()
        for param, value in probe_values(doc):
            # every value of clinical examples; one value per parameter of the big conformance resources
            if (param, value) in seen or (rtype in CONFORMANCE and param in params_done):
                continue
            seen.add((param, value))
            params_done.add(param)
            probes += 1
            try:
                req = parser.parse(rtype, [(param, value), ("_id", rid)])
                ids = [r.id for r in repo.search(req).rows]
            except FhirError as e:
                failures.append(f"{name}: {param}={value!r} -> {e.status} {e.issues[0].diagnostics}")
                continue
            if ids != [rid]:
                failures.append(f"{name}: {param}={value!r} did not find it")
    assert probes > 20000
    assert not failures, f"{len(failures)} of {probes} probes failed, e.g.:\n" + "\n".join(failures[:40])
