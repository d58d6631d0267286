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
