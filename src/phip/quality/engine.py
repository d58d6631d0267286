"""The quality engine: incremental checks at ingest, findings, Tasks, counters, scorecards.

Two ways in, one set of checks (:class:`~phip.quality.checks.Checker`):

- a REST write (``AFTER_WRITE``, in the write's own transaction): the resource is checked, its
  cross-record rules run against what the node holds, its findings are synchronised — new ones
  opened and assigned to the institution as a FHIR Task, ones a corrected resubmission no
  longer violates resolved and their Task completed — and the counters adjusted;
- ``phip import``: each batch's new resources are checked in the batch's transaction
  (``IMPORT_BATCH``, with the sender's upload time), and the cross-record part (institutions
  inherited from encounters and subjects, uniqueness, event vs birth/death, sex/age for codes),
  the counters and the Tasks run once at the end, set-wise in SQL (institutions and the Tasks of
  the findings so far at ``IMPORT_LOADED``, before the search indexes are rebuilt; the rest at
  ``AFTER_IMPORT``).
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import Connection

from phip.core.hooks import ImportedItem, WriteEvent
from phip.fhir.datetimes import now_us, to_instant
from phip.quality.checks import DAY_US, Checker, CodeValidator, Facts, Found, day_of, parse_time
from phip.quality.rules import REGISTRY_PATHS, REGISTRY_TITLES, Rules, registry_id
from phip.quality.tables import FLAG_DIMENSIONS, quality_counter, quality_finding, quality_resource
from phip.store import schema as S

QR, QF, QC = quality_resource, quality_finding, quality_counter
#: resource types the engine does not score: its own Tasks, records of the node's own working and
#: definitional (conformance, terminology, knowledge) content
SKIP = frozenset({
    "Task", "AuditEvent", "Provenance", "Subscription", "OperationOutcome", "Parameters", "Bundle", "Binary",
    "CodeSystem", "ValueSet", "ConceptMap", "NamingSystem", "TerminologyCapabilities", "StructureDefinition",
    "StructureMap", "CapabilityStatement", "SearchParameter", "OperationDefinition", "CompartmentDefinition",
    "ImplementationGuide", "GraphDefinition", "MessageDefinition", "ExampleScenario", "PlanDefinition",
    "ActivityDefinition", "Library", "Measure", "Questionnaire", "EventDefinition", "ObservationDefinition",
    "SpecimenDefinition", "ChargeItemDefinition", "EffectEvidenceSynthesis", "Evidence", "EvidenceVariable",
    "ResearchDefinition", "ResearchElementDefinition", "RiskEvidenceSynthesis", "TestScript", "TestReport",
})
UNKNOWN = "unknown"
#: the name of a transaction's counter changes (``Tx.state``, ``Tx.before_commit``)
COUNTS = "quality.counts"
#: the institutions of the rows a transaction wrote (``Tx.state``)
INSTITUTIONS = "quality.institutions"
#: the Patients' (gender, birth, death) a transaction looked up or wrote (``Tx.state``)
LIVES = "quality.lives"
#: ``jobs`` row holding the highest imported resource row id the batch phase has processed
WATERMARK = "quality:import"
TASK_RULE_SYSTEM = "urn:phip:cs:quality-rule"
_QR_COLS = ("rtype", "rid", "version", "institution", "via_type", "via_id", "subject", "pid", "day", "received",
            "event", "gender", "birth", "death", "xrule", "ukey", "uid", "seq", *[f"f_{d}" for d in FLAG_DIMENSIONS],
            "idkey", "namekey", "phonekey", "addrkey")
#: the columns of an imported row as :func:`shaped` gives them: ``seq`` (the writing process's) last
_QR_SHAPED = (*(c for c in _QR_COLS if c != "seq"), "seq")
_LITERALS = frozenset(i for i, c in enumerate(_QR_SHAPED) if c == "version" or c.startswith("f_"))
_CONFORMANCE = _QR_SHAPED.index("f_conformance")
_BOUND, _NULL = ord("?"), ord("N")
_SEQ = _QR_COLS.index("seq")
_SUBJECT, _INSTITUTION, _DAY = (_QR_COLS.index(c) for c in ("subject", "institution", "day"))
#: the new records a transaction wrote, not checked yet (``Tx.state``, ``Tx.before_commit``)
CREATED = "quality.created"
#: the condition of the ``seq`` index (imported rows): a query of a range of them says it, so the index serves it
_IMPORTED = "seq <> 0"
#: the dimension flags of a record without findings
_CLEAN = (0,) * len(FLAG_DIMENSIONS)
_QF_COLS = ("rtype", "rid", "version", "rule", "dimension", "path", "message", "subject", "institution", "day",
            "status", "detected")


PREPARED = "quality"
#: at most this many Tasks made by the import worker are kept for the batch phase (the rest are made there)
PREPARED_TASKS_MAX = 500_000


class Prepare:
    """The IMPORT_PREPARE function: a resource's checks in the importer's worker process, all but
    the value-set checks (the terminology service stays in the writing process).  Only for a
    resource that carries its id.  Its received time is its sender's upload time (``meta.lastUpdated``
    of the file) or, without one, when this process read it: the platform's receipt, seconds before
    the writing process stamps the stored copy (the writer, checking a record itself, takes its own
    time; neither judges such a record late).

    Returns what the writing process inserts, as plain tuples (cheap to send back): the
    ``quality_resource`` row as :func:`shaped` gives it (without ``seq``) and each finding as (rule, dimension, path,
    message, task), where task is None or, when the record names its institution itself (so the
    batch phase cannot change the owner), the finding's FHIR Task but for its id (the finding's row
    id, not known yet): (the document, its search index rows — keyed with the node's codec like the
    worker's own index rows); then the codes the value-set checks are to judge
    (:meth:`Checker.code_candidates`)."""

    name = PREPARED

    def __init__(self, svc: QualityService) -> None:
        self.rules = svc.rules
        self.tasks = svc.tasks
        self._svc: QualityService | None = svc
        self._codec: Any = None
        self._checker: Checker | None = None
        self._dims: dict[str, str] = {}

    def __getstate__(self) -> dict[str, Any]:
        # the store's codec travels with it: the registry keys are keyed blind values (as the writer's)
        return {"rules": self.rules, "tasks": self.tasks,
                "codec": self._svc.store.codec if self._svc is not None else self._codec}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.rules = state["rules"]
        self.tasks = state.get("tasks", True)
        self._codec = state["codec"]
        self._svc = None
        self._checker = None
        self._dims = {}

    def __call__(self, res: dict[str, Any]) -> PreparedRow | None:
        rtype, rid = res.get("resourceType"), res.get("id")
        if not isinstance(rtype, str) or not isinstance(rid, str) or rtype in SKIP:
            return None
        received = _sent((res.get("meta") or {}).get("lastUpdated"))
        timely = received is not None
        if received is None:
            # a file's record without its sender's upload time: received when this process read it (a
            # few seconds before the writing process stores it), and not judged late (as in the writer)
            received = now_us()
        if self._checker is None:
            self._checker = Checker(self.rules, None)
        fx = self._checker.check(rtype, rid, res, received, codes=False, timely=timely)
        dim = self._dimension
        codec = self._svc.store.codec if self._svc is not None else self._codec  # (not sent: this process)
        row = shaped(facts_row(rtype, rid, 1, fx, 0, dim, lambda kind, v: value_key(codec, kind, v),
                               self.rules.f.timezone_offset_hours))
        codes = self._checker.code_candidates(rtype, res)
        inst = fx.institution
        assigned = self.rules.assigned
        if not self.tasks or not any(assigned(f.rule) for f in fx.findings):
            return row, tuple((f.rule, dim(f.rule), f.path, f.message, None) for f in fx.findings), codes
        # the finding's Task, made here but for its id and, when the record names no institution of its
        # own (it inherits its encounter's or subject's in the batch phase), its owner
        from phip.fhir.search.extract import index_resource

        now = now_us()
        out: list[tuple[str, str, str, str, Any]] = []
        for f in fx.findings:
            if not assigned(f.rule):
                out.append((f.rule, dim(f.rule), f.path, f.message, None))
                continue
            task = task_doc(self.rules, "", rtype, rid, f.rule, f.message, fx.subject, inst, now)
            ix = index_resource(task)  # (the id is not indexed: _id is the stored row's)
            if codec is not None:
                codec.index("Task", task, ix)
            out.append((f.rule, dim(f.rule), f.path, f.message, (task, ix)))
        return row, tuple(out), codes

    def _dimension(self, rule: str) -> str:
        d = self._dims.get(rule)
        if d is None:
            d = self._dims[rule] = self.rules.dimension(rule)
        return d


#: a ``quality_resource`` row as :func:`shaped` gives it
Shaped = tuple[bytes, tuple[Any, ...], str | None, str | None, int]
#: what :class:`Prepare` sends back: the ``quality_resource`` row, the findings (with their Tasks) and
#: the codes for the value-set checks (:meth:`Checker.code_candidates`)
PreparedRow = tuple[Shaped, tuple[tuple[str, str, str, str, "tuple[dict[str, Any], Any] | None"], ...],
                    tuple[tuple[int, tuple[tuple[str, ...], ...]], ...]]


def shaped(row: tuple[Any, ...]) -> Shaped:
    """A ``quality_resource`` row (``_QR_COLS``; its ``seq`` left out) for :func:`insert_shaped`: its
    shape — per column of ``_QR_SHAPED`` but ``seq``, bound (``?``), NULL (``N``) or a literal 0/1
    (the version and the dimension flags) — and the values to bind; then its subject, institution
    and day (what its findings need).  Most of a row's columns are NULL or 0 (the Patient columns
    on any other record): written into the statement, they cost nothing to bind."""
    shape = bytearray()
    vals = []
    for i, v in enumerate((*row[:_SEQ], *row[_SEQ + 1:])):
        if v is None:
            shape.append(_NULL)
        elif i in _LITERALS and type(v) is int and (v == 0 or v == 1):
            shape.append(48 + v)
        else:
            shape.append(_BOUND)
            vals.append(v)
    return bytes(shape), tuple(vals), row[_SUBJECT], row[_INSTITUTION], row[_DAY]


def unshaped(row: Shaped, seq: int = 0) -> dict[str, Any]:
    """The columns and values of a :func:`shaped` row."""
    shape, vals, *_ = row
    it = iter(vals)
    out = {c: next(it) if ch == _BOUND else None if ch == _NULL else ch - 48 for c, ch in
           zip(_QR_SHAPED[:-1], shape, strict=True)}
    out["seq"] = seq
    return out


_SHAPED_SQL: dict[tuple[bytes, str], str] = {}
_SHAPE_CHARS = frozenset(b"?N01")


def insert_shaped(conn: Connection, groups: dict[bytes, list[tuple[Any, ...]]]) -> None:
    """Insert :func:`shaped` rows, grouped by shape, each with its ``seq`` appended to its values:
    one ``executemany`` per shape."""
    m = _mark(conn)
    for shape, rows in groups.items():
        sql = _SHAPED_SQL.get((shape, m))
        if sql is None:
            if len(shape) != len(_QR_SHAPED) - 1 or not set(shape) <= _SHAPE_CHARS:
                raise ValueError(f"not a quality_resource row shape: {shape!r}")
            if len(_SHAPED_SQL) >= 4096:
                _SHAPED_SQL.clear()
            vals = ", ".join(m if ch == _BOUND else "NULL" if ch == _NULL else chr(ch) for ch in shape)
            sql = _SHAPED_SQL[(shape, m)] = (f"INSERT INTO quality_resource ({', '.join(_QR_SHAPED)}) "
                                             f"VALUES ({vals}, {m})")
        conn.exec_driver_sql(sql, rows)


def task_doc(rules: Rules, task_id: str, rtype: str, rid: str, rule: str, message: str, subject: str | None,
             inst: str | None, now: int) -> dict[str, Any]:
    """The FHIR Task assigning a finding to the record's institution."""
    info = rules.catalogue.get(rule)
    task: dict[str, Any] = {
        "resourceType": "Task",
        "id": task_id,
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": TASK_RULE_SYSTEM, "code": rule,
                             **({"display": info.title} if info else {})}],
                 "text": info.title if info else rule},
        "description": message,
        "focus": {"reference": f"{rtype}/{rid}"},
        "authoredOn": to_instant(now),
    }
    if subject and subject.startswith("Patient/"):
        task["for"] = {"reference": subject}
    if inst and inst != UNKNOWN:
        task["owner"] = {"reference": f"Organization/{inst}"}
    return task


def _worker_task(pre: tuple[dict[str, Any], Any], doc: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The Task to store for a finding, and its index rows if the import worker's Task (``pre``: the
    document and its index rows) is this one — the finding's message, subject and institution
    unchanged — but for its id, when it was made and, for a record that inherited its institution
    in the batch phase, the owner: then no index extraction here.  Else ``(doc, None)``."""
    made, ix = pre
    same = dict(made, id=doc["id"], authoredOn=doc["authoredOn"])
    owner = doc.get("owner")
    if owner is not None and "owner" not in made:
        same["owner"] = owner
        ref = owner.get("reference", "")
        org = ref[13:] if ref.startswith("Organization/") else None
        if same != doc or not org:
            return doc, None
        # the owner's index row, as the extractor makes it for a reference (the codec keys tokens
        # and strings only, never references)
        ix = copy.copy(ix)
        ix.refs = [*ix.refs, ("owner", 0, "Organization", org, None)]
        return dict(made, id=doc["id"], owner=owner), ix
    if same != doc:
        return doc, None
    return dict(made, id=doc["id"]), ix


def value_key(codec: Any, kind: str, value: str | None) -> str | None:
    """A value compared for equality only, as stored: the privacy capability's keyed blind index
    when encryption at rest is on (never the ID number or phone in clear), else a hash."""
    if value is None:
        return None
    if codec is not None:
        return str(codec.blind(f"quality:{kind}:{value}"))
    return "h" + hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()[:32]


def facts_row(rtype: str, rid: str, version: int, fx: Facts, seq: int, dimension: Callable[[str], str],
              key: Callable[[str, str | None], str | None], offset: float) -> tuple[Any, ...]:
    """A ``quality_resource`` row (columns ``_QR_COLS``) from a resource's facts."""
    via_t = via_i = None
    if fx.via and "/" in fx.via:
        via_t, via_i = fx.via.split("/", 1)
    pid = fx.subject.split("/", 1)[1] if fx.subject and fx.subject.startswith(("Patient/", "Practitioner/")) \
        else None
    dims = {dimension(f.rule) for f in fx.findings}
    ref = fx.ref
    keys = (key("i", ref[0]), key("n", ref[1]), key("p", ref[2]), key("a", ref[3])) \
        if ref is not None else (None, None, None, None)
    return (rtype, rid, version, fx.institution, via_t, via_i, fx.subject, pid,
            day_of(fx.received, offset), fx.received, fx.event, fx.gender, fx.birth, fx.death, fx.xrule,
            fx.ukey, key("u", fx.uid), seq, *[1 if d in dims else 0 for d in FLAG_DIMENSIONS], *keys)


def _outside_life(event: int | None, birth: int | None, death: int | None, slack: int) -> bool:
    """Whether an event falls before the birth or after the death, beyond the slack."""
    return event is not None and ((birth is not None and event < birth - slack)
                                  or (death is not None and event > death + slack))


def _late_registration(rtype: str, rid: str) -> Found:
    return Found("timeliness.Patient", "Patient.meta.lastUpdated",
                 f"与迟报的 {rtype}/{rid} 同一次上传：登记未及时上传")


def _mark(conn: Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def _insert_many(conn: Connection, table: str, cols: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    if rows:
        m = _mark(conn)
        conn.exec_driver_sql(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join([m] * len(cols))})", rows)


@dataclass(frozen=True, slots=True)
class ResKey:
    rtype: str
    rid: str


class QualityService:
    """``node.ext["quality"]``: the engine of one node."""

    def __init__(self, store: Any, rules: Rules, terminology: CodeValidator | None = None,
                 tasks: bool = True, same_person: Callable[[str, str], tuple[str, str]] | None = None) -> None:
        self.store = store
        #: the master index's "other records of the same Person" join (None without the master index)
        self.same_person = same_person
        self.rules = rules
        self.checker = Checker(rules, terminology)
        self.tasks = tasks
        self.offset = rules.f.timezone_offset_hours
        self._dims: dict[str, str] = {}
        self._reg_orgs: tuple[float, list[str]] | None = None
        #: Tasks the import worker made for findings (by record and rule: the document but its id, and
        #: its index rows), waiting for the batch phase to store them
        self._prepared_tasks: dict[tuple[str, str, str], tuple[dict[str, Any], Any]] = {}
        #: the range of imported rows (``seq``) whose institutions IMPORT_LOADED resolved and committed
        self._inherited: tuple[int, int] | None = None

    def set_terminology(self, terminology: CodeValidator | None) -> None:
        self.checker.terminology = terminology
        self.checker._code_cache.clear()

    def dimension(self, rule: str) -> str:
        d = self._dims.get(rule)
        if d is None:
            d = self._dims[rule] = self.rules.dimension(rule)
        return d

    # -- facts → rows ----------------------------------------------------------------------------------
    def _row(self, rtype: str, rid: str, version: int, fx: Facts, seq: int) -> tuple[Any, ...]:
        return facts_row(rtype, rid, version, fx, seq, self.dimension, self._key, self.offset)

    def _key(self, kind: str, value: str | None) -> str | None:
        return value_key(self.store.codec, kind, value)

    def _registry_orgs(self, conn: Connection) -> list[str]:
        """Ids of the Organizations whose Patients are the population registry (by their type, through
        the search index; remembered for a minute)."""
        reg = self.rules.f.consistency.registry
        if reg is None:
            return []
        now = time.monotonic()
        if self._reg_orgs is not None and now < self._reg_orgs[0]:
            return self._reg_orgs[1]
        t, r = S.idx_token, S.resources
        conds = [sa.and_(t.c.system == sys_, t.c.code == code) for sys_, code in (x.split("|") for x in reg.org_types)]
        q = (sa.select(r.c.id).select_from(t.join(r, r.c.rid == t.c.rid))
             .where(t.c.param == S.param_key("Organization", "type"), sa.or_(*conds), r.c.deleted == sa.false())
             .distinct())
        ids = sorted(x for (x,) in conn.execute(q))
        self._reg_orgs = (now + 60.0, ids)
        return ids

    # -- phip import: per batch --------------------------------------------------------------------------
    def on_import_batch(self, tx: Any, items: list[ImportedItem]) -> None:
        """Check a batch's new resources with the sender's upload time, in the batch's transaction."""
        groups: dict[bytes, list[tuple[Any, ...]]] = {}  # quality_resource rows by shape
        frows: list[tuple[Any, ...]] = []
        # Tasks the worker made, kept for the batch phase (which gives them their ids and stores them)
        made = self._prepared_tasks if self.tasks and len(self._prepared_tasks) < PREPARED_TASKS_MAX else None
        now = now_us()
        check, dim = self.checker.check, self.dimension
        for it in items:
            if it.resource_type in SKIP:
                continue
            pre = it.prepared.get(PREPARED) if it.prepared else None
            if pre is not None:  # checked in the importer's worker: only the value-set checks are left
                (shape, vals, subject, inst, day), found, candidates = pre
                codes: list[Found] = []
                if candidates:
                    self.checker.check_candidates(it.resource_type, candidates, codes)
                if codes:
                    found = (*found, *((f.rule, dim(f.rule), f.path, f.message, None) for f in codes))
                    if shape[_CONFORMANCE] == 48:
                        shape = shape[:_CONFORMANCE] + b"1" + shape[_CONFORMANCE + 1:]
                rows = groups.get(shape)
                if rows is None:
                    rows = groups[shape] = []
                rows.append((*vals, it.rid))
                for rule, d, path, msg, task in found:
                    if task is not None and made is not None:
                        made[(it.resource_type, it.id, rule)] = task
                    frows.append((it.resource_type, it.id, 1, rule, d, path, msg, subject, inst, day, "open", now))
                continue
            sent = _sent(it.sent)
            # a file's records without their sender's upload time (a migration of old data): when the
            # source received them is unknown, so they are not judged late against the load's own time
            fx = check(it.resource_type, it.id, it.resource, now if sent is None else sent, timely=sent is not None)
            shape, vals, _subject, _inst, day = shaped(self._row(it.resource_type, it.id, 1, fx, it.rid))
            groups.setdefault(shape, []).append((*vals, it.rid))
            for f in fx.findings:
                frows.append((it.resource_type, it.id, 1, f.rule, dim(f.rule), f.path, f.message,
                              fx.subject, fx.institution, day, "open", now))
        insert_shaped(tx.conn, groups)
        _insert_many(tx.conn, "quality_finding", _QF_COLS, frows)

    # -- phip import: the batch phase ----------------------------------------------------------------------
    def on_loaded(self, store: Any, _loaded: dict[str, int]) -> None:
        """Before the search indexes are rebuilt (``IMPORT_LOADED``): the imported rows' institutions
        and a Task for each finding so far — one bulk write, cheaper while the value indexes are
        being rebuilt anyway.  ``process`` at ``AFTER_IMPORT`` does the rest (and all of it when a
        caller never fires this point)."""
        self._inherited = None
        with store.write_tx() as tx:
            conn = tx.conn
            m = _mark(conn)
            mark, top = self._pending(conn)
            if top > mark:
                self._inherit(conn, f"{_IMPORTED} AND seq > {m} AND seq <= {m}", (mark, top), None)
            if self.tasks:
                self._tasks_bulk(tx)
        # committed: the batch phase need not look for institutions in these rows again (none is left
        # without one; rows written since, by REST or another import, move the range and it does)
        self._inherited = (mark, top)

    def on_after_import(self, store: Any, _loaded: dict[str, int]) -> None:
        with store.write_tx() as tx:
            self.process(tx)

    def _pending(self, conn: Connection) -> tuple[int, int]:
        """The imported rows awaiting the batch phase: ``seq`` above the first, up to the second."""
        return self._watermark(conn), conn.execute(sa.select(sa.func.max(QR.c.seq)).where(QR.c.seq != 0)).scalar() or 0

    def _watermark(self, conn: Connection) -> int:
        rec = conn.execute(sa.select(S.jobs.c.progress).where(S.jobs.c.id == WATERMARK)).first()
        return int(rec[0]) if rec is not None and rec[0] else 0

    def _set_watermark(self, conn: Connection, seq: int) -> None:
        now = now_us()
        if conn.execute(S.jobs.update().where(S.jobs.c.id == WATERMARK).values(progress=str(seq), updated=now)
                        ).rowcount == 0:
            conn.execute(S.jobs.insert().values(id=WATERMARK, kind="quality", status="done", request="watermark",
                                                owner=None, created=now, updated=now, progress=str(seq)))

    def process(self, tx: Any, key: ResKey | None = None, fx: Facts | None = None,
                newest: bool = False) -> list[tuple[ResKey, Found]]:
        """The cross-record part, counters and Tasks: for the imported rows above the watermark
        (``key`` None), or for one resource just written (``newest``: a new record, registered after
        every other but those received after it)."""
        conn = tx.conn
        m = _mark(conn)
        args: tuple[Any, ...]
        if key is None:
            mark, top = self._pending(conn)
            if top <= mark:
                if self.tasks:
                    self._tasks_bulk(tx)
                return []
            where, args = f"{_IMPORTED} AND seq > {m} AND seq <= {m}", (mark, top)
        else:
            where, args = f"rtype = {m} AND rid = {m}", (key.rtype, key.rid)
        # 1. institutions inherited from the encounter / subject (unless IMPORT_LOADED did it for these rows)
        if key is not None or self._inherited != args:
            self._inherit(conn, where, args, key, resolve=fx is None or fx.institution is None)
        if key is None:
            self._inherited = None
        # 2. cross-record checks
        cross = self._cross(conn, where, args, fx, tx if key is not None else None, newest)
        now = now_us()
        if cross:
            info = self._info(conn, {k for k, _f in cross})
            frows = []
            flags: dict[str, list[tuple[str, str]]] = defaultdict(list)
            for k, f in cross:
                r = info[(k.rtype, k.rid)]
                dim = self.dimension(f.rule)
                frows.append((k.rtype, k.rid, r[2], f.rule, dim, f.path, f.message, r[3], r[4], r[5], "open", now))
                flags[dim].append((k.rtype, k.rid))
            if key is None:  # one resource's findings are synchronised by the caller
                _insert_many(conn, "quality_finding", _QF_COLS, frows)
            for dim, keys in flags.items():
                conn.exec_driver_sql(f"UPDATE quality_resource SET f_{dim} = 1 WHERE rtype = {m} AND rid = {m}", keys)
        # 3. counters (one resource's: counted by the caller, :meth:`on_write`)
        if key is not None:
            return cross
        sums = ", ".join(f"SUM(f_{d})" for d in FLAG_DIMENSIONS)
        upd = ", ".join(f"f_{d} = quality_counter.f_{d} + excluded.f_{d}" for d in FLAG_DIMENSIONS)
        cols = ", ".join(f"f_{d}" for d in FLAG_DIMENSIONS)
        conn.exec_driver_sql(
            f"INSERT INTO quality_counter (institution, rtype, day, received, {cols}) "
            f"SELECT institution, rtype, day, COUNT(*), {sums} FROM quality_resource WHERE {where} "
            "GROUP BY institution, rtype, day "
            "ON CONFLICT (institution, rtype, day) DO UPDATE SET "
            f"received = quality_counter.received + excluded.received, {upd}", args)
        # 4. the watermark and Tasks for the new findings
        self._set_watermark(conn, int(args[1]))
        if self.tasks:
            self._tasks_bulk(tx)
        return cross

    # -- counters of REST writes: gathered per transaction ---------------------------------------------------
    def _count(self, tx: Any, institution: str | None, rtype: str, day: int, received: int,
               flags: Iterable[int]) -> None:
        """Add to the ``quality_counter`` row (institution, type, day) at the end of the transaction.
        Every write of an institution's records on a day updates the same row: updated at once,
        concurrent transactions (PostgreSQL) queued on its row lock for the rest of each other's
        transaction; now they hold it from their end to their commit only."""
        if institution is None:  # (never counted: no row to add to)
            return
        counts: dict[tuple[str, str, int], list[int]] | None = tx.state.get(COUNTS)
        if counts is None:
            counts = tx.state[COUNTS] = {}
            tx.before_commit[COUNTS] = self._write_counts
        k = (institution, rtype, int(day))
        v = counts.get(k)
        if v is None:
            v = counts[k] = [0] * (1 + len(FLAG_DIMENSIONS))
        v[0] += received
        for i, f in enumerate(flags, start=1):
            v[i] += int(f)

    def _write_counts(self, tx: Any) -> None:
        """The transaction's counter changes, in key order (two transactions lock their rows in the
        same order: no deadlock), consecutive ones of a kind in one statement.  A row gets created
        only by a count that adds a record (as ``INSERT … ON CONFLICT`` did); what only takes away or
        flags updates the row if there is one (as ``UPDATE`` did)."""
        counts: dict[tuple[str, str, int], list[int]] = tx.state.pop(COUNTS, {})
        conn = tx.conn
        m = _mark(conn)
        cols = ", ".join(f"f_{d}" for d in FLAG_DIMENSIONS)
        upd = ", ".join(f"f_{d} = quality_counter.f_{d} + excluded.f_{d}" for d in FLAG_DIMENSIONS)
        add = ", ".join(f"f_{d} = f_{d} + {m}" for d in FLAG_DIMENSIONS)
        upsert = (f"INSERT INTO quality_counter (institution, rtype, day, received, {cols}) "
                  f"VALUES ({', '.join([m] * (4 + len(FLAG_DIMENSIONS)))}) "
                  "ON CONFLICT (institution, rtype, day) DO UPDATE SET "
                  f"received = quality_counter.received + excluded.received, {upd}")
        update = (f"UPDATE quality_counter SET received = received + {m}, {add} "
                  f"WHERE institution = {m} AND rtype = {m} AND day = {m}")
        run: list[tuple[Any, ...]] = []
        kind = upsert
        for (inst, rtype, day), v in sorted(counts.items()):
            if not any(v):
                continue
            sql, args = (upsert, (inst, rtype, day, *v)) if v[0] > 0 else (update, (*v, inst, rtype, day))
            if sql is not kind and run:
                conn.exec_driver_sql(kind, run)
                run = []
            kind = sql
            run.append(args)
        if run:
            conn.exec_driver_sql(kind, run)

    def _inherit(self, conn: Connection, where: str, args: tuple[Any, ...], key: ResKey | None,
                 resolve: bool = True) -> None:
        """Rows without an institution of their own take their encounter's or subject's (twice: an
        encounter may inherit too), a practitioner their PractitionerRole's; what stays unknown is
        marked so.  For an import, the open findings then take their resource's."""
        m = _mark(conn)
        for _ in range(2 if resolve else 0):
            conn.exec_driver_sql(
                "UPDATE quality_resource SET institution = (SELECT q2.institution FROM quality_resource q2 "
                "WHERE q2.rtype = quality_resource.via_type AND q2.rid = quality_resource.via_id) "
                f"WHERE {where} AND institution IS NULL AND via_type IS NOT NULL", args)
        # a practitioner works where their PractitionerRole says
        roles = [] if key is not None and key.rtype != "PractitionerRole" else conn.exec_driver_sql(
            f"SELECT institution, pid FROM quality_resource WHERE {where} AND rtype = 'PractitionerRole' "
            "AND pid IS NOT NULL AND institution IS NOT NULL", args).all()
        if roles:
            conn.exec_driver_sql(f"UPDATE quality_resource SET institution = {m} WHERE rtype = 'Practitioner' "
                                 f"AND rid = {m} AND institution IS NULL", [tuple(r) for r in roles])
        if resolve:
            conn.exec_driver_sql(
                f"UPDATE quality_resource SET institution = {m} WHERE {where} AND institution IS NULL",
                (UNKNOWN, *args))
        if key is None:  # findings written at import without an institution take their resource's
            conn.exec_driver_sql(
                "UPDATE quality_finding SET institution = (SELECT q.institution FROM quality_resource q "
                "WHERE q.rtype = quality_finding.rtype AND q.rid = quality_finding.rid) "
                "WHERE quality_finding.institution IS NULL")

    def _info(self, conn: Connection, keys: set[ResKey] | set[Any]) -> dict[tuple[str, str], Any]:
        out: dict[tuple[str, str], Any] = {}
        items = sorted((k.rtype, k.rid) for k in keys)
        for i in range(0, len(items), 500):
            chunk = items[i:i + 500]
            q = sa.select(QR.c.rtype, QR.c.rid, QR.c.version, QR.c.subject, QR.c.institution, QR.c.day).where(
                S.pairs_in(QR.c.rtype, QR.c.rid, chunk))
            out.update({(r[0], r[1]): r for r in conn.execute(q)})
        return out

    def _cross(self, conn: Connection, where: str, args: tuple[Any, ...],
               fx: Facts | None = None, tx: Any = None, newest: bool = False) -> list[tuple[ResKey, Found]]:
        ck = self.checker
        out: list[tuple[ResKey, Found]] = []
        w = where.replace("seq", "q.seq").replace("rtype =", "q.rtype =").replace("rid =", "q.rid =")
        # the subject's birth, death and sex against the event and restricted codes
        slack = ck.life_slack
        life = fx is None or ((fx.event is not None or fx.xrule is not None)
                              and bool(fx.subject and fx.subject.startswith("Patient/")))
        if not life:
            lives: Any = []
        elif fx is not None and tx is not None:  # one record just written: its subject as this transaction knows it
            lives = []
            pat = self._patient_life(tx, fx.subject.split("/", 1)[1]) if fx.subject else None
            if pat is not None:
                gender, birth, death = pat
                ev = fx.event
                if fx.xrule is not None or _outside_life(ev, birth, death, slack):
                    lives = [(args[0], args[1], ev, fx.xrule, gender, birth, death)]
        else:
            lives = conn.exec_driver_sql(
                "SELECT q.rtype, q.rid, q.event, q.xrule, p.gender, p.birth, p.death FROM quality_resource q "
                "JOIN quality_resource p ON p.rtype = 'Patient' AND p.rid = q.pid "
                f"WHERE {w} AND (q.xrule IS NOT NULL OR q.event < p.birth - {slack} OR q.event > p.death + {slack})",
                args)
        for rtype, rid, event, xrule, gender, birth, death in lives:
            k = ResKey(rtype, rid)
            if rtype in ck.life_events and _outside_life(event, birth, death, slack):
                what = "早于出生" if birth is not None and event < birth - slack else "晚于死亡"
                path = f"{rtype}.{'.'.join(ck.life_events[rtype][0])}"
                out.append((k, Found(f"consistency.{rtype}.event-in-life", path,
                                     f"事件日期 {to_instant(event)[:10]} {what}")))
            if xrule:
                why = ck.sex_age_problem(xrule, gender, birth, event)
                if why:
                    info = ck.sex_rule_by_id[xrule]
                    out.append((k, Found(xrule, f"{rtype}.{info.path}", why)))
        # the same record twice at one institution: the one registered later is the duplicate — of
        # records loaded together, the larger record number (ids compared by length then text); a new
        # record written now is later than every record received before it (whatever its id: a
        # server-assigned id is no record number)
        earlier = "(LENGTH(b.rid) < LENGTH(q.rid) OR (LENGTH(b.rid) = LENGTH(q.rid) AND b.rid < q.rid))"
        if newest:
            earlier = f"(b.received < q.received OR (b.received = q.received AND {earlier}))"
        for rtype, rid, other in [] if fx is not None and fx.ukey is None else conn.exec_driver_sql(
            "SELECT q.rtype, q.rid, MIN(b.rid) FROM quality_resource q JOIN quality_resource b "
            "ON b.rtype = q.rtype AND b.ukey = q.ukey AND b.institution = q.institution AND b.rid <> q.rid "
            f"AND (b.uid IS NULL OR q.uid IS NULL OR b.uid = q.uid) AND {earlier} "
            f"WHERE {w} AND q.ukey IS NOT NULL GROUP BY q.rtype, q.rid", args
        ):
            out.append((ResKey(rtype, rid), Found(f"uniqueness.{rtype}", f"{rtype}.id",
                                                  f"与 {rtype}/{other} 重复（同一机构的同一记录）")))
        out.extend(self._registry(conn, w, args, fx))
        if fx is None:
            out.extend(self._late_registrations(conn, w, args))
        return out

    def _late_registrations(self, conn: Connection, w: str, args: tuple[Any, ...]) -> list[tuple[ResKey, Found]]:
        """Registrations (Patients) that came in the same upload as a late record of their patient at
        the same institution: late too (a registration has no event time of its own)."""
        reg = self.rules.f.timeliness.registrations
        if reg is None or "Patient" not in reg.types:
            return []
        win = int(reg.window_seconds * 1_000_000)
        out: list[tuple[ResKey, Found]] = []
        seen: set[str] = set()
        counted: list[tuple[str, int]] = []  # Patients of an earlier import: their counters were added already
        mark, top = args
        for pid, rtype, rid, pseq, pinst, pday in conn.exec_driver_sql(
            "SELECT p.rid, q.rtype, q.rid, p.seq, p.institution, p.day FROM quality_resource q JOIN quality_resource p "
            "ON p.rtype = 'Patient' AND p.rid = q.pid "
            f"WHERE {w} AND q.f_timeliness = 1 AND q.pid IS NOT NULL AND q.rtype <> 'Patient' "
            f"AND p.institution = q.institution AND p.f_timeliness = 0 "
            f"AND p.received >= q.received - {win} AND p.received <= q.received + {win} ORDER BY p.rid, q.rtype, q.rid",
            args
        ):
            if pid not in seen:
                seen.add(pid)
                out.append((ResKey("Patient", pid), _late_registration(rtype, rid)))
                if not mark < pseq <= top:
                    counted.append((pinst, pday))
        if counted:
            m = _mark(conn)
            conn.exec_driver_sql(f"UPDATE quality_counter SET f_timeliness = f_timeliness + 1 WHERE institution = {m} "
                                 f"AND rtype = 'Patient' AND day = {m}", counted)
        return out

    def _late_registration_rest(self, tx: Any, key: ResKey, fx: Facts, inst: str | None, now: int) -> None:
        """The REST path of :meth:`_late_registrations`: a late record just written, whose Patient came
        within the window before it (e.g. the same transaction Bundle), makes the registration late."""
        conn = tx.conn
        reg = self.rules.f.timeliness.registrations
        if (reg is None or "Patient" not in reg.types or key.rtype == "Patient" or not fx.subject
                or not fx.subject.startswith("Patient/")
                or not any(f.rule.startswith("timeliness.") for f in fx.findings)):
            return
        m = _mark(conn)
        pid = fx.subject.split("/", 1)[1]
        p = conn.exec_driver_sql(
            f"SELECT version, institution, day, received, f_timeliness FROM quality_resource "
            f"WHERE rtype = 'Patient' AND rid = {m}", (pid,)).first()
        if p is None or p[4] or p[1] != inst or abs(int(p[3]) - fx.received) > reg.window_seconds * 1_000_000:
            return
        f = _late_registration(key.rtype, key.rid)
        prior = conn.exec_driver_sql(
            f"SELECT id FROM quality_finding WHERE rtype = 'Patient' AND rid = {m} AND rule = {m}", (pid, f.rule)
        ).first()
        if prior is not None:  # a finding of an earlier life of this id (deleted, created again): reopened
            fid = int(prior[0])
            conn.exec_driver_sql(f"UPDATE quality_finding SET status = 'open', closed = NULL, version = {m}, "
                                 f"message = {m}, institution = {m}, day = {m}, detected = {m}, task = NULL "
                                 f"WHERE id = {m}", (p[0], f.message, inst, p[2], now, fid))
        else:
            fid = conn.exec_driver_sql(
                f"INSERT INTO quality_finding ({', '.join(_QF_COLS)}) VALUES ({', '.join([m] * len(_QF_COLS))}) "
                "RETURNING id",
                ("Patient", pid, p[0], f.rule, "timeliness", f.path, f.message, fx.subject, inst, p[2], "open", now)
            ).scalar_one()
        conn.exec_driver_sql(f"UPDATE quality_resource SET f_timeliness = 1 WHERE rtype = 'Patient' AND rid = {m}",
                             (pid,))
        self._count(tx, inst, "Patient", p[2], 0, (int(d == "timeliness") for d in FLAG_DIMENSIONS))
        if self.tasks and self.rules.assigned(f.rule):
            self._new_task(conn, fid, ResKey("Patient", pid), f, fx.subject, inst, now)

    def _registry(self, conn: Connection, w: str, args: tuple[Any, ...],
                  fx: Facts | None) -> list[tuple[ResKey, Found]]:
        """Patients recorded by institutions against the population registry's record of the same
        resident (same ID number): each field that differs from the registry's is a finding."""
        reg = self.rules.f.consistency.registry
        if reg is None or (fx is not None and fx.ref is None):
            return []
        orgs = self._registry_orgs(conn)
        if not orgs:
            return []
        m = _mark(conn)
        inn = ", ".join([m] * len(orgs))
        cols = "q.rid, r.rid, q.namekey, r.namekey, q.phonekey, r.phonekey, q.addrkey, r.addrkey, r.institution"
        mine = f"q.rtype = 'Patient' AND (q.institution IS NULL OR q.institution NOT IN ({inn}))"
        rows = list(conn.exec_driver_sql(
            f"SELECT {cols} FROM quality_resource q JOIN quality_resource r ON r.idkey = q.idkey "
            f"AND r.rtype = 'Patient' AND r.rid <> q.rid AND r.institution IN ({inn}) "
            f"WHERE {w} AND {mine} AND q.idkey IS NOT NULL ORDER BY q.rid, r.received DESC",
            (*orgs, *args, *orgs)).all())
        if self.same_person is not None:
            # no own valid ID number (missing, mistyped, the mother's): the resident's registry record
            # is the one the master index linked to the same Person
            join, other = self.same_person("q.rid", "sp")
            rows += conn.exec_driver_sql(
                f"SELECT {cols} FROM quality_resource q {join} JOIN quality_resource r ON r.rtype = 'Patient' "
                f"AND r.rid = {other} AND r.institution IN ({inn}) "
                f"WHERE {w} AND {mine} AND q.idkey IS NULL ORDER BY q.rid, r.received DESC",
                (*orgs, *args, *orgs)).all()
        out: list[tuple[ResKey, Found]] = []
        seen: set[str] = set()
        for rid, ref_rid, qn, rn, qp, rp, qa, ra, org in rows:
            if rid in seen:  # one registry record per resident (the latest received)
                continue
            seen.add(rid)
            k = ResKey("Patient", rid)
            for fld, mine, theirs in (("name", qn, rn), ("phone", qp, rp), ("address", qa, ra)):
                if fld in reg.fields and mine is not None and theirs is not None and mine != theirs:
                    out.append((k, Found(registry_id(fld), f"Patient.{REGISTRY_PATHS[fld]}",
                                         f"{REGISTRY_TITLES[fld]}与全员人口库（Organization/{org} 的 "
                                         f"Patient/{ref_rid}）不一致")))
        return out

    # -- REST writes ---------------------------------------------------------------------------------------
    def prepare_write(self, rtype: str, rid: str, res: dict[str, Any]) -> tuple[int, Facts] | None:
        """PREPARE_WRITE (before the write lock): the single-record checks of a resource received now,
        all but the value-set checks (the terminology service may see the write's own transaction:
        :meth:`on_write` adds them).  Used by :meth:`on_write` for a resource new to the engine."""
        if rtype in SKIP:
            return None
        received = now_us()
        return received, self.checker.check(rtype, rid, res, received, codes=False)

    def _facts(self, ev: WriteEvent, received: int, pre: tuple[int, Facts] | None) -> Facts:
        """The single-record checks of the written resource: ``pre``, :meth:`prepare_write`'s (for
        ``received``), completed, else computed here."""
        assert ev.resource is not None
        if pre is None:
            return self.checker.check(ev.resource_type, ev.id, ev.resource, received)
        fx: Facts = pre[1]
        at = fx.codes_at if fx.codes_at is not None else len(fx.findings)
        codes: list[Found] = []
        self.checker.check_codes(ev.resource_type, ev.resource, codes)
        fx.findings = [*fx.findings[:at], *codes, *fx.findings[at:]]
        fx.codes_at = None
        return fx

    def on_write(self, tx: Any, ev: WriteEvent) -> None:
        if ev.resource_type in SKIP:
            return
        # a resource created with a new id (POST: server-assigned) has no row of its own yet
        fresh = ev.method == "POST" and ev.version == 1
        if fresh and ev.resource is not None and ev.resource_type != "PractitionerRole":
            self._on_create(tx, ev)
            return
        self._flush_created(tx)  # what follows may look at the transaction's new records
        conn = tx.conn
        m = _mark(conn)
        key = ResKey(ev.resource_type, ev.id)
        old = None if fresh else conn.exec_driver_sql(
            f"SELECT institution, day, received, {', '.join('f_' + d for d in FLAG_DIMENSIONS)}, seq "
            "FROM quality_resource "
            f"WHERE rtype = {m} AND rid = {m}", (key.rtype, key.rid)).first()
        if old is not None:
            if old[-1] == 0 or old[-1] <= self._watermark(conn):  # counted already: take its contribution out
                self._count(tx, old[0], key.rtype, old[1], -1, (-int(f) for f in old[3:-1]))
            conn.exec_driver_sql(f"DELETE FROM quality_resource WHERE rtype = {m} AND rid = {m}", (key.rtype, key.rid))
        now = now_us()
        if ev.resource is None:  # deleted: its open findings are withdrawn
            self._institutions(tx).pop(f"{key.rtype}/{key.rid}", None)
            if key.rtype == "Patient" and LIVES in tx.state:
                tx.state[LIVES][key.rid] = None
            self._sync(tx, key, ev.version, [], None, now, deleted=True)
            return
        # a record's receipt is when it first came: a corrected resubmission is not late itself (a new
        # one prepared before the transaction was received when it was checked)
        pre = ev.prepared.get(PREPARED) if ev.prepared and old is None else None
        received = int(old[2]) if old is not None else pre[0] if pre is not None else now
        fx = self._facts(ev, received, pre)
        if fx.institution is None and key.rtype != "PractitionerRole":
            # what process() would resolve for this one record (its encounter's or subject's institution
            # as that row has it, else unknown), in one look-up: the row is stored with it
            fx.institution = self._via_institution(tx, fx.via)
        row = self._row(key.rtype, key.rid, ev.version, fx, 0)
        shape, vals, *_ = shaped(row)  # its NULL and 0/1 columns written into the statement, as imported rows'
        insert_shaped(conn, {shape: [(*vals, row[_SEQ])]})
        if key.rtype == "Patient" and LIVES in tx.state:
            tx.state[LIVES][key.rid] = (fx.gender, fx.birth, fx.death)
        cross = self.process(tx, key, fx)
        findings = fx.findings + [f for _k, f in cross]
        # the institution as process() left it: a record naming its own keeps it (only one without is
        # resolved there, through its encounter or subject), and the day never changes
        inst_row = (row[_INSTITUTION], row[_DAY]) if fx.institution is not None else conn.exec_driver_sql(
            f"SELECT institution, day FROM quality_resource WHERE rtype = {m} AND rid = {m}", (key.rtype, key.rid)
        ).first()
        self._institutions(tx)[f"{key.rtype}/{key.rid}"] = inst_row[0]
        if old is not None and old[3 + FLAG_DIMENSIONS.index("timeliness")] and key.rtype == "Patient":
            # a registration found late with its upload stays late: a resubmission is received at the first receipt
            kept = conn.exec_driver_sql(
                f"SELECT rule, path, message FROM quality_finding WHERE rtype = {m} AND rid = {m} AND rule = {m} "
                "AND status = 'open'", (key.rtype, key.rid, "timeliness.Patient")).first()
            if kept is not None and not any(f.rule == kept[0] for f in findings):
                findings.append(Found(kept[0], kept[1], kept[2]))
                conn.exec_driver_sql(f"UPDATE quality_resource SET f_timeliness = 1 WHERE rtype = {m} AND rid = {m}",
                                     (key.rtype, key.rid))
        # counted as its row stands now: its own findings' dimensions, the cross-record ones process() set
        # and a registration's late upload it keeps (counted before that was kept, the day's counter missed
        # it, and the next resubmission took it out all the same)
        dims = {self.dimension(f.rule) for f in findings}
        self._count(tx, inst_row[0], key.rtype, inst_row[1], 1, (int(d in dims) for d in FLAG_DIMENSIONS))
        # a first version (never stored before: no findings yet) has nothing to reconcile
        self._sync(tx, key, ev.version, findings, (fx.subject, inst_row[0], inst_row[1]), now,
                   new=old is None and ev.version == 1)
        self._late_registration_rest(tx, key, fx, inst_row[0], now)

    def _on_create(self, tx: Any, ev: WriteEvent) -> None:
        """:meth:`on_write` for a resource created with a new id (the live feed's writes): kept for
        :meth:`_flush_created`, which checks the transaction's new records together before its commit
        (or before anything else the engine does in it)."""
        pending: list[WriteEvent] | None = tx.state.get(CREATED)
        if pending is None:
            pending = tx.state[CREATED] = []
        if CREATED not in tx.before_commit:
            tx.before_commit[CREATED] = self._flush_created
        pending.append(ev)

    def _flush_created(self, tx: Any) -> None:
        """The new records :meth:`_on_create` kept, in the order written: their rows, in one statement
        per shape, then each one's cross-record checks (only where it has something for them: a
        uniqueness key, a registry comparison, an event or restricted code against its patient's life),
        counters and findings.  A new record has no row, no findings and no counted contribution of its
        own yet: nothing to take out or reconcile."""
        evs: list[WriteEvent] | None = tx.state.pop(CREATED, None)
        tx.before_commit.pop(CREATED, None)
        if not evs:
            return
        now = now_us()
        groups: dict[bytes, list[tuple[Any, ...]]] = {}
        done: list[tuple[WriteEvent, Facts, int]] = []
        institutions = self._institutions(tx)
        lives = tx.state.get(LIVES)
        for ev in evs:
            rtype, rid = ev.resource_type, ev.id
            pre = ev.prepared.get(PREPARED) if ev.prepared else None
            fx = self._facts(ev, pre[0] if pre is not None else now, pre)
            if fx.institution is None:  # its encounter's or subject's, as that row has it, else unknown
                fx.institution = self._via_institution(tx, fx.via)
            institutions[f"{rtype}/{rid}"] = fx.institution
            shape, vals, _subject, _inst, day = shaped(self._row(rtype, rid, 1, fx, 0))
            rows = groups.get(shape)
            if rows is None:
                rows = groups[shape] = []
            rows.append((*vals, 0))
            if rtype == "Patient" and lives is not None:
                lives[rid] = (fx.gender, fx.birth, fx.death)
            done.append((ev, fx, day))
        insert_shaped(tx.conn, groups)
        for ev, fx, day in done:
            rtype, rid = ev.resource_type, ev.id
            inst = fx.institution
            findings = fx.findings
            if fx.ukey is not None or fx.ref is not None or self._life_at_odds(tx, fx):
                cross = self.process(tx, ResKey(rtype, rid), fx, newest=True)
                if cross:
                    findings = findings + [f for _k, f in cross]
            if not findings:
                self._count(tx, inst, rtype, day, 1, _CLEAN)
                continue
            dims = {self.dimension(f.rule) for f in findings}
            self._count(tx, inst, rtype, day, 1, (int(d in dims) for d in FLAG_DIMENSIONS))
            self._sync(tx, ResKey(rtype, rid), 1, findings, (fx.subject, inst, day), now, new=True)
            self._late_registration_rest(tx, ResKey(rtype, rid), fx, inst, now)

    def _life_at_odds(self, tx: Any, fx: Facts) -> bool:
        """Whether a record's event or restricted code may not fit its patient's life (what
        :meth:`_cross` judges for one record): a restricted code, or an event outside the patient's
        life as this transaction knows it (with the slack)."""
        subject = fx.subject
        if not subject or not subject.startswith("Patient/") or (fx.event is None and fx.xrule is None):
            return False
        pat = self._patient_life(tx, subject[8:])
        if pat is None:
            return False
        if fx.xrule is not None:
            return True
        _gender, birth, death = pat
        return _outside_life(fx.event, birth, death, self.checker.life_slack)

    def _patient_life(self, tx: Any, pid: str) -> tuple[str | None, int | None, int | None] | None:
        """A Patient's (gender, birth, death) as its quality row has them, None without a row: looked up
        once a transaction (a Bundle's records share their patient), kept current by :meth:`on_write`."""
        lives: dict[str, Any] | None = tx.state.get(LIVES)
        if lives is None:
            lives = tx.state[LIVES] = {}
        if pid not in lives:
            m = _mark(tx.conn)
            r = tx.conn.exec_driver_sql(f"SELECT gender, birth, death FROM quality_resource WHERE rtype = 'Patient' "
                                        f"AND rid = {m}", (pid,)).first()
            lives[pid] = None if r is None else (r[0], r[1], r[2])
        return lives[pid]

    @staticmethod
    def _institutions(tx: Any) -> dict[str, str | None]:
        """The institutions of the rows this transaction wrote ("Type/id" → institution): a transaction
        Bundle's records point to its encounter and patient, written just before."""
        d: dict[str, str | None] | None = tx.state.get(INSTITUTIONS)
        if d is None:
            d = tx.state[INSTITUTIONS] = {}
        return d

    def _via_institution(self, tx: Any, via: str | None) -> str:
        """The institution a record without one of its own takes from the record it points to (``via``,
        "Encounter/x" or "Patient/x"), as :meth:`_inherit` sets it for one record written: the stored
        row's, else unknown."""
        if via and "/" in via:
            known = self._institutions(tx).get(via)
            if known is not None:
                return known
            conn = tx.conn
            m = _mark(conn)
            rec = conn.exec_driver_sql(f"SELECT institution FROM quality_resource WHERE rtype = {m} AND rid = {m}",
                                       tuple(via.split("/", 1))).first()
            if rec is not None and rec[0] is not None:
                return str(rec[0])
        return UNKNOWN

    def _sync(self, tx: Any, key: ResKey, version: int, findings: list[Found],
              ctx: tuple[str | None, str | None, int] | None, now: int, deleted: bool = False,
              new: bool = False) -> None:
        """Make the stored findings of one resource match ``findings``: open new ones (with a
        Task), resolve the ones a corrected version no longer has (completing their Task)."""
        conn = tx.conn
        m = _mark(conn)
        existing = {} if new else {r[1]: r for r in conn.exec_driver_sql(
            f"SELECT id, rule, status, task FROM quality_finding WHERE rtype = {m} AND rid = {m}",
            (key.rtype, key.rid))}
        wanted = {f.rule: f for f in findings}
        for rule, (fid, _rule, status, task) in existing.items():
            if rule not in wanted and status == "open":
                conn.exec_driver_sql(f"UPDATE quality_finding SET status = {m}, closed = {m}, version = {m} "
                                     f"WHERE id = {m}", ("cancelled" if deleted else "resolved", now, version, fid))
                if task:
                    self._close_task(task, "cancelled" if deleted else "completed")
        if ctx is None:
            return
        subject, inst, day = ctx
        tasks: list[tuple[str, int]] = []  # (Task id, finding id): set in one statement at the end
        for rule, f in wanted.items():
            old = existing.get(rule)
            if old is not None:
                conn.exec_driver_sql(
                    f"UPDATE quality_finding SET status = 'open', closed = NULL, version = {m}, path = {m}, "
                    f"message = {m}, institution = {m} WHERE id = {m}", (version, f.path, f.message, inst, old[0]))
                if old[3] and not self.rules.assigned(rule):
                    # assigned under an earlier Task policy (``tasks`` in the rules), no longer: an open
                    # finding's Task is withdrawn; a closed one's (completed, cancelled) stays as it was
                    if old[2] == "open":
                        self._close_task(old[3], "cancelled")
                    conn.exec_driver_sql(f"UPDATE quality_finding SET task = NULL WHERE id = {m}", (old[0],))
                elif old[2] != "open" and old[3]:
                    self._close_task(old[3], "requested")
                elif not old[3] and self.tasks and self.rules.assigned(rule):
                    self._new_task(conn, old[0], key, f, subject, inst, now, tasks)
                continue
            fid = conn.exec_driver_sql(
                f"INSERT INTO quality_finding ({', '.join(_QF_COLS)}) VALUES ({', '.join([m] * len(_QF_COLS))}) "
                "RETURNING id",
                (key.rtype, key.rid, version, rule, self.dimension(rule), f.path, f.message, subject, inst, day,
                 "open", now)).scalar_one()
            if self.tasks and self.rules.assigned(rule):
                self._new_task(conn, fid, key, f, subject, inst, now, tasks)
        if tasks:
            conn.exec_driver_sql(f"UPDATE quality_finding SET task = {m} WHERE id = {m}", tasks)

    # -- Tasks ------------------------------------------------------------------------------------------------
    def _task(self, fid: int, rtype: str, rid: str, rule: str, message: str, subject: str | None,
              inst: str | None, now: int) -> dict[str, Any]:
        # the finding's id: GET /quality/findings lists it as ``task``
        return task_doc(self.rules, f"qf-{fid}", rtype, rid, rule, message, subject, inst, now)

    def _new_task(self, conn: Connection, fid: int, key: ResKey, f: Found, subject: str | None,
                  inst: str | None, now: int, later: list[tuple[str, int]] | None = None) -> None:
        """Create the finding's Task and record it on the finding (``later``: the caller does, with
        the (Task id, finding id) pairs this appends)."""
        task = self._task(fid, key.rtype, key.rid, f.rule, f.message, subject, inst, now)
        # a new finding's Task id (qf-<finding id>) has never been used: create, no look-up of a current version
        self.store.repository().create("Task", task, rid=task["id"])
        if later is not None:
            later.append((task["id"], fid))
            return
        conn.exec_driver_sql(f"UPDATE quality_finding SET task = {_mark(conn)} WHERE id = {_mark(conn)}",
                             (task["id"], fid))

    def _close_task(self, task_id: str, status: str) -> None:
        repo = self.store.repository()
        try:
            task = repo.read("Task", task_id).resource()
        except Exception:  # the Task was deleted by someone: nothing to close
            return
        task["status"] = status
        task["lastModified"] = to_instant(now_us())
        repo.update("Task", task_id, task)

    def _tasks_bulk(self, tx: Any) -> None:
        """One Task per new finding of a dimension the rules assign (``tasks``), written through the
        importer's fast path."""
        from phip.importer.loader import Importer

        conn = tx.conn
        rows = conn.execute(sa.select(QF.c.id, QF.c.rtype, QF.c.rid, QF.c.rule, QF.c.message, QF.c.subject,
                                      QF.c.institution).where(
            QF.c.task.is_(None), QF.c.status == "open", QF.c.dimension.in_(sorted(self.rules.task_dimensions)))
        ).all()
        if not rows:
            return
        now = now_us()
        made, self._prepared_tasks = self._prepared_tasks, {}
        imp = Importer(self.store, parallel=False)
        imp._worker_seals = True  # the index rows :class:`Prepare` made are keyed with the codec already
        for i in range(0, len(rows), 1000):
            chunk = rows[i:i + 1000]
            docs: list[tuple[int, dict[str, Any]]] = []
            ready: dict[int, Any] = {}
            for r in chunk:
                doc = self._task(r[0], r[1], r[2], r[3], r[4], r[5], r[6], now)
                pre = made.get((r[1], r[2], r[3]))
                if pre is not None:
                    doc, ix = _worker_task(pre, doc)
                    if ix is not None:
                        ready[id(doc)] = ix
                docs.append((0, doc))
            imp._insert_new(tx, docs, ready)
            conn.exec_driver_sql(f"UPDATE quality_finding SET task = {_mark(conn)} WHERE id = {_mark(conn)}",
                                 [(f"qf-{r[0]}", r[0]) for r in chunk])

    # -- reading ---------------------------------------------------------------------------------------------
    def findings(self, *, subject: str | None = None, institution: str | None = None, rule: str | None = None,
                 dimension: str | None = None, status: str | None = None, resource: str | None = None,
                 day_from: int | None = None, day_to: int | None = None, count: int = 100,
                 offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        conds: list[Any] = []
        if subject:
            conds.append(QF.c.subject == subject)
        if institution:
            conds.append(QF.c.institution == institution)
        if rule:
            conds.append(QF.c.rule == rule)
        if dimension:
            conds.append(QF.c.dimension == dimension)
        if status:
            conds.append(QF.c.status == status)
        if resource:
            rt, _, ri = resource.partition("/")
            conds.append(QF.c.rtype == rt)
            if ri:
                conds.append(QF.c.rid == ri)
        if day_from is not None:
            conds.append(QF.c.day >= day_from)
        if day_to is not None:
            conds.append(QF.c.day <= day_to)
        with self.store.read_conn() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(QF).where(*conds)).scalar_one()
            recs = conn.execute(sa.select(QF).where(*conds).order_by(QF.c.id).limit(count).offset(offset)).all()
        out = []
        for r in recs:
            out.append({
                "id": r.id, "rule": r.rule, "dimension": r.dimension, "path": r.path, "message": r.message,
                "status": r.status, "resource": f"{r.rtype}/{r.rid}", "version": r.version,
                "subject": r.subject, "institution": r.institution, "day": _iso_day(r.day),
                "detected": to_instant(r.detected), "closed": to_instant(r.closed) if r.closed else None,
                "task": f"Task/{r.task}" if r.task else None,
            })
        return out, int(total)

    def scorecard(self, *, day_from: int | None = None, day_to: int | None = None,
                  threshold: float | None = None, institution: str | None = None) -> dict[str, Any]:
        """Rates per dimension per institution (1 − failing/received; upload: received against the
        expected daily volume), the threshold and the institutions below it."""
        thr = self.rules.threshold if threshold is None else threshold
        conds: list[Any] = []
        if institution:
            conds.append(QC.c.institution == institution)
        ranged = list(conds)
        if day_from is not None:
            ranged.append(QC.c.day >= day_from)
        if day_to is not None:
            ranged.append(QC.c.day <= day_to)
        per: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        daily: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        with self.store.read_conn() as conn:
            # per institution over the range, summed in SQL
            for r in conn.execute(sa.select(QC.c.institution, sa.func.sum(QC.c.received).label("received"),
                                            *[sa.func.sum(QC.c[f"f_{d}"]).label(d) for d in FLAG_DIMENSIONS])
                                  .where(*ranged).group_by(QC.c.institution)):
                per[r.institution] = {"received": int(r.received or 0),
                                      **{d: int(getattr(r, d) or 0) for d in FLAG_DIMENSIONS}}
            # daily volumes (all days: the baseline looks back before the range)
            for inst, day, n in conn.execute(sa.select(QC.c.institution, QC.c.day, sa.func.sum(QC.c.received))
                                             .where(*conds).group_by(QC.c.institution, QC.c.day)):
                daily[inst][day] = int(n)
        up = self.rules.f.upload
        rows = []
        total: dict[str, int] = defaultdict(int)
        for inst in sorted(per):
            p = per[inst]
            n = p["received"]
            rates = {d: (1 - p[d] / n) if n else None for d in FLAG_DIMENSIONS}
            rates["upload"] = upload_rate(daily[inst], up.baseline_days, up.expected.get(inst), day_from, day_to)
            below = [d for d, v in rates.items() if v is not None and v < thr]
            rows.append({"institution": inst, "received": n, "failing": {d: p[d] for d in FLAG_DIMENSIONS},
                         "rates": rates, "below": below})
            for d in ("received", *FLAG_DIMENSIONS):
                total[d] += p[d]
        n = total["received"]
        overall = {d: (1 - total[d] / n) if n else None for d in FLAG_DIMENSIONS}
        return {
            "rulesVersion": self.rules.version, "threshold": thr,
            "from": _iso_day(day_from) if day_from else None, "to": _iso_day(day_to) if day_to else None,
            "overall": {"received": n, "rates": overall},
            "institutions": rows,
            "below": [r["institution"] for r in rows if r["below"]],
        }

    def recheck(self, types: Iterable[str] | None = None, on_progress: Any = None, chunk: int = 500) -> int:
        """Check the stored resources (of ``types``) again, e.g. after the rules changed: findings a
        record no longer has are resolved, new ones opened; returns how many were checked."""
        from phip.store.repository import content_bytes

        R = S.resources
        conds = [R.c.deleted == sa.false()]
        if types:
            conds.append(R.c.type.in_(list(types)))
        conds.append(R.c.type.notin_(list(SKIP)))
        last, n = 0, 0
        while True:
            with self.store.read_conn() as conn:
                recs = conn.execute(sa.select(R.c.rid, R.c.type, R.c.id, R.c.version, R.c.content)
                                    .where(R.c.rid > last, *conds).order_by(R.c.rid).limit(chunk)).all()
            if not recs:
                return n
            with self.store.write_tx() as tx:
                for r in recs:
                    doc = orjson.loads(content_bytes(r.content) or b"{}")
                    self.on_write(tx, WriteEvent(r.type, r.id, r.version, "PUT", doc))
            n += len(recs)
            last = recs[-1].rid
            if on_progress is not None:
                on_progress(len(recs))


def upload_rate(daily: dict[int, int], baseline_days: int, fixed: float | None, day_from: int | None,
                day_to: int | None) -> float | None:
    """Received against expected volume over the days in range, at most 1: Σ received / Σ expected,
    where a day's expected volume is ``fixed`` or the mean of the previous ``baseline_days`` days
    (days without uploads count as 0; days before a full baseline are not judged)."""
    if not daily:
        return None
    from datetime import date, timedelta

    def d(x: int) -> date:
        return date(x // 10000, x // 100 % 100, x % 100)

    first, last = d(min(daily)), d(max(daily))
    lo = d(day_from) if day_from else first
    hi = d(day_to) if day_to else last
    from collections import deque

    got = exp = 0.0
    window: deque[int] = deque()
    wsum = 0
    cur = first
    while cur <= hi:
        k = cur.year * 10000 + cur.month * 100 + cur.day
        r = daily.get(k, 0)
        e = fixed if fixed is not None else (wsum / len(window) if len(window) >= baseline_days else None)
        if cur >= lo and e:
            got += r
            exp += e
        window.append(r)
        wsum += r
        if len(window) > baseline_days:
            wsum -= window.popleft()
        cur += timedelta(days=1)
    return min(1.0, got / exp) if exp else None


def _sent(sent: str | None) -> int | None:
    """When the sender uploaded it (the ``meta.lastUpdated`` of the file, which the node's own stamp
    has replaced in the stored resource), if it says."""
    return parse_time(sent) if isinstance(sent, str) and len(sent) > 10 else None


def _iso_day(day: int | None) -> str | None:
    if not day:
        return None
    return f"{day // 10000:04d}-{day // 100 % 100:02d}-{day % 100:02d}"


__all__ = ["DAY_US", "QualityService", "ResKey", "upload_rate"]
