"""A phip node: its folder, configuration, keys, store and token service.

``init_node`` creates one (refusing to overwrite); ``Node.open`` opens it for the
CLI and the server.  The default database is a SQLite file inside the folder.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from phip import capabilities
from phip.node.config import LEVELS, NodeConfig, NodeError
from phip.security import keys
from phip.security.tokens import TokenService
from phip.store.repository import Settings, Store

REGION_RE = re.compile(r"^\d{2}(\d{2}){0,2}$")


class Node:
    def __init__(self, data: Path, config: NodeConfig, *, pool_size: int = 8) -> None:
        self.data = Path(data)
        self.config = config
        self.store = Store(
            config.db,
            Settings(
                validate=config.validate,
                reference_integrity=config.reference_integrity,
                default_count=config.default_count,
                max_count=config.max_count,
                query_timeout_ms=config.query_timeout_ms,
            ),
            pool_size=pool_size,
        )
        self.tokens = TokenService(keys.load_all(self.data), issuer=f"urn:phip:node:{config.region}:{config.name}")
        #: services of the installed capabilities, by capability name (``node.ext["empi"]``)
        self.ext: dict[str, Any] = {}
        self.capabilities = capabilities.load()
        for cap in self.capabilities:
            if cap.install is not None:
                cap.install(self)

    @classmethod
    def open(cls, data: Path, *, pool_size: int = 8, migrate: bool = True) -> Node:
        config = NodeConfig.load(Path(data))
        node = cls(Path(data), config, pool_size=pool_size)
        if migrate:
            node.store.migrate()
        return node

    def warm(self) -> None:
        """Load what the capabilities would otherwise load on first use (``extras["warm"]``, a
        ``fn(node)``): a server worker calls it before it accepts a request, so that no request
        (and no write holding the database's write lock) pays for it."""
        for cap in self.capabilities:
            fn = cap.extras.get("warm")
            if fn is not None:
                fn(self)

    def close(self) -> None:
        for svc in self.ext.values():  # capabilities' services flush and stop their threads (audit)
            close = getattr(svc, "close", None)
            if callable(close):
                close()
        self.store.dispose()


def init_node(data: Path, *, db: str | None = None, level: str = "county", region: str = "510000",
              name: str | None = None) -> Node:
    """Create a node in ``data``: configuration, signing key, migrated database."""
    data = Path(data)
    if NodeConfig.path(data).exists():
        raise NodeError(f"{data} already holds a phip node; refusing to overwrite it")
    if level not in LEVELS:
        raise NodeError(f"--level must be one of {', '.join(LEVELS)}, not {level!r}")
    if not REGION_RE.match(region):
        raise NodeError(f"--region must be a GB/T 2260 code of 2, 4 or 6 digits, not {region!r}")
    region = region.ljust(6, "0")
    data.mkdir(parents=True, exist_ok=True)
    cfg = NodeConfig(
        name=name or f"{level}-{region}",
        level=level,
        region=region,
        db=db or "sqlite:///{data}/phip.db",
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    keys.generate(data)
    cfg.save(data)
    try:
        node = Node.open(data)
        for cap in node.capabilities:
            if cap.on_init is not None:
                cap.on_init(node)
        return node
    except Exception:
        NodeConfig.path(data).unlink(missing_ok=True)
        raise
