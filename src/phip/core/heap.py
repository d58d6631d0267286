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
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

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
