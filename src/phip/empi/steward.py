"""Data-steward actions: review decisions, manual link/unlink, ``Patient/$merge`` and unmerge.

Every decision is stored in ``empi_decision`` (who, when, why) and obeyed by real-time matching and
by ``phip empi rebuild``.  Merge follows the FHIR R5 patient-merge semantics: the source Patient is
marked ``active = false`` with ``link`` ``replaced-by`` the target, the target gets ``replaces``,
and every resource referencing the source is re-pointed to the target; what was moved is kept in
``empi_merge`` so ``$unmerge`` can put it back.
"""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import Connection

from phip.core.ids import uuid7
from phip.empi import tables as T
from phip.empi.engine import ASSURANCE, Empi
from phip.fhir.datetimes import now_us
from phip.fhir.errors import FhirError, bad_request, not_found
from phip.store import schema as S


def _record(conn: Connection, pid: str) -> Any:
    row = conn.execute(sa.select(T.record).where(T.record.c.patient_id == pid)).first()
    if row is None:
        raise not_found(f"Patient/{pid} is not in the master patient index")
    return row


def decide(conn: Connection, pid: str, other: str, decision: str, who: str, why: str | None) -> None:
    if decision not in ("same", "different"):
        raise bad_request("decision must be 'same' or 'different'")
    if pid == other:
        raise bad_request("a record cannot be compared with itself")
    conn.execute(T.decision.insert().values(patient_id=pid, other_id=other, decision=decision, decided_by=who,
                                            decided_at=now_us(), reason=why))


def link_records(empi: Empi, conn: Connection, pid: str, other: str, who: str, why: str | None,
                 kind: str = "manual") -> str:
    """Put ``pid`` in the Person of ``other`` (a person's decision: assurance level4)."""
    src, dst = _record(conn, pid), _record(conn, other)
    decide(conn, pid, other, "same", who, why)
    R = T.record
    conn.execute(R.update().where(R.c.patient_id == pid).values(
        person_id=dst.person_id, link_kind=kind, assurance=ASSURANCE[kind], updated=now_us()))
    conn.execute(R.update().where(R.c.patient_id == other, R.c.link_kind.notin_(("manual", "merged")))
                 .values(link_kind="manual", assurance="level4"))
    _close_reviews(conn, pid, other, "linked", who, why)
    empi.refresh_person(conn, dst.person_id)
    if src.person_id != dst.person_id:
        empi.refresh_person(conn, src.person_id)
    return str(dst.person_id)


def unlink_record(empi: Empi, conn: Connection, pid: str, who: str, why: str | None) -> str:
    """Take ``pid`` out of its Person into a new one; it is 'different' from every former co-member."""
    rec = _record(conn, pid)
    R = T.record
    others = [r[0] for r in conn.execute(sa.select(R.c.patient_id).where(
        R.c.person_id == rec.person_id, R.c.patient_id != pid))]
    if not others:
        raise FhirError(409, f"Patient/{pid} is the only record of its Person; nothing to unlink from",
                        code="conflict", msg_id="PHIP-4010")
    for o in others:
        decide(conn, pid, o, "different", who, why)
    new_person = uuid7()
    conn.execute(R.update().where(R.c.patient_id == pid).values(
        person_id=new_person, link_kind="manual", assurance="level4", updated=now_us()))
    empi.refresh_person(conn, new_person)
    empi.refresh_person(conn, rec.person_id)
    return new_person


def _close_reviews(conn: Connection, a: str, b: str, status: str, who: str, why: str | None) -> None:
    V = T.review
    conn.execute(V.update().where(
        sa.or_(sa.and_(V.c.patient_id == a, V.c.candidate_id == b),
              sa.and_(V.c.patient_id == b, V.c.candidate_id == a)),
        V.c.status == "open").values(status=status, decided_by=who, decided_at=now_us(), reason=why))


def decide_review(empi: Empi, conn: Connection, review_id: int, decision: str, who: str,
                  why: str | None) -> dict[str, Any]:
    """``link`` (same person) or ``reject`` (different people) an open review item."""
    V = T.review
    item = conn.execute(sa.select(V).where(V.c.id == review_id)).first()
    if item is None:
        raise not_found(f"review item {review_id} does not exist")
    if item.status != "open":
        raise FhirError(409, f"review item {review_id} is already {item.status}", code="conflict",
                        msg_id="PHIP-4011")
    if decision == "link":
        person = link_records(empi, conn, item.patient_id, item.candidate_id, who, why)
        return {"id": review_id, "status": "linked", "person": person}
    if decision == "reject":
        decide(conn, item.patient_id, item.candidate_id, "different", who, why)
        _close_reviews(conn, item.patient_id, item.candidate_id, "rejected", who, why)
        return {"id": review_id, "status": "rejected"}
    raise bad_request("decision must be 'link' or 'reject'", expression="decision")


def review_items(conn: Connection, status: str = "open", limit: int = 50, after: int = 0) -> list[dict[str, Any]]:
    V = T.review
    q = sa.select(V).where(V.c.id > after).order_by(V.c.id).limit(limit)
    if status != "all":
        q = q.where(V.c.status == status)
    out = []
    for r in conn.execute(q):
        d = orjson.loads(r.detail)
        out.append({"id": r.id, "patient": f"Patient/{r.patient_id}", "candidate": f"Patient/{r.candidate_id}",
                    "candidatePerson": f"Person/{d.get('person')}", "score": round(r.score, 3),
                    "probability": d.get("probability"), "fields": d.get("fields"), "veto": d.get("veto"),
                    "status": r.status, "decidedBy": r.decided_by, "reason": r.reason})
    return out


# -- merge ----------------------------------------------------------------------------------------
def _repoint(value: Any, old: str, new: str) -> tuple[Any, int]:
    n = 0
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "reference" and v == old:
                out[k] = new
                n += 1
            else:
                out[k], m = _repoint(v, old, new)
                n += m
        return out, n
    if isinstance(value, list):
        items = []
        for v in value:
            x, m = _repoint(v, old, new)
            items.append(x)
            n += m
        return items, n
    return value, 0


def referrers(conn: Connection, pid: str) -> list[tuple[str, str]]:
    """(type, id) of current resources referencing ``Patient/pid`` (from the reference index)."""
    x, r = S.idx_ref, S.resources
    q = (sa.select(r.c.type, r.c.id).select_from(x.join(r, r.c.rid == x.c.rid))
         .where(x.c.target_type == "Patient", x.c.target_id == pid, r.c.deleted == sa.false()).distinct())
    return [(t, i) for t, i in conn.execute(q) if not (t == "Patient" and i == pid) and t != "Person"]


def merge(empi: Empi, repo: Any, conn: Connection, source: str, target: str, who: str,
          preview: bool = False) -> dict[str, Any]:
    if source == target:
        raise bad_request("source and target Patient must differ", expression="source-patient")
    src = repo.read("Patient", source).resource()
    tgt = repo.read("Patient", target).resource()
    if src.get("active") is False and any(
            (lk.get("other") or {}).get("reference") == f"Patient/{target}" for lk in src.get("link") or []):
        raise FhirError(409, f"Patient/{source} is already merged into Patient/{target}", code="conflict",
                        msg_id="PHIP-4012")
    refs = referrers(conn, source)
    if preview:
        return {"source": source, "target": target, "moved": [f"{t}/{i}" for t, i in refs], "preview": True}
    moved: list[list[Any]] = []
    old, new = f"Patient/{source}", f"Patient/{target}"
    for t, i in refs:
        row = repo.read(t, i)
        doc, n = _repoint(row.resource(), old, new)
        if n:
            doc.pop("meta", None)
            repo.update(t, i, doc)
            moved.append([t, i, row.version])
    before = {"active": src.get("active"), "link": src.get("link")}
    src_doc = {k: v for k, v in src.items() if k != "meta"}
    src_doc["active"] = False
    src_doc["link"] = [lk for lk in src.get("link") or [] if (lk.get("other") or {}).get("reference") != new]
    src_doc["link"].append({"other": {"reference": new}, "type": "replaced-by"})
    tgt_doc = {k: v for k, v in tgt.items() if k != "meta"}
    tgt_links = [lk for lk in tgt.get("link") or [] if (lk.get("other") or {}).get("reference") != old]
    tgt_doc["link"] = [*tgt_links, {"other": {"reference": old}, "type": "replaces"}]
    # the index first: the source record then keeps its place when its update re-links it
    link_records(empi, conn, source, target, who, f"Patient/$merge into Patient/{target}", kind="merged")
    repo.update("Patient", source, src_doc)
    repo.update("Patient", target, tgt_doc)
    mid = conn.execute(T.merge.insert().values(
        source_id=source, target_id=target, detail=orjson.dumps({"moved": moved, "source_before": before}).decode(),
        merged_by=who, merged_at=now_us()).returning(T.merge.c.id)).scalar_one()
    return {"source": source, "target": target, "moved": [f"{t}/{i}" for t, i, _v in moved], "merge": mid}


def unmerge(empi: Empi, repo: Any, conn: Connection, source: str, who: str, why: str | None) -> dict[str, Any]:
    """Undo the latest merge of ``source``: references moved back, source active again, a 'different'
    decision recorded and the source re-matched on its own."""
    M = T.merge
    m = conn.execute(sa.select(M).where(M.c.source_id == source, M.c.undone_at.is_(None))
                     .order_by(M.c.id.desc())).first()
    if m is None:
        raise not_found(f"Patient/{source} has no merge to undo")
    detail = orjson.loads(m.detail)
    old, new = f"Patient/{m.target_id}", f"Patient/{source}"
    back = []
    for t, i, _v in detail["moved"]:
        try:
            row = repo.read(t, i)
        except FhirError:
            continue
        doc, n = _repoint(row.resource(), old, new)
        if n:
            doc.pop("meta", None)
            repo.update(t, i, doc)
            back.append(f"{t}/{i}")
    src = {k: v for k, v in repo.read("Patient", source).resource().items() if k != "meta"}
    before = detail.get("source_before") or {}
    if before.get("active") is None:
        src.pop("active", None)
    else:
        src["active"] = before["active"]
    if before.get("link"):
        src["link"] = before["link"]
    else:
        src.pop("link", None)
    tgt = {k: v for k, v in repo.read("Patient", m.target_id).resource().items() if k != "meta"}
    links = [lk for lk in tgt.get("link") or [] if (lk.get("other") or {}).get("reference") != new]
    if links:
        tgt["link"] = links
    else:
        tgt.pop("link", None)
    R = T.record
    decide(conn, source, m.target_id, "different", who, why or "Patient/$unmerge")
    conn.execute(R.update().where(R.c.patient_id == source).values(link_kind="auto"))
    conn.execute(M.update().where(M.c.id == m.id).values(undone_at=now_us()))
    repo.update("Patient", m.target_id, tgt)
    repo.update("Patient", source, src)  # re-matched by the hook, obeying the new decision
    person = conn.execute(sa.select(R.c.person_id).where(R.c.patient_id == source)).scalar_one()
    return {"source": source, "target": m.target_id, "restored": back, "person": person}
