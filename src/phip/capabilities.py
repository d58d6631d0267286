"""The capabilities a node runs, in install order (the order of their hooks).

Security first (it labels and guards what follows), then terminology (local codes gain
standard codings before anything reads them), then the master patient index, the
registries, data quality, and audit last (it records what the others did).
"""

from __future__ import annotations

import importlib
import os
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


def enabled() -> tuple[str, ...]:
    """``ENABLED``, or the subset named by ``$PHIP_CAPABILITIES`` (comma-separated short names such
    as ``empi,terminology``; ``none`` for the bare FHIR store, e.g. to benchmark the core alone)."""
    want = os.environ.get("PHIP_CAPABILITIES")
    if want is None:
        return ENABLED
    names = {w.strip() for w in want.split(",") if w.strip() and w.strip() != "none"}
    unknown = names - {m.rsplit(".", 1)[1] for m in ENABLED}
    if unknown:
        raise ValueError(f"$PHIP_CAPABILITIES names unknown capabilities: {', '.join(sorted(unknown))}")
    return tuple(m for m in ENABLED if m.rsplit(".", 1)[1] in names)


@cache
def load() -> tuple[Capability, ...]:
    """Import every enabled capability package and return its ``CAPABILITY``."""
    caps: list[Capability] = []
    for mod in enabled():
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
