"""phip.core.heap: the collector's settings for bulk work are put back afterwards."""

from __future__ import annotations

import gc

from phip.core import heap


def test_bulk_freezes_the_heap_and_puts_everything_back() -> None:
    before = gc.get_threshold()
    frozen_before = gc.get_freeze_count()
    with heap.bulk():
        assert gc.get_threshold() == heap.BULK_THRESHOLD
        assert gc.get_freeze_count() > frozen_before
        with heap.bulk((1000, 10, 10)):  # nested: the outermost settings hold
            assert gc.get_threshold() == heap.BULK_THRESHOLD
        assert gc.get_threshold() == heap.BULK_THRESHOLD
        assert gc.isenabled()  # rarer, never off
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen_before


def test_cycles_made_during_a_bulk_job_are_still_collected() -> None:
    import weakref

    class Node:
        pass

    with heap.bulk():
        a, b = Node(), Node()
        a.other, b.other = b, a  # type: ignore[attr-defined]
        ref = weakref.ref(a)
        del a, b
        keep = [[i] for i in range(3 * heap.BULK_THRESHOLD[0])]  # allocations enough for young collections
        assert ref() is None  # found by the collector on its own (no gc.collect() here)
        del keep
