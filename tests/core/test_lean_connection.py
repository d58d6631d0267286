"""The lean SQLite connection of REST write transactions: driver SQL gives what SQLAlchemy gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from phip.store.repository import LeanConnection, Store


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = Store(f"sqlite:///{tmp_path / 'lean.db'}")
    with s.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (k INTEGER PRIMARY KEY, name TEXT, n INTEGER)")
    yield s
    s.dispose()


def _same(store: Any, sql: str, params: Any = None, *, count_of_rows: bool = True) -> None:
    """The same statement on a plain SQLAlchemy connection and on a lean one (both rolled back).
    ``count_of_rows`` False: the count of a statement that returns rows is not compared (psycopg's
    differs; nothing uses it)."""
    with store.engine.connect() as plain:
        want = plain.exec_driver_sql(sql, params)
        want_rows = [tuple(r) for r in want] if want.returns_rows else None
        want_count = want.rowcount
        plain.rollback()
    with store.engine.connect() as c:
        lean = LeanConnection(c)
        got = lean.exec_driver_sql(sql, params)
        got_rows = [tuple(r) for r in got] if want_rows is not None else None
        assert got_rows == want_rows, sql
        if count_of_rows or want_rows is None:
            assert got.rowcount == want_count, sql
        c.rollback()


def test_results_match_sqlalchemy(store: Any) -> None:
    with store.engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t (name, n) VALUES (?, ?)", [("a", 1), ("b", 2), ("c", 2)])
    _same(store, "SELECT k, name, n FROM t ORDER BY k")
    _same(store, "SELECT name FROM t WHERE n = ?", (2,))
    _same(store, "SELECT COUNT(*), MAX(n) FROM t")
    _same(store, "UPDATE t SET n = n + 1 WHERE n = ?", (2,))
    _same(store, "INSERT INTO t (name, n) VALUES (?, ?)", [("d", 4), ("e", 5)])
    _same(store, "INSERT INTO t (name, n) VALUES (?, ?) RETURNING k", [("f", 6)])
    _same(store, "DELETE FROM t WHERE name = :name", {"name": "a"})


def test_result_interface(store: Any) -> None:
    with store.engine.connect() as c:
        lean = LeanConnection(c)
        lean.exec_driver_sql("INSERT INTO t (name, n) VALUES (?, ?)", [("a", 1), ("b", 2)])
        row = lean.exec_driver_sql("SELECT k, name AS label, n FROM t WHERE name = ?", ("b",)).first()
        assert (row.label, row.n, row[1], row[-1], tuple(row[1:])) == ("b", 2, "b", 2, ("b", 2))
        assert lean.exec_driver_sql("SELECT n FROM t WHERE name = ?", ("a",)).scalar_one() == 1
        assert lean.exec_driver_sql("SELECT n FROM t WHERE name = ?", ("zz",)).scalar() is None
        assert lean.exec_driver_sql("SELECT n FROM t WHERE name = ?", ("zz",)).first() is None
        assert lean.exec_driver_sql("SELECT n FROM t ORDER BY n").scalars() == [1, 2]
        with pytest.raises(sa.exc.NoResultFound):
            lean.exec_driver_sql("SELECT n FROM t WHERE name = ?", ("zz",)).one()
        with pytest.raises(sa.exc.MultipleResultsFound):
            lean.exec_driver_sql("SELECT n FROM t").scalar_one()
        res = lean.exec_driver_sql("SELECT n FROM t ORDER BY n")
        assert res.fetchone() == (1,) and res.fetchall() == [(2,)] and res.fetchone() is None
        # errors are SQLAlchemy's, as from exec_driver_sql
        with pytest.raises(sa.exc.IntegrityError):
            lean.exec_driver_sql("INSERT INTO t (k, name, n) VALUES (?, ?, ?)", (1, "dup", 0))
        with pytest.raises(sa.exc.OperationalError):
            lean.exec_driver_sql("SELECT nope FROM t")
        # everything else is the connection's own
        assert lean.dialect.name == "sqlite"
        assert lean.execute(sa.text("SELECT COUNT(*) FROM t")).scalar_one() == 2
        c.rollback()


def test_statement_clock_is_kept(store: Any) -> None:
    """The query time limit (a progress handler) measures each statement from its own start: a lean
    statement restarts the clock, so a slow earlier statement does not interrupt it."""
    with store.engine.connect() as c:
        lean = LeanConnection(c)
        holder = c.connection.info["phip_started"]
        holder[0] = 1.0  # as if the previous statement had started long ago
        lean.exec_driver_sql("SELECT COUNT(*) FROM t, t AS t2, t AS t3").scalar_one()
        assert holder[0] > 1.0


def test_repository_writes_use_it_on_sqlite(store: Any) -> None:
    seen: list[Any] = []
    with store.write_tx(lean=True) as tx:
        seen.append(type(tx.conn))
    with store.write_tx() as tx:
        seen.append(type(tx.conn))
        with store.write_tx(lean=True) as inner:  # an enclosing transaction keeps its kind
            seen.append(type(inner.conn))
    assert seen == [LeanConnection, sa.Connection, sa.Connection]


def test_postgresql_results_match_sqlalchemy(pg_url: str) -> None:
    """On PostgreSQL the lean connection runs psycopg's cursor: same rows, counts and errors."""
    s = Store(pg_url)
    try:
        with s.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS lean_t")
            conn.exec_driver_sql("CREATE TABLE lean_t (k SERIAL PRIMARY KEY, name TEXT UNIQUE, n INTEGER)")
            conn.exec_driver_sql("INSERT INTO lean_t (name, n) VALUES (%s, %s)", [("a", 1), ("b", 2), ("c", 2)])

        def same(sql: str, params: Any = None) -> None:
            _same(s, sql, params, count_of_rows=False)

        same("SELECT k, name, n FROM lean_t ORDER BY k")
        same("SELECT name FROM lean_t WHERE n = %s", (2,))
        same("UPDATE lean_t SET n = n + 1 WHERE n = %s", (2,))
        same("INSERT INTO lean_t (name, n) VALUES (%s, %s)", [("d", 4), ("e", 5)])
        same("INSERT INTO lean_t (name, n) VALUES (%s, %s) RETURNING name, n", [("f", 6)])  # (k: a sequence)
        same("DELETE FROM lean_t WHERE name = %(name)s", {"name": "a"})
        with s.engine.connect() as c:
            lean = LeanConnection(c)
            assert lean.exec_driver_sql("SELECT n FROM lean_t WHERE name = %s", ("b",)).first().n == 2
            with pytest.raises(sa.exc.IntegrityError):
                lean.exec_driver_sql("INSERT INTO lean_t (name, n) VALUES (%s, %s)", ("b", 9))
            c.rollback()
        with s.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE lean_t")
    finally:
        s.dispose()
