"""Fast draws from a ``random.Random`` for the simulation's hot paths.

``Random.randint``/``randrange`` and ``choices`` with plain weights are slow (argument checks,
cumulative sums on every call); these do the same job from ``Random.random``, with cumulative
weights computed once by the caller.  Each call consumes exactly one draw, so streams stay
deterministic.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate
from random import Random
from typing import TypeVar

T = TypeVar("T")


def ri(rng: Random, lo: int, hi: int) -> int:
    """An integer in [lo, hi], like ``randint``."""
    return lo + int(rng.random() * (hi - lo + 1))


def below(rng: Random, n: int) -> int:
    """An integer in [0, n), like ``randrange(n)``."""
    return int(rng.random() * n)


def cumulative(weights: Sequence[float]) -> tuple[float, ...]:
    return tuple(accumulate(weights))


def pick(rng: Random, items: Sequence[T], cum: Sequence[float]) -> T:
    """One of ``items`` by cumulative weights ``cum`` (from :func:`cumulative`)."""
    return items[min(len(items) - 1, bisect_right(cum, rng.random() * cum[-1]))]
