"""How the node's processes use Python's cyclic garbage collector.

A node holds a large heap that lives as long as the process: the FHIR definitions, the search
parameter tables, the code tables, the master index's caches.  With the default thresholds the
collector walks all of it again and again while a load allocates millions of short-lived dicts
(one per parsed resource and element): on a 149k-resource import that was 15–25% of the import's
time (``bench/bench_quality.py``; an ``orjson.loads`` of every line, keeping the results, took 3.4 s
with the collector on and 0.7 s with it off).

Two remedies, the ones large Python services use:

- :func:`settle` moves what exists now (the start-up heap) into the permanent generation
  (``gc.freeze``), so no later collection walks it, and collects the young generation less often;
- :func:`bulk` does the same for the length of a bulk job and then puts things back.

Neither turns collection off: cyclic garbage is still found, only less often.  The data
processed are trees (JSON), so little of it is cyclic.

And one for the C heap: :func:`trim_when_idle` gives a serving process's freed memory back to the
system when the process goes idle after a burst of work (glibc keeps it otherwise, per thread arena).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: young-generation threshold for a serving process: ~70× fewer young collections than the default 700
SERVE_THRESHOLD = (50_000, 20, 100)
#: for a bulk job: young collections every 100,000 allocations, the old generation almost never
BULK_THRESHOLD = (100_000, 50, 100)

_lock = threading.Lock()
_depth = 0
_saved: tuple[int, int, int] | None = None


def settle(threshold: tuple[int, int, int] = SERVE_THRESHOLD) -> None:
    """Once the process has loaded what it keeps (after start-up): freeze it and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*threshold)


@contextmanager
def bulk(threshold: tuple[int, int, int] = BULK_THRESHOLD) -> Iterator[None]:
    """For the length of a bulk job (an import): the heap as it is now is frozen and the collector
    runs rarely; afterwards the earlier thresholds come back and the frozen objects can be
    collected again.  Nested uses share the outermost one."""
    global _depth, _saved
    with _lock:
        _depth += 1
        if _depth == 1:
            _saved = gc.get_threshold()
            gc.collect()
            gc.freeze()
            gc.set_threshold(*threshold)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved is not None:
                gc.set_threshold(*_saved)
                gc.unfreeze()
                _saved = None


# -- giving memory back when idle ------------------------------------------------------------------------
#: the idle trimmer samples the process's CPU time this often (seconds)
TRIM_PERIOD = 1.0
#: CPU seconds within one period that count as busy (work that may have left free heap behind) …
TRIM_BUSY_CPU = 0.2
#: … and as idle (then the heap is trimmed, once per busy spell)
TRIM_IDLE_CPU = 0.02


def trim() -> bool:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``): after a burst of
    work the allocator keeps what was freed — in every thread's arena — for later, and a serving
    process's RSS stays at its peak.  False where the C library has no such call."""
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False


_TRIM: Any = None


def _malloc_trim() -> Any:
    global _TRIM
    if _TRIM is None:
        import ctypes

        try:  # (the process's own symbols: the C library it runs on, with no search for its file)
            _TRIM = ctypes.CDLL(None).malloc_trim
            _TRIM.argtypes, _TRIM.restype = [ctypes.c_size_t], ctypes.c_int
        except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
            _TRIM = False
    return _TRIM or None


class IdleTrim:
    """When to trim: after a period with at least ``busy`` CPU seconds, the first period with less
    than ``idle`` (one trim per busy spell; none while the process keeps working or stays idle)."""

    def __init__(self, busy: float = TRIM_BUSY_CPU, idle: float = TRIM_IDLE_CPU) -> None:
        self.busy, self.idle = busy, idle
        self.owed = False

    def step(self, cpu: float) -> bool:
        """``cpu``: the CPU seconds of the period just ended; True: trim now."""
        if cpu >= self.busy:
            self.owed = True
        elif cpu < self.idle and self.owed:
            self.owed = False
            return True
        return False


def trim_when_idle(period: float = TRIM_PERIOD) -> threading.Thread | None:
    """Start a daemon thread that trims the heap (:func:`trim`) each time this process goes idle
    after work (:class:`IdleTrim`); None where the C library cannot trim."""
    if _malloc_trim() is None:
        return None
    import time

    def run() -> None:
        rule = IdleTrim()
        last = time.process_time()
        while True:
            time.sleep(period)
            now = time.process_time()
            if rule.step(now - last):
                trim()
            last = time.process_time()

    t = threading.Thread(target=run, name="phip-heap-trim", daemon=True)
    t.start()
    return t
