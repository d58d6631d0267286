"""The node's query limit is for requests: index builds, statistics and migrations, whose time grows
with the data, run without it (a 1M-resource import's index build was cut off by it)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa

from phip.store import schema as S
from phip.store.db import is_timeout
from phip.store.repository import Settings, Store

#: the limit of each backend's test node: SQLite checks it per statement (a progress handler, so
#: 1 ms is safe); on PostgreSQL a limit that small could cancel the SET that lifts it
LIMIT_MS = {"sqlite": 1, "postgresql": 100}


def _fill(backend: str, url: str) -> None:
    """idx_token rows enough that building its value index takes longer than the limit."""
    store = Store(url)
    try:
        store.migrate()
        with store.engine.begin() as conn:
            store.dialect.unbounded(conn)
            conn.execute(S.idx_token.delete())
            if backend == "postgresql":
                conn.exec_driver_sql("INSERT INTO idx_token (rid, param, grp, system, code) SELECT g, mod(g, 50), 0, "
                                     "'urn:x', 'c' || mod(g, 997) FROM generate_series(1, 500000) g")
            else:
                conn.execute(S.idx_token.insert(), [
                    {"rid": i, "param": i % 50, "grp": 0, "system": "urn:x", "code": f"c{i % 997}", "text": None}
                    for i in range(200_000)])
        store.defer_search_indexes()
    finally:
        store.dispose()


def test_index_build_runs_past_the_request_limit(backend: str, db_url: str) -> None:
    _fill(backend, db_url)
    limit = LIMIT_MS[backend]
    store = Store(db_url, Settings(query_timeout_ms=limit))
    try:
        # a request-like statement still meets the limit …
        with pytest.raises(sa.exc.DBAPIError) as e, store.engine.connect() as conn:
            if backend == "postgresql":
                conn.exec_driver_sql("SELECT pg_sleep(1)")
            else:
                conn.execute(sa.select(sa.func.count()).select_from(S.idx_token).where(
                    S.idx_token.c.code.like("%9%"), S.idx_token.c.system != "urn:y")).scalar_one()
        assert is_timeout(e.value)
        # … the index build does not (and took longer than the limit), and the statistics neither
        t0 = time.perf_counter()
        assert store.ensure_indexes() >= 1
        assert time.perf_counter() - t0 > limit / 1000
        store.dialect.analyze(store.engine)
    finally:
        store.dispose()
    check = Store(db_url)
    try:
        assert check.ensure_indexes() == 0  # every index is there
    finally:
        check.dispose()


def test_lifting_the_limit_lasts_one_transaction_on_postgresql(backend: str, db_url: str) -> None:
    if backend != "postgresql":
        pytest.skip("the SQLite limit is a per-statement progress handler (above)")
    store = Store(db_url, Settings(query_timeout_ms=50))
    try:
        with store.engine.begin() as conn:
            store.dialect.unbounded(conn)
            conn.exec_driver_sql("SELECT pg_sleep(0.2)")
        with pytest.raises(sa.exc.DBAPIError) as e, store.engine.connect() as conn:
            conn.exec_driver_sql("SELECT pg_sleep(0.2)")
        assert is_timeout(e.value)
        store.migrate()  # lifts it for itself, and gives the connection back with the limit
        with store.engine.connect() as conn:
            limits: Any = {conn.exec_driver_sql("SHOW statement_timeout").scalar() for _ in range(3)}
        assert limits == {"50ms"}
    finally:
        store.dispose()


def test_an_index_build_sorts_with_helper_threads_and_gives_the_connection_back_as_it_was(
        backend: str, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite: the build's sort runs in a temporary file with helper threads and no memory map (a
    third faster at 1M resources, bench note in ``SQLiteDialect.index_build``); the connection then
    returns to the pool with the settings every connection has.  PostgreSQL: the limit is lifted."""
    _fill(backend, db_url)
    store = Store(db_url, Settings(query_timeout_ms=LIMIT_MS[backend]))
    names = ("threads", "temp_store", "mmap_size", "cache_size")
    try:
        if backend == "sqlite":
            with store.engine.connect() as conn:
                before = [conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in names]
            seen: list[Any] = []
            create = sa.Index.create

            def spying(index: Any, bind: Any, **kw: Any) -> None:
                seen.append([bind.exec_driver_sql(f"PRAGMA {p}").scalar() for p in names])
                create(index, bind, **kw)

            monkeypatch.setattr(sa.Index, "create", spying)
            assert store.ensure_indexes() >= 1
            assert seen and all(s[0] >= 1 and s[1] == 1 and s[2] == 0 for s in seen)
            assert before[:3] == [0, 2, 256 * 1024 * 1024]
            assert store.engine.pool.checkedin() == 1  # (so the next checkout is the builder's connection)
            with store.engine.connect() as conn:
                assert [conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in names] == before
        else:
            assert store.ensure_indexes() >= 1  # past the 100 ms limit (the test above shows it)
    finally:
        store.dispose()
