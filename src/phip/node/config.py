"""A node's configuration: ``phip.toml`` in the node's data folder.

``phip init`` writes it; every other command reads it.  It holds who the node is
(name, level, GB/T 2260 region), where its database is, and its settings.  The
signing keys live beside it in ``keys/`` (see :mod:`phip.security.keys`).
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CONFIG_NAME = "phip.toml"
LEVELS = ("county", "prefecture", "province", "national")


class NodeError(Exception):
    """A node cannot be created or opened; the message says why."""


@dataclass(slots=True)
class NodeConfig:
    name: str
    level: str
    region: str
    db: str
    created: str
    validate: bool = True
    reference_integrity: str = "lenient"
    default_count: int = 50
    max_count: int = 1000
    max_body_bytes: int = 50 * 1024 * 1024
    query_timeout_ms: int = 30000
    extra: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def path(data: Path) -> Path:
        return Path(data) / CONFIG_NAME

    @classmethod
    def load(cls, data: Path) -> NodeConfig:
        p = cls.path(data)
        if not p.exists():
            raise NodeError(f"{data} is not a phip node (no {CONFIG_NAME}); create one with `phip init --data {data}`")
        raw = tomllib.loads(p.read_text())
        node = raw.get("node", {})
        settings = raw.get("settings", {})
        try:
            cfg = cls(
                name=node["name"], level=node["level"], region=node["region"], db=node["db"],
                created=node.get("created", ""), **settings,
            )
        except (KeyError, TypeError) as e:
            raise NodeError(f"{p} is not a valid node configuration: {e}") from None
        if "{data}" in cfg.db:
            cfg.db = cfg.db.replace("{data}", str(Path(data).resolve()))
        return cfg

    def save(self, data: Path) -> None:
        d = asdict(self)
        extra = d.pop("extra")
        node = {k: d.pop(k) for k in ("name", "level", "region", "db", "created")}
        lines = ["# phip node configuration (written by `phip init`)", "[node]"]
        lines += [f"{k} = {_toml(v)}" for k, v in node.items()]
        lines += ["", "[settings]"]
        lines += [f"{k} = {_toml(v)}" for k, v in d.items()]
        if extra:
            lines += ["", "[extra]"] + [f"{k} = {_toml(v)}" for k, v in extra.items()]
        self.path(data).write_text("\n".join(lines) + "\n")


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'
