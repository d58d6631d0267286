"""Server-assigned resource ids: time-ordered UUIDs (RFC 9562 version 7).

A random (version 4) id lands at a random place in every index keyed by it — the resources'
``(type, id)`` key, the references to it, the engines' per-record tables — so each write dirties
another page of each.  A version 7 UUID starts with the millisecond of its making and, within one
millisecond, counts up (RFC 9562 §6.2, method 3: the 12 bits below the millisecond are a
sub-millisecond fraction; a clash with the last id made in this process steps it on): ids made one
after the other sort one after the other, and the new rows of a write go to the end of each index.
The remaining 62 bits are random, so ids from different processes and nodes do not collide.
"""

from __future__ import annotations

import os
import threading
import time

_lock = threading.Lock()
_last = 0  # the last (48-bit millisecond << 12 | 12-bit fraction) made in this process


def uuid7() -> str:
    """A new version 7 UUID as its 36-character text."""
    global _last
    ns = time.time_ns()
    stamp = ((ns // 1_000_000) << 12) | ((ns % 1_000_000) * 4096 // 1_000_000)
    with _lock:
        if stamp <= _last:
            stamp = _last + 1
        _last = stamp
    rand = int.from_bytes(os.urandom(8), "big") & 0x3FFF_FFFF_FFFF_FFFF
    value = (stamp >> 12) << 80 | 0x7 << 76 | (stamp & 0xFFF) << 64 | 0b10 << 62 | rand
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


__all__ = ["uuid7"]
