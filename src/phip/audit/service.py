"""The audit service: captures accesses on the hot path, writes them to the chain in batches.

Durability trade-off (docs/audit.md): an access is appended to an in-process buffer (a list
append, ~1 µs) and to the process's journal file (one ``write``, a few µs; :mod:`phip.audit.journal`),
and the buffer is written to the chain by a background thread every ``flush_interval_ms``
(default 200 ms), when it holds ``max_buffer`` records, when anything reads the trail, and at
shutdown.  A process that dies (even by SIGKILL) leaves its journal: the next start writes those
records to the chain.  Only a power cut can lose what the operating system had not yet written to
disk; the chain itself is never left inconsistent (each batch is one transaction).
``flush_interval_ms = 0`` writes every access synchronously instead (slower reads).
"""

from __future__ import annotations

import atexit
import logging
import re
import threading
import tomllib
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from phip.audit import chain, journal
from phip.audit.events import Pending
from phip.audit.journal import Journal
from phip.core.access import node_work
from phip.core.hooks import WriteEvent
from phip.fhir.datetimes import now_us

log = logging.getLogger("phip.audit")

#: resource types that are personal data in themselves (audited even without a patient link)
PERSON_TYPES = frozenset({"Patient", "Person", "RelatedPerson", "Practitioner"})
_SUBJECT = re.compile(
    rb'"(?:subject|patient|beneficiary|individual|who)"\s*:\s*\{[^{}]*?"reference"\s*:\s*"Patient/([A-Za-z0-9\-.]{1,64})"')
_ANY_PATIENT = re.compile(rb'"reference"\s*:\s*"Patient/([A-Za-z0-9\-.]{1,64})"')
_METHOD_KIND = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def patient_of(rtype: str, rid: str, content: bytes | None) -> str | None:
    """The Patient a stored resource is about (its id), read from its JSON without parsing it."""
    if rtype == "Patient":
        return rid
    if not content:
        return None
    m = _SUBJECT.search(content) or _ANY_PATIENT.search(content)
    return m.group(1).decode() if m else None


@dataclass(slots=True)
class RequestAudit:
    """What the audit knows about the HTTP request in progress (set by :class:`AuditMiddleware`)."""

    method: str
    path: str
    query: str
    source: str | None
    operation: str | None = None  # "$merge", "$export"… when the path names one
    seen: set[tuple[str, str | None, str | None]] = field(default_factory=set)
    writes: list[Pending] = field(default_factory=list)  # reads and writes, held until the response status is known
    recorded: int = 0
    depth: int = 0  # AFTER_WRITE nesting (a capability's hook writing in turn)


request_audit: ContextVar[RequestAudit | None] = ContextVar("phip_request_audit", default=None)


def principal_fields(p: Any) -> dict[str, Any]:
    """who/role/org/person/purpose/reason of the caller (whatever the principal object offers)."""
    if p is None:
        return {"who": None, "role": None, "org": None, "person": None, "purpose": None, "reason": None}
    claims = getattr(p, "claims", None) or {}
    purpose = (getattr(p, "purpose", None) or getattr(p, "purpose_of_use", None) or claims.get("purpose")
               or claims.get("purpose_of_use"))
    if isinstance(purpose, list | tuple):
        purpose = purpose[0] if purpose else None
    reason = getattr(p, "break_glass", None) or getattr(p, "reason", None) or claims.get("break_glass")
    return {"who": getattr(p, "sub", None), "role": getattr(p, "role", None), "org": getattr(p, "org", None),
            "person": getattr(p, "person", None), "purpose": str(purpose) if purpose else None,
            "reason": str(reason)[:200] if reason else None}


def load_settings(data: Path) -> dict[str, Any]:
    p = Path(data) / "phip.toml"
    try:
        return dict(tomllib.loads(p.read_text()).get("audit", {}))
    except (OSError, tomllib.TOMLDecodeError):
        return {}


class AuditService:
    def __init__(self, node: Any) -> None:
        from phip.security import keys

        self.node = node
        self.engine = node.store.engine
        self.node_name = f"{node.config.name} ({node.config.level} {node.config.region})"
        found = keys.load_all(node.data)
        self.key = found[0] if found else None
        self.public_keys = {k.kid: k.public for k in found}
        cfg = load_settings(node.data)
        self.flush_interval = float(cfg.get("flush_interval_ms", 200)) / 1000
        self.max_buffer = int(cfg.get("max_buffer", 2000))
        self.checkpoint_every = int(cfg.get("checkpoint_every", 1000))
        self.checkpoint_seconds = float(cfg.get("checkpoint_seconds", 60))
        self._buf: list[Pending] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        #: the journal of the buffered records (opened with the first one; docs/audit.md)
        self.journal_dir = Path(node.data) / "audit"
        self._journal: Journal | None = None
        self._retired: list[tuple[Path, int]] = []  # journal files whose records are not yet in the chain
        try:
            self.recover()
        except Exception:  # the database is away: the journals stay for the next start
            log.exception("audit: could not recover the journals of stopped processes")

    def recover(self) -> int:
        """Write the records of processes that died before their buffer reached the chain."""
        n = 0
        for path, recs in journal.orphans(self.journal_dir):
            if recs:
                done = self._in_chain(recs)
                todo = [r for r in recs if journal.key(r) not in done]
                if todo:
                    with self.node.store.queued_write():
                        chain.append(self.engine, todo, self.node_name, self.key,
                                     checkpoint_every=self.checkpoint_every, checkpoint_seconds=self.checkpoint_seconds)
                    n += len(todo)
                    log.warning("audit: %d records of a stopped process recovered from %s", len(todo), path.name)
            path.unlink()
        return n

    def _in_chain(self, recs: list[Pending]) -> set[tuple[Any, ...]]:
        from phip.audit.schema import audit_events as A

        times = sorted({r.recorded for r in recs})
        out: set[tuple[Any, ...]] = set()
        with self.engine.connect() as conn:
            for i in range(0, len(times), 500):
                out.update(tuple(r) for r in conn.execute(sa.select(A.c.recorded, A.c.kind, A.c.who, A.c.patient)
                                                          .where(A.c.recorded.in_(times[i:i + 500]))))
        return out

    # -- recording --------------------------------------------------------------------------------
    def record(self, p: Pending) -> None:
        if self.flush_interval <= 0 or self._stop:  # synchronous (configured so, or after close)
            with self._lock:
                self._buf.append(p)
            self.flush()
            return
        with self._lock:
            self._buf.append(p)
            if self._journal is None:
                self._journal = Journal(self.journal_dir)
            self._journal.write(p)  # reaches the OS before the response is sent
            n = len(self._buf)
            if self._thread is None and not self._stop:
                self._thread = threading.Thread(target=self._run, name="phip-audit-flush", daemon=True)
                self._thread.start()
                atexit.register(self.close)  # `phip serve` stopping: write what is buffered
        if n >= self.max_buffer:
            self._wake.set()

    def event(self, kind: str, *, outcome: int = 0, patient: str | None = None, what: str | None = None,
              query: str | None = None, principal: Any = None, source: str | None = None,
              detail: str | None = None) -> None:
        """Record one event (for callers outside the request hooks: the CLI, login, other capabilities)."""
        from phip.api.context import current_principal

        ctx = request_audit.get()
        pf = principal_fields(principal if principal is not None else current_principal.get())
        if ctx is not None:
            ctx.recorded += 1
            source = source or ctx.source
        self.record(Pending(now_us(), kind, outcome, patient, what, query, source=source, detail=detail, **pf))

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # the database is away: keep the records, try again next round
                log.exception("audit: could not write %d records; retrying", len(self._buf))

    def flush(self) -> int:
        """Write the buffered records to the chain now; returns how many."""
        with self._flush_lock:
            with self._lock:
                batch, self._buf = self._buf, []
                # the journal file holding exactly this batch is retired once the chain has it
                old = self._journal.rotate() if batch and self._journal is not None else None
            if not batch:
                return 0
            try:
                with self.node.store.queued_write():  # in the writers' queue, not SQLite's busy handler
                    chain.append(self.engine, batch, self.node_name, self.key,
                                 checkpoint_every=self.checkpoint_every, checkpoint_seconds=self.checkpoint_seconds)
            except Exception:
                with self._lock:
                    self._buf[:0] = batch
                    if old is not None:
                        self._retired.append(old)
                raise
            for f in [*self._retired, *([old] if old is not None else [])]:
                Journal.retire(f)
            self._retired = []
            return len(batch)

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        t = self._thread
        if t is not None:
            t.join(timeout=5)
            atexit.unregister(self.close)
        try:
            self.flush()
        except Exception:
            log.exception("audit: could not write %d records at shutdown (kept in the journal)", len(self._buf))
            return
        with self._lock:
            if self._journal is not None and not self._buf:
                self._journal.close()  # empty: everything is in the chain
                self._journal = None

    # -- hooks --------------------------------------------------------------------------------------
    def on_read(self, interaction: str, rows: list[Any]) -> None:
        """AFTER_READ: one event per resource read, one per patient in a search result."""
        ctx = request_audit.get()
        if ctx is None or getattr(self.node.store._local, "tx", None) is not None:
            # not an HTTP request (the CLI), or the node's own look-ups (a capability's hook, the read
            # of a patch or of a conditional write, inside the write transaction): not the caller's access
            return
        if ctx.operation and interaction in ("read", "vread"):
            return  # the operation's own event (or the middleware's) stands for the request
        from phip.api.context import current_principal

        pf: dict[str, Any] | None = None
        single = interaction in ("read", "vread")
        now = now_us()
        for row in rows:
            rtype, rid = row.type, row.id
            patient = patient_of(rtype, rid, row.content)
            if patient is None and rtype not in PERSON_TYPES:
                continue
            what = f"{rtype}/{rid}" if single else None
            key = (interaction, patient, what)
            if key in ctx.seen:
                continue
            ctx.seen.add(key)
            if pf is None:
                pf = principal_fields(current_principal.get())
            query = None if single else (f"{ctx.path}?{ctx.query}" if ctx.query else ctx.path)
            if patient is None and not single:
                what = f"{rtype}/{rid}"
            kind = "break-glass" if pf["purpose"] == "ETREAT" and single else interaction
            # held until the response status is known: a read the security capability then denies is a failure
            ctx.writes.append(Pending(now, kind, 0, patient, what, query, source=ctx.source, **pf))

    def on_write(self, tx: Any, ev: WriteEvent) -> None:
        """AFTER_WRITE: held in the request until its outcome is known (a rolled-back write is a failure)."""
        ctx = request_audit.get()
        if ctx is None:
            return
        ctx.depth += 1  # until after_others: writes made by the other hooks of this write are nested
        if ctx.depth > 1 or node_work.get():  # (and writes the node makes before a commit are its own)
            return
        from phip.api.context import current_principal

        content = None
        if ev.resource is not None:
            import orjson

            content = orjson.dumps(ev.resource)
        elif ev.resource_type != "Patient":
            content = _previous_content(tx, ev.resource_type, ev.id, ev.version)
        patient = patient_of(ev.resource_type, ev.id, content)
        if patient is None and ev.resource_type not in PERSON_TYPES:
            return
        kind = "merge" if ctx.operation == "$merge" else _METHOD_KIND.get(ev.method, "update")
        ctx.writes.append(Pending(now_us(), kind, 0, patient, f"{ev.resource_type}/{ev.id}", None,
                                  source=ctx.source, **principal_fields(current_principal.get())))

    def on_auth(self, ev: Any) -> None:
        """AUTHENTICATE (the token endpoint, a rejected bearer token): a login or a failed one."""
        ok = getattr(ev, "outcome", "") == "success"
        ctx = request_audit.get()
        if ctx is not None:
            ctx.recorded += 1
        detail = f"{getattr(ev, 'method', '?')}" + (f": {ev.reason}" if getattr(ev, "reason", None) else "")
        self.record(Pending(now_us(), "login" if ok else "auth-failure", 0 if ok else 4, None, None, None,
                            getattr(ev, "who", None), getattr(ev, "role", None), getattr(ev, "org", None), None,
                            None, None, getattr(ev, "source", None) or (ctx.source if ctx else None),
                            detail=detail[:500]))

    def after_others(self, _tx: Any, _ev: WriteEvent) -> None:
        ctx = request_audit.get()
        if ctx is not None and ctx.depth > 0:
            ctx.depth -= 1

    def on_import(self, _store: Any, loaded: dict[str, int]) -> None:
        total = sum(loaded.values())
        if total:
            self.event("import", query="phip import: " + ", ".join(f"{t} {n}" for t, n in sorted(loaded.items())),
                       detail=f"{total} resources loaded")


def _previous_content(tx: Any, rtype: str, rid: str, version: int) -> bytes | None:
    import sqlalchemy as sa

    from phip.store import schema as S
    from phip.store.repository import content_bytes

    tx.flush_pending()
    V = S.resource_versions
    rec = tx.conn.execute(sa.select(V.c.content).where(V.c.type == rtype, V.c.id == rid,
                                                       V.c.version == version - 1)).first()
    return content_bytes(rec.content) if rec is not None else None
