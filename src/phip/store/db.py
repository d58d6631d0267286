"""Database engines and the per-backend differences, in one place.

SQLite (WAL, ``BEGIN IMMEDIATE`` so writers queue instead of failing on upgrade) is the
embedded default; PostgreSQL via psycopg 3 is the production backend.  Everything
backend-specific that the store needs is a method of :class:`Dialect`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, select, text
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).parent / "migrations"
#: a SQLite connection's page cache (KiB), where it keeps temporary data, and how much of the file it maps
CACHE_KIB = 64 * 1024
TEMP_STORE = "MEMORY"
MMAP_BYTES = 256 * 1024 * 1024


def _json_dumps(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


class Dialect:
    """Hooks for what differs between backends."""

    name = "base"
    #: a bulk import of at least this many resources into a smaller store defers the search value
    #: indexes (``importer.loader.should_defer_indexes``)
    defer_indexes_min = 200_000

    def lock_change_feed(self, conn: Connection) -> None:
        """Serialise change-feed sequence assignment with commit (see ``Store.commit_changes``)."""

    def next_seq(self, conn: Connection, n: int) -> int:
        """Reserve ``n`` consecutive change sequence numbers; returns the first."""
        raise NotImplementedError

    def reserve_rids(self, conn: Connection, n: int) -> list[int]:
        """``n`` new ``resources.rid`` values for a bulk insert in this transaction."""
        raise NotImplementedError

    def analyze(self, engine: Engine) -> None:
        """Refresh the planner's statistics after a bulk load (searches pick their driving index by them)."""

    @contextlib.contextmanager
    def index_build(self, engine: Engine) -> Iterator[Connection]:
        """A connection set up to build an index over a whole table (``CREATE INDEX``), in a
        transaction committed at the end, and given back to the pool as it was."""
        with engine.begin() as conn:
            yield self.unbounded(conn)

    def unbounded(self, conn: Connection) -> Connection:
        """Lift the node's query timeout for the rest of this connection's transaction: for
        maintenance (index builds, statistics, migrations) whose time grows with the data, which
        the limit meant for requests would otherwise cut off on a large node."""
        return conn

    def existing_keys(self, conn: Connection, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (type, id) pairs ``resources`` holds, deleted or not (the bulk import's
        check of a batch before it inserts)."""
        from phip.store import schema as S

        R = S.resources
        found: set[tuple[str, str]] = set()
        for k in range(0, len(keys), 500):
            q = select(R.c.type, R.c.id).where(S.pairs_in(R.c.type, R.c.id, keys[k : k + 500]))
            found.update((t, i) for t, i in conn.execute(q))
        return found


class SQLiteDialect(Dialect):
    name = "sqlite"

    def next_seq(self, conn: Connection, n: int) -> int:
        # Writers are serialised by BEGIN IMMEDIATE, so max+1 is commit-ordered.
        cur = conn.exec_driver_sql("SELECT COALESCE(MAX(seq), 0) FROM changes").scalar_one()
        return int(cur) + 1

    def reserve_rids(self, conn: Connection, n: int) -> list[int]:
        # the write transaction holds SQLite's write lock, so max+1… cannot be taken by another writer
        top = int(conn.execute(text("SELECT COALESCE(MAX(rid), 0) FROM resources")).scalar_one())
        return list(range(top + 1, top + 1 + n))

    def analyze(self, engine: Engine) -> None:
        with engine.connect() as conn:
            self.unbounded(conn)
            conn.exec_driver_sql("PRAGMA analysis_limit=2000")  # sampled: seconds, not minutes, at 1M rows
            conn.exec_driver_sql("ANALYZE")
            conn.commit()

    @contextlib.contextmanager
    def index_build(self, engine: Engine) -> Iterator[Connection]:
        # SQLite sorts an index's keys in runs of about a page cache each, then merges them.  With the
        # connection's own settings (temporary data in memory, the file memory-mapped, one thread) the
        # ten search value indexes of a 1M-resource node took 46.1 / 44.2 s on 2 cores; with runs in a
        # temporary file, no memory map and helper threads sorting on the other cores, 29.7 / 30.3 s
        # (a page cache of 256 MiB-2 GiB, what a bulk load's connection may still have, was slower).
        # Where temporary data goes cannot change inside a transaction: the settings are made in
        # SQLite's autocommit mode, where ``CREATE INDEX`` is a transaction of its own.
        with engine.connect() as conn:
            conn.execution_options(sqlite_begin="NONE")
            for pragma in (f"threads={min(4, os.cpu_count() or 1)}", f"cache_size=-{CACHE_KIB}",
                           "temp_store=FILE", "mmap_size=0"):
                conn.exec_driver_sql(f"PRAGMA {pragma}")
            try:
                yield self.unbounded(conn)
                conn.commit()
            finally:  # back to the pool as every other connection is
                conn.rollback()
                for pragma in ("threads=0", f"temp_store={TEMP_STORE}", f"mmap_size={MMAP_BYTES}"):
                    conn.exec_driver_sql(f"PRAGMA {pragma}")
                conn.commit()

    def unbounded(self, conn: Connection) -> Connection:
        # the progress handler that enforces the limit skips statements of such a connection
        return conn.execution_options(phip_unbounded=True)


class PostgresDialect(Dialect):
    name = "postgresql"
    LOCK_KEY = 0x70686970  # "phip"
    #: (see ``importer.loader.should_defer_indexes``; SQLite's is 200k) building the search value
    #: indexes after the load took 16–19% less server CPU than updating them row by row, measured at
    #: 50k and 100k resources into an empty node
    defer_indexes_min = 40_000

    def lock_change_feed(self, conn: Connection) -> None:
        # Held until commit: sequence numbers are handed out in commit order, so a
        # reader never sees seq N+1 while the transaction holding N is still open.
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": self.LOCK_KEY})

    def next_seq(self, conn: Connection, n: int) -> int:
        cur = conn.execute(text("SELECT COALESCE(MAX(seq), 0) FROM changes")).scalar_one()
        return int(cur) + 1

    def reserve_rids(self, conn: Connection, n: int) -> list[int]:
        rows = conn.execute(text("SELECT nextval(pg_get_serial_sequence('resources', 'rid')) "
                                 "FROM generate_series(1, :n)"), {"n": n})
        return sorted(int(r[0]) for r in rows)

    def analyze(self, engine: Engine) -> None:
        with engine.connect() as conn:
            self.unbounded(conn)
            conn.exec_driver_sql("ANALYZE")
            conn.commit()

    def unbounded(self, conn: Connection) -> Connection:
        conn.exec_driver_sql("SET LOCAL statement_timeout = 0")  # until this transaction ends
        return conn

    def existing_keys(self, conn: Connection, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        # One probe of the unique (type, id) index a key, whatever the statistics say.  During a bulk
        # load they are missing or stale (no ANALYZE yet, or taken before this file's type arrived),
        # and the planner then answers ``type = ? AND id IN (…)`` by reading every row of the type
        # through the (type, …) indexes: a cost that grows with the table (33–60 ms for 500 keys at
        # 53k Observations, against ~15 ms for 1000 keys this way).  A LATERAL subquery with LIMIT
        # is not flattened into a join, so it stays a per-key lookup; its equality on every column
        # of the unique index makes that index the plan's only sensible choice.
        if not keys:
            return set()
        rows = conn.execute(text(
            "SELECT k.t, k.i FROM unnest(CAST(:t AS text[]), CAST(:i AS text[])) AS k(t, i) "
            "CROSS JOIN LATERAL (SELECT 1 FROM resources r WHERE r.type = k.t AND r.id = k.i LIMIT 1) AS hit"),
            {"t": [t for t, _ in keys], "i": [i for _, i in keys]})
        return {(t, i) for t, i in rows}


def is_timeout(exc: BaseException) -> bool:
    """True when a DBAPI error is the cancellation of a statement that ran too long."""
    orig = getattr(exc, "orig", exc)
    name = type(orig).__name__
    return name == "QueryCanceled" or "interrupted" in str(orig)


#: WAL size at which the background checkpointer copies the log into the database
CHECKPOINT_BYTES = 32 * 1024 * 1024
#: log size at which it restarts the log even if that makes the writers wait a moment
RESTART_BYTES = 256 * 1024 * 1024
#: how long a restart may wait for the current writer and readers (then it tries again later)
RESTART_WAIT_MS = 1000
#: how often it looks
CHECKPOINT_POLL_S = 0.25


class WalCheckpointer:
    """Checkpoints a SQLite database's write-ahead log from a thread of its own.

    With SQLite's automatic checkpoint, the transaction whose commit pushes the log over the limit
    copies it into the database file before it returns: one request in a few hundred pays for all
    of them.  Here the writers' connections have ``wal_autocheckpoint=0`` and this thread runs a
    PASSIVE checkpoint (it never blocks readers or writers) whenever the log file has grown past
    :data:`CHECKPOINT_BYTES`.  SQLite reuses the log file from its beginning and does not shrink it,
    so once it has reached that size this is on every look (:data:`CHECKPOINT_POLL_S`); with nothing
    new in the log, a PASSIVE checkpoint copies nothing.  That is by measure, not by accident:
    copying every 128 MB of new log instead (fewer copies of pages that several commits change) made
    transaction Bundles ~15% slower over HTTP with two workers (2026-12-06 session note).  SQLite
    releases the GIL while it copies, so on a machine with a second core the copying overlaps the
    requests.

    A PASSIVE checkpoint lets the next writer start the log again from its beginning only once it
    has copied every frame; a writer that never pauses (a bulk import) keeps appending while it
    copies, so the log would grow without end, and every read would search a larger log index.
    When the log holds more than :data:`RESTART_BYTES`, the thread therefore runs a RESTART
    checkpoint: it queues for the writers' lock (:class:`WriterLock`) behind the writer of the
    moment, waits (at most :data:`RESTART_WAIT_MS`, else it tries again later) for readers of old
    snapshots, copies the few frames the passive passes left, and makes the next writer begin the
    log again.  Writers wait for it for that moment only.
    ``PHIP_WAL_CHECKPOINT=inline`` keeps SQLite's own automatic checkpoint (for comparison in the
    benchmarks).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.wal = path + "-wal"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="phip-wal-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Never open (and so never close) the ``-shm`` file or the database here to read them: a
        # close() of any descriptor of a file drops every POSIX lock this process holds on it,
        # SQLite's WAL locks included, and the database gets corrupted (tried: "database disk image
        # is malformed" under two workers).  Only the log file's size, and SQLite's own API.
        import sqlite3

        conn: Any = None
        page = 4096
        writers = WriterLock(self.path)
        try:
            while not self._stop.wait(CHECKPOINT_POLL_S):
                try:
                    size = os.stat(self.wal).st_size
                except FileNotFoundError:
                    continue
                if size < CHECKPOINT_BYTES:
                    continue
                if conn is None:
                    conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
                    page = int(conn.execute("PRAGMA page_size").fetchone()[0])
                with contextlib.suppress(sqlite3.Error):  # busy, or the file went away: next time
                    conn.execute("PRAGMA busy_timeout=30000")
                    _busy, frames, _done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if frames * page >= RESTART_BYTES:
                        # queue with the writers (WriterLock: SQLite's own busy handler would let a
                        # writer that commits back to back win every time), then wait for readers
                        with writers:
                            conn.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
                            conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        finally:
            writers.close()
            if conn is not None:
                conn.close()

    def stop(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)


def make_engine(url: str, *, pool_size: int = 8, query_timeout_ms: int = 30000) -> tuple[Engine, Dialect]:
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=16,
        )
        db_file = u.database or ""
        background = (os.environ.get("PHIP_WAL_CHECKPOINT", "background") != "inline"
                      and db_file not in ("", ":memory:") and not db_file.startswith("file:"))
        if background:
            ckpt = WalCheckpointer(db_file)

            @event.listens_for(engine, "engine_disposed")
            def _disposed(_engine: Engine) -> None:
                ckpt.stop()

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            # checkpoints: by the background thread (above), else fewer, larger ones (hot pages written once)
            cur.execute("PRAGMA wal_autocheckpoint=0" if background else "PRAGMA wal_autocheckpoint=10000")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute(f"PRAGMA cache_size=-{CACHE_KIB}")  # 64 MiB a connection: RSS stays bounded with many
            cur.execute(f"PRAGMA temp_store={TEMP_STORE}")
            cur.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
            cur.close()
            if query_timeout_ms > 0:
                # SQLite has no statement timeout: a progress handler interrupts a statement past the limit
                started = _rec.info.setdefault("phip_started", [0.0])

                def check() -> int:
                    return 1 if started[0] and time.monotonic() - started[0] > query_timeout_ms / 1000 else 0

                dbapi_conn.set_progress_handler(check, 20000)

        @event.listens_for(engine, "before_cursor_execute")
        def _started(conn: Connection, *_a: Any) -> None:
            holder = conn.connection._connection_record.info.get("phip_started") if conn.connection else None
            if holder is not None:
                holder[0] = 0.0 if conn.get_execution_options().get("phip_unbounded") else time.monotonic()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            if mode != "NONE":  # NONE: single-statement reads run in SQLite's autocommit mode
                conn.exec_driver_sql(f"BEGIN {mode}")

        return engine, SQLiteDialect()
    if u.get_backend_name() == "postgresql":
        engine = create_engine(
            url,
            pool_size=pool_size,
            max_overflow=16,
            # no pre-ping (a round trip per request); a connection lost to a server restart fails one
            # statement, after which SQLAlchemy invalidates the whole pool and reconnects
            pool_recycle=3600,
            connect_args={"options": f"-c statement_timeout={max(0, query_timeout_ms)}"},
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
        )

        @event.listens_for(engine, "connect")
        def _pg_connect(dbapi_conn: Any, _rec: Any) -> None:
            from psycopg.types.json import set_json_loads

            set_json_loads(orjson.loads, dbapi_conn)  # raw-SQL reads of JSONB: orjson, not the json module

        return engine, PostgresDialect()
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///… or postgresql+psycopg://…")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the database to the newest schema (Alembic ``upgrade heads``: each capability's
    migrations are a branch of their own from the core's)."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.connect() as conn:
        # a migration of a large node (an index over millions of rows) must not meet the request limit
        pg = engine.dialect.name == "postgresql"
        if pg:
            conn.exec_driver_sql("SET statement_timeout = 0")
            conn.commit()
        else:
            conn.execution_options(phip_unbounded=True)
        cfg.attributes["connection"] = conn
        try:
            command.upgrade(cfg, "heads")
            if conn.in_transaction():
                conn.commit()
        except BaseException:
            if conn.in_transaction():
                conn.rollback()
            raise
        finally:
            if pg:
                conn.exec_driver_sql("RESET statement_timeout")  # the pool's connections keep the node's limit
                conn.commit()


class _TicketLock:
    """A first-come, first-served lock for the threads of one process.

    ``threading.Lock`` is not fair: a thread that releases it and asks again at once (a bulk
    writer committing back to back) takes it again before a waiting thread has woken up, so the
    checkpointer's restart could wait for as long as the writer keeps writing.  Here each thread
    draws a ticket and is served in that order.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._next = 0
        self._serving = 0
        #: a transaction the last holder left open for the next one to join (``WriterLock.hand_over``)
        self.group: Any = None

    def acquire(self) -> None:
        with self._cond:
            ticket = self._next
            self._next += 1
            while ticket != self._serving:
                self._cond.wait()

    def release(self) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()

    def waiting(self) -> int:
        """How many threads are queued behind the holder."""
        return max(0, self._next - self._serving - 1)


_TICKETS: dict[str, _TicketLock] = {}
_TICKETS_GUARD = threading.Lock()


def _ticket_lock(path: str | None) -> _TicketLock:
    """The one in-process queue of a database file's writers (a private one without a file)."""
    if path is None:
        return _TicketLock()
    with _TICKETS_GUARD:
        return _TICKETS.setdefault(os.path.realpath(path), _TicketLock())


class WriterLock:
    """One SQLite writer at a time, queued in order instead of by the busy handler.

    SQLite lets one connection write; the others poll with sleeps of up to 100 ms
    (``busy_timeout``), which starves writers under load.  Threads of one process queue, first
    come first served, on one ticket lock per database file (shared by every ``WriterLock`` of
    that file, so the WAL checkpointer's restart is served after the current writer, not after
    the last one); processes (``phip serve --workers N``, an import beside a server) then on an
    exclusive ``flock`` of a file next to the database.  Reentrant use is the caller's business
    (``Store.write_tx`` reuses an open transaction).  A holder may leave its transaction open for
    the next thread in the queue (:meth:`hand_over`, group commit: ``Store._grouped_tx``); whoever
    comes next joins it or commits it (:meth:`enter`).
    """

    def __init__(self, db_file: str | None) -> None:
        self._path = f"{db_file}-writer.lock" if db_file and db_file != ":memory:" else None
        self._thread = _ticket_lock(self._path)
        self._fd: int | None = None

    def __enter__(self) -> WriterLock:
        self.enter()
        return self

    def __exit__(self, *_exc: object) -> None:
        try:
            self.unlock_file()
        finally:
            self._thread.release()

    def enter(self, owner: object = None) -> Any:
        """Queue for the lock.  The previous holder may have left its transaction open for the next
        writer to join (:meth:`hand_over`): that group is returned if ``owner`` is its owner (the
        caller then holds the lock through it); any other open group is committed first (its
        ``close()``), the file lock is taken, and None is returned."""
        self._thread.acquire()
        try:
            group = self._thread.group
            if group is not None:
                self._thread.group = None
                if owner is not None and group.owner is owner:
                    return group
                group.close()
            if self._path is not None:
                if self._fd is None:
                    self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread.release()
            raise
        return None

    def waiting(self) -> int:
        """How many threads of this process are queued for the lock behind its holder."""
        return self._thread.waiting()

    def hand_over(self, group: object) -> None:
        """Let the next thread in the queue in, with ``group`` (an open transaction that holds the
        file lock) for it to join or to close."""
        self._thread.group = group
        self._thread.release()

    def release_queue(self) -> None:
        """Let the next thread in, the file lock already released (by a group's ``close()``)."""
        self._thread.release()

    def unlock_file(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
