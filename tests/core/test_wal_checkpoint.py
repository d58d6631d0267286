"""SQLite's write-ahead log is copied into the database by a background thread, not by the
request whose commit happens to push it over the limit."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from phip.store import db


def test_background_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "CHECKPOINT_BYTES", 256 * 1024)
    monkeypatch.setattr(db, "CHECKPOINT_POLL_S", 0.05)
    monkeypatch.delenv("PHIP_WAL_CHECKPOINT", raising=False)
    f = tmp_path / "x.db"
    engine, _d = db.make_engine(f"sqlite:///{f}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0  # not inline
            conn.exec_driver_sql("CREATE TABLE t (v TEXT)")
            for _ in range(20):
                conn.execute(text("INSERT INTO t VALUES (:v)"), [{"v": "x" * 1000}] * 100)
            conn.commit()
        assert os.path.getsize(f"{f}-wal") > 1_000_000
        deadline = time.monotonic() + 10
        while os.path.getsize(f) < 1_500_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.path.getsize(f) >= 1_500_000  # the rows reached the database file
    finally:
        engine.dispose()


def test_inline_checkpoint_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHIP_WAL_CHECKPOINT", "inline")
    engine, _d = db.make_engine(f"sqlite:///{tmp_path / 'y.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 10000
    finally:
        engine.dispose()


def test_log_stays_bounded_under_a_writer_that_never_pauses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bulk writer commits back to back: passive checkpoints never catch up with it, so the
    checkpointer restarts the log once it passes RESTART_BYTES (else it would grow with all data)."""
    monkeypatch.setattr(db, "CHECKPOINT_BYTES", 256 * 1024)
    monkeypatch.setattr(db, "RESTART_BYTES", 2 * 1024 * 1024)
    monkeypatch.setattr(db, "CHECKPOINT_POLL_S", 0.02)
    monkeypatch.delenv("PHIP_WAL_CHECKPOINT", raising=False)
    f = tmp_path / "z.db"
    engine, _d = db.make_engine(f"sqlite:///{f}")
    try:
        largest = 0
        writers = db.WriterLock(str(f))  # as Store.write_tx takes it
        with engine.connect().execution_options(sqlite_begin="IMMEDIATE") as conn:
            conn.exec_driver_sql("CREATE TABLE t (v TEXT)")
            conn.commit()
            for i in range(400):  # ~40 MB of rows, about 100 kB a commit, no pause between commits
                with writers:
                    conn.execute(text("INSERT INTO t VALUES (:v)"), [{"v": f"{i:05d}" + "x" * 995}] * 100)
                    conn.commit()
                largest = max(largest, os.path.getsize(f"{f}-wal"))
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 40_000
        assert largest < 24 * 1024 * 1024, f"the log grew to {largest:,} bytes"  # 12.8 and 13.5 MB seen in the suite
    finally:
        engine.dispose()
        writers.close()
    engine, _d = db.make_engine(f"sqlite:///{f}")
    try:
        with engine.connect() as conn:  # nothing lost by the restarts
            assert conn.exec_driver_sql("SELECT count(DISTINCT v) FROM t").scalar() == 400
    finally:
        engine.dispose()


def test_writer_lock_serves_a_waiting_thread_before_one_that_asks_again(tmp_path: Path) -> None:
    """The checkpointer's restart queues behind the current writer, not behind every later commit:
    a writer that releases and asks again at once goes after the thread that was waiting."""
    import threading

    path = str(tmp_path / "w.db")
    writer, checkpointer = db.WriterLock(path), db.WriterLock(path)  # two instances, one queue
    order: list[str] = []
    waiting = threading.Event()

    def wait_for_turn() -> None:
        waiting.set()
        with checkpointer:
            order.append("checkpointer")

    try:
        with writer:
            t = threading.Thread(target=wait_for_turn)
            t.start()
            waiting.wait(5)
            time.sleep(0.1)  # the other thread is queued now
        with writer:  # asks again at once, as a bulk writer does
            order.append("writer")
        t.join(5)
        assert order == ["checkpointer", "writer"]
    finally:
        writer.close()
        checkpointer.close()


_WRITER = r"""
import random, sys, threading, uuid
from sqlalchemy import text
from phip.store import db
db.CHECKPOINT_BYTES, db.RESTART_BYTES, db.CHECKPOINT_POLL_S = 64 * 1024, 1024 * 1024, 0.002
path, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
engine, _d = db.make_engine(f"sqlite:///{path}")
lock = db.WriterLock(path)
rnd = random.Random(tag)
done = threading.Event()
failed = []


def read() -> None:  # readers that hold their snapshot for a while, as searches and exports do
    while not done.is_set():
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT count(*), sum(length(v)) FROM t INDEXED BY ix_t_k WHERE k > ''")).one()
        except Exception as e:  # noqa: BLE001
            failed.append(repr(e))
            return


readers = [threading.Thread(target=read) for _ in range(3)]
for r in readers:
    r.start()
try:
    for i in range(n):
        with lock, engine.connect().execution_options(sqlite_begin="IMMEDIATE") as conn:
            conn.execute(text("INSERT INTO t (k, v) VALUES (:k, :v)"),
                         [{"k": str(uuid.UUID(int=rnd.getrandbits(128))), "v": "x" * rnd.randint(50, 1500)}
                          for _ in range(20)])
            conn.commit()
        with engine.connect() as conn:  # a reader between the writes, on another pooled connection
            conn.execute(text("SELECT count(*) FROM t WHERE k > :k"), {"k": f"{i % 16:x}"}).scalar()
finally:
    done.set()
    for r in readers:
        r.join()
    engine.dispose()
    lock.close()
if failed:
    sys.exit("reader failed: " + failed[0])
"""


def test_two_processes_writing_while_checkpointers_run_keep_the_database_intact(tmp_path: Path) -> None:
    """``phip serve --workers 2``: two processes write and read one database, each with its own
    checkpointer thread (here checkpointing every few commits).  Nothing the checkpointer does may
    break SQLite's locking (e.g. closing a descriptor of the database's files drops the process's
    POSIX locks on them): afterwards the database is intact and holds every row."""
    import sqlite3
    import subprocess
    import sys

    f = str(tmp_path / "mp.db")
    con = sqlite3.connect(f)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t (k TEXT NOT NULL, v TEXT NOT NULL)")
    con.execute("CREATE INDEX ix_t_k ON t (k)")
    con.commit()
    con.close()
    n = 150
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, f, tag, str(n)], stderr=subprocess.PIPE)
             for tag in ("a", "b")]
    errors = [p.communicate(timeout=300)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    con = sqlite3.connect(f)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 2 * n * 20
    finally:
        con.close()
