"""The capabilities a node runs, in install order (the order of their hooks).

Security first (it labels and guards what follows), then terminology (local codes gain
standard codings before anything reads them), then the master patient index, the
registries, data quality, and audit last (it records what the others did).
"""

from __future__ import annotations

import importlib
from functools import cache

from phip.core.capability import Capability

ENABLED: tuple[str, ...] = (
    "phip.security",
    "phip.privacy",
    "phip.terminology",
    "phip.empi",
    "phip.registry",
    "phip.quality",
    "phip.audit",
)


@cache
def load() -> tuple[Capability, ...]:
    """Import every enabled capability package and return its ``CAPABILITY``."""
    caps: list[Capability] = []
    for mod in ENABLED:
        m = importlib.import_module(mod)
        cap = getattr(m, "CAPABILITY", None)
        if cap is None:
            continue
        if not isinstance(cap, Capability):
            raise TypeError(f"{mod}.CAPABILITY must be a phip.core.capability.Capability")
        caps.append(cap)
    return tuple(caps)


def load_tables() -> None:
    """Declare every capability's tables on ``phip.store.schema.metadata``."""
    for cap in load():
        if cap.tables is not None:
            cap.tables()
