"""Batch linking: after ``phip import`` (the records not yet indexed) and ``phip empi rebuild``
(everything again, after a rule change), in bulk.

One pass reads the Patients with a streaming query, computes their features, builds candidate
pairs from the blocking keys in memory (and, for an import, from ``empi_key`` lookups in chunks
for the records already indexed), scores each pair once, and clusters the auto-links with a
union–find that respects the vetoes (different valid ID numbers), the twin guard and every manual
decision (``same`` forces a link, ``different`` forbids it).  Records, keys, reviews and Person
resources are then written with executemany, not one request per record.  A rebuild keeps the
Person ids (each cluster takes the id most of its records had) and the manual decisions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from phip.core.hooks import Point, WriteEvent
from phip.core.ids import uuid7
from phip.empi import newborn
from phip.empi import tables as T
from phip.empi.engine import ASSURANCE, Empi, golden_person
from phip.empi.normalize import Features, features
from phip.empi.rules import ANON, Score, blocking_keys
from phip.empi.sealed import open_features, seal_features, stored_keys
from phip.fhir.datetimes import now_us, to_instant
from phip.store import schema as S
from phip.store.repository import VERSION_COLUMNS, executemany, insert_index_rows

Progress = Callable[[str, int, int], None]  # (phase, done, total)
CHUNK = 5000


@dataclass(slots=True)
class BatchReport:
    records: int = 0
    pairs: int = 0
    links: int = 0
    persons: int = 0
    persons_created: int = 0
    persons_updated: int = 0
    persons_deleted: int = 0
    reviews: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def _noop(_p: str, _d: int, _t: int) -> None:
    return None


class _Clusters:
    """Union–find over record ids with per-cluster trusted IDs, anchors and forbidden partners."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.ids: dict[str, set[str]] = {}
        self.anchor: dict[str, str | None] = {}  # existing Person id a cluster is bound to (import)
        self.members: dict[str, list[str]] = {}
        self.forbid: dict[str, set[str]] = {}

    def add(self, pid: str, trusted: str | None, anchor: str | None = None) -> None:
        self.parent[pid] = pid
        self.ids[pid] = {trusted} if trusted else set()
        self.anchor[pid] = anchor
        self.members[pid] = [pid]
        self.forbid[pid] = set()

    def find(self, x: str) -> str:
        p = self.parent
        root = x
        while p[root] != root:
            root = p[root]
        while p[x] != root:
            p[x], x = root, p[x]
        return root

    def can_join(self, a: str, b: str) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        if self.ids[ra] and self.ids[rb] and not (self.ids[ra] & self.ids[rb]):
            return False
        if self.anchor[ra] and self.anchor[rb] and self.anchor[ra] != self.anchor[rb]:
            return False
        fa, fb = self.forbid[ra], self.forbid[rb]
        if fa and any(m in fa for m in self.members[rb]):
            return False
        return not (fb and any(m in fb for m in self.members[ra]))

    def join(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if len(self.members[ra]) < len(self.members[rb]):
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.ids[ra] |= self.ids.pop(rb)
        self.anchor[ra] = self.anchor[ra] or self.anchor[rb]
        self.anchor.pop(rb)
        self.members[ra].extend(self.members.pop(rb))
        self.forbid[ra] |= self.forbid.pop(rb)


def _read_patients(conn: sa.Connection, only_unindexed: bool) -> Iterable[dict[str, Any]]:
    """Current Patients in pages by rid (each page its own short statement: no statement timeout)."""
    R = S.resources
    last = -1
    while True:
        q = (sa.select(R.c.rid, R.c.content).where(R.c.type == "Patient", R.c.deleted == sa.false(), R.c.rid > last)
             .order_by(R.c.rid).limit(CHUNK))
        if only_unindexed:
            q = q.where(~sa.exists().where(T.record.c.patient_id == R.c.id))
        rows = conn.execute(q).all()
        if not rows:
            return
        last = rows[-1][0]
        for _rid, content in rows:
            yield orjson.loads(content) if isinstance(content, bytes | str) else content


def link_unindexed(empi: Empi, progress: Progress | None = None) -> BatchReport:
    """Link every current Patient that has no index record yet (the ``phip import`` catch-up)."""
    return _run(empi, rebuild=False, progress=progress or _noop)


def rebuild(empi: Empi, progress: Progress | None = None) -> BatchReport:
    """Re-match every Patient with the current rules, keeping manual decisions and Person ids."""
    return _run(empi, rebuild=True, progress=progress or _noop)


def _run(empi: Empi, *, rebuild: bool, progress: Progress) -> BatchReport:
    import time

    store = empi.store
    codec = store.codec
    rules = empi.rules
    rep = BatchReport()
    t0 = time.perf_counter()
    with store.write_tx() as tx:
        conn = tx.conn
        if store.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL statement_timeout = 0")  # a batch job, not a request
        total = conn.execute(sa.select(sa.func.count()).select_from(S.resources).where(
            S.resources.c.type == "Patient", S.resources.c.deleted == sa.false())).scalar_one()
        feats: dict[str, Features] = {}
        for doc in _read_patients(conn, not rebuild):
            f = features(doc)
            feats[f.pid] = f
            if len(feats) % CHUNK == 0:
                progress("features", len(feats), total)
        progress("features", len(feats), len(feats))
        rep.records = len(feats)
        rep.seconds["features"] = time.perf_counter() - t0
        if not feats:
            return rep
        R = T.record
        old_person: dict[str, str] = {}
        manual: dict[str, str] = {}  # pid -> link kind kept as is (manual / merged) on rebuild
        existing: dict[str, tuple[str, Features]] = {}
        if rebuild:
            for pid, person, kind in conn.execute(sa.select(R.c.patient_id, R.c.person_id, R.c.link_kind)):
                old_person[pid] = person
                if kind in ("manual", "merged"):
                    manual[pid] = person
        # candidate pairs from the blocking keys
        t1 = time.perf_counter()
        blocks: dict[str, list[str]] = defaultdict(list)
        keys_of: dict[str, list[str]] = {}
        for pid, f in feats.items():
            ks = stored_keys(codec, blocking_keys(f, rules.blocking))
            keys_of[pid] = ks
            for k in ks:
                if not k.startswith(ANON):  # (the anonymous copies are for the real-time look-up)
                    blocks[k].append(pid)
        if not rebuild:
            K = T.key
            allkeys = list(blocks)
            ext_ids: set[str] = set()
            for i in range(0, len(allkeys), 500):
                for k, p in conn.execute(sa.select(K.c.key, K.c.patient_id).where(K.c.key.in_(allkeys[i:i + 500]))):
                    if p not in feats:
                        blocks[k].append(p)
                        ext_ids.add(p)
            for c in empi.records(conn, sorted(ext_ids)):
                existing[c.patient_id] = (c.person_id, c.features)
        pairs: set[tuple[str, str]] = set()
        cap = rules.max_block
        for members in blocks.values():
            n = len(members)
            if n < 2:
                continue
            if n <= cap:
                for i in range(n):
                    a = members[i]
                    for j in range(i + 1, n):
                        b = members[j]
                        pairs.add((a, b) if a < b else (b, a))
            else:  # an over-full block: sorted neighbourhood of width cap//4
                w = max(cap // 4, 2)
                ms = sorted(members)
                for i in range(n):
                    for j in range(i + 1, min(n, i + w)):
                        pairs.add((ms[i], ms[j]))
        rep.seconds["blocking"] = time.perf_counter() - t1
        # decisions
        D = T.decision
        same: list[tuple[str, str]] = []
        different: list[tuple[str, str]] = []
        latest: dict[tuple[str, str], str] = {}
        for a, b, d in conn.execute(sa.select(D.c.patient_id, D.c.other_id, D.c.decision).order_by(D.c.id)):
            latest[(a, b) if a < b else (b, a)] = d
        for (a, b), d in latest.items():
            (same if d == "same" else different).append((a, b))
        # score
        t2 = time.perf_counter()

        def fof(p: str) -> Features | None:
            f = feats.get(p)
            if f is None:
                e = existing.get(p)
                return e[1] if e else None
            return f

        scored: list[tuple[float, bool, str, str, Score]] = []
        reviews: list[tuple[str, str, Score]] = []
        plist = list(pairs)
        rep.pairs = len(plist)
        for i, (a, b) in enumerate(plist):
            fa, fb = fof(a), fof(b)
            if fa is None or fb is None:
                continue
            s = rules.score(fa, fb)
            d = rules.decision(s)
            if d == "link":
                scored.append((s.weight, s.deterministic, a, b, s))
            elif d == "review":
                reviews.append((a, b, s))
            if i % 50000 == 0:
                progress("scoring", i, len(plist))
        progress("scoring", len(plist), len(plist))
        rep.seconds["scoring"] = time.perf_counter() - t2
        # cluster
        t3 = time.perf_counter()
        uf = _Clusters()
        for pid, f in feats.items():
            uf.add(pid, f.trusted_id, manual.get(pid))
        for pid, (person, f) in existing.items():
            uf.add(pid, f.trusted_id, person)
        if existing:  # records already linked stay together: anchor them on their Person
            by_p: dict[str, list[str]] = defaultdict(list)
            for pid, (person, _f) in existing.items():
                by_p[person].append(pid)
            for ms in by_p.values():
                for m in ms[1:]:
                    uf.join(ms[0], m)
        for a, b in different:
            if a in uf.parent and b in uf.parent:
                uf.forbid[uf.find(a)].add(b)
                uf.forbid[uf.find(b)].add(a)
        for a, b in same:
            if a in uf.parent and b in uf.parent:
                uf.join(a, b)
        if manual:  # manual links of a rebuild: records that shared a Person by decision stay together
            by_m: dict[str, list[str]] = defaultdict(list)
            for pid, person in manual.items():
                by_m[person].append(pid)
            for ms in by_m.values():
                for m in ms[1:]:
                    uf.join(ms[0], m)
        scored.sort(key=lambda x: (not x[1], -x[0]))
        best_edge: dict[str, tuple[str, float]] = {}
        for w, det, a, b, _s in scored:
            if uf.can_join(a, b):
                uf.join(a, b)
                rep.links += 1
                kind = "deterministic" if det else "auto"
                for p in (a, b):
                    if p not in best_edge or (best_edge[p][0] == "auto" and det):
                        best_edge[p] = (kind, w)
        # newborn placeholders, seen with their mothers' contact data (phip.empi.newborn)
        extra = _mother_records(empi, conn, feats, existing, blocks)
        for a, b, s, join in _newborn_pairs(rules, codec, feats, existing, extra, blocks, uf):
            if join and uf.can_join(a, b):
                uf.join(a, b)
                rep.links += 1
                for p in (a, b):
                    best_edge.setdefault(p, ("auto", s.weight))
            else:
                reviews.append((a, b, s))
        rep.seconds["clustering"] = time.perf_counter() - t3
        # persons
        t4 = time.perf_counter()
        person_of: dict[str, str] = {}
        used: set[str] = set()
        for root, members in list(uf.members.items()):
            anchor = uf.anchor[root]
            pid_person = anchor
            if pid_person is None and rebuild:
                votes: dict[str, int] = defaultdict(int)
                for m in members:
                    if m in old_person:
                        votes[old_person[m]] += 1
                for cand, _n in sorted(votes.items(), key=lambda kv: (-kv[1], kv[0])):
                    if cand not in used:
                        pid_person = cand
                        break
            if pid_person is None:
                pid_person = uuid7()
            used.add(pid_person)
            for m in members:
                person_of[m] = pid_person
        review_pids: set[str] = set()
        review_rows: list[tuple[Any, ...]] = []
        now = now_us()
        per_patient: dict[str, int] = defaultdict(int)
        person_pairs: set[tuple[str, str]] = set()  # one item per pair of Persons: its best record pair
        for a, b, s in sorted(reviews, key=lambda r: -r[2].weight):
            pa, pb = person_of.get(a) or existing[a][0], person_of.get(b) or existing[b][0]
            if pa == pb or ((pa, pb) if pa < pb else (pb, pa)) in person_pairs:
                continue
            person_pairs.add((pa, pb) if pa < pb else (pb, pa))
            lo, hi = (a, b) if a in feats else (b, a)
            if per_patient[lo] >= 5 or latest.get((a, b) if a < b else (b, a)) == "different":
                continue
            per_patient[lo] += 1
            review_pids.add(lo)
            detail = orjson.dumps({"person": person_of.get(hi) or existing[hi][0], **s.as_json()}).decode()
            review_rows.append((lo, hi, s.weight, detail, "open", now))
        rep.reviews = len(review_rows)
        # index rows
        K, V = T.key, T.review
        if rebuild:
            conn.execute(V.update().where(V.c.status == "open").values(status="obsolete"))
            conn.execute(K.delete())
            conn.execute(R.delete())
        rec_rows: list[tuple[Any, ...]] = []
        key_rows: list[tuple[Any, ...]] = []
        for pid, f in feats.items():
            if pid in manual:
                kind, w = ("manual", None)
            else:
                kind, w = best_edge.get(pid, ("review" if pid in review_pids else "new", None))  # type: ignore[assignment]
            rec_rows.append((pid, person_of[pid], seal_features(codec, f), ASSURANCE[kind], kind, w, now))
            key_rows.extend((k, pid) for k in keys_of[pid])
        for i in range(0, len(rec_rows), CHUNK):
            executemany(conn, R, ("patient_id", "person_id", "features", "assurance", "link_kind", "score", "updated"),
                        rec_rows[i:i + CHUNK])
            progress("records", i, len(rec_rows))
        for i in range(0, len(key_rows), CHUNK * 4):
            executemany(conn, K, ("key", "patient_id"), key_rows[i:i + CHUNK * 4])
        executemany(conn, V, ("patient_id", "candidate_id", "score", "detail", "status", "created"), review_rows)
        # golden records: every Person touched
        members_of: dict[str, list[tuple[Features, str]]] = defaultdict(list)
        for pid, person, _fj, assurance, *_ in rec_rows:
            members_of[person].append((feats[pid], assurance))
        if existing:
            touched = sorted({existing[p][0] for p in existing if person_of.get(p) in members_of})
            for c_pid, c_person, c_fj, c_as in _person_rows(conn, touched):
                if c_pid not in feats:
                    members_of[c_person].append((open_features(codec, c_pid, c_fj), c_as))
        rep.persons = len(members_of)
        gone: list[str] = []
        if rebuild:
            gone = [p for p in set(old_person.values()) if p not in members_of]
        # golden records built and written a chunk at a time (memory stays bounded on a 1M rebuild)
        persons = list(members_of)
        built = 0.0
        for i in range(0, len(persons), CHUNK):
            tb = time.perf_counter()
            docs = {p: golden_person(p, members_of[p]) for p in persons[i:i + CHUNK]}
            built += time.perf_counter() - tb
            c, u, d = write_persons(store, tx, docs, gone if i + CHUNK >= len(persons) else [], _noop)
            rep.persons_created += c
            rep.persons_updated += u
            rep.persons_deleted += d
            progress("persons", min(i + CHUNK, len(persons)), len(persons))
        rep.seconds["persons"] = built
        rep.seconds["write"] = time.perf_counter() - t4 - built
    rep.seconds["total"] = time.perf_counter() - t0
    return rep


def _mother_records(empi: Empi, conn: sa.Connection, feats: dict[str, Features],
                    existing: dict[str, tuple[str, Features]], blocks: dict[str, list[str]]) -> dict[str, Features]:
    """The records in the mothers' blocks of the placeholders in play that the batch has not read
    (an import whose placeholder was stored earlier): fetched by key, used only to confirm mothers."""
    codec = empi.store.codec
    missing: set[str] = set()
    for f in [*feats.values(), *(e[1] for e in existing.values())]:
        mk = newborn.mother_key(f)
        if mk is not None:
            k = stored_keys(codec, [mk])[0]
            if k not in blocks:
                missing.add(k)
    if not missing:
        return {}
    K = T.key
    ids: set[str] = set()
    keys = sorted(missing)
    for i in range(0, len(keys), 500):
        for k, p in conn.execute(sa.select(K.c.key, K.c.patient_id).where(K.c.key.in_(keys[i:i + 500]))):
            blocks[k].append(p)
            ids.add(p)
    return {c.patient_id: c.features for c in empi.records(conn, sorted(ids - set(feats) - set(existing)))}


def _newborn_pairs(rules: Any, codec: Any, feats: dict[str, Features], existing: dict[str, tuple[str, Features]],
                   extra: dict[str, Features], blocks: dict[str, list[str]],
                   uf: _Clusters) -> Iterable[tuple[str, str, Score, bool]]:
    """(placeholder, child record, score, join?) for every placeholder whose mother is confirmed:
    join when exactly one cluster qualifies and nothing suggests a twin; otherwise review."""

    def fof(p: str) -> Features | None:
        f = feats.get(p)
        if f is not None:
            return f
        e = existing.get(p)
        return e[1] if e is not None else extra.get(p)

    for pid in [*feats, *existing]:
        fp = fof(pid)
        mk = newborn.mother_key(fp) if fp is not None else None
        if fp is None or mk is None:
            continue
        block = [x for x in (fof(m) for m in blocks.get(stored_keys(codec, [mk])[0], [])) if x is not None]
        view = newborn.mother_view(fp, block)
        if view is None:
            continue
        twins = newborn.twin_placeholders(fp, block)
        quals: list[tuple[str, Score, str]] = []
        for c in blocks.get(f"bs:{fp.birth}|{fp.sex or ''}", []):
            fc = fof(c)
            if fc is None or c not in uf.parent or not newborn.could_be_child(view, fc):
                continue
            s = newborn.score(rules, view, fc)
            d = rules.decision(s)
            if d != "new":
                quals.append((c, s, d))
        if not quals:
            continue
        own = uf.find(pid)
        roots = {uf.find(c) for c, _s, d in quals if d == "link"} - {own}
        # the placeholder already sits with a named record: another cluster fitting too is a twin
        named = any(not m_f.placeholder and m_f.name for m in uf.members[own] if (m_f := fof(m)) is not None)
        ok = not twins and len(roots) == 1 and not named
        for c, s, d in sorted(quals, key=lambda q: -q[1].weight):
            if uf.find(c) == own:
                continue
            yield pid, c, s, ok and d == "link"
            if ok and d == "link":
                ok = False  # joined: the rest of that cluster comes along


def _person_rows(conn: sa.Connection, persons: list[str]) -> Iterable[tuple[str, str, str, str]]:
    R = T.record
    for i in range(0, len(persons), 500):
        yield from conn.execute(sa.select(R.c.patient_id, R.c.person_id, R.c.features, R.c.assurance)
                                .where(R.c.person_id.in_(persons[i:i + 500])))


def write_persons(store: Any, tx: Any, docs: dict[str, dict[str, Any]], gone: list[str],
                  progress: Progress) -> tuple[int, int, int]:
    """Create, update (when changed) or delete Person resources in bulk, with history, search
    index and change feed, as the store's own fast import path does."""
    conn = tx.conn
    Rs = S.resources
    sqlite = store.dialect.name == "sqlite"
    repo = store.repository()
    now = now_us()
    instant = to_instant(now)
    ids = list(docs) + gone
    cur: dict[str, tuple[int, int, bool, Any]] = {}
    for i in range(0, len(ids), 500):
        q = sa.select(Rs.c.id, Rs.c.rid, Rs.c.version, Rs.c.deleted, Rs.c.content).where(
            Rs.c.type == "Person", Rs.c.id.in_(ids[i:i + 500]))
        for pid, rid, ver, deleted, content in conn.execute(q):
            cur[pid] = (rid, ver, deleted, content)
    new: list[tuple[str, dict[str, Any]]] = []
    changed: list[tuple[int, int, str, dict[str, Any] | None]] = []
    for pid, doc in docs.items():
        c = cur.get(pid)
        body = {k: v for k, v in doc.items()}
        if c is None:
            new.append((pid, body))
            continue
        rid, ver, deleted, content = c
        if not deleted and content is not None:
            old = orjson.loads(content) if isinstance(content, bytes | str) else dict(content)
            old.pop("meta", None)
            if old == body:
                continue
        changed.append((rid, ver + 1, pid, body))
    for pid in gone:
        c = cur.get(pid)
        if c is not None and not c[2]:
            changed.append((c[0], c[1] + 1, pid, None))

    def prepared(pid: str, body: dict[str, Any], version: int) -> dict[str, Any]:
        doc = {"resourceType": "Person", "id": pid, "meta": {"versionId": str(version), "lastUpdated": instant}}
        doc.update({k: v for k, v in body.items() if k not in ("resourceType", "id", "meta")})
        store.hooks.fire(Point.BEFORE_WRITE, tx, "Person", doc, "POST" if version == 1 else "PUT", importing=True)
        return doc

    def bind(doc: dict[str, Any] | None) -> Any:
        if doc is None:
            return None
        # encryption at rest: the database gets the sealed copy (the UPDATE below is not sealed for us)
        sealed = store.codec.seal("Person", doc) if store.codec is not None else None
        return repo._bind_content(orjson.dumps(sealed or doc).decode() if sqlite else (sealed or doc))

    for i in range(0, len(new), CHUNK):
        chunk = new[i:i + CHUNK]
        rids = store.dialect.reserve_rids(conn, len(chunk))
        pdocs = [prepared(pid, body, 1) for pid, body in chunk]
        contents = [bind(d) for d in pdocs]
        executemany(conn, Rs, ("rid", "type", "id", "version", "last_updated", "deleted", "content"),
                    [(r, "Person", d["id"], 1, now, False, c) for r, d, c in zip(rids, pdocs, contents, strict=True)])
        executemany(conn, S.resource_versions, VERSION_COLUMNS,
                    [(r, 1, "Person", d["id"], now, False, "POST", c)
                     for r, d, c in zip(rids, pdocs, contents, strict=True)])
        insert_index_rows(conn, {r: ("Person", d) for r, d in zip(rids, pdocs, strict=True)})
        tx.changes.extend((r, "Person", d["id"], 1, False, now) for r, d in zip(rids, pdocs, strict=True))
        _after(store, tx, [(d["id"], 1, "POST", d) for d in pdocs])
        progress("persons", i + len(chunk), len(new) + len(changed))
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    for i in range(0, len(changed), CHUNK):
        chunk = changed[i:i + CHUNK]
        udocs = [(rid, ver, pid, prepared(pid, body, ver) if body is not None else None)
                 for rid, ver, pid, body in chunk]
        contents = [bind(d) for *_x, d in udocs]
        conn.exec_driver_sql(
            f"UPDATE resources SET version = {mark}, last_updated = {mark}, deleted = {mark}, content = {mark} "
            f"WHERE rid = {mark}",
            [(ver, now, d is None, c, rid) for (rid, ver, _p, d), c in zip(udocs, contents, strict=True)])
        executemany(conn, S.resource_versions, VERSION_COLUMNS,
                    [(rid, ver, "Person", pid, now, d is None, "PUT" if d is not None else "DELETE", c)
                     for (rid, ver, pid, d), c in zip(udocs, contents, strict=True)])
        rids = [rid for rid, *_x in udocs]
        for table in S.INDEX_TABLES.values():
            for k in range(0, len(rids), 500):
                conn.execute(table.delete().where(table.c.rid.in_(rids[k:k + 500])))
        insert_index_rows(conn, {rid: ("Person", d) for rid, _v, _p, d in udocs if d is not None})
        tx.changes.extend((rid, "Person", pid, ver, d is None, now) for rid, ver, pid, d in udocs)
        _after(store, tx, [(pid, ver, "PUT" if d is not None else "DELETE", d) for _r, ver, pid, d in udocs])
        progress("persons", len(new) + i + len(chunk), len(new) + len(changed))
    deleted = sum(1 for *_x, d in changed if d is None)
    return len(new), len(changed) - deleted, deleted


def _after(store: Any, tx: Any, items: list[tuple[str, int, str, dict[str, Any] | None]]) -> None:
    if store.hooks.has(Point.AFTER_WRITE, importing=True):
        for pid, ver, method, doc in items:
            store.hooks.fire(Point.AFTER_WRITE, tx, WriteEvent("Person", pid, ver, method, doc), importing=True)
