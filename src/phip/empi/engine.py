"""The matcher: candidates by blocking keys, Fellegi–Sunter scores, one master Person per Patient.

:class:`Empi` is the service in ``node.ext["empi"]``.  Its AFTER_WRITE hook links each Patient
written by REST, transactions or the repository — inside the write's own transaction — so
``GET /fhir/Person?link=Patient/{id}`` finds the Person as soon as the write returns.  The work per
write is a handful of indexed lookups (decisions, blocking keys, candidate records, the records of
the candidate Persons) plus the Person write; rules and weights are compiled once.

Assurance of ``Person.link`` (FHIR IdentityAssuranceLevel):

- ``level4``: deterministic (equal valid resident ID numbers, compatible birth date and sex) or a
  person's decision (review queue, link, merge);
- ``level3``: probabilistic auto-link (match weight ≥ ``auto_link``);
- ``level2``: the only record of a new Person, nothing similar known;
- ``level1``: the record of a new Person with open potential matches (in the review queue).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import Connection

from phip.core.hooks import WriteEvent
from phip.core.ids import uuid7
from phip.empi import newborn
from phip.empi import tables as T
from phip.empi.newborn import via_mother
from phip.empi.normalize import ID_TYPE_SYSTEM, ID_TYPES, RESIDENT_ID_SYSTEM, Features, check_resident_id, features
from phip.empi.rules import Rules, Score, blocking_keys, probe_keys
from phip.empi.sealed import open_features, seal_features, stored_keys
from phip.fhir.datetimes import now_us
from phip.fhir.errors import Issue

ASSURANCE = {"deterministic": "level4", "manual": "level4", "merged": "level4", "auto": "level3",
             "new": "level2", "review": "level1"}


@dataclass(slots=True)
class Candidate:
    patient_id: str
    person_id: str
    features: Features


@dataclass(slots=True)
class PersonMatch:
    person_id: str
    best: Score
    best_patient: str
    decision: str  # link | review | new
    scores: dict[str, Score] = field(default_factory=dict)  # patient id → score


@dataclass(slots=True)
class LinkResult:
    person_id: str
    kind: str
    score: float | None
    reviews: list[PersonMatch]


@dataclass(slots=True)
class _Newborn:
    """Placeholders seen with their mothers' contact data, for one match (see :mod:`phip.empi.newborn`)."""

    views: dict[str, Features] = field(default_factory=dict)  # placeholder patient id → mother-view
    placeholder: str | None = None  # set when the record being matched is itself the placeholder
    twins: bool = False  # ... and another placeholder could be its twin
    person: dict[str, str] = field(default_factory=dict)  # candidate placeholder → its Person
    twin_of: set[str] = field(default_factory=set)  # candidate placeholders that could be twins

    def score(self, rules: Rules, f: Features, c: Features) -> Score | None:
        if self.placeholder is not None:
            own = self.views[self.placeholder]
            return newborn.score(rules, own, c) if newborn.could_be_child(own, c) else None
        view = self.views.get(c.pid)
        return newborn.score(rules, view, f) if view is not None and newborn.could_be_child(view, f) else None

    def ambiguous(self, rules: Rules, person_id: str, cands: list[Candidate]) -> bool:
        """More than one Person could be the newborn, or the placeholder could be a twin."""
        if self.placeholder is not None:
            view = self.views[self.placeholder]
            persons = {c.person_id for c in cands if newborn.could_be_child(view, c.features)
                       and rules.decision(newborn.score(rules, view, c.features)) == "link"}
            return self.twins or len(persons) > 1
        for ph, view in self.views.items():
            if self.person.get(ph) != person_id:
                continue
            if ph in self.twin_of:
                return True
            # another Person among the candidates (the child's twin) that the placeholder fits as well
            if any(c.person_id != person_id and newborn.could_be_child(view, c.features)
                   and rules.decision(newborn.score(rules, view, c.features)) == "link" for c in cands):
                return True
        return False


def _dumps(v: Any) -> str:
    return orjson.dumps(v).decode()


def _sql(conn: Connection, sql: str, params: tuple[Any, ...] | list[tuple[Any, ...]] = ()) -> Any:
    """Run driver SQL written with ``?`` marks (the hot path skips SQLAlchemy's expression building)."""
    if conn.dialect.paramstyle != "qmark":
        sql = sql.replace("?", "%s")
    return conn.exec_driver_sql(sql, params)  # type: ignore[arg-type]


def _marks(n: int) -> str:
    return ", ".join("?" * n)


#: the master index's PREPARE_WRITE name
PREPARED = "empi"


class Empi:
    """The master patient index of one store."""

    def __init__(self, store: Any, rules: Rules) -> None:
        self.store = store
        self.rules = rules

    @staticmethod
    def same_person_join(patient_id: str, alias: str = "sp") -> tuple[str, str]:
        """For other capabilities' SQL: a JOIN clause from a Patient id column to the ids of the other
        Patients of the same master Person (auto, deterministic or manual links only: two records
        share a Person only so), and the column holding those ids."""
        return (f"JOIN empi_record {alias}a ON {alias}a.patient_id = {patient_id} "
                f"JOIN empi_record {alias}b ON {alias}b.person_id = {alias}a.person_id "
                f"AND {alias}b.patient_id <> {alias}a.patient_id", f"{alias}b.patient_id")

    # -- hooks --------------------------------------------------------------------------------------
    def before_write(self, _tx: Any, rtype: str, resource: dict[str, Any], _method: str) -> list[Issue]:
        """Normalise the resident ID number in place; an invalid one is a warning, never a rejection."""
        if rtype != "Patient" or not isinstance(resource, dict):
            return []
        issues: list[Issue] = []
        birth = resource.get("birthDate") if isinstance(resource.get("birthDate"), str) else None
        for i, ident in enumerate(resource.get("identifier") or []):
            if not isinstance(ident, dict) or ident.get("system") != RESIDENT_ID_SYSTEM:
                continue
            raw = ident.get("value")
            if not isinstance(raw, str):
                continue
            chk = check_resident_id(raw, birth, resource.get("gender"))
            where = f"Patient.identifier[{i}].value"
            if chk.number != raw and chk.number:
                ident["value"] = chk.number
            if not chk.valid:
                issues.append(Issue(
                    "warning", "invalid",
                    f"Resident ID number {raw!r} is not a valid GB 11643 number ({', '.join(chk.errors)}); the "
                    "record is stored but the number is not used as a matching key", where, "PHIP-4001"))
            elif chk.warnings:
                issues.append(Issue(
                    "warning", "code-invalid",
                    f"Resident ID number {chk.number}: area code {chk.number[:6]} is not in the current "
                    "GB/T 2260 edition (historical codes are accepted)", where, "PHIP-4002"))
            if chk.valid and not chk.own:
                issues.append(Issue(
                    "information", "informational",
                    f"Resident ID number {chk.number} does not agree with this record's birth date or sex "
                    "(e.g. a newborn registered under the mother's number); it is not used as this "
                    "person's key", where, "PHIP-4003"))
        return issues

    def after_write(self, tx: Any, ev: WriteEvent) -> None:
        if ev.resource_type != "Patient":
            return
        if ev.resource is None:
            self.unindex(tx.conn, ev.id)
        else:
            pre = ev.prepared.get(PREPARED) if ev.prepared else None
            self.link(tx.conn, ev.resource, pre)

    def prepare_write(self, rtype: str, rid: str, resource: dict[str, Any]) -> Features | None:
        """PREPARE_WRITE (before the write lock): a Patient's features, but for ``updated`` (the
        stored version's ``meta.lastUpdated``, set by :meth:`link`)."""
        return features(resource) if rtype == "Patient" else None

    # -- candidates and scores ---------------------------------------------------------------------
    def candidates(self, conn: Connection, f: Features, exclude: str | None = None) -> list[Candidate]:
        """Records sharing a blocking key with ``f`` (index lookups on ``empi_key``)."""
        keys = stored_keys(self.store.codec, probe_keys(f, self.rules.blocking, self.rules.id_restricts_blocking))
        if not keys:
            return []
        # one indexed range per key, each capped at max_block (an over-full block cannot crowd out the rest)
        n = int(self.rules.max_block)
        one = f"SELECT patient_id FROM (SELECT patient_id FROM empi_key WHERE key = ? LIMIT {n}) AS k"
        sql = " UNION ".join(one.replace("AS k", f"AS k{i}") for i in range(len(keys)))
        ids = list(dict.fromkeys(r[0] for r in _sql(conn, sql, tuple(keys)) if r[0] != exclude))
        return self.records(conn, ids)

    def records(self, conn: Connection, ids: list[str]) -> list[Candidate]:
        out: list[Candidate] = []
        for k in range(0, len(ids), 500):
            chunk = tuple(ids[k:k + 500])
            rows = _sql(conn, "SELECT patient_id, person_id, features FROM empi_record WHERE patient_id IN "
                        f"({_marks(len(chunk))})", chunk)
            out.extend(Candidate(p, pe, open_features(self.store.codec, p, fj)) for p, pe, fj in rows)
        return out

    def person_records(self, conn: Connection, person_ids: list[str]) -> list[Candidate]:
        if not person_ids:
            return []
        rows = _sql(conn, "SELECT patient_id, person_id, features FROM empi_record WHERE person_id IN "
                    f"({_marks(len(person_ids))})", tuple(person_ids))
        return [Candidate(p, pe, open_features(self.store.codec, p, fj)) for p, pe, fj in rows]

    def decisions(self, conn: Connection, pid: str) -> dict[str, str]:
        """Manual decisions about ``pid``: other patient id → ``same`` | ``different`` (latest wins)."""
        out: dict[str, str] = {}
        for a, b, d in _sql(conn, "SELECT patient_id, other_id, decision FROM empi_decision "
                            "WHERE patient_id = ? OR other_id = ? ORDER BY id", (pid, pid)):
            out[b if a == pid else a] = d
        return out

    def match(self, conn: Connection, f: Features, exclude: str | None = None,
              decisions: dict[str, str] | None = None) -> list[PersonMatch]:
        """Candidate Persons for ``f``, best first, each with its decision."""
        cands = self.candidates(conn, f, exclude)
        if not cands:
            return []
        decisions = decisions or {}
        nb = self._newborn(conn, f, cands)
        by_person: dict[str, PersonMatch] = {}
        for c in cands:
            s = self.rules.score(f, c.features)
            if nb.views:
                s2 = nb.score(self.rules, f, c.features)
                if s2 is not None and s2.weight > s.weight:
                    s = s2
            pm = by_person.get(c.person_id)
            if pm is None:
                by_person[c.person_id] = pm = PersonMatch(c.person_id, s, c.patient_id, "new")
            pm.scores[c.patient_id] = s
            if s.weight > pm.best.weight or (s.deterministic and not pm.best.deterministic):
                pm.best, pm.best_patient = s, c.patient_id
        contenders = [pm for pm in by_person.values() if self.rules.decision(pm.best) != "new"
                      or any(decisions.get(p) == "same" for p in pm.scores)]
        # a Person is judged on all its records: one with a conflicting ID vetoes the auto-link
        fetched = {c.patient_id for c in cands}
        for c in self.person_records(conn, [pm.person_id for pm in contenders]):
            if c.patient_id not in fetched and c.patient_id != exclude:
                s = self.rules.score(f, c.features)
                pm = by_person[c.person_id]
                pm.scores[c.patient_id] = s
                if s.weight > pm.best.weight or (s.deterministic and not pm.best.deterministic):
                    pm.best, pm.best_patient = s, c.patient_id
        for pm in by_person.values():
            veto = next((s.veto for s in pm.scores.values() if s.veto and "ID" in s.veto), None)
            dec = self.rules.decision(pm.best)
            if veto and dec == "link" and not pm.best.deterministic:
                pm.best.veto = veto
                dec = "review"
            if dec == "link" and via_mother(pm.best) and (
                    nb.ambiguous(self.rules, pm.person_id, cands) or any(x.veto for x in pm.scores.values())):
                dec = "review"  # a newborn link is never made when it could be the wrong twin
            if any(decisions.get(p) == "different" for p in pm.scores):
                dec = "new"
            if any(decisions.get(p) == "same" for p in pm.scores):
                dec = "link"
            pm.decision = dec
        order = {"link": 0, "review": 1, "new": 2}
        return sorted(by_person.values(), key=lambda m: (order[m.decision], -m.best.weight))

    def _newborn(self, conn: Connection, f: Features, cands: list[Candidate]) -> _Newborn:
        """The mother-views of the placeholders in play: ``f`` itself, or those among the candidates
        that could be ``f`` as a newborn (their mothers' records are fetched by her number)."""
        nb = _Newborn()
        feats = [c.features for c in cands]
        if newborn.is_placeholder(f):
            view = newborn.mother_view(f, feats)
            if view is not None:
                nb.views[f.pid] = view
                nb.twins = newborn.twin_placeholders(f, feats)
                nb.placeholder = f.pid
            return nb
        if f.placeholder or not f.name or not f.birth or not f.sex:
            return nb
        ps = [c for c in cands if newborn.is_placeholder(c.features) and c.features.birth == f.birth
              and c.features.sex == f.sex and c.features.rid != f.trusted_id]
        if not ps:
            return nb
        keys = {newborn.mother_key(c.features) or "" for c in ps}
        stored = stored_keys(self.store.codec, sorted(keys))
        ids = [r[0] for r in _sql(conn, f"SELECT patient_id FROM empi_key WHERE key IN ({_marks(len(stored))}) "
                                  f"LIMIT {int(self.rules.max_block) * len(stored)}", tuple(stored))]
        block = [c.features for c in self.records(conn, list(dict.fromkeys(ids)))]
        for c in ps:
            view = newborn.mother_view(c.features, block)
            if view is not None:
                nb.views[c.patient_id] = view
                nb.person[c.patient_id] = c.person_id
                if newborn.twin_placeholders(c.features, block):
                    nb.twin_of.add(c.patient_id)
        return nb

    # -- linking -----------------------------------------------------------------------------------
    def link(self, conn: Connection, patient: dict[str, Any], prepared: Features | None = None) -> LinkResult:
        """Link one stored Patient to its Person (creating or updating Persons as needed); ``prepared``:
        :meth:`prepare_write`'s features of this Patient."""
        if prepared is not None:
            f = dataclasses.replace(prepared, updated=(patient.get("meta") or {}).get("lastUpdated"))
        else:
            f = features(patient)
        pid = f.pid
        cur = _sql(conn, "SELECT person_id, link_kind FROM empi_record WHERE patient_id = ?", (pid,)).first()
        if cur is not None and cur.link_kind in ("manual", "merged"):
            self._save_record(conn, f, cur.person_id, cur.link_kind, None)
            self.refresh_person(conn, cur.person_id)
            return LinkResult(cur.person_id, cur.link_kind, None, [])
        decisions = self.decisions(conn, pid)
        matches = self.match(conn, f, exclude=pid, decisions=decisions)
        best = matches[0] if matches and matches[0].decision == "link" else None
        reviews = [m for m in matches if m.decision == "review" or (m.decision == "link" and m is not best)]
        old_person = cur.person_id if cur is not None else None
        if best is not None:
            person_id = best.person_id
            kind = "deterministic" if best.best.deterministic else "auto"
            if any(decisions.get(p) == "same" for p in best.scores):
                kind = "manual"
        else:
            kind = "review" if reviews else "new"
            person_id = old_person or ""
            if old_person is not None and _sql(
                    conn, "SELECT 1 FROM empi_record WHERE person_id = ? AND patient_id <> ? LIMIT 1",
                    (old_person, pid)).first() is not None:
                person_id = ""  # its old Person is someone else's now: start a new one
            if not person_id:
                person_id = uuid7()
        score = best.best.weight if best is not None else (reviews[0].best.weight if reviews else None)
        self._save_record(conn, f, person_id, kind, score)
        self._queue_reviews(conn, pid, reviews)
        self.refresh_person(conn, person_id)
        if old_person and old_person != person_id:
            self.refresh_person(conn, old_person)
        return LinkResult(person_id, kind, score, reviews)

    def _save_record(self, conn: Connection, f: Features, person_id: str, kind: str, score: float | None) -> None:
        pid = f.pid
        _sql(conn, "DELETE FROM empi_record WHERE patient_id = ?", (pid,))
        _sql(conn, "INSERT INTO empi_record (patient_id, person_id, features, assurance, link_kind, score, updated) "
             "VALUES (?, ?, ?, ?, ?, ?, ?)",
             (pid, person_id, seal_features(self.store.codec, f), ASSURANCE[kind], kind, score, now_us()))
        _sql(conn, "DELETE FROM empi_key WHERE patient_id = ?", (pid,))
        keys = stored_keys(self.store.codec, blocking_keys(f, self.rules.blocking))
        if keys:
            _sql(conn, "INSERT INTO empi_key (key, patient_id) VALUES (?, ?)", [(k, pid) for k in keys])

    def _queue_reviews(self, conn: Connection, pid: str, reviews: list[PersonMatch]) -> None:
        V = T.review
        _sql(conn, "UPDATE empi_review SET status = 'obsolete' WHERE patient_id = ? AND status = 'open'", (pid,))
        now = now_us()
        for m in reviews[:5]:
            conn.execute(V.insert().values(
                patient_id=pid, candidate_id=m.best_patient, score=m.best.weight,
                detail=_dumps({"person": m.person_id, **m.best.as_json()}), status="open", created=now))

    def unindex(self, conn: Connection, pid: str) -> None:
        """A deleted Patient leaves the index and its Person (a Person left empty is deleted)."""
        R, K, V = T.record, T.key, T.review
        cur = conn.execute(sa.select(R.c.person_id).where(R.c.patient_id == pid)).first()
        conn.execute(K.delete().where(K.c.patient_id == pid))
        conn.execute(R.delete().where(R.c.patient_id == pid))
        conn.execute(V.update().where(sa.or_(V.c.patient_id == pid, V.c.candidate_id == pid),
                                      V.c.status == "open").values(status="obsolete"))
        if cur is not None:
            self.refresh_person(conn, cur.person_id)

    # -- the golden record -------------------------------------------------------------------------
    def refresh_person(self, conn: Connection, person_id: str) -> None:
        """Rewrite the Person from its linked records (deleted when none is left)."""
        rows = _sql(conn, "SELECT patient_id, features, assurance FROM empi_record WHERE person_id = ?",
                    (person_id,)).all()
        repo = self.store.repository()
        exists = _sql(conn, "SELECT deleted FROM resources WHERE type = 'Person' AND id = ?", (person_id,)).first()
        if not rows:
            if exists is not None and not exists[0]:
                repo.delete("Person", person_id)
            return
        recs = [(open_features(self.store.codec, p, fj), a) for p, fj, a in rows]
        doc = golden_person(person_id, recs)
        if exists is None:
            repo.create("Person", doc, rid=person_id)
        else:
            repo.update("Person", person_id, doc)


def _most_common(values: list[tuple[Any, str]]) -> Any:
    """The most frequent value; ties go to the most recently updated record."""
    if len(values) == 1:
        return values[0][0] or None
    vals = [(v, u) for v, u in values if v]
    if not vals:
        return None
    counts = Counter(v for v, _ in vals)
    latest: dict[Any, str] = {}
    for v, u in vals:
        latest[v] = max(latest.get(v, ""), u)
    return max(counts, key=lambda v: (counts[v], latest[v]))


def golden_person(person_id: str, recs: list[tuple[Features, str]]) -> dict[str, Any]:
    """The golden record (survivorship rules, documented in docs/empi.md):

    - resident ID: the trusted number held by most records (ties: most recently updated);
    - name, birth date, sex: most frequent among the records carrying that ID (all records when
      none does; placeholder newborn names only when nothing else exists), ties to the latest;
    - phone and address: from the most recently updated record that has them;
    - other documents: all of them, de-duplicated; active unless every record is inactive.
    """
    fs = [f for f, _ in recs]
    upd = [f.updated or "" for f in fs]
    rid = _most_common([(f.trusted_id, u) for f, u in zip(fs, upd, strict=True)])
    core = [f for f in fs if rid and f.trusted_id == rid] or fs
    named = [f for f in core if f.name] or [f for f in fs if f.name] or [f for f in fs if f.name_text]
    name_key = _most_common([(f.name or f.name_text, f.updated or "") for f in named])
    nf = next((f for f in sorted(named, key=lambda x: x.updated or "", reverse=True)
               if (f.name or f.name_text) == name_key), None)
    doc: dict[str, Any] = {"resourceType": "Person", "id": person_id}
    idents: list[dict[str, Any]] = []
    if rid:
        idents.append({"use": "official", "type": {"coding": [{"system": ID_TYPE_SYSTEM, "code": "01",
                                                               "display": ID_TYPES["01"]}]},
                       "system": RESIDENT_ID_SYSTEM, "value": rid})
    seen: set[tuple[str, str]] = set()
    for f in fs:
        for s, v in f.docs:
            if (s, v) not in seen:
                seen.add((s, v))
                idents.append({"system": s, "value": v} if not s.startswith("cv02.01.101:")
                              else {"type": {"coding": [{"system": ID_TYPE_SYSTEM, "code": s.split(":")[1]}]},
                                    "value": v})
    if idents:
        doc["identifier"] = idents
    if nf is not None and nf.name_text:
        hn: dict[str, Any] = {"use": "temp" if nf.placeholder else "official", "text": nf.name_text}
        if nf.family and not nf.placeholder:
            hn["family"] = nf.family
        if nf.given and not nf.placeholder:
            hn["given"] = [nf.given]
        doc["name"] = [hn]
    by_latest = sorted(fs, key=lambda x: x.updated or "", reverse=True)
    phone = next((f.phone_raw for f in by_latest if f.phone_raw), None)
    if phone:
        doc["telecom"] = [{"system": "phone", "value": p} for p in phone[:2]]
    sex = _most_common([(f.sex, f.updated or "") for f in core])
    if sex:
        doc["gender"] = sex
    birth = _most_common([(f.birth, f.updated or "") for f in core])
    if birth:
        doc["birthDate"] = birth
    addr = next((f.address for f in by_latest if f.address), None)
    if addr:
        doc["address"] = [addr]
    doc["active"] = any(f.active for f in fs)
    doc["link"] = [{"target": {"reference": f"Patient/{f.pid}"}, "assurance": a}
                   for f, a in sorted(recs, key=lambda r: r[0].pid)]
    return doc
