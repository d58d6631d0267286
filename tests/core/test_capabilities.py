"""The capability registry, hook points, and the SQLite writer lock."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from phip import capabilities
from phip.core.capability import Capability
from phip.core.hooks import Hooks, Point
from phip.store.db import WriterLock


def test_every_enabled_capability_exposes_one() -> None:
    caps = capabilities.load()
    assert [c.name for c in caps] == [m.rsplit(".", 1)[1] for m in capabilities.ENABLED]
    assert all(isinstance(c, Capability) for c in caps)


def test_capabilities_selected_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHIP_CAPABILITIES", "none")
    assert capabilities.enabled() == ()
    monkeypatch.setenv("PHIP_CAPABILITIES", "audit, empi")
    assert capabilities.enabled() == ("phip.empi", "phip.audit")  # install order kept
    monkeypatch.setenv("PHIP_CAPABILITIES", "empi,nosuch")
    with pytest.raises(ValueError, match="nosuch"):
        capabilities.enabled()


def test_hooks_left_out_of_imports_catch_up_later() -> None:
    hooks = Hooks()
    calls: list[str] = []
    hooks.register(Point.AFTER_WRITE, lambda *_a: calls.append("always"))
    hooks.register(Point.AFTER_WRITE, lambda *_a: calls.append("online"), on_import=False)
    hooks.fire(Point.AFTER_WRITE, None, None)
    assert calls == ["always", "online"]
    calls.clear()
    hooks.fire(Point.AFTER_WRITE, None, None, importing=True)
    assert calls == ["always"]
    assert hooks.has(Point.AFTER_WRITE, importing=True)
    assert not hooks.has(Point.AFTER_IMPORT)


def _hold(db: str, started: mp.synchronize.Event, hold: float) -> None:
    with WriterLock(db):
        started.set()
        time.sleep(hold)


def test_writer_lock_queues_processes_and_threads(tmp_path: Path) -> None:
    db = str(tmp_path / "x.db")
    sqlite3.connect(db).close()
    ctx = mp.get_context("spawn")
    started = ctx.Event()
    p = ctx.Process(target=_hold, args=(db, started, 0.5))
    p.start()
    assert started.wait(30)
    t0 = time.monotonic()
    lock = WriterLock(db)
    with lock:  # waits in the kernel for the other process
        waited = time.monotonic() - t0
    p.join(30)
    assert waited >= 0.3
    order: list[int] = []

    def worker(k: int) -> None:
        with lock:
            order.append(k)
            time.sleep(0.01)
            order.append(k)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(order[i] == order[i + 1] for i in range(0, len(order), 2))  # never interleaved
    lock.close()
