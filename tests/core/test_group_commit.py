"""Group commit (phip.store.group): writes that queue behind one in progress share its SQLite
transaction, each in a savepoint; each gets its own outcome, none returns before the commit."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from phip.store.db import make_engine
from phip.store.group import GroupAborted, GroupCommit


@pytest.fixture()
def db(tmp_path: Path) -> Any:
    engine, _dialect = make_engine(f"sqlite:///{tmp_path / 'g.db'}")
    sa.event.listen(engine, "connect", lambda dbapi, _rec: dbapi.execute("PRAGMA foreign_keys=ON"))
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE t (k TEXT PRIMARY KEY, "
                          "parent TEXT REFERENCES t(k) DEFERRABLE INITIALLY DEFERRED)")
    gc = GroupCommit(threading.Lock(), lambda: engine.connect().execution_options(sqlite_begin="IMMEDIATE"))
    yield engine, gc
    engine.dispose()


def _keys(engine: Any) -> set[str]:
    with engine.connect() as c:
        return {r[0] for r in c.exec_driver_sql("SELECT k FROM t")}


def _wait_for(cond: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.005)


def _run_group(gc: GroupCommit, bodies: dict[str, Any]) -> dict[str, Any]:
    """The first body leads and holds the transaction until the others wait to join; returns each
    writer's outcome (None, or the exception it got)."""
    out: dict[str, Any] = {}
    names = list(bodies)

    def writer(name: str) -> None:
        try:
            with gc.member() as conn:
                if name == names[0]:
                    _wait_for(lambda: gc._group is not None and gc._group.waiting == len(names) - 1)
                bodies[name](conn)
            out[name] = None
        except Exception as e:
            out[name] = e

    first = threading.Thread(target=writer, args=(names[0],))
    first.start()
    _wait_for(lambda: gc._group is not None and gc._group.conn is not None)
    rest = [threading.Thread(target=writer, args=(n,)) for n in names[1:]]
    for t in rest:
        t.start()
    for t in [first, *rest]:
        t.join(20)
    return out


def _insert(key: str, parent: str | None = None) -> Any:
    return lambda conn: conn.exec_driver_sql("INSERT INTO t (k, parent) VALUES (?, ?)", (key, parent))


def test_queued_writes_share_one_commit(db: Any) -> None:
    engine, gc = db
    out = _run_group(gc, {"a": _insert("a"), "b": _insert("b"), "c": _insert("c")})
    assert out == {"a": None, "b": None, "c": None}
    assert _keys(engine) == {"a", "b", "c"}
    assert gc.stats == {"groups": 1, "writes": 3, "largest": 3}


def test_a_failing_member_is_rolled_back_alone(db: Any) -> None:
    engine, gc = db

    def bad(conn: Any) -> None:
        conn.exec_driver_sql("INSERT INTO t (k) VALUES ('b')")
        raise ValueError("entry 3 is invalid")

    out = _run_group(gc, {"a": _insert("a"), "b": bad, "c": _insert("c")})
    assert out["a"] is None and out["c"] is None
    assert isinstance(out["b"], ValueError)
    assert _keys(engine) == {"a", "c"}


def test_a_failing_leader_ends_its_group_and_the_others_go_on(db: Any) -> None:
    engine, gc = db

    def bad(conn: Any) -> None:
        conn.exec_driver_sql("INSERT INTO t (k) VALUES ('a')")
        raise ValueError("no")

    out = _run_group(gc, {"a": bad, "b": _insert("b"), "c": _insert("c")})
    assert isinstance(out["a"], ValueError) and out["b"] is None and out["c"] is None
    assert _keys(engine) == {"b", "c"}


def test_a_failed_commit_fails_every_member(db: Any) -> None:
    """A deferred constraint fails at COMMIT: no write of the group was stored, and each says so."""
    engine, gc = db
    out = _run_group(gc, {"a": _insert("a"), "b": _insert("b", parent="missing"), "c": _insert("c")})
    assert all(isinstance(e, GroupAborted) for e in out.values()), out
    assert _keys(engine) == set()


def test_a_lone_write_commits_at_once(db: Any) -> None:
    engine, gc = db
    with gc.member() as conn:
        conn.exec_driver_sql("INSERT INTO t (k) VALUES ('x')")
    assert _keys(engine) == {"x"} and gc.stats["largest"] == 1
    with pytest.raises(sa.exc.IntegrityError), gc.member() as conn:
        conn.exec_driver_sql("INSERT INTO t (k) VALUES ('x')")
    assert _keys(engine) == {"x"} and gc._group is None


def test_many_writers_all_finish_with_their_own_outcomes(db: Any) -> None:
    """Writers that keep coming, some failing: every write ends (a write that waited for a group
    which committed meanwhile must not be counted as waiting for the next), and exactly the
    successful ones are stored."""
    engine, gc = db
    stored: list[str] = []
    failed: list[str] = []
    guard = threading.Lock()

    def writer(w: int) -> None:
        for i in range(60):
            key = f"{w}-{i}"
            try:
                with gc.member() as conn:
                    conn.exec_driver_sql("INSERT INTO t (k) VALUES (?)", (key,))
                    if i % 7 == w % 7:
                        raise ValueError(key)
                with guard:
                    stored.append(key)
            except ValueError:
                with guard:
                    failed.append(key)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a writer never finished"
    assert len(stored) + len(failed) == 360 and failed
    assert _keys(engine) == set(stored)
