"""Installing the master patient index on a node: rules, hooks, the service in ``node.ext``.

The active rules are the highest ``DIR/empi/rules-v<N>.json`` of the node (written by
``phip empi train``), else the packaged default; they are validated when the node opens, and a
bad file stops the node with a message naming every problem.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from phip.core.hooks import Point
from phip.empi.engine import PREPARED, Empi
from phip.empi.rules import Rules, load_rules

RULES_RE = re.compile(r"^rules-v(\d+)\.json$")


def rules_dir(data: Path) -> Path:
    return Path(data) / "empi"


def active_rules_path(data: Path) -> Path | None:
    d = rules_dir(data)
    if not d.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := RULES_RE.match(p.name))]
    return max(found)[1] if found else None


def node_rules(data: Path) -> Rules:
    return load_rules(active_rules_path(data))


def install(node: Any) -> None:
    rules = node_rules(node.data)
    empi = Empi(node.store, rules)
    node.ext["empi"] = empi
    from phip.empi.sealed import sealed_column

    node.store.sealed_columns.append(sealed_column(empi.rules))  # key rotation re-seals the features too
    hooks = node.store.hooks
    hooks.register(Point.BEFORE_WRITE, empi.before_write)
    hooks.register(Point.AFTER_WRITE, empi.after_write, on_import=False)
    hooks.register_prepare(PREPARED, empi.prepare_write)  # a transaction Bundle's Patients, before its lock
    # an import's Patients are linked once the load is done, before a large load's search indexes are
    # built: the Persons' index rows go in at the ends of the unindexed tables and are sorted with the
    # rest (after the build, each went into a big index at a random place: ~30 s of the 1M-resource
    # import's batch phase); AFTER_IMPORT links whatever is left (a run cut off before IMPORT_LOADED)
    hooks.register(Point.IMPORT_LOADED, _after_import(empi))
    hooks.register(Point.AFTER_IMPORT, _after_import(empi))


def _after_import(empi: Empi) -> Any:
    def run(store: Any, loaded: dict[str, int]) -> None:
        if loaded.get("Patient"):
            from phip.empi.batch import link_unindexed

            link_unindexed(empi)

    return run
