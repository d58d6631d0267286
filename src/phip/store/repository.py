"""The FHIR repository: the one place that reads and writes resources.

Every route, operation, importer and capability goes through :class:`Repository`
(nothing else writes SQL against the resource tables).  It validates, versions,
indexes, keeps history and the change feed, and runs the hook points.  A
:class:`Store` holds the engine; a Repository is cheap and made per request.

Primitives (after Medplum's ``FhirRepository``): create, read, vread, update, patch,
delete, history, search, and ``transaction()`` which groups operations in one
database transaction; conditional create/update/delete are written once on top.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
import time
from collections import namedtuple
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol, cast

import jsonpatch
import orjson
import sqlalchemy as sa
from sqlalchemy import Connection

from phip.core.access import AccessScope, as_node_work, as_system
from phip.core.hooks import Hooks, Point, WriteEvent
from phip.core.ids import uuid7
from phip.fhir import definitions as defs
from phip.fhir.datetimes import date_range, now_us, to_instant
from phip.fhir.errors import FhirError, Issue, bad_request, conflict, gone, not_found
from phip.fhir.search.extract import index_resource, storable
from phip.fhir.search.query import Parser, SearchRequest
from phip.fhir.validation import validate
from phip.store import schema as S
from phip.store.db import Dialect, WriterLock, is_timeout, make_engine, migrate
from phip.store.search import SearchCompiler, after_cursor, decode_cursor, encode_cursor, paged

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
LOCAL_REF = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$")


@dataclass(slots=True)
class Settings:
    validate: bool = True
    reference_integrity: str = "lenient"  # strict | lenient
    default_count: int = 50
    max_count: int = 1000
    base_url: str = ""
    query_timeout_ms: int = 30000


@dataclass(slots=True)
class Row:
    """A stored version of a resource; ``content`` is its JSON bytes (None when deleted)."""

    rid: int
    type: str
    id: str
    version: int
    last_updated: int
    deleted: bool
    content: bytes | None
    method: str | None = None

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    @property
    def last_modified(self) -> str:
        return to_instant(self.last_updated)

    def resource(self) -> dict[str, Any]:
        assert self.content is not None
        out: dict[str, Any] = orjson.loads(self.content)
        return out


@dataclass(slots=True)
class WriteResult:
    row: Row
    status: int  # 201 created, 200 updated / found
    issues: list[Issue] = field(default_factory=list)


@dataclass(slots=True)
class Checked:
    """The outcome of ``Repository._validate(rtype, resource)`` for a resource, computed before its
    write (a transaction Bundle validates its entries before it takes the write lock): the issues,
    or the error it raised."""

    issues: list[Issue]
    error: FhirError | None = None
    #: the resource's JSON when it was checked, and its search index rows (:data:`StoredRows`, or
    #: ``index_resource``'s; with the store's codec applied: sealed values made blind): reused by the
    #: write when the BEFORE_WRITE hooks left the resource as it was
    raw: bytes | None = None
    index: Any = None
    #: the PREPARE_WRITE hooks' results (``Hooks.prepare``) for the resource written as ``prepared_id``
    prepared: dict[str, Any] | None = None
    prepared_id: str | None = None

    def outcome(self) -> list[Issue]:
        if self.error is not None:
            raise self.error
        return list(self.issues)


@dataclass(slots=True)
class SearchResult:
    rows: list[Row]
    included: list[Row]
    next_cursor: str | None
    total: int | None


def content_bytes(value: Any) -> bytes | None:
    """Stored content as JSON bytes (PostgreSQL hands back JSONB as a dict)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    ordered = {"resourceType": value.get("resourceType"), "id": value.get("id"), "meta": value.get("meta")}
    ordered.update(value)
    return orjson.dumps({k: v for k, v in ordered.items() if v is not None})


def parse_etag(value: str | None) -> int | None:
    if value is None:
        return None
    v = value.strip()
    if v.startswith("W/"):
        v = v[2:]
    v = v.strip('"')
    try:
        return int(v)
    except ValueError:
        raise bad_request(f"If-Match must be a version ETag like W/\"3\", not {value!r}") from None


class ContentCodec(Protocol):
    """Seals resources before they are stored and opens them after they are loaded (the
    privacy capability's encryption at rest), and turns the index and query values of sealed
    fields into keyed blind-index values so exact searches still match."""

    def seal(self, rtype: str, doc: dict[str, Any]) -> dict[str, Any] | None:
        """The document to store (a sealed copy), or None to store ``doc`` as it is."""

    def open(self, content: bytes) -> bytes:
        """Stored JSON bytes → plaintext JSON bytes (unchanged when nothing is sealed)."""

    def index(self, rtype: str, doc: dict[str, Any], ix: Any) -> None:
        """Replace, in place, the index rows of ``doc`` (plaintext) that carry sealed values."""

    def query(self, req: SearchRequest) -> None:
        """Add, in place, the blind-index form of each value a sealed field could match."""

    def encrypt(self, value: str, aad: bytes) -> str:
        """A text sealed with the current data key (for a capability's own tables: see
        :attr:`Store.sealed_columns`)."""

    def decrypt(self, value: str, aad: bytes) -> str:
        """The plaintext of a value :meth:`encrypt` gave."""

    def blind(self, value: str) -> str:
        """The keyed blind-index form of a value (equal values, equal results)."""


@dataclass(frozen=True, slots=True)
class SealedColumn:
    """A text column of a capability's own table that holds :meth:`ContentCodec.encrypt` values
    (sealed with ``aad = f"{context}/{key}"``), so that key rotation re-seals it too."""

    table: Any  # sqlalchemy Table
    key: str  # the column that identifies the row (part of the aad)
    value: str
    context: str
    #: called (conn, codec, [(key, plaintext)]) after values stored in clear were sealed for the first
    #: time (a node that turned encryption on later), to bring what is derived from them in line
    after_first_seal: Callable[[Connection, Any, list[tuple[str, str]]], None] | None = None


class Store:
    """The database behind a node: engine, dialect, search compiler, hooks."""

    def __init__(self, url: str, settings: Settings | None = None, *, pool_size: int = 8) -> None:
        self.url = url
        self.settings = settings or Settings()
        self.engine, self.dialect = make_engine(url, pool_size=pool_size,
                                                query_timeout_ms=self.settings.query_timeout_ms)
        self.search_compiler = SearchCompiler(self.dialect.name, self.settings.base_url)
        self.hooks = Hooks()
        #: set by the privacy capability when encryption at rest is on
        self.codec: ContentCodec | None = None
        #: capabilities' columns sealed with the codec (registered when they install)
        self.sealed_columns: list[SealedColumn] = []
        #: the access policy (``phip.core.access.AccessPolicy``) installed by the security capability
        self.access: Any = None
        self._local = threading.local()
        self._write_lock = WriterLock(self.engine.url.database) if self.dialect.name == "sqlite" else None

    def migrate(self) -> None:
        migrate(self.engine)
        self.ensure_indexes()  # a bulk load cut off while its search indexes were deferred

    def defer_search_indexes(self) -> list[str]:
        """Drop the value indexes of the search tables before a bulk load into a (nearly) empty store.

        Rows then go in at the end of each table instead of at random places all over big
        B-trees; :meth:`ensure_indexes` builds the indexes again, sorted, once at the end (and
        at the next start if the load is cut off).  Searches stay correct meanwhile, only slower.
        """
        names = list(S.DEFERRABLE_INDEXES)
        with self.engine.begin() as conn:
            for n in names:
                conn.exec_driver_sql(f"DROP INDEX IF EXISTS {n}")
        return names

    def ensure_indexes(self, progress: Callable[[str], None] | None = None) -> int:
        """Create every index the schema declares that the database lacks; returns how many."""
        made = 0
        sql = ("SELECT name FROM sqlite_master WHERE type = 'index'" if self.dialect.name == "sqlite"
               else "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")
        with self.engine.connect() as conn:
            have = {r[0] for r in self.dialect.unbounded(conn).exec_driver_sql(sql)}
        for table in S.metadata.sorted_tables:
            for index in table.indexes:
                if index.name in have:
                    continue
                if progress:
                    progress(str(index.name))
                with self.dialect.index_build(self.engine) as conn:
                    index.create(conn)
                made += 1
        return made

    def repository(self) -> Repository:
        return Repository(self)

    def dispose(self) -> None:
        self.engine.dispose()
        if self._write_lock is not None:
            self._write_lock.close()

    @contextmanager
    def write_tx(self, *, lean: bool = False) -> Iterator[Tx]:
        """A write transaction; the change feed rows are added just before commit.

        ``lean`` (the repository's own writes: REST requests, transaction Bundles): on SQLite,
        driver SQL (``tx.conn.exec_driver_sql``) of the transaction goes straight to the sqlite3
        cursor (:class:`LeanConnection`) — the many small statements of a request's write and its
        capabilities' hooks otherwise spend more time in SQLAlchemy's result set-up than in SQLite.
        An enclosing transaction keeps its own kind.
        """
        existing: Tx | None = getattr(self._local, "tx", None)
        if existing is not None:
            yield existing
            return
        if lean and self._write_lock is not None:
            yield from self._grouped_tx(self._write_lock)
            return
        # SQLite has one writer at a time: threads of this process queue on a lock instead of
        # polling the database's busy handler (which sleeps in steps of up to 100 ms)
        lock: AbstractContextManager[Any] = self._write_lock or nullcontext()
        with lock, self.engine.connect().execution_options(sqlite_begin="IMMEDIATE") as conn:
            if lean:
                conn = cast(Connection, LeanConnection(conn))
            tx = Tx(conn, self.dialect)
            tx.codec = self.codec
            self._local.tx = tx
            try:
                with conn.begin():
                    yield tx
                    tx.flush_changes()
            finally:
                self._local.tx = None

    @contextmanager
    def queued_write(self) -> Iterator[None]:
        """Hold the writers' place (SQLite: :class:`WriterLock`) for a write that does not go
        through :meth:`write_tx`: a capability's own tables written on a connection of its own
        (the audit chain).  Without it such a write waits in SQLite's busy handler, which sleeps in
        steps of up to 100 ms, and a writer that took the lock meanwhile finds the database locked
        and sleeps there too, holding up every writer queued behind it.  A no-op on PostgreSQL, and
        inside a write transaction of this thread, which holds the queue already (taking it again
        would wait for itself)."""
        if self._write_lock is None or getattr(self._local, "tx", None) is not None:
            yield
            return
        with self._write_lock:
            yield

    def _grouped_tx(self, lock: WriterLock) -> Iterator[Tx]:
        """A lean write on SQLite, committed together with the lean writes queued behind it (group
        commit).

        A transaction Bundle dirties a few hundred pages, many of them the same from one Bundle to
        the next (the last leaf of each index keyed by time-ordered ids, the rows of common codes);
        each commit writes every page it dirtied to the log again.  So when a writer is done and
        another thread of this process is already queued for the lock, the writer does not commit:
        it hands its open transaction over (:meth:`WriterLock.hand_over`) and waits.  The next one
        writes in a savepoint of it (a failure rolls back its own writes only), and so on, until
        one finds no one queued, or the group has :data:`GROUP_MAX` writers or is
        :data:`GROUP_MAX_S` old: that one commits for all.  Nobody's write is acknowledged before the
        commit (each returns only then); a failed commit is every member's error.  A writer of
        another kind (not lean; the log's checkpointer) commits an open group before it starts.
        """
        group: _Group | None = lock.enter(self)
        if group is None:
            conn = self.engine.connect().execution_options(sqlite_begin="IMMEDIATE")
            try:
                trans = conn.begin()
            except BaseException:
                conn.close()
                lock.unlock_file()
                lock.release_queue()
                raise
            group = _Group(self, lock, conn, trans)
        lean = LeanConnection(group.conn)
        tx = Tx(cast(Connection, lean), self.dialect)
        tx.codec = self.codec
        first = not group.members
        self._local.tx = tx
        try:
            if not first:
                lean.exec_driver_sql("SAVEPOINT phip_member")
            yield tx
            tx.flush_changes()
            if not first:
                lean.exec_driver_sql("RELEASE phip_member")
        except BaseException as e:
            self._local.tx = None
            if first:  # nobody else's writes in it yet
                group.end(e)
                raise
            try:
                lean.exec_driver_sql("ROLLBACK TO phip_member")
                lean.exec_driver_sql("RELEASE phip_member")
            except BaseException as e2:  # the whole transaction is gone (SQLite rolls it back on some errors)
                group.end(e2)
                raise e from e2
            group.pass_on()
            raise
        self._local.tx = None
        done = group.join()
        group.pass_on()
        done.wait()
        if done.error is not None:
            raise done.error

    @contextmanager
    def read_conn(self, *, single: bool = False) -> Iterator[Connection]:
        """A connection to read with (the open transaction's, if any).

        ``single``: the caller runs one statement, which needs no explicit transaction
        (SQLite then skips BEGIN and its rollback on release).
        """
        existing: Tx | None = getattr(self._local, "tx", None)
        if existing is not None:
            existing.flush_pending()  # reads inside a transaction see its own writes
            yield existing.conn
            return
        with self.engine.connect() as conn:
            if single:
                conn = conn.execution_options(sqlite_begin="NONE")
            yield conn


@lru_cache(maxsize=1024)
def _lean_row(names: tuple[str, ...]) -> Any:
    """A row type per column list: a tuple whose columns are attributes too (like SQLAlchemy's Row)."""
    return namedtuple("LeanRow", names, rename=True)


class LeanResult:
    """The rows of one statement run by :class:`LeanConnection`, with the part of SQLAlchemy's
    ``CursorResult`` interface the store and its capabilities use on driver SQL."""

    __slots__ = ("_pos", "_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self._pos = 0
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[Any]:
        rows, self._pos = self._rows[self._pos:], len(self._rows)
        return iter(rows)

    def fetchone(self) -> Any:
        if self._pos >= len(self._rows):
            return None
        self._pos += 1
        return self._rows[self._pos - 1]

    def fetchall(self) -> list[Any]:
        rows, self._pos = self._rows[self._pos:], len(self._rows)
        return rows

    all = fetchall

    def first(self) -> Any:
        row = self.fetchone()
        self._pos = len(self._rows)
        return row

    def one(self) -> Any:
        rows = self.fetchall()
        if not rows:
            raise sa.exc.NoResultFound("No row was found when one was required")
        if len(rows) > 1:
            raise sa.exc.MultipleResultsFound("Multiple rows were found when exactly one was required")
        return rows[0]

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalar(self) -> Any:
        row = self.first()
        return None if row is None else row[0]

    def scalars(self) -> list[Any]:
        return [r[0] for r in self.fetchall()]


class LeanConnection:
    """A :class:`Connection` of one write transaction whose ``exec_driver_sql`` runs on the driver's
    cursor directly (sqlite3 or psycopg: no SQLAlchemy execution context, result metadata or events);
    everything else is the connection's own.  Errors are SQLAlchemy's (``DBAPIError.instance``), and
    on SQLite the statement clock of the query time limit (``make_engine``'s progress handler) is kept
    (PostgreSQL's is the server's ``statement_timeout``)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.dialect = conn.dialect  # (read for every statement's paramstyle: not through __getattr__)
        fairy = conn.connection
        self._dbapi: Any = fairy.dbapi_connection
        self._started: list[float] | None = fairy.info.get("phip_started")
        self._error: type[Exception] = sqlite3.Error
        if conn.dialect.name == "postgresql":
            import psycopg

            self._error = psycopg.Error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def exec_driver_sql(self, statement: str, parameters: Any = None, execution_options: Any = None) -> Any:
        if execution_options:
            return self._conn.exec_driver_sql(statement, parameters, execution_options)
        if self._started is not None:
            self._started[0] = time.monotonic()
        cur = self._dbapi.cursor()
        try:
            if isinstance(parameters, list) and len(parameters) > 1:
                cur.executemany(statement, parameters)
                return LeanResult([], cur.rowcount)
            if isinstance(parameters, list):
                parameters = parameters[0] if parameters else ()
            cur.execute(statement, () if parameters is None else parameters)
            if cur.description is None:
                return LeanResult([], cur.rowcount)
            make = _lean_row(tuple(d[0] for d in cur.description))._make
            rows = [make(r) for r in cur.fetchall()]
            return LeanResult(rows, cur.rowcount)
        except self._error as e:
            raise sa.exc.DBAPIError.instance(statement, parameters, e, self._error) from e
        finally:
            cur.close()


#: at most this many writers commit together (``Store._grouped_tx``)
GROUP_MAX = 8
#: nor does a group take writers in after this many seconds
GROUP_MAX_S = 0.05


class _Done:
    """A member's wait for its group's commit."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.error: BaseException | None = None

    def set(self, error: BaseException | None) -> None:
        self.error = error
        self._event.set()

    def wait(self) -> None:
        self._event.wait()


class _Group:
    """One SQLite write transaction that several writers join before it commits; it holds the file
    lock of the writers' :class:`WriterLock` until :meth:`close`."""

    def __init__(self, owner: Store, lock: WriterLock, conn: Connection, trans: Any) -> None:
        self.owner = owner
        self.lock = lock
        self.conn = conn
        self.trans = trans
        self.members: list[_Done] = []
        self.started = time.monotonic()

    def join(self) -> _Done:
        done = _Done()
        self.members.append(done)
        return done

    def pass_on(self) -> None:
        """Hand the open group to the next writer of the process, or commit it (:meth:`end`)."""
        if (self.members and self.lock.waiting() and len(self.members) < GROUP_MAX
                and time.monotonic() - self.started < GROUP_MAX_S):
            self.lock.hand_over(self)
        else:
            self.end()

    def end(self, error: BaseException | None = None) -> None:
        """:meth:`close`, then let the next writer of the process in."""
        try:
            self.close(error)
        finally:
            self.lock.release_queue()

    def close(self, error: BaseException | None = None) -> None:
        """Commit (or, with ``error``, roll back) for every member, release the file lock, and wake
        the members with the outcome."""
        try:
            if error is None:
                try:
                    if not self.conn.connection.dbapi_connection.in_transaction:  # type: ignore[union-attr]
                        raise sa.exc.OperationalError("COMMIT", None, sqlite3.OperationalError(
                            "the group's transaction was rolled back by the database"))
                    self.trans.commit()
                except BaseException as e:
                    error = e
            if error is not None:
                with contextlib.suppress(Exception):  # the error being reported is the first one
                    self.trans.rollback()
        finally:
            try:
                self.conn.close()
            finally:
                self.lock.unlock_file()
                for done in self.members:
                    done.set(error)


VERSION_COLUMNS = ("rid", "version", "type", "id", "last_updated", "deleted", "method", "content")
CHANGE_COLUMNS = ("seq", "rid", "type", "id", "version", "deleted", "ts")


class Tx:
    """An open write transaction and the changes it will publish."""

    def __init__(self, conn: Connection, dialect: Dialect) -> None:
        self.conn = conn
        self.dialect = dialect
        self.changes: list[tuple[Any, ...]] = []  # CHANGE_COLUMNS without seq
        self.ref_checks: list[tuple[str, str, str]] = []  # (expression, type, id)
        # written in bulk (executemany) before any read in the transaction and before commit
        self.pending_versions: list[tuple[Any, ...]] = []  # VERSION_COLUMNS
        self.pending_index: dict[int, tuple[str, dict[str, Any]]] = {}
        self.pending_prepared: dict[int, Any] = {}  # rid → index rows computed before the transaction (sealed)
        self.codec: ContentCodec | None = None
        #: capabilities' state for the length of this transaction (by name)
        self.state: dict[str, Any] = {}
        #: run once, by name, when the transaction's writes are done, before its change-feed rows and
        #: commit: a capability's writes gathered over the transaction (e.g. counters, whose rows every
        #: concurrent writer updates — written last, their row locks are held only until the commit)
        self.before_commit: dict[str, Callable[[Tx], None]] = {}

    def flush_pending(self) -> None:
        if self.pending_versions:
            executemany(self.conn, S.resource_versions, VERSION_COLUMNS, self.pending_versions)
            self.pending_versions = []
        if self.pending_index:
            insert_index_rows(self.conn, self.pending_index, self.pending_prepared or None, codec=self.codec,
                              prepared_sealed=True)
            self.pending_index = {}
            self.pending_prepared = {}

    def flush_changes(self) -> None:
        if self.before_commit:
            with as_node_work():  # the capabilities' work for the node, as their hooks' is
                while self.before_commit:
                    name = next(iter(self.before_commit))
                    self.before_commit.pop(name)(self)
        self.flush_pending()
        if self.ref_checks:
            _check_references(self.conn, self.ref_checks)
            self.ref_checks = []
        if not self.changes:
            return
        self.dialect.lock_change_feed(self.conn)
        seq = self.dialect.next_seq(self.conn, len(self.changes))
        executemany(self.conn, S.changes, CHANGE_COLUMNS,
                    [(seq + i, *ch) for i, ch in enumerate(self.changes)])
        self.changes = []


def _check_references(conn: Connection, refs: list[tuple[str, str, str]]) -> None:
    wanted = {(t, i) for _e, t, i in refs}
    found: set[tuple[str, str]] = set()
    items = sorted(wanted)
    for k in range(0, len(items), 500):
        chunk = items[k : k + 500]
        q = sa.select(S.resources.c.type, S.resources.c.id).where(
            S.pairs_in(S.resources.c.type, S.resources.c.id, chunk), S.resources.c.deleted == sa.false()
        )
        found.update((t, i) for t, i in conn.execute(q))
    missing = [(e, t, i) for e, t, i in refs if (t, i) not in found]
    if missing:
        issues = [
            Issue("error", "not-found", f"Reference {t}/{i} does not resolve to a resource on this node", e,
                  "PHIP-1301")
            for e, t, i in missing
        ]
        raise FhirError(422, issues[0].diagnostics, issues=issues)


def local_references(resource: Any, path: str = "") -> Iterator[tuple[str, str, str]]:
    """(expression, type, id) of every relative ``Type/id`` reference in a resource."""
    if isinstance(resource, dict):
        for k, v in resource.items():
            if k == "reference" and isinstance(v, str):
                m = LOCAL_REF.match(v)
                if m and m.group(1) in defs.resource_types():
                    yield f"{path}.reference", m.group(1), m.group(2)
            elif k != "contained" and isinstance(v, dict | list):
                yield from local_references(v, f"{path}.{k}")
    elif isinstance(resource, list):
        for i, v in enumerate(resource):
            yield from local_references(v, f"{path}[{i}]")


R = S.resources
V = S.resource_versions
_SEARCH_ALIAS = R.alias("r")  # immutable; reused so each search does not rebuild its column collections
_ROW_COLS = (R.c.rid, R.c.type, R.c.id, R.c.version, R.c.last_updated, R.c.deleted, R.c.content)


def _row(rec: Any) -> Row:
    return Row(rec.rid, rec.type, rec.id, rec.version, rec.last_updated, rec.deleted, content_bytes(rec.content))


class Repository:
    """Reads and writes resources of one store (made per request; cheap)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.settings = store.settings
        #: what the current caller may see and do (None: everything); see phip.core.access
        self.scope: AccessScope | None = store.access.scope() if store.access is not None else None

    # -- access ---------------------------------------------------------------------------------
    def access_where(self, r: Any, types: list[str] | None, action: str = "s", *, quiet: bool = False) -> list[Any]:
        """SQL conditions limiting ``resources`` alias ``r`` to what the caller may see (``quiet``:
        a type the caller may not see at all yields no rows instead of a 403)."""
        if self.scope is None:
            return []
        if not quiet:
            return self.scope.where(r, types, action)
        try:
            return self.scope.where(r, types, action)
        except FhirError:
            return [sa.false()]

    def check_operation(self, name: str, rtype: str | None = None) -> None:
        if self.scope is not None:
            self.scope.check_operation(name, rtype)

    def view_rows(self, rows: list[Row]) -> list[Row]:
        """Rows as the caller sees them (masked where the caller's role has no need)."""
        if self.scope is None:
            return rows
        return [self.scope.view(r) for r in rows]

    def _check_row(self, row: Row, action: str = "r") -> None:
        if self.scope is not None:
            with self.store.read_conn() as conn:
                self.scope.check_row(conn, row, action)

    # -- transactions ---------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """Group the operations inside in one atomic database transaction."""
        with self.store.write_tx(lean=True) as tx:
            yield tx

    # -- reads ----------------------------------------------------------------------------------
    def _check_type(self, rtype: str) -> None:
        if rtype not in defs.resource_types():
            raise FhirError(404, f"Unknown resource type {rtype!r}", code="not-supported", msg_id="PHIP-1001")

    def read(self, rtype: str, rid: str, *, view: bool = True) -> Row:
        self._check_type(rtype)
        with self.store.read_conn(single=True) as conn:
            mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
            rec = conn.exec_driver_sql(
                "SELECT rid, type, id, version, last_updated, deleted, content FROM resources "
                f"WHERE type = {mark} AND id = {mark}", (rtype, rid)
            ).first()
        if rec is None:
            raise not_found(f"{rtype}/{rid} is not known")
        row = _row(rec)
        if row.deleted:
            raise FhirError(
                410, f"{rtype}/{rid} was deleted", code="deleted", msg_id="PHIP-1410",
                headers={"ETag": row.etag, "Last-Modified": row.last_modified},
            )
        self._check_row(row)
        self._opened([row], "read")
        return self.scope.view(row) if view and self.scope is not None else row

    def vread(self, rtype: str, rid: str, vid: str) -> Row:
        self._check_type(rtype)
        try:
            version = int(vid)
        except ValueError:
            raise not_found(f"{rtype}/{rid} has no version {vid!r}") from None
        with self.store.read_conn() as conn:
            rec = conn.execute(
                sa.select(V.c.rid, V.c.type, V.c.id, V.c.version, V.c.last_updated, V.c.deleted, V.c.content)
                .where(V.c.type == rtype, V.c.id == rid, V.c.version == version)
            ).first()
        if rec is None:
            raise not_found(f"{rtype}/{rid} has no version {vid}")
        row = _row(rec)
        if row.deleted:
            raise gone(f"Version {vid} of {rtype}/{rid} is a deletion")
        self._check_row(row)
        self._opened([row], "vread")
        return self.scope.view(row) if self.scope is not None else row

    def rows_by_ids(self, refs: list[tuple[str, str]]) -> list[Row]:
        if not refs:
            return []
        out: list[Row] = []
        with self.store.read_conn() as conn:
            for k in range(0, len(refs), 500):
                chunk = refs[k : k + 500]
                q = sa.select(*_ROW_COLS).where(S.pairs_in(R.c.type, R.c.id, chunk), R.c.deleted == sa.false(),
                                                *self.access_where(R, sorted({t for t, _i in chunk}), "r",
                                                                   quiet=True))
                out.extend(_row(r) for r in conn.execute(q))
        return self.view_rows(self._opened(out))

    def _opened(self, rows: list[Row], interaction: str | None = None) -> list[Row]:
        """Open sealed content (encryption at rest) in place; with ``interaction``, fire AFTER_READ."""
        codec = self.store.codec
        if codec is not None:
            for row in rows:
                if row.content is not None:
                    row.content = codec.open(row.content)
        if interaction is not None and rows and self.store.hooks.has(Point.AFTER_READ):
            self.store.hooks.fire(Point.AFTER_READ, interaction, rows)
        return rows

    # -- search ---------------------------------------------------------------------------------
    def parser(self, lenient: bool = False) -> Parser:
        return Parser(default_count=self.settings.default_count, max_count=self.settings.max_count,
                      lenient=lenient, code_sets=self.store.search_compiler.code_sets is not None)

    def search(self, req: SearchRequest, *, extra_where: list[Any] | None = None) -> SearchResult:
        try:
            return self._search(req, extra_where)
        except sa.exc.DBAPIError as e:
            if is_timeout(e):
                raise FhirError(
                    408, f"The search ran past this node's limit of {self.settings.query_timeout_ms} ms; "
                    "narrow it with more selective parameters", code="too-costly", msg_id="PHIP-2408",
                ) from None
            raise

    def _search(self, req: SearchRequest, extra_where: list[Any] | None) -> SearchResult:
        r = _SEARCH_ALIAS
        if self.store.codec is not None:
            self.store.codec.query(req)
        compiled = self.store.search_compiler.compile(req, r)
        where = compiled.where + [f(r) for f in extra_where or []]
        if self.scope is not None:
            types = [req.resource_type] if req.resource_type else (list(req.types) if req.types else None)
            where += self.scope.where(r, types, "s")
        with self.store.read_conn() as conn:
            total: int | None = None
            if req.total in ("accurate", "estimate") or req.summary == "count":
                total = conn.execute(sa.select(sa.func.count()).select_from(r).where(*where)).scalar_one()
            if req.summary == "count" or req.count == 0:
                return SearchResult([], [], None, total)
            # unsorted on SQLite: one query returns the rows (it walks rids in order and stops at the
            # page); otherwise the page's rids first, then their rows (PostgreSQL would otherwise read
            # and sort the content of every match to keep a page of them)
            unsorted = not compiled.sort_cols and self.store.dialect.name == "sqlite"
            cols = [r.c.rid, r.c.type, r.c.id, r.c.version, r.c.last_updated, r.c.deleted, r.c.content]
            base = sa.select(*cols).where(*where) if unsorted else sa.select(r.c.rid).where(*where)
            q, order = paged(base, compiled, r, req.count, req.cursor)
            if (compiled.rids_only is not None and not compiled.sort_cols and len(where) == len(compiled.where)
                    and self.store.dialect.name == "postgresql"):
                # one index criterion: its rids alone make the page (index-only scan, no table lookups)
                t, sub = compiled.rids_only
                q = sub.distinct()
                if req.cursor is not None:
                    q = q.where(after_cursor([(t.c.rid, False)], decode_cursor(req.cursor)))
                q = q.order_by(t.c.rid).limit(req.count + 1)
            recs = conn.execute(q).all()
            more = len(recs) > req.count
            recs = recs[: req.count]
            next_cursor = None
            if more and recs:
                last = recs[-1]
                vals = [last[i + 1] for i in range(len(order) - 1)] + [last.rid]
                next_cursor = encode_cursor(vals)
            rows = [_row(rec) for rec in recs] if unsorted else self._rows_by_rid(conn, [rec.rid for rec in recs])
            if total is None and req.cursor is None and not more:
                total = len(rows)
            included = self._includes(conn, req, rows) if req.includes and rows else []
        self._opened(rows)
        self._opened(included)
        if self.store.hooks.has(Point.AFTER_READ) and (rows or included):
            self.store.hooks.fire(Point.AFTER_READ, "search-type", rows + included)
        if self.scope is not None:
            rows, included = self.view_rows(rows), self.view_rows(included)
        return SearchResult(rows, included, next_cursor, total)

    def _rows_by_rid(self, conn: Connection, rids: list[int]) -> list[Row]:
        if not rids:
            return []
        by = {rec.rid: _row(rec) for rec in conn.execute(sa.select(*_ROW_COLS).where(R.c.rid.in_(rids)))}
        return [by[x] for x in rids if x in by]

    def _includes(self, conn: Connection, req: SearchRequest, rows: list[Row]) -> list[Row]:
        seen = {r.rid for r in rows}
        out: list[Row] = []
        frontier = rows
        first = True
        while frontier:
            new: list[Row] = []
            for inc in req.includes:
                if not first and not inc.iterate:
                    continue
                new.extend(self._include_step(conn, inc, frontier, seen, req.base_url))
            out.extend(new)
            frontier = new
            first = False
        return out

    def _include_step(
        self, conn: Connection, inc: Any, frontier: list[Row], seen: set[int], base: str | None
    ) -> list[Row]:
        from phip.store.search import local_refs

        x = S.idx_ref.alias("x")
        t = R.alias("t")
        found: list[Row] = []
        if not inc.reverse:
            src = [r for r in frontier if inc.source_type in ("*", r.type)]
            if not src:
                return []
            conds = [x.c.rid.in_([r.rid for r in src]), local_refs(x, base)]
            if inc.param is not None:
                conds.append(S.rows_of(x, S.param_rows(inc.source_type, inc.code)))
            if inc.target_type:
                conds.append(x.c.target_type == inc.target_type)
            conds += self.access_where(t, [inc.target_type] if inc.target_type else None, "s", quiet=True)
            q = (
                sa.select(*[c for c in t.c if c.name != "content"], t.c.content)
                .select_from(x.join(t, sa.and_(t.c.type == x.c.target_type, t.c.id == x.c.target_id)))
                .where(*conds, t.c.deleted == sa.false())
                .distinct()
            )
        else:
            if inc.param is None:
                return []
            keys = [(r.type, r.id) for r in frontier]
            q = (
                sa.select(*[c for c in t.c if c.name != "content"], t.c.content)
                .select_from(x.join(t, t.c.rid == x.c.rid))
                .where(
                    S.rows_of(x, S.param_rows(inc.source_type, inc.code)),
                    S.pairs_in(x.c.target_type, x.c.target_id, keys),
                    local_refs(x, base),
                    t.c.deleted == sa.false(),
                    *self.access_where(t, [inc.source_type], "s", quiet=True),
                )
                .distinct()
            )
        for rec in conn.execute(q):
            if rec.rid not in seen:
                seen.add(rec.rid)
                found.append(_row(rec))
        return found

    def find(self, rtype: str, query: str, *, limit: int = 2) -> list[Row]:
        """Resources matching a search query string (for conditional operations)."""
        from urllib.parse import parse_qsl

        params = parse_qsl(query.lstrip("?"), keep_blank_values=True)
        if not params:
            raise bad_request("A conditional operation needs search criteria")
        req = self.parser().parse(rtype, params)
        req.count = limit
        req.includes = []
        return self.search(req).rows

    # -- writes ---------------------------------------------------------------------------------
    def _prepare(self, rtype: str, rid: str, resource: dict[str, Any], version: int, now: int) -> dict[str, Any]:
        meta = dict(resource.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = to_instant(now)
        out: dict[str, Any] = {"resourceType": rtype, "id": rid, "meta": meta}
        for k, v in resource.items():
            if k not in out:
                out[k] = v
        return out

    def _validate(self, rtype: str, resource: dict[str, Any]) -> list[Issue]:
        if not isinstance(resource, dict):
            raise bad_request("The body must be a JSON object (a FHIR resource)")
        if resource.get("resourceType") != rtype:
            raise bad_request(
                f"resourceType {resource.get('resourceType')!r} does not match the URL type {rtype!r}",
                expression="resourceType",
                msg_id="PHIP-1101",
            )
        if not self.settings.validate:
            return []
        issues = [Issue(i.severity, i.code, i.diagnostics, i.expression, "PHIP-1100") for i in validate(resource)]
        errors = [i for i in issues if i.severity in ("error", "fatal")]
        if errors:
            raise FhirError(422, errors[0].diagnostics, issues=issues)
        return issues

    def _before_write(self, tx: Tx, rtype: str, resource: dict[str, Any], method: str) -> list[Issue]:
        issues: list[Issue] = []
        with as_system():  # hooks work for the node (the principal still says who caused it)
            results = self.store.hooks.fire(Point.BEFORE_WRITE, tx, rtype, resource, method)
        for res in results:
            if res:
                issues.extend(res)
        return issues

    def _store(
        self, tx: Tx, rtype: str, rid: str, resource: dict[str, Any] | None, version: int, method: str,
        existing_rid: int | None, ready: Checked | None = None,
    ) -> Row:
        """``ready``: what was computed before the transaction for this very resource (see
        :func:`_ready`): its index rows, its PREPARE_WRITE results."""
        index = ready.index if ready is not None else None
        prepared = ready.prepared if ready is not None and ready.prepared_id == rid else None
        now = now_us()
        conn = tx.conn
        content: bytes | None = None
        doc: dict[str, Any] | None = None
        if resource is not None:
            doc = self._prepare(rtype, rid, resource, version, now)
            content = orjson.dumps(doc)
            if self.settings.reference_integrity == "strict":
                tx.ref_checks.extend((f"{rtype}{e}", t, i) for e, t, i in local_references(doc))
        sealed = self.store.codec.seal(rtype, doc) if self.store.codec is not None and doc is not None else None
        if sealed is not None:  # encryption at rest: the database gets the sealed copy
            stored: Any = orjson.dumps(sealed).decode() if self.store.dialect.name == "sqlite" else sealed
        else:
            stored = content.decode() if content is not None and self.store.dialect.name == "sqlite" else doc
        deleted = resource is None
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        bound = self._bind_content(stored)
        if existing_rid is None:
            row_id = int(conn.exec_driver_sql(
                "INSERT INTO resources (type, id, version, last_updated, deleted, content) "
                f"VALUES ({mark}, {mark}, {mark}, {mark}, {mark}, {mark}) RETURNING rid",
                (rtype, rid, version, now, deleted, bound),
            ).scalar_one())
        else:
            row_id = existing_rid
            conn.exec_driver_sql(
                f"UPDATE resources SET version = {mark}, last_updated = {mark}, deleted = {mark}, content = {mark} "
                f"WHERE rid = {mark}",
                (version, now, deleted, bound, row_id),
            )
            tx.flush_pending()  # this resource's old index rows may still be queued
            for table in S.INDEX_TABLES.values():
                conn.execute(table.delete().where(table.c.rid == row_id))
        tx.pending_versions.append((row_id, version, rtype, rid, now, deleted, method, bound))
        if doc is not None:
            tx.pending_index[row_id] = (rtype, doc)
            if index is not None:
                tx.pending_prepared[row_id] = index
        tx.changes.append((row_id, rtype, rid, version, deleted, now))
        with as_system():
            self.store.hooks.fire(Point.AFTER_WRITE, tx, WriteEvent(rtype, rid, version, method, doc, prepared))
        return Row(row_id, rtype, rid, version, now, deleted, content, method)

    def _bind_content(self, stored: Any) -> Any:
        """Content as the driver takes it in a raw executemany (JSONB needs a wrapper on psycopg)."""
        if stored is None or self.store.dialect.name == "sqlite":
            return stored
        from psycopg.types.json import Jsonb

        return Jsonb(stored, dumps=_orjson_str)

    def _current(self, conn: Connection, rtype: str, rid: str) -> Any:
        if self.store.dialect.name == "sqlite":  # driver SQL, as in read() (the lean path of a write)
            return conn.exec_driver_sql(
                "SELECT rid, type, id, version, last_updated, deleted, content FROM resources "
                "WHERE type = ? AND id = ?", (rtype, rid)).first()
        q = sa.select(*_ROW_COLS).where(R.c.type == rtype, R.c.id == rid).with_for_update()
        return conn.execute(q).first()

    def create(
        self, rtype: str, resource: dict[str, Any], *, if_none_exist: str | None = None, rid: str | None = None,
        checked: Checked | None = None,
    ) -> WriteResult:
        """Create a resource with a server-assigned id (``rid`` only for transactions; ``checked``: the
        outcome of ``_validate(rtype, resource)`` computed beforehand, see :class:`Checked`)."""
        self._check_type(rtype)
        issues = checked.outcome() if checked is not None else self._validate(rtype, resource)
        with self.store.write_tx(lean=True) as tx:
            if if_none_exist:
                found = self.find(rtype, if_none_exist)
                if len(found) > 1:
                    raise conflict(f"If-None-Exist {if_none_exist!r} matches more than one {rtype}", 412)
                if found:
                    return WriteResult(found[0], 200, issues)
            if self.scope is not None:
                self.scope.check_write(tx.conn, rtype, resource, "POST", None)
            issues += self._before_write(tx, rtype, resource, "POST")
            new_id = rid or uuid7()
            row = self._store(tx, rtype, new_id, resource, 1, "POST", None, _ready(checked, resource))
        return WriteResult(self.scope.view(row) if self.scope is not None else row, 201, issues)

    def update(
        self, rtype: str, rid: str, resource: dict[str, Any], *, if_match: str | None = None, method: str = "PUT",
        checked: Checked | None = None,
    ) -> WriteResult:
        """Update (or create with a client-assigned id) ``rtype/rid`` (``checked``: as for :meth:`create`)."""
        self._check_type(rtype)
        if not ID_RE.match(rid):
            raise bad_request(f"{rid!r} is not a valid resource id", expression=f"{rtype}.id")
        if isinstance(resource, dict) and resource.get("id") != rid:
            raise bad_request(
                f"The resource id {resource.get('id')!r} does not match the URL id {rid!r}",
                expression=f"{rtype}.id",
                msg_id="PHIP-1102",
            )
        issues = checked.outcome() if checked is not None else self._validate(rtype, resource)
        expected = parse_etag(if_match)
        with self.store.write_tx(lean=True) as tx:
            cur = self._current(tx.conn, rtype, rid)
            scope = self.scope
            if scope is not None:
                stored = self._opened([_row(cur)])[0] if cur is not None and not cur.deleted else None
                resource = scope.unmask(rtype, resource, stored)
                scope.check_write(tx.conn, rtype, resource, method, stored)
            if cur is None:
                if expected is not None:
                    raise conflict(f"{rtype}/{rid} does not exist (If-Match {if_match})", 412)
                issues += self._before_write(tx, rtype, resource, method)
                row = self._store(tx, rtype, rid, resource, 1, method, None, _ready(checked, resource))
                return WriteResult(scope.view(row) if scope is not None else row, 201, issues)
            if expected is not None and expected != cur.version:
                raise conflict(
                    f"{rtype}/{rid} is at version {cur.version}, not {expected} (If-Match)", 412
                )
            if not cur.deleted and _same(self._opened([_row(cur)])[0].content, resource):
                same = self._opened([_row(cur)])[0]
                return WriteResult(scope.view(same) if scope is not None else same, 200, issues)
            issues += self._before_write(tx, rtype, resource, method)
            row = self._store(tx, rtype, rid, resource, cur.version + 1, method, cur.rid,
                              _ready(checked, resource))
        return WriteResult(scope.view(row) if scope is not None else row, 201 if cur.deleted else 200, issues)

    def patch(self, rtype: str, rid: str, patch: Any, *, if_match: str | None = None) -> WriteResult:
        """Apply a JSON Patch (RFC 6902) to the current version."""
        if not isinstance(patch, list):
            raise bad_request("A JSON Patch body must be an array of operations")
        with self.store.write_tx(lean=True):
            current = self.read(rtype, rid, view=False)
            expected = parse_etag(if_match)
            if expected is not None and expected != current.version:
                raise conflict(f"{rtype}/{rid} is at version {current.version}, not {expected} (If-Match)", 412)
            try:
                patched = jsonpatch.apply_patch(current.resource(), patch)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as e:
                raise FhirError(422, f"The JSON Patch cannot be applied: {e}", code="processing") from None
            if patched.get("id") != rid or patched.get("resourceType") != rtype:
                raise FhirError(422, "A patch must not change the resource's id or type", code="processing")
            return self.update(rtype, rid, patched, if_match=f'W/"{current.version}"', method="PATCH")

    def delete(self, rtype: str, rid: str) -> Row | None:
        """Soft-delete: a new version marked deleted; history keeps the old ones."""
        self._check_type(rtype)
        with self.store.write_tx(lean=True) as tx:
            cur = self._current(tx.conn, rtype, rid)
            if cur is None:
                raise not_found(f"{rtype}/{rid} is not known")
            if cur.deleted:
                return None
            if self.scope is not None:
                self.scope.check_write(tx.conn, rtype, None, "DELETE", _row(cur))
            return self._store(tx, rtype, rid, None, cur.version + 1, "DELETE", cur.rid)

    def conditional_update(self, rtype: str, query: str, resource: dict[str, Any],
                           if_match: str | None = None) -> WriteResult:
        with self.store.write_tx(lean=True):
            found = self.find(rtype, query)
            if len(found) > 1:
                raise conflict(f"The criteria {query!r} match more than one {rtype}", 412)
            if not found:
                rid = resource.get("id") if isinstance(resource, dict) else None
                if rid:
                    return self.update(rtype, rid, resource)
                return self.create(rtype, resource)
            target = found[0]
            if isinstance(resource, dict) and resource.get("id") not in (None, target.id):
                raise bad_request(
                    f"The resource id {resource.get('id')!r} does not match the one found ({target.id})",
                    expression=f"{rtype}.id",
                )
            body = dict(resource)
            body["id"] = target.id
            return self.update(rtype, target.id, body, if_match=if_match)

    def conditional_delete(self, rtype: str, query: str) -> int:
        with self.store.write_tx(lean=True):
            found = self.find(rtype, query)
            if len(found) > 1:
                raise conflict(f"The criteria {query!r} match more than one {rtype}", 412)
            for row in found:
                self.delete(rtype, row.id)
            return len(found)

    # -- meta -------------------------------------------------------------------------------------
    def meta_change(self, rtype: str, rid: str, meta: dict[str, Any], add: bool) -> dict[str, Any]:
        """$meta-add / $meta-delete: change tags, profiles and security labels in place."""
        with self.store.write_tx(lean=True) as tx:
            row = self.read(rtype, rid, view=False)
            if self.scope is not None:
                self.scope.check_write(tx.conn, rtype, row.resource(), "PATCH", row)
            doc = row.resource()
            cur = doc.setdefault("meta", {})
            for key, ident in (("tag", _coding_key), ("security", _coding_key), ("profile", str)):
                items = list(cur.get(key) or [])
                keys = [ident(i) for i in items]
                for item in meta.get(key) or []:
                    k = ident(item)
                    if add and k not in keys:
                        items.append(item)
                        keys.append(k)
                    elif not add and k in keys:
                        del items[keys.index(k)]
                        keys.remove(k)
                if items:
                    cur[key] = items
                else:
                    cur.pop(key, None)
            sdoc = (self.store.codec.seal(rtype, doc) if self.store.codec is not None else None) or doc
            stored: Any = orjson.dumps(sdoc).decode() if self.store.dialect.name == "sqlite" else sdoc
            tx.conn.execute(R.update().where(R.c.rid == row.rid).values(content=stored))
            tx.conn.execute(V.update().where(V.c.rid == row.rid, V.c.version == row.version).values(content=stored))
            for table in S.INDEX_TABLES.values():
                tx.conn.execute(table.delete().where(table.c.rid == row.rid))
            insert_index_rows(tx.conn, {row.rid: (rtype, doc)}, codec=self.store.codec)
            return cur

    # -- history ----------------------------------------------------------------------------------
    def history(
        self, rtype: str | None = None, rid: str | None = None, *, since: str | None = None,
        at: str | None = None, count: int = 50, cursor: str | None = None,
    ) -> tuple[list[Row], str | None]:
        from phip.store.search import after_cursor, decode_cursor

        if rtype is not None:
            self._check_type(rtype)
        conds: list[Any] = []
        if rtype is not None:
            conds.append(V.c.type == rtype)
        if rid is not None:
            conds.append(V.c.id == rid)
        try:
            if since:
                conds.append(V.c.last_updated >= date_range(since)[0])
            if at:
                lo, hi = date_range(at)
                v2 = V.alias("v2")
                conds.append(V.c.last_updated <= hi)
                conds.append(
                    ~sa.exists().where(v2.c.rid == V.c.rid, v2.c.version > V.c.version, v2.c.last_updated <= lo)
                )
        except ValueError as e:
            raise bad_request(f"Invalid _since/_at: {e}") from None
        order = [(V.c.last_updated, True), (V.c.rid, True), (V.c.version, True)]
        if cursor:
            conds.append(after_cursor(order, decode_cursor(cursor)))
        if self.scope is not None and rid is None:
            cur = R.alias("hist_r")
            visible = self.scope.where(cur, [rtype] if rtype is not None else None, "r")
            if visible:
                conds.append(V.c.rid.in_(sa.select(cur.c.rid).where(*visible)))
        q = (
            sa.select(V.c.rid, V.c.type, V.c.id, V.c.version, V.c.last_updated, V.c.deleted, V.c.method, V.c.content)
            .where(*conds)
            .order_by(V.c.last_updated.desc(), V.c.rid.desc(), V.c.version.desc())
            .limit(count + 1)
        )
        with self.store.read_conn() as conn:
            if rtype is not None and rid is not None:
                exists = conn.execute(sa.select(R.c.rid, R.c.type, R.c.id, R.c.version)
                                      .where(R.c.type == rtype, R.c.id == rid)).first()
                if exists is None:
                    raise not_found(f"{rtype}/{rid} is not known")
                if self.scope is not None:
                    self.scope.check_row(conn, exists, "r")
            recs = conn.execute(q).all()
        more = len(recs) > count
        recs = recs[:count]
        rows = [
            Row(r.rid, r.type, r.id, r.version, r.last_updated, r.deleted, content_bytes(r.content), r.method)
            for r in recs
        ]
        nxt = encode_cursor([rows[-1].last_updated, rows[-1].rid, rows[-1].version]) if more and rows else None
        self._opened([r for r in rows if not r.deleted], "history")
        return self.view_rows(rows), nxt

    # -- change feed ------------------------------------------------------------------------------
    def changes(self, since: int, count: int) -> tuple[list[tuple[int, Row]], int]:
        """Committed changes after sequence ``since``, in order, and the next cursor."""
        self.check_operation("changes")
        C = S.changes
        q = (
            sa.select(C.c.seq, V.c.rid, V.c.type, V.c.id, V.c.version, V.c.last_updated, V.c.deleted, V.c.method,
                      V.c.content)
            .select_from(C.join(V, sa.and_(V.c.rid == C.c.rid, V.c.version == C.c.version)))
            .where(C.c.seq > since)
            .order_by(C.c.seq)
            .limit(count)
        )
        with self.store.read_conn() as conn:
            recs = conn.execute(q).all()
        out = [
            (r.seq, Row(r.rid, r.type, r.id, r.version, r.last_updated, r.deleted, content_bytes(r.content),
                        r.method))
            for r in recs
        ]
        self._opened([row for _seq, row in out])
        return out, (out[-1][0] if out else since)


def _ready(checked: Checked | None, resource: dict[str, Any]) -> Checked | None:
    """``checked`` if the resource is still the one its index rows and PREPARE_WRITE results were
    computed for (the index does not depend on the id or ``meta.versionId``/``lastUpdated`` the write
    adds; the prepared results are used for the id they were computed with only)."""
    if checked is None or checked.raw is None or (checked.index is None and checked.prepared is None):
        return None
    return checked if orjson.dumps(resource) == checked.raw else None


def _orjson_str(value: Any) -> str:
    return orjson.dumps(value).decode()


def _coding_key(c: Any) -> Any:
    return (c.get("system"), c.get("code")) if isinstance(c, dict) else c


def _same(stored: bytes | None, resource: dict[str, Any]) -> bool:
    if stored is None:
        return False
    old = orjson.loads(stored)
    om = dict(old.pop("meta", None) or {})
    nm = dict(resource.get("meta") or {})
    for m in (om, nm):
        m.pop("versionId", None)
        m.pop("lastUpdated", None)
    new = {k: v for k, v in resource.items() if k != "meta"}
    return bool(old == {**new, "resourceType": old.get("resourceType"), "id": old.get("id")} and om == nm)


def executemany(conn: Connection, table: sa.Table, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """INSERT many tuples with the driver's own executemany (no per-row SQLAlchemy parameter work)."""
    if not rows:
        return
    codec = getattr(conn.dialect, "phip_codec", None)
    if codec is not None and "content" in columns and table.name in ("resources", "resource_versions"):
        rows = codec.seal_rows(columns, rows)  # a capability writing resources directly still seals
    if conn.dialect.name == "postgresql" and len(rows) >= COPY_MIN_ROWS:
        # COPY streams the rows in one command: a tenth of the client CPU of a pipelined executemany
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        with cast(Any, dbapi).cursor() as cur, cur.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as cp:
            for row in rows:
                cp.write_row(row)
        return
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"
    conn.exec_driver_sql(sql, rows)


#: from this many rows on, PostgreSQL inserts go through COPY
COPY_MIN_ROWS = 20


_INDEX_COLUMNS: dict[str, tuple[str, ...]] = {
    "string": ("rid", "param", "grp", "norm", "raw"),
    "token": ("rid", "param", "grp", "system", "code", "text"),
    "date": ("rid", "param", "grp", "low", "high"),
    "reference": ("rid", "param", "grp", "target_type", "target_id", "url"),
    "quantity": ("rid", "param", "grp", "low", "high", "system", "code", "unit"),
    "number": ("rid", "param", "grp", "value"),
    "uri": ("rid", "param", "grp", "value"),
}


#: a resource's search index rows as the store keeps them (:func:`stored_rows`): per index table, in
#: the order of ``_STORED_KINDS``, ``(param key, *values)`` tuples — only the resource's row id to add
StoredRows = tuple[list[tuple[Any, ...]], ...]
_STORED_KINDS = ("string", "token", "date", "reference", "quantity", "number", "uri")


def stored_rows(resource_type: str, ix: Any) -> StoredRows:
    """The rows of a resource's :class:`~phip.fhir.search.extract.ResourceIndex` (its sealed values
    already made blind by the codec, if the store has one) as the store inserts them: without the
    rows an alias's bases hold, each parameter as its integer key.  A transaction Bundle's checks
    make them before the write lock, which then has only the row id to add (0.2–0.3 ms less held a
    Bundle of 20).  The importer's worker does not: there the writer's saving (~9 µs a resource)
    cost the worker more (~12–25 µs), and a 100k import was slower on a 2-core machine."""
    ix = storable(resource_type, ix)
    pk = S.param_key
    return tuple([(pk(resource_type, p), *rest) for p, *rest in rows]
                 for rows in (ix.strings, ix.tokens, ix.dates, ix.refs, ix.quantities, ix.numbers, ix.uris))


def insert_index_rows(conn: Connection, docs: dict[int, tuple[str, dict[str, Any]]],
                      prepared: dict[int, Any] | None = None, *, codec: ContentCodec | None = None,
                      prepared_sealed: bool = False) -> None:
    """Insert the search index rows of many resources (rid → (type, resource)) in bulk.

    ``prepared``: rid → index rows already computed (by the importer's worker process, or before a
    transaction Bundle took the write lock): a :class:`~phip.fhir.search.extract.ResourceIndex`, or
    :data:`StoredRows` (final: sealed values already blind); ``prepared_sealed``: the codec has
    already turned a ResourceIndex's sealed values into blind values.
    """
    out: dict[str, list[tuple[Any, ...]]] = {k: [] for k in S.INDEX_TABLES}
    strings, tokens, dates, refs = out["string"], out["token"], out["date"], out["reference"]
    quantities, numbers, uris = out["quantity"], out["number"], out["uri"]
    by_kind = [out[k] for k in _STORED_KINDS]
    pk = S.param_key
    if codec is None:
        codec = getattr(conn.dialect, "phip_codec", None)
    for row_id, (rtype, doc) in docs.items():
        ix = prepared.get(row_id) if prepared else None
        if type(ix) is tuple:  # StoredRows
            for dst, rows in zip(by_kind, ix, strict=True):
                if rows:
                    dst.extend([(row_id, *r) for r in rows])
            continue
        if ix is None:
            ix = index_resource(doc)
            if codec is not None:
                codec.index(rtype, doc, ix)
        elif codec is not None and not prepared_sealed:
            codec.index(rtype, doc, ix)
        ix = storable(rtype, ix)
        strings.extend((row_id, pk(rtype, p), *rest) for p, *rest in ix.strings)
        tokens.extend((row_id, pk(rtype, p), *rest) for p, *rest in ix.tokens)
        dates.extend((row_id, pk(rtype, p), *rest) for p, *rest in ix.dates)
        refs.extend((row_id, pk(rtype, p), *rest) for p, *rest in ix.refs)
        quantities.extend((row_id, pk(rtype, p), *rest) for p, *rest in ix.quantities)
        numbers.extend((row_id, pk(rtype, p), *rest) for p, *rest in ix.numbers)
        uris.extend((row_id, pk(rtype, p), *rest) for p, *rest in ix.uris)
    for kind, rows in out.items():
        executemany(conn, S.INDEX_TABLES[kind], _INDEX_COLUMNS[kind], rows)
