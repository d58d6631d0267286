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


def test_idle_trim_trims_once_after_each_busy_spell() -> None:
    rule = heap.IdleTrim(busy=0.2, idle=0.02)
    # idle from the start: nothing was freed by work, nothing to give back
    assert [rule.step(c) for c in (0.0, 0.001, 0.0)] == [False, False, False]
    # a burst, still busy, then idle: one trim, and none while it stays idle
    assert [rule.step(c) for c in (0.9, 0.5, 0.0, 0.0, 0.001)] == [False, False, True, False, False]
    # light work (between idle and busy) neither owes a trim nor pays one
    assert [rule.step(c) for c in (0.1, 0.0)] == [False, False]
    # light work after a burst: the trim waits for the idle period
    assert [rule.step(c) for c in (0.3, 0.1, 0.05, 0.01)] == [False, False, False, True]


def test_trim_gives_freed_heap_back_to_the_system() -> None:
    import sys
    import threading

    import pytest

    if not sys.platform.startswith("linux") or heap._malloc_trim() is None:
        pytest.skip("glibc's malloc_trim only")

    def rss_anon_kib() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("RssAnon"))

    # ~100 MB allocated and freed in another thread (its own malloc arena), in blocks under the mmap
    # threshold, with small survivors among them: free() alone gives back only a heap's free top
    kept: list[bytearray] = []

    def burst() -> None:
        junk = []
        for i in range(1600):
            junk.append(bytearray(64 * 1024))
            if i % 16 == 0:
                kept.append(bytearray(1024))  # (over pymalloc's 512 bytes: from malloc, among the blocks)
        del junk

    t = threading.Thread(target=burst)
    t.start()
    t.join()
    before = rss_anon_kib()
    assert heap.trim() is True
    after = rss_anon_kib()
    assert before - after > 20_000, (before, after)  # KiB: most of the freed blocks went back
