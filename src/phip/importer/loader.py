"""Offline bulk import of NDJSON and Bundle files through the store's fast path.

- NDJSON: one resource per line, loaded in batches of ``BATCH`` lines, each batch one
  database transaction: validate, version, index, change feed — the same rules as the
  REST API, with executemany inserts instead of one statement per row.
- Bundle JSON: a ``transaction`` goes through the transaction processor (all or
  nothing: never half-loaded); a ``batch`` entry by entry; other Bundle types
  (collection, searchset, …) load each entry's resource.
- Every rejected line is reported with file, line number and reason; nothing else in
  its batch is lost.
- Parallel: a worker process parses, validates and indexes the batches (and runs the capabilities'
  ``IMPORT_PREPARE`` functions) up to ``AHEAD`` batches in front of the one being written; this
  process writes them strictly in order.  While the worker is starting (a second or so), this
  process prepares the first batches itself, the same way, instead of waiting for it.
- Resumable: how far each file got is committed in the same transaction as its data
  (table ``jobs``, key ``import:<path>:<size>:<mtime>``), so an interrupted import
  continues where it stopped and never loads a line twice.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from phip.core import heap
from phip.core.hooks import ImportedItem, Point, WriteEvent
from phip.core.ids import uuid7
from phip.fhir import definitions as defs
from phip.fhir.datetimes import now_us, to_instant
from phip.fhir.errors import FhirError
from phip.fhir.search.extract import index_resource
from phip.fhir.validation import validate
from phip.store import schema as S
from phip.store.repository import (
    ID_RE,
    VERSION_COLUMNS,
    Repository,
    Store,
    executemany,
    insert_index_rows,
    local_references,
)

BATCH = 1000
#: an NDJSON file at least this big starts the worker process that validates and indexes batches in
#: parallel with the writing; once it runs, every file after it goes through it too
PARALLEL_MIN_BYTES = 64 * 1024
#: batches the worker may have prepared (or be preparing) ahead of the one being written: its lead
#: from cheap records carries it through a file of costly ones (a Patient costs the worker ~380 µs
#: with validation, indexing and the quality checks, an Observation ~140 µs).  With 8, the writer
#: waited for it ~0.5 s in all while loading a 150k-resource region with the quality engine; with
#: 16, ~0.17 s (2026-12-07, one run each).  A batch comes back from the worker as ~1.9 MB of
#: pickle (1.9 KB a resource of that region, quality results included); unpickled it takes more
AHEAD = 16
#: SQLite page cache of the importing connection (KiB); the server's connections keep 256 MiB
IMPORT_CACHE_KIB = 2 * 1024 * 1024


@dataclass(slots=True)
class Rejected:
    file: str
    line: int
    reason: str


@dataclass(slots=True)
class ImportReport:
    loaded: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped_done: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    by_type: dict[str, int] = field(default_factory=dict)
    files: int = 0


def collect(paths: list[Path]) -> list[Path]:
    """The .ndjson and .json files named, or found below folders (sorted, stable)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.suffix in (".ndjson", ".json") and q.is_file()))
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p} does not exist")
    return out


def _job_key(path: Path) -> str:
    st = path.stat()
    return "import:" + uuid.uuid5(uuid.NAMESPACE_URL, f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}").hex


#: the jobs row that says which imported types still await the capabilities' batch phase
OWED_JOB = "import:batch-phase-owed"


class Importer:
    def __init__(self, store: Store, *, on_progress: Callable[[int], None] | None = None,
                 parallel: bool = True) -> None:
        self.store = store
        self.parallel = parallel
        self._executor: ProcessPoolExecutor | None = None
        self.repo: Repository = store.repository()
        self.on_progress = on_progress
        self.report = ImportReport()
        self._pending: deque[tuple[Future[list[Prepared]], Path, str, int, bool]] = deque()
        self._worker_seals = False  # index rows prepared by the worker carry blind values already
        self._preparers: list[Any] = []  # the IMPORT_PREPARE functions the worker runs
        self._started: Future[None] | None = None  # done once the worker process is up
        #: what an earlier run loaded but did not see through its batch phase (it was cut off); read
        #: when first needed (an Importer made only for ``_insert_new`` never reads it)
        self._owed: dict[str, int] | None = None

    # -- checkpoints ----------------------------------------------------------------------------------
    def _done_lines(self, key: str) -> int:
        with self.store.engine.connect() as conn:
            rec = conn.execute(sa.select(S.jobs.c.progress, S.jobs.c.status).where(S.jobs.c.id == key)).first()
        if rec is None:
            return 0
        return -1 if rec.status == "done" else int(rec.progress or 0)

    def _checkpoint(self, conn: sa.Connection, key: str, path: Path, line: int, done: bool) -> None:
        now = now_us()
        vals = {"progress": str(line), "status": "done" if done else "running", "updated": now}
        if conn.execute(S.jobs.update().where(S.jobs.c.id == key).values(**vals)).rowcount == 0:
            conn.execute(S.jobs.insert().values(id=key, kind="import", request=str(path), owner=None, created=now,
                                                **vals))
        # committed with the data: until the batch phase has run, the next run owes it these types
        owed = orjson.dumps(self._loaded(conn)).decode()
        if conn.execute(S.jobs.update().where(S.jobs.c.id == OWED_JOB).values(progress=owed, updated=now)
                        ).rowcount == 0:
            conn.execute(S.jobs.insert().values(id=OWED_JOB, kind="import", status="running",
                                                request="batch phase owed", owner=None, created=now, updated=now,
                                                progress=owed))

    def _loaded(self, conn: sa.Connection | None = None) -> dict[str, int]:
        """This run's loaded resources by type, with what a cut-off earlier run left for the batch phase
        (read through ``conn``, the batch's transaction, when given)."""
        if self._owed is None:
            q = sa.select(S.jobs.c.progress).where(S.jobs.c.id == OWED_JOB)
            if conn is not None:
                rec = conn.execute(q).first()
            else:
                with self.store.engine.connect() as c:
                    rec = c.execute(q).first()
            self._owed = ({str(k): int(v) for k, v in orjson.loads(rec[0]).items()} if rec is not None and rec[0]
                          else {})
        out = dict(self._owed)
        for t, n in self.report.by_type.items():
            out[t] = out.get(t, 0) + n
        return out

    # -- files ------------------------------------------------------------------------------------------
    def import_file(self, path: Path, *, wait: bool = True) -> None:
        """Load one file.  ``wait=False`` (``import_all``) lets its last batches still be in the worker
        when it returns: the next file's batches queue behind them (in order) instead of idling."""
        self.report.files += 1
        key = _job_key(path)
        done = self._done_lines(key)
        if done < 0:
            self.report.skipped_done += sum(1 for _ in path.open("rb"))
            if self.on_progress:
                self.on_progress(path.stat().st_size)
            return
        if path.suffix == ".ndjson":
            self._ndjson(path, key, done)
        else:
            self._drain(0)  # what came before is loaded first
            self._json(path, key)
        if wait:
            self._drain(0)

    def _drain(self, keep: int) -> None:
        """Write the batches the worker has prepared, oldest first, until at most ``keep`` are left."""
        pending = self._pending
        while len(pending) > keep:
            fut, path, key, upto, final = pending.popleft()
            self._load_batch(path, key, [], upto, final, fut.result())

    def _prepare_here(self, lines: list[tuple[int, bytes]]) -> Future[list[Prepared]]:
        """A batch prepared in this process as the worker would have, as a done future."""
        done: Future[list[Prepared]] = Future()
        codec = self.store.codec if self._worker_seals else None
        done.set_result(prepare_lines(lines, self.store.settings.validate, here=(codec, self._preparers)))
        return done

    def _ndjson(self, path: Path, key: str, done: int) -> None:
        # (a BEFORE_WRITE hook that changes a resource makes _insert_new index it again)
        parallel = self.parallel and (self._executor is not None or path.stat().st_size >= PARALLEL_MIN_BYTES)
        batch: list[tuple[int, bytes]] = []
        last = 0

        def flush(lines: list[tuple[int, bytes]], upto: int, final: bool) -> None:
            if not parallel:
                self._drain(0)
                self._load_batch(path, key, lines, upto, final)
                return
            # validation and indexing run in a worker process, up to AHEAD batches in front of this one
            pool = self._pool()
            if self._started is not None and not self._started.done():
                # the worker is still starting (a second or so): this process prepares the first batches
                fut = self._prepare_here(lines)
            else:
                fut = pool.submit(prepare_lines, lines, self.store.settings.validate)
            self._pending.append((fut, path, key, upto, final))
            self._drain(AHEAD)

        unreported = 0  # bytes read and not yet reported (progress is reported once a batch)
        with path.open("rb") as f:
            for lineno, line in enumerate(f, start=1):
                unreported += len(line)
                last = lineno
                if lineno <= done:
                    self.report.skipped_done += 1
                    continue
                if not line.strip():
                    continue
                batch.append((lineno, line))
                if len(batch) >= BATCH:
                    flush(batch, lineno, False)
                    batch = []
                    if self.on_progress:
                        self.on_progress(unreported)
                        unreported = 0
        flush(batch, last, True)
        if self.on_progress and unreported:
            self.on_progress(unreported)

    def _pool(self) -> ProcessPoolExecutor:
        """The worker process.  It also turns sealed index values into blind values when the store's
        codec can be copied to it (else this process does, as for the API)."""
        if self._executor is None:
            codec = self.store.codec
            if codec is not None:
                try:
                    pickle.dumps(codec)
                except Exception:  # a codec that cannot travel stays here
                    codec = None
            preparers = []
            for fn, _on in self.store.hooks._fns[Point.IMPORT_PREPARE]:
                try:
                    pickle.dumps(fn)
                    preparers.append(fn)
                except Exception:  # cannot travel: its consumer computes the value itself
                    pass
            self._executor = ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"),
                                                 initializer=_init_worker, initargs=(codec, preparers))
            self._worker_seals = codec is not None
            self._preparers = preparers
            self._started = self._executor.submit(_started)
        return self._executor

    def import_all(self, files: list[Path], *, defer_indexes: bool | None = None,
                   on_phase: Callable[[str], None] | None = None) -> ImportReport:
        """``phip import``: every file in order, then the batch phase (:meth:`finish`).

        ``defer_indexes`` (default: decided by :func:`should_defer_indexes`): drop the search
        value indexes first and build them once at the end — much faster for a large load into
        a (nearly) empty store.
        """
        defer = should_defer_indexes(self.store, files) if defer_indexes is None else defer_indexes
        with heap.bulk():
            if defer:
                self.store.defer_search_indexes()
            try:
                for f in files:
                    self.import_file(f, wait=False)
                self._drain(0)
                self.store.hooks.fire(Point.IMPORT_LOADED, self.store, dict(self.report.by_type))
            finally:
                self.close()
                if defer:
                    if on_phase:
                        on_phase("building the search indexes")
                    self.store.ensure_indexes()
            if on_phase and self.store.hooks.has(Point.AFTER_IMPORT):
                on_phase("batch phase (master index, quality, …)")
            self.finish()
        return self.report

    def finish(self) -> None:
        """The batch phase: capabilities that left imported resources for later (``on_import=False``)
        catch up now, before ``phip import`` returns — also on what an earlier run loaded and was cut off
        before this phase (recorded with each batch's checkpoint; the hooks get those types too)."""
        loaded = self._loaded()
        self.store.hooks.fire(Point.AFTER_IMPORT, self.store, loaded)
        if loaded:
            self.store.dialect.analyze(self.store.engine)  # fresh planner statistics for the new data
        with self.store.engine.begin() as conn:  # the batch phase is done: nothing is owed any more
            conn.execute(S.jobs.delete().where(S.jobs.c.id == OWED_JOB))
        self._owed = {}

    def close(self) -> None:
        """Stop the worker process (if one was started)."""
        self._pending.clear()  # (after a failure: never written, so never checkpointed — resumable)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
            self._started = None

    def _json(self, path: Path, key: str) -> None:
        raw = path.read_bytes()
        if self.on_progress:
            self.on_progress(len(raw))
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            self.report.rejected.append(Rejected(str(path), 1, f"not valid JSON: {e}"))
            return
        if isinstance(doc, dict) and doc.get("resourceType") == "Bundle" and doc.get("type") in ("transaction",
                                                                                                 "batch"):
            from phip.api.bundles import process

            def no_get(*_a: Any) -> dict[str, Any]:
                raise FhirError(400, "GET entries are not supported by phip import")

            try:
                with self.store.write_tx() as tx:
                    out = process(self.repo, doc, "", no_get)
                    self._checkpoint(tx.conn, key, path, 1, True)
            except FhirError as e:
                self.report.rejected.append(Rejected(str(path), 1, _reason(e)))
                return
            for i, entry in enumerate(out["entry"]):
                status = entry.get("response", {}).get("status", "")
                if status.startswith(("200", "201")):
                    self.report.loaded += 1
                    rt = (entry.get("resource") or {}).get("resourceType", "?")
                    self.report.by_type[rt] = self.report.by_type.get(rt, 0) + 1
                elif not status.startswith("204"):
                    oo = entry.get("response", {}).get("outcome", {})
                    msg = "; ".join(i.get("diagnostics", "") for i in oo.get("issue", []))
                    self.report.rejected.append(Rejected(str(path), 1, f"entry {i}: {status} {msg}"))
            return
        if isinstance(doc, dict) and doc.get("resourceType") == "Bundle":
            items = [(1, orjson.dumps(e["resource"])) for e in doc.get("entry") or []
                     if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
        else:
            items = [(1, raw)]
        self._load_batch(path, key, items, 1, True)

    # -- the fast path ------------------------------------------------------------------------------------
    def _load_batch(self, path: Path, key: str, batch: list[tuple[int, bytes]], last_line: int,
                    final: bool, prepared: list[Prepared] | None = None) -> None:
        fname = str(path)
        good: list[tuple[int, dict[str, Any]]] = []
        indexes: dict[int, Any] = {}  # id(resource) -> its index rows, when prepared by the worker
        extras: dict[int, dict[str, Any]] = {}  # id(resource) -> IMPORT_PREPARE results from the worker
        for lineno, reason, line, ix, extra in prepared if prepared is not None else prepare_lines(batch, None):
            res: Any = orjson.loads(line) if reason is None else None  # a resource once it has no reason
            if reason is None and prepared is None:
                reason = check_resource(res, self.store.settings.validate)
            if reason:
                self.report.rejected.append(Rejected(fname, lineno, reason))
                continue
            if ix is not None:
                indexes[id(res)] = ix
            if extra:
                extras[id(res)] = extra
            good.append((lineno, res))
        with self.store.write_tx() as tx:
            conn = tx.conn
            if self.store.dialect.name == "sqlite":
                # a large load inserts all over big index B-trees: give this connection a page cache to match
                conn.exec_driver_sql(f"PRAGMA cache_size=-{IMPORT_CACHE_KIB}")
            keys = [(r["resourceType"], r["id"]) for _, r in good if r.get("id")]
            existing = self.store.dialect.existing_keys(conn, keys)
            fresh: list[tuple[int, dict[str, Any]]] = []
            seen: set[tuple[str, str]] = set()
            for lineno, res in good:
                k2 = (res["resourceType"], res.get("id") or "")
                if k2 in existing or k2 in seen:
                    try:
                        result = self.repo.update(k2[0], k2[1], res) if k2[1] else None
                    except FhirError as e:
                        self.report.rejected.append(Rejected(fname, lineno, _reason(e)))
                        continue
                    if result is not None and result.status == 200 and result.row.version > 1:
                        self.report.updated += 1
                    else:
                        self.report.unchanged += 1
                    continue
                if k2[1]:
                    seen.add(k2)
                fresh.append((lineno, res))
            self._insert_new(tx, fresh, indexes, extras)
            self._checkpoint(conn, key, path, last_line, final)

    def _insert_new(self, tx: Any, fresh: list[tuple[int, dict[str, Any]]],
                    indexes: dict[int, Any] | None = None, extras: dict[int, dict[str, Any]] | None = None) -> None:
        if not fresh:
            return
        conn = tx.conn
        now = now_us()
        instant = to_instant(now)
        docs: list[tuple[str, str, dict[str, Any], str]] = []
        pre: dict[int, Any] = {}  # position in docs -> prepared index rows
        pre_x: dict[int, dict[str, Any]] = {}  # position in docs -> IMPORT_PREPARE results
        sent: list[Any] = []  # the sender's meta.lastUpdated of each doc
        hooks_before = self.store.hooks.has(Point.BEFORE_WRITE, importing=True)
        for _lineno, res in fresh:
            if indexes and id(res) in indexes:
                pre[len(docs)] = indexes[id(res)]
            if extras and id(res) in extras:
                pre_x[len(docs)] = extras[id(res)]
            rtype = res["resourceType"]
            rid = res.get("id") or uuid7()
            meta = dict(res.get("meta") or {})
            sent.append(meta.get("lastUpdated"))
            meta["versionId"] = "1"
            meta["lastUpdated"] = instant
            doc: dict[str, Any] = {"resourceType": rtype, "id": rid, "meta": meta}
            for k, v in res.items():
                if k not in doc:
                    doc[k] = v
            text: bytes | None = None  # doc as JSON, once: what both tables store unless sealed
            if hooks_before:
                n = len(docs)
                before = orjson.dumps(doc) if n in pre or n in pre_x else None
                self.store.hooks.fire(Point.BEFORE_WRITE, tx, rtype, doc, "POST", importing=True)
                if before is not None:
                    text = orjson.dumps(doc)
                    if text != before:
                        # a hook changed it after the worker prepared it: index it (and the rest) anew
                        pre.pop(n, None)
                        pre_x.pop(n, None)
            sealed = self.store.codec.seal(rtype, doc) if self.store.codec is not None else None
            if sealed is not None:
                text = orjson.dumps(sealed)
            elif text is None:
                text = orjson.dumps(doc)
            # JSON text on every backend (a JSONB column takes it as it is, through COPY or INSERT)
            docs.append((rtype, rid, doc, text.decode()))
            if self.store.settings.reference_integrity == "strict":
                tx.ref_checks.extend((f"{rtype}{e}", t, i) for e, t, i in local_references(doc))
        rids = self.store.dialect.reserve_rids(conn, len(docs))
        contents = [s for _t, _i, _d, s in docs]
        executemany(conn, S.resources, ("rid", "type", "id", "version", "last_updated", "deleted", "content"),
                    [(rid_, t, i, 1, now, False, c)
                     for rid_, (t, i, _d, _s), c in zip(rids, docs, contents, strict=True)])
        executemany(conn, S.resource_versions, VERSION_COLUMNS,
                    [(rid_, 1, t, i, now, False, "POST", c)
                     for rid_, (t, i, _d, _s), c in zip(rids, docs, contents, strict=True)])
        insert_index_rows(conn, {rid_: (t, d) for rid_, (t, _i, d, _s) in zip(rids, docs, strict=True)},
                          {rids[k]: ix for k, ix in pre.items()}, codec=self.store.codec,
                          prepared_sealed=self._worker_seals)
        tx.changes.extend((rid_, t, i, 1, False, now) for rid_, (t, i, _d, _s) in zip(rids, docs, strict=True))
        if self.store.hooks.has(Point.AFTER_WRITE, importing=True):
            for t, i, d, _s in docs:
                self.store.hooks.fire(Point.AFTER_WRITE, tx, WriteEvent(t, i, 1, "POST", d), importing=True)
        if self.store.hooks.has(Point.IMPORT_BATCH):
            items = [ImportedItem(rid_, t, i, d, s if isinstance(s, str) else None, pre_x.get(k))
                     for k, (rid_, (t, i, d, _s), s) in enumerate(zip(rids, docs, sent, strict=True))]
            self.store.hooks.fire(Point.IMPORT_BATCH, tx, items)
        self.report.loaded += len(docs)
        for t, _i, _d, _s in docs:
            self.report.by_type[t] = self.report.by_type.get(t, 0) + 1


#: loads at least this large (estimated resources) into a store holding fewer build their search
#: indexes at the end instead of row by row: ``store.dialect.defer_indexes_min`` (200k on SQLite)
#: NDJSON bytes a resource, for the estimate (the synthetic region averages 700–900)
BYTES_PER_RESOURCE = 800


def should_defer_indexes(store: Store, files: list[Path]) -> bool:
    """True for a large load into a store smaller than the load (rebuilding beats updating)."""
    incoming = sum(f.stat().st_size for f in files if f.suffix == ".ndjson") // BYTES_PER_RESOURCE
    if incoming < store.dialect.defer_indexes_min:
        return False
    with store.engine.connect() as conn:
        existing = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(S.resources.c.rid), 0))).scalar_one())
    return incoming > existing


#: (line number, rejection reason or None, the line, its index rows or None, IMPORT_PREPARE results or None)
Prepared = tuple[int, str | None, bytes, Any, "dict[str, Any] | None"]


def check_resource(res: Any, validate_it: bool) -> str | None:
    """Why a parsed line cannot be loaded, or None."""
    if not isinstance(res, dict):
        return "a line must hold one JSON object (a FHIR resource)"
    rtype = res.get("resourceType")
    if rtype is None:
        return "no resourceType: not a FHIR resource"
    if rtype not in defs.resource_types():
        return f"unknown resourceType {rtype!r}"
    rid = res.get("id")
    if rid is not None and (not isinstance(rid, str) or not ID_RE.match(rid)):
        return f"{rtype}.id {rid!r} is not a valid id"
    if validate_it:
        errors = [i for i in validate(res) if i.severity in ("error", "fatal")]
        if errors:
            return "; ".join(f"{i.expression}: {i.diagnostics}" for i in errors[:5])
    return None


def prepare_lines(lines: list[tuple[int, bytes]], validate_it: bool | None, *,
                  here: tuple[Any, list[Any]] | None = None) -> list[Prepared]:
    """Parse, check and index a batch of lines (run in the worker process on the parallel path).

    ``validate_it`` None: only parse (the caller checks and indexes itself).  ``here``: run in the
    writing process in the worker's stead — with these (codec, IMPORT_PREPARE functions) instead of
    the worker's (see :meth:`Importer._prepare_here`).
    """
    codec, preparers = here if here is not None else (_WORKER_CODEC, _WORKER_PREPARERS)
    out: list[Prepared] = []
    for lineno, line in lines:
        try:
            res = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            out.append((lineno, f"not valid JSON: {e}", line, None, None))
            continue
        if validate_it is None:
            out.append((lineno, None, line, None, None))
            continue
        reason = check_resource(res, validate_it)
        if reason:
            out.append((lineno, reason, line, None, None))
            continue
        ix = index_resource(res)
        if codec is not None:
            codec.index(res["resourceType"], res, ix)
        extra = {getattr(fn, "name", None) or fn.__qualname__: fn(res) for fn in preparers} or None
        out.append((lineno, None, line, ix, extra))
    return out


#: the store's codec, in the worker process (see :meth:`Importer._pool`)
_WORKER_CODEC: Any = None
#: the IMPORT_PREPARE functions, in the worker process
_WORKER_PREPARERS: list[Any] = []


def _init_worker(codec: Any, preparers: list[Any] | None = None) -> None:
    global _WORKER_CODEC, _WORKER_PREPARERS
    _WORKER_CODEC = codec
    _WORKER_PREPARERS = list(preparers or ())
    heap.settle(heap.BULK_THRESHOLD)  # a worker process does bulk work only


def _started() -> None:
    """The worker's first call: its result says the process is up (spawned, modules imported)."""


def _reason(e: FhirError) -> str:
    return "; ".join(f"{i.expression + ': ' if i.expression else ''}{i.diagnostics}" for i in e.issues[:5])
