"""Encryption at rest: the database holds ciphertext for ID numbers, phones and address lines,
the API returns plaintext, exact searches still match through blind indexes, rotation re-encrypts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from phip.store import schema as S

ID_SYS = "urn:oid:2.16.840.1.113883.2.23.1.1"  # synthetic system for the resident ID card
IDNO = "51010419800102001X"
PHONE = "13800001234"
LINE = "人民南路四段12号3栋"


def _patient(**extra: Any) -> dict[str, Any]:
    p = {"resourceType": "Patient", "name": [{"family": "测", "given": ["试"]}], "gender": "female",
         "birthDate": "1980-01-02",
         "identifier": [{"system": ID_SYS, "value": IDNO,
                         "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                              "code": "NNCHN"}]}}],
         "telecom": [{"system": "phone", "value": PHONE}, {"system": "email", "value": "x@example.org"}],
         "address": [{"line": [LINE], "city": "成都市", "district": "武侯区", "postalCode": "610041"}]}
    p.update(extra)
    return p


def _index_rows(node: Any, prefix: str) -> dict[str, set[tuple[Any, ...]]]:
    """The search index rows of the resources whose ids start with ``prefix``, by the rest of the id."""
    out: dict[str, set[tuple[Any, ...]]] = {}
    with node.store.engine.connect() as conn:
        for name, t in S.INDEX_TABLES.items():
            q = sa.select(S.resources.c.id, t).join(t, t.c.rid == S.resources.c.rid).where(
                S.resources.c.id.like(prefix + "%"))
            for r in conn.execute(q):
                out.setdefault(r[0].split("-", 1)[1], set()).add((name, *tuple(r)[2:]))
    return out


def _raw(node: Any) -> str:
    """Everything the database holds about resources, as text."""
    out = []
    with node.store.engine.connect() as conn:
        for t in (S.resources, S.resource_versions):
            out += [str(r.content) for r in conn.execute(sa.select(sa.type_coerce(t.c.content, S.RawContent)
                                                                   .label("content")))]
        for t in S.INDEX_TABLES.values():
            out += [str(tuple(r)) for r in conn.execute(sa.select(t))]
        for name in ("empi_record", "empi_key"):  # the master index's own copies
            out += [str(tuple(r)) for r in conn.exec_driver_sql(f"SELECT * FROM {name}")]
    return "\n".join(out)


def _person_of(node: Any, pid: str) -> str:
    with node.store.engine.connect() as conn:
        return str(conn.exec_driver_sql(f"SELECT person_id FROM empi_record WHERE patient_id = '{pid}'").scalar_one())


def test_database_holds_ciphertext_api_returns_plaintext(api: Any, node: Any) -> None:
    assert node.store.codec is not None  # new nodes encrypt by default
    pid = api.create(_patient())["id"]
    raw = _raw(node)
    for secret in (IDNO, PHONE, LINE):
        assert secret not in raw
    assert "enc:1:" in raw
    assert "x@example.org" in raw and "成都市" in raw  # not sealed: e-mail, city
    doc = api.get(f"/fhir/Patient/{pid}", expect=200).json()  # the read fast path
    assert doc["identifier"][0]["value"] == IDNO
    assert doc["telecom"][0]["value"] == PHONE
    assert doc["address"][0]["line"] == [LINE]
    hist = api.get(f"/fhir/Patient/{pid}/_history", expect=200).json()
    assert hist["entry"][0]["resource"]["identifier"][0]["value"] == IDNO
    # an unchanged update is recognised as unchanged (compares plaintext)
    assert api.put(f"/fhir/Patient/{pid}", doc, expect=200).json()["meta"]["versionId"] == "1"
    doc["telecom"][0]["value"] = "13900005678"
    assert api.put(f"/fhir/Patient/{pid}", doc, expect=200).json()["meta"]["versionId"] == "2"
    assert "13900005678" not in _raw(node)


def test_exact_searches_match_through_blind_indexes(api: Any, node: Any) -> None:
    pid = api.create(_patient())["id"]
    other = api.create(_patient(identifier=[{"system": ID_SYS, "value": "510104199001010011"}],
                                telecom=[{"system": "phone", "value": "13700000000"}],
                                address=[{"line": ["其他路1号"], "city": "成都市"}]))["id"]
    api.create({"resourceType": "Observation", "status": "final", "code": {"text": "hr"},
                "subject": {"reference": f"Patient/{pid}"}})
    assert api.ids(f"Patient?identifier={ID_SYS}|{IDNO}") == [pid]
    assert api.ids(f"Patient?identifier={IDNO}") == [pid]
    assert api.ids(f"Patient?identifier=http://terminology.hl7.org/CodeSystem/v2-0203|NNCHN|{IDNO}"
                   .replace("?identifier=", "?identifier:of-type=")) == [pid]
    assert api.ids(f"Patient?phone={PHONE}") == [pid]
    assert api.ids(f"Patient?telecom={PHONE}") == [pid]
    assert api.ids("Patient?telecom=x@example.org") == [pid, other] or \
        sorted(api.ids("Patient?telecom=x@example.org")) == sorted([pid])
    assert api.ids(f"Patient?address={LINE}") == [pid]
    assert sorted(api.ids("Patient?address=成都")) == sorted([pid, other])  # city prefix, in clear
    assert api.ids(f"Patient?identifier={ID_SYS}|nope") == []
    assert len(api.ids(f"Observation?subject:Patient.identifier={IDNO}")) == 1  # chained
    assert api.ids(f"Patient?identifier:not={IDNO}") == [other]


def test_import_and_export_seal_and_open(node: Any, tmp_path: Path) -> None:
    from phip.bulk.export import export
    from phip.importer.loader import Importer

    src = tmp_path / "in.ndjson"
    src.write_bytes(orjson.dumps(_patient(id="imp-1")) + b"\n")
    imp = Importer(node.store)
    imp.import_file(src)
    imp.finish()
    imp.close()
    assert IDNO not in _raw(node)
    out = tmp_path / "out"
    export(node.store, out, types=["Patient"])
    assert IDNO in (out / "Patient.ndjson").read_text()
    repo = node.store.repository()
    from phip.fhir.search.query import Parser

    req = Parser().parse("Patient", [("identifier", IDNO)])
    assert [r.id for r in repo.search(req).rows] == ["imp-1"]


def test_parallel_import_blinds_in_the_worker_exactly_as_the_serial_path(node: Any, tmp_path: Path) -> None:
    """Index rows prepared by the import's worker process carry the same blind values as rows
    computed in the importing process; no sealed value reaches the database in clear."""
    from phip.importer import loader
    from phip.importer.loader import Importer

    def patients(prefix: str) -> bytes:
        return b"".join(orjson.dumps(_patient(
            id=f"{prefix}{k}", identifier=[{"system": ID_SYS, "value": f"5101041980010{k:04d}X"}],
            address=[{"line": [f"{LINE}{k}室"], "city": "成都市"}])) + b"\n" for k in range(200))

    par, ser = tmp_path / "par.ndjson", tmp_path / "ser.ndjson"
    par.write_bytes(patients("par-"))
    ser.write_bytes(patients("ser-"))
    assert par.stat().st_size >= loader.PARALLEL_MIN_BYTES  # goes through the worker
    for path, parallel in ((par, True), (ser, False)):
        imp = Importer(node.store, parallel=parallel)
        imp.import_file(path)
        if parallel:
            assert imp._worker_seals
        imp.finish()
        imp.close()
    raw = _raw(node)
    for line in raw.splitlines():
        assert LINE not in line and "5101041980010" not in line, line[:300]

    a, b = _index_rows(node, "par-"), _index_rows(node, "ser-")
    assert len(a) == 200 and a == b
    from phip.fhir.search.query import Parser

    repo = node.store.repository()
    req = Parser().parse("Patient", [("identifier", "51010419800100007X")])
    assert sorted(r.id for r in repo.search(req).rows) == ["par-7", "ser-7"]
    req = Parser().parse("Patient", [("address", f"{LINE}12室")])
    assert sorted(r.id for r in repo.search(req).rows) == ["par-12", "ser-12"]


def test_rotation_reencrypts_everything(api: Any, node: Any) -> None:
    from phip.privacy import rotate
    from phip.privacy.rotate import keys_in_use

    pids = [api.create(_patient())["id"] for _ in range(3)]
    doc = api.get(f"/fhir/Patient/{pids[0]}", expect=200).json()
    doc["gender"] = "male"
    api.put(f"/fhir/Patient/{pids[0]}", doc, expect=200)
    old = node.store.codec.current.kid
    types = sorted(node.store.codec.types)
    assert set(keys_in_use(node.store, types)) == {old}
    with node.store.engine.connect() as conn:  # any select of content comes back opened
        got = [str(r.content) for r in conn.execute(sa.select(S.resources.c.content))]
    assert any(IDNO in g for g in got) and not any("enc:1:" in g for g in got)
    from phip.privacy import keystore

    keystore.generate(node.data, "data")
    node.ext["privacy"].reload_keys()
    new = node.store.codec.current.kid
    rep = rotate.reseal(node.store, node.store.codec)
    assert rep.resealed >= 4 + 3  # 3 current rows + 4 versions (+ the EMPI's Persons)
    assert set(keys_in_use(node.store, types)) == {new} and new != old
    assert api.get(f"/fhir/Patient/{pids[1]}", expect=200).json()["identifier"][0]["value"] == IDNO
    assert sorted(api.ids(f"Patient?identifier={IDNO}")) == sorted(pids)


def test_turning_encryption_on_seals_existing_rows(api: Any, node: Any) -> None:
    from phip.privacy import attach, rotate

    codec = node.store.codec
    attach(node.store, None)  # as a node that ran without encryption
    pid = api.create(_patient())["id"]
    assert IDNO in _raw(node)
    attach(node.store, codec)
    rep = rotate.reseal(node.store, codec)
    assert rep.newly_sealed >= 2  # the current row and its version (+ the EMPI's Person)
    assert IDNO not in _raw(node)
    assert api.ids(f"Patient?identifier={IDNO}") == [pid]
    # the master index's keys were blinded with its features: a new record still finds the old one
    again = api.create(_patient(name=[{"family": "测", "given": ["试"]}]))["id"]
    assert _person_of(node, again) == _person_of(node, pid)
    assert IDNO not in _raw(node) and PHONE not in _raw(node)


def test_master_index_tables_hold_no_sealed_value_in_clear_and_still_match(api: Any, node: Any,
                                                                           tmp_path: Path) -> None:
    from phip.importer.loader import Importer

    a = api.create(_patient())["id"]
    b = api.create(_patient(name=[{"family": "测", "given": ["试"]}], gender="female"))["id"]
    assert _person_of(node, a) == _person_of(node, b)  # the same resident ID: one Person (online path)
    src = tmp_path / "in.ndjson"
    src.write_bytes(orjson.dumps(_patient(id="imp-2")) + b"\n")
    imp = Importer(node.store)
    imp.import_file(src)
    imp.finish()  # the batch phase links it
    imp.close()
    assert _person_of(node, "imp-2") == _person_of(node, a)
    raw = _raw(node)
    for secret in (IDNO, PHONE, LINE, "人民南路"):
        assert secret not in raw
    with node.store.engine.connect() as conn:
        keys = [r[0] for r in conn.exec_driver_sql("SELECT key FROM empi_key")]
        feats = [r[0] for r in conn.exec_driver_sql("SELECT features FROM empi_record")]
    assert all(f.startswith("enc:1:") for f in feats)
    assert any(k.startswith("bx") for k in keys) and any(k.startswith("ny:") for k in keys)  # names: readable
    # rebuild and the status reads still open them
    from phip.empi.batch import rebuild

    rep = rebuild(node.ext["empi"])
    assert rep.records == 3 and rep.persons == 1


def test_address_prefix_and_exact_on_sealed_lines(api: Any, node: Any) -> None:
    pid = api.create(_patient())["id"]
    assert api.ids("Patient?address=人民南路") == [pid]  # a prefix of the sealed line
    assert api.ids("Patient?address=人民南路四段12号3栋") == [pid]
    assert api.ids("Patient?address=南路") == []  # not a prefix
    assert api.ids(f"Patient?address:exact={LINE}") == [pid]
    assert api.ids("Patient?address:exact=人民南路") == []
    assert api.ids("Patient?address:contains=南路") == []  # documented: :contains cannot see sealed text


def test_cli_keys_rotate(api: Any, node: Any) -> None:
    from typer.testing import CliRunner

    from phip.cli.main import app
    from phip.privacy import keystore

    api.create(_patient())
    before = {k.kid for k in keystore.load(node.data, "data")}
    node.close()
    r = CliRunner().invoke(app, ["keys", "rotate", "--data", str(node.data), "--retire"])
    assert r.exit_code == 0, r.output
    after = {k.kid for k in keystore.load(node.data, "data")}
    assert len(after) == 1 and not after & before  # the old key retired: no row uses it
    assert IDNO not in _raw(node)


def test_blind_values_are_the_keyed_hash_whether_remembered_or_not(monkeypatch: Any) -> None:
    import hashlib
    import hmac

    from phip.privacy import codec as C
    from phip.privacy.keystore import SymKey

    key = bytes(range(32))
    c = C.Codec([SymKey("d1", bytes(32))], SymKey("b1", key))

    def expected(v: str) -> str:
        return "bx" + hmac.new(key, v.encode(), hashlib.sha256).hexdigest()[:32]

    monkeypatch.setattr(C, "BLIND_CACHE_SIZE", 3)
    values = ["p:人", "p:人民", "p:人民南", "p:人民南路", "p:人", "x:" + LINE, "p:人民"]
    for v in values + values:
        assert c.blind(v) == expected(v)
        assert C.BLIND_RE.match(c.blind(v))
    assert len(c._blinded) <= 3  # bounded
    assert all(len(v) <= C.BLIND_CACHE_CHARS for v in c._blinded)
    other = C.Codec([SymKey("d1", bytes(32))], SymKey("b2", bytes(32)))
    assert other.blind("p:人") != c.blind("p:人")  # each node's key gives its own values


def test_batches_prepared_while_the_worker_starts_match_the_serial_path(
        node: Any, tmp_path: Path, monkeypatch: Any) -> None:
    """While the import's worker process is starting, the writing process prepares the first batches
    itself (``Importer._prepare_here``): the same blind index rows and the same quality rows as the
    serial path, where this process does everything; once the worker is up, it gets the batches."""
    from concurrent.futures import Future

    from phip.importer import loader
    from phip.importer.loader import Importer

    def patients(prefix: str) -> bytes:
        return b"".join(orjson.dumps(_patient(
            id=f"{prefix}{k}", identifier=[{"system": ID_SYS, "value": f"5101041980010{k:04d}X"}],
            meta={"lastUpdated": "2026-01-02T03:04:05+08:00"},
            address=[{"line": [f"{LINE}{k}室"], "city": "成都市"}])) + b"\n" for k in range(300))

    monkeypatch.setattr(loader, "BATCH", 20)  # 15 batches a file
    here: list[int] = []
    real_here = Importer._prepare_here

    def spy(self: Importer, lines: Any) -> Any:
        here.append(len(lines))
        return real_here(self, lines)

    monkeypatch.setattr(Importer, "_prepare_here", spy)
    real_pool = Importer._pool
    starting: Future[None] = Future()  # never done: the worker of "starting" never reports itself up

    def pool(self: Importer) -> Any:
        fresh = self._executor is None
        out = real_pool(self)
        if fresh and self.label == "starting":  # type: ignore[attr-defined]
            self._started = starting
        return out

    monkeypatch.setattr(Importer, "_pool", pool)
    made = {}
    for name in ("serial", "starting", "worker"):
        path = tmp_path / f"{name}.ndjson"
        path.write_bytes(patients(f"{name}-"))
        imp = Importer(node.store, parallel=name != "serial")
        imp.label = name  # type: ignore[attr-defined]
        if name == "worker":  # up before the first batch: every batch goes to it
            imp._pool()
            assert imp._started is not None
            imp._started.result(timeout=120)
        n = len(here)
        imp.import_file(path)
        if name != "serial":
            assert imp._worker_seals  # the worker's index rows carry blind values: so must these
        imp.finish()
        imp.close()
        made[name] = len(here) - n
    assert made["serial"] == made["worker"] == 0 and made["starting"] >= 15, made  # (+ the last, empty one)

    def rows(prefix: str) -> dict[str, set[tuple[Any, ...]]]:
        out = _index_rows(node, prefix)
        with node.store.engine.connect() as conn:
            # (not f_uniqueness: the later files' patients repeat the first's, they are duplicates)
            q = sa.text("SELECT rid, institution, day, received, birth, gender, ukey, idkey, namekey, phonekey, "
                        "addrkey, f_completeness, f_conformance, f_consistency, f_timeliness "
                        "FROM quality_resource WHERE rtype = 'Patient' AND rid LIKE :p").bindparams(p=prefix + "%")
            for r in conn.execute(q):
                out.setdefault(r[0].split("-", 1)[1], set()).add(("quality", *tuple(r)[1:]))
        return out

    serial = rows("serial-")
    assert len(serial) == 300 and all(any(x[0] == "quality" for x in v) for v in serial.values())
    for name in ("starting", "worker"):
        other = rows(f"{name}-")
        assert [sorted(map(str, serial[k] ^ other[k])) for k in serial if serial[k] != other.get(k)] == []
    raw = _raw(node)
    assert LINE not in raw and "5101041980010" not in raw
