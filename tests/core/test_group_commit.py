"""Group commit on SQLite: a lean writer that finds another queued behind it leaves its transaction
open for that one to join, and the last of the group commits for all (``Store._grouped_tx``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from phip.store import repository as R
from phip.store.repository import Store


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = Store(f"sqlite:///{tmp_path / 'group.db'}")
    with s.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (k INTEGER PRIMARY KEY, name TEXT)")
    yield s
    s.dispose()


def _names(store: Store) -> list[str]:
    with store.engine.connect() as c:
        return [r[0] for r in c.exec_driver_sql("SELECT name FROM t ORDER BY k")]


def _until(pred: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.001)


class Writer(threading.Thread):
    """A thread that runs ``body(tx)`` in ``store.write_tx(lean=...)`` and keeps its outcome."""

    def __init__(self, store: Store, body: Callable[[Any], None], *, lean: bool = True) -> None:
        super().__init__(daemon=True)
        self.store, self.body, self.lean = store, body, lean
        self.inside = threading.Event()
        self.error: BaseException | None = None
        self.returned_at = 0.0

    def run(self) -> None:
        try:
            with self.store.write_tx(lean=self.lean) as tx:
                self.inside.set()
                self.body(tx)
        except BaseException as e:  # kept for the test to look at
            self.error = e
        self.returned_at = time.monotonic()


def _insert(name: str) -> Callable[[Any], None]:
    def body(tx: Any) -> None:
        tx.conn.exec_driver_sql("INSERT INTO t (name) VALUES (?)", (name,))
    return body


def _pair(first: Writer, second: Writer) -> None:
    """Start ``first``; once it is inside its transaction, start ``second``; wait for both."""
    first.start()
    first.inside.wait(5)
    second.start()
    first.join(10)
    second.join(10)


def _leader(store: Store, name: str) -> Writer:
    """A writer that inserts ``name`` and then waits inside until another thread queues behind it."""
    lock = store._write_lock
    assert lock is not None

    def body(tx: Any) -> None:
        _insert(name)(tx)
        _until(lambda: lock.waiting() > 0, "a second writer to queue")
    return Writer(store, body)


def test_a_queued_writer_joins_and_both_commit_together(store: Store) -> None:
    seen: dict[str, Any] = {}
    a = _leader(store, "a")

    def body_b(tx: Any) -> None:
        # the same transaction as a's: its row is there, though no other connection sees it yet
        seen["own"] = [r[0] for r in tx.conn.exec_driver_sql("SELECT name FROM t")]
        seen["others"] = _names(store)
        _insert("b")(tx)
        seen["b_done"] = time.monotonic()

    b = Writer(store, body_b)
    _pair(a, b)
    assert a.error is None and b.error is None
    assert seen["own"] == ["a"] and seen["others"] == []
    assert a.returned_at >= seen["b_done"]  # a's write was acknowledged only once the group committed
    assert _names(store) == ["a", "b"]


def test_a_failing_member_rolls_back_its_own_writes_only(store: Store) -> None:
    a = _leader(store, "a")

    def body_b(tx: Any) -> None:
        _insert("b")(tx)
        raise ValueError("entry 3 is invalid")

    b = Writer(store, body_b)
    _pair(a, b)
    assert a.error is None
    assert isinstance(b.error, ValueError)
    assert _names(store) == ["a"]
    # the store writes on afterwards
    with store.write_tx(lean=True) as tx:
        _insert("c")(tx)
    assert _names(store) == ["a", "c"]


def test_a_transaction_lost_midway_fails_every_member(store: Store) -> None:
    a = _leader(store, "a")

    def body_b(tx: Any) -> None:
        _insert("b")(tx)
        tx.conn.exec_driver_sql("ROLLBACK")  # as SQLite does itself on some errors (disk full, I/O)

    b = Writer(store, body_b)
    _pair(a, b)
    assert isinstance(a.error, sa.exc.DBAPIError)  # a's write was never acknowledged
    assert b.error is not None
    assert _names(store) == []
    with store.write_tx(lean=True) as tx:
        _insert("c")(tx)
    assert _names(store) == ["c"]


class _FailingCommit:
    def __init__(self, trans: Any) -> None:
        self.trans = trans

    def commit(self) -> None:
        raise OSError("disk full")

    def rollback(self) -> None:
        self.trans.rollback()


def test_a_failed_commit_is_every_members_error(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    real = R._Group.close

    def close(self: Any, error: BaseException | None = None) -> None:
        if error is None and len(self.members) > 1:
            self.trans = _FailingCommit(self.trans)  # the COMMIT itself fails
        real(self, error)

    monkeypatch.setattr(R._Group, "close", close)
    a = _leader(store, "a")
    b = Writer(store, _insert("b"))
    _pair(a, b)
    assert isinstance(a.error, OSError) and isinstance(b.error, OSError)
    assert _names(store) == []


def test_a_writer_of_another_kind_commits_the_open_group_first(store: Store) -> None:
    seen: dict[str, Any] = {}
    a = _leader(store, "a")

    def body_c(tx: Any) -> None:
        seen["committed"] = _names(store)  # another connection: a's row is committed already
        _insert("c")(tx)

    c = Writer(store, body_c, lean=False)
    _pair(a, c)
    assert a.error is None and c.error is None
    assert seen["committed"] == ["a"]
    assert _names(store) == ["a", "c"]


def test_groups_are_bounded(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """With writers always queued, groups still commit every GROUP_MAX members."""
    monkeypatch.setattr(R, "GROUP_MAX", 3)
    sizes: list[int] = []
    real = R._Group.close

    def close(self: Any, error: BaseException | None = None) -> None:
        sizes.append(len(self.members))
        real(self, error)

    monkeypatch.setattr(R._Group, "close", close)
    def body(tx: Any) -> None:
        _insert("x")(tx)
        time.sleep(0.002)

    threads = [Writer(store, body) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert all(t.error is None for t in threads)
    assert sum(sizes) == 10 and max(sizes) <= 3
    assert len(_names(store)) == 10

