"""Database engines and the per-backend differences, in one place.

SQLite (WAL, ``BEGIN IMMEDIATE`` so writers queue instead of failing on upgrade) is the
embedded default; PostgreSQL via psycopg 3 is the production backend.  Everything
backend-specific that the store needs is a method of :class:`Dialect`.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).parent / "migrations"


def _json_dumps(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


class Dialect:
    """Hooks for what differs between backends."""

    name = "base"

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


class SQLiteDialect(Dialect):
    name = "sqlite"

    def next_seq(self, conn: Connection, n: int) -> int:
        # Writers are serialised by BEGIN IMMEDIATE, so max+1 is commit-ordered.
        cur = conn.execute(text("SELECT COALESCE(MAX(seq), 0) FROM changes")).scalar_one()
        return int(cur) + 1

    def reserve_rids(self, conn: Connection, n: int) -> list[int]:
        # the write transaction holds SQLite's write lock, so max+1… cannot be taken by another writer
        top = int(conn.execute(text("SELECT COALESCE(MAX(rid), 0) FROM resources")).scalar_one())
        return list(range(top + 1, top + 1 + n))

    def analyze(self, engine: Engine) -> None:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA analysis_limit=2000")  # sampled: seconds, not minutes, at 1M rows
            conn.exec_driver_sql("ANALYZE")
            conn.commit()


class PostgresDialect(Dialect):
    name = "postgresql"
    LOCK_KEY = 0x70686970  # "phip"

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
            conn.exec_driver_sql("ANALYZE")
            conn.commit()


def is_timeout(exc: BaseException) -> bool:
    """True when a DBAPI error is the cancellation of a statement that ran too long."""
    orig = getattr(exc, "orig", exc)
    name = type(orig).__name__
    return name == "QueryCanceled" or "interrupted" in str(orig)


def make_engine(url: str, *, pool_size: int = 8, query_timeout_ms: int = 30000) -> tuple[Engine, Dialect]:
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=16,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA wal_autocheckpoint=10000")  # fewer, larger checkpoints: hot pages written once
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA cache_size=-65536")  # 64 MiB a connection: RSS stays bounded with many
            cur.execute("PRAGMA temp_store=MEMORY")
            cur.execute("PRAGMA mmap_size=268435456")
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
                holder[0] = time.monotonic()

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
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "heads")
        if conn.in_transaction():
            conn.commit()


class WriterLock:
    """One SQLite writer at a time, queued in the kernel instead of the busy handler.

    SQLite lets one connection write; the others poll with sleeps of up to 100 ms
    (``busy_timeout``), which starves writers under load.  Threads of one process queue on
    a ``threading.Lock``; processes (``phip serve --workers N``, an import beside a server)
    on an exclusive ``flock`` of a file next to the database.  Reentrant use is the
    caller's business (``Store.write_tx`` reuses an open transaction).
    """

    def __init__(self, db_file: str | None) -> None:
        self._thread = threading.Lock()
        self._path = f"{db_file}-writer.lock" if db_file and db_file != ":memory:" else None
        self._fd: int | None = None

    def __enter__(self) -> WriterLock:
        self._thread.acquire()
        try:
            if self._path is not None:
                if self._fd is None:
                    self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread.release()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread.release()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
