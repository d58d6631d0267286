"""Loading terminology content into a node's store.

Everything goes through the repository (validation, history, change feed, hooks), in one
transaction per load, so a failed load changes nothing.  The shipped content is recorded in
``terminology_loads`` with its version: loading it again at the same version is a no-op, and a
new version rewrites only the resources that changed (``update`` skips identical content).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from phip.fhir.datetimes import now_us
from phip.fhir.errors import FhirError
from phip.terminology import content as C
from phip.terminology.tables import loads

Json = dict[str, Any]
Progress = Callable[[int, int], None]


@dataclass(slots=True)
class LoadReport:
    name: str
    version: str
    written: int = 0
    unchanged: int = 0
    skipped: bool = False
    resources: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.skipped:
            return f"{self.name}: already loaded at version {self.version}"
        return f"{self.name} {self.version}: {self.written} written, {self.unchanged} unchanged"


def loaded_version(store: Any, name: str) -> str | None:
    with store.read_conn() as conn:
        return conn.execute(sa.select(loads.c.version).where(loads.c.name == name)).scalar()  # type: ignore[no-any-return]


def write_resources(store: Any, name: str, version: str, docs: list[Json], *, detail: str | None = None,
                    progress: Progress | None = None) -> LoadReport:
    """Create or update ``docs`` (by their ids) in one transaction and record the load."""
    report = LoadReport(name, version)
    repo = store.repository()
    with repo.transaction() as tx:
        existing = _existing(tx.conn, docs)
        for i, doc in enumerate(docs):
            rtype, rid = doc["resourceType"], doc["id"]
            if (rtype, rid) in existing:
                before = existing[(rtype, rid)]
                res = repo.update(rtype, rid, doc)
                if res.row.version == before:
                    report.unchanged += 1
                else:
                    report.written += 1
            else:  # a new resource: no read-for-update needed (one round trip fewer on PostgreSQL)
                repo.create(rtype, doc, rid=rid)
                report.written += 1
            report.resources.append(f"{doc['resourceType']}/{doc['id']}")
            if progress is not None:
                progress(i + 1, len(docs))
        _record(tx.conn, name, version, detail)
    return report


def _existing(conn: Any, docs: list[Json]) -> dict[tuple[str, str], int]:
    """(type, id) → current version of the resources among ``docs`` that exist (deleted ones included)."""
    from phip.store import schema as S

    r = S.resources
    out: dict[tuple[str, str], int] = {}
    by_type: dict[str, list[str]] = {}
    for d in docs:
        by_type.setdefault(d["resourceType"], []).append(d["id"])
    for t, ids in by_type.items():
        for i in range(0, len(ids), 500):
            q = sa.select(r.c.id, r.c.version, r.c.deleted).where(r.c.type == t, r.c.id.in_(ids[i:i + 500]))
            for rid, v, deleted in conn.execute(q):
                out[(t, rid)] = -1 if deleted else v
    return out


def _record(conn: Any, name: str, version: str, detail: str | None) -> None:
    conn.execute(sa.delete(loads).where(loads.c.name == name))
    conn.execute(sa.insert(loads).values(name=name, version=version, loaded=now_us(), detail=detail))


def _operator(docs: list[Json]) -> list[Json]:
    """Tag resources built from an operator's file as such (they rank above the shipped versions)."""
    for d in docs:
        d["meta"] = {"tag": [{"system": C.TAG_SYSTEM, "code": "loaded", "display": "loaded by the operator"}]}
    return docs


def load_shipped(store: Any, *, force: bool = False, progress: Progress | None = None) -> LoadReport:
    """Load (or upgrade) the content shipped in ``phip/terminology/data``."""
    if not force and loaded_version(store, "shipped") == C.CONTENT_VERSION:
        return LoadReport("shipped", C.CONTENT_VERSION, skipped=True)
    docs = C.shipped()
    replaced = _operator_loaded(store, docs)
    if replaced:  # what an operator loaded in place of a shipped table (drug list, division history) stays
        docs = [d for d in docs if (d["resourceType"], d["id"]) not in replaced]
    return write_resources(store, "shipped", C.CONTENT_VERSION, docs, detail=f"{len(docs)} resources",
                           progress=progress)


def _operator_loaded(store: Any, docs: list[Json]) -> set[tuple[str, str]]:
    from phip.store import schema as S

    with store.read_conn() as conn:
        existing = _existing(conn, docs)
        if not existing:
            return set()
        r = S.resources
        out: set[tuple[str, str]] = set()
        for (t, rid), v in existing.items():
            if v < 0:
                continue
            raw = conn.execute(sa.select(r.c.content).where(r.c.type == t, r.c.id == rid)).scalar()
            doc = raw if isinstance(raw, dict) else json.loads(raw)
            tags = {(g.get("system"), g.get("code")) for g in (doc.get("meta") or {}).get("tag") or []}
            if (C.TAG_SYSTEM, "loaded") in tags:
                out.add((t, rid))
        return out


def load_dir(store: Any, folder: Path, *, progress: Progress | None = None) -> LoadReport:
    """Load every FHIR resource (JSON, a resource or a Bundle) and NDJSON file in ``folder``.

    For operator-maintained content: corrected tables, regional value sets, local code systems."""
    docs: list[Json] = []
    for p in sorted(Path(folder).rglob("*")):
        if p.suffix == ".json":
            doc = json.loads(p.read_text(encoding="utf-8"))
            docs += [e["resource"] for e in doc.get("entry", [])] if doc.get("resourceType") == "Bundle" else [doc]
        elif p.suffix == ".ndjson":
            docs += [json.loads(ln) for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    for d in docs:
        if not isinstance(d, dict) or "resourceType" not in d or "id" not in d:
            raise FhirError(400, f"Every resource loaded from {folder} needs resourceType and id", msg_id="PHIP-6301")
    return write_resources(store, f"dir:{Path(folder).name}", str(date.today()), docs, progress=progress)


def _read_table(path: Path) -> list[dict[str, str]]:
    text = Path(path).read_text(encoding="utf-8-sig")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    sample = lines[0] if lines else ""
    delim = "\t" if "\t" in sample else ","
    return [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            for row in csv.DictReader(io.StringIO("\n".join(lines)), delimiter=delim)]


def _col(row: dict[str, str], *names: str) -> str:
    for n in names:
        if row.get(n):
            return row[n]
    return ""


def load_icd10(store: Any, path: Path, *, version: str, title: str | None = None,
               effective: str | None = None) -> LoadReport:
    """Load a national clinical edition of ICD-10 (疾病分类与代码国家临床版) from CSV/TSV with the
    columns ``code,name`` (also 编码/名称, 疾病编码/疾病名称) and optionally ``parent``; it becomes the
    current version of ``urn:oid:2.16.156.10011.2.3.3.11``."""
    rows = []
    for r in _read_table(path):
        code = _col(r, "code", "编码", "疾病编码", "诊断编码", "icd10", "icd")
        name = _col(r, "name", "display", "名称", "疾病名称", "诊断名称")
        if code:
            rows.append({"code": code, "name": name, "parent": _col(r, "parent", "上级编码")})
    if not rows:
        raise FhirError(400, f"{path}: no rows with a code column (code / 编码 / 疾病编码)", msg_id="PHIP-6302")
    cs = C.icd10_edition(rows, version=version, title=title or f"ICD-10 疾病分类与代码 {version}",
                         date=effective or str(date.today()))
    return write_resources(store, f"icd10:{version}", version, _operator([cs]),
                           detail=f"{len(rows)} codes from {Path(path).name}")


def load_drugs(store: Any, path: Path, *, version: str) -> LoadReport:
    """Load an essential-drug list (国家基本药物目录) from CSV/TSV: ``code,name[,atc,category,dosage_form]``
    (also 编码/药品名称/剂型/类别); it replaces the shipped partial list as ``urn:phip:cs:essential-drug``."""
    rows = []
    for r in _read_table(path):
        code = _col(r, "code", "编码", "药品编码", "序号")
        if code:
            rows.append({"code": code, "name": _col(r, "name", "药品名称", "名称", "品种"),
                         "atc": _col(r, "atc", "atc编码"), "category": _col(r, "category", "类别", "分类"),
                         "dosage_form": _col(r, "dosage_form", "剂型")})
    if not rows:
        raise FhirError(400, f"{path}: no rows with a code column (code / 编码 / 药品编码)", msg_id="PHIP-6303")
    docs = _operator(C.drugs(rows, C.drug_spec(version)))
    return write_resources(store, "essential-drugs", version, docs, detail=f"{len(rows)} drugs from {Path(path).name}")


def load_divisions(store: Any, path: Path, *, version: str) -> LoadReport:
    """Load a GB/T 2260 history (``code,name,valid_from,valid_to,successor[,successor_name]``): the retired
    codes join the code system (status retired) and the old→new ConceptMap."""
    rows = [r for r in _read_table(path) if r.get("code")]
    if not rows:
        raise FhirError(400, f"{path}: no rows with a code column", msg_id="PHIP-6304")
    spec = dict(C.division_edition(), version=version)
    shipped = [r for r in C._csv_rows(C.data_text("gbt2260-history.csv")) if r["code"] not in {x["code"] for x in rows}]
    docs = _operator(C.divisions(shipped + rows, spec))
    return write_resources(store, "gbt2260-history", version, docs, detail=f"{len(rows)} rows from {Path(path).name}")


def load_local(store: Any, path: Path, *, institution: str | None = None) -> LoadReport:
    """Register institutions' local code lists and their mappings from a CSV with the columns
    ``institution,domain,system,code,display,std_system,std_code`` (or, as in a synthetic region's
    ``truth/local_codes.csv``, ``org_id,domain,local_system,local_code,local_display,standard_system,
    standard_code``): one local CodeSystem and one ConceptMap per system."""
    by_system: dict[str, list[dict[str, str]]] = {}
    for raw in _read_table(path):
        r = {"institution": _col(raw, "institution", "org_id", "机构"), "domain": _col(raw, "domain"),
             "system": _col(raw, "system", "local_system"), "code": _col(raw, "code", "local_code"),
             "display": _col(raw, "display", "local_display"),
             "std_system": _col(raw, "std_system", "standard_system"),
             "std_code": _col(raw, "std_code", "standard_code")}
        if institution and r["institution"] != institution:
            continue
        if r["system"] and r["code"]:
            by_system.setdefault(r["system"], []).append(r)
    if not by_system:
        raise FhirError(400, f"{path}: no local codes (columns institution,domain,system,code,display,std_system,"
                             "std_code)", msg_id="PHIP-6305")
    docs: list[Json] = []
    for system, items in sorted(by_system.items()):
        docs += local_resources(system, items)
    return write_resources(store, f"local:{Path(path).name}", str(date.today()), docs,
                           detail=f"{len(by_system)} systems")


def local_resources(system: str, items: list[dict[str, str]]) -> list[Json]:
    """A local CodeSystem (tagged ``local``) and its ConceptMap to the standard systems."""
    import hashlib

    key = hashlib.sha1(system.encode()).hexdigest()[:16]
    inst = items[0].get("institution") or ""
    domain = items[0].get("domain") or ""
    seen: dict[str, dict[str, str]] = {}
    for r in items:
        seen.setdefault(r["code"], r)
    tag = {"system": C.TAG_SYSTEM, "code": "local", "display": "institution-local code system"}
    cs: Json = {
        "resourceType": "CodeSystem", "id": f"local-{key}", "meta": {"tag": [tag]}, "url": system,
        "name": f"Local_{key}", "title": f"Local codes {domain} of {inst}".strip(), "status": "active",
        "content": "complete", "caseSensitive": True, "count": len(seen),
        "concept": [{"code": c, **({"display": r["display"]} if r.get("display") else {})} for c, r in seen.items()],
    }
    groups: dict[str, list[Json]] = {}
    for c, r in seen.items():
        if r.get("std_system") and r.get("std_code"):
            groups.setdefault(r["std_system"], []).append(
                {"code": c, **({"display": r["display"]} if r.get("display") else {}),
                 "target": [{"code": r["std_code"], "equivalence": "equivalent"}]})
    cm: Json = {
        "resourceType": "ConceptMap", "id": f"local-{key}", "meta": {"tag": [tag]}, "url": f"{system}:map",
        "name": f"LocalMap_{key}", "title": f"{domain} local → standard ({inst})".strip(), "status": "active",
        "sourceUri": system,
        "group": [{"source": system, "target": tgt, "element": els} for tgt, els in sorted(groups.items())],
    }
    if not cm["group"]:
        del cm["group"]
    return [cs, cm]
