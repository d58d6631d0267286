"""The node's terminology settings: the ``[terminology]`` table of ``phip.toml``.

::

    [terminology]
    strictness = "warn"        # reject | warn | off — what a profile violation does to a write
    load_on_init = true        # load the shipped code tables at `phip init`
    map_local = true           # add standard codings beside local ones at ingest
    refresh_seconds = 2.0      # how often a process looks for terminology written by others

    [terminology.profiles]     # profiles checked on every write of a type (besides meta.profile)
    Patient = ["urn:phip:sd:cn-patient"]

The environment variable ``PHIP_TERMINOLOGY_ON_INIT=0`` turns ``load_on_init`` off for nodes
created while it is set (a test suite that builds hundreds of throw-away nodes can use it).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STRICTNESS = ("reject", "warn", "off")


@dataclass(slots=True)
class TerminologySettings:
    strictness: str = "warn"
    load_on_init: bool = True
    map_local: bool = True
    refresh_seconds: float = 2.0
    profiles: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_node(cls, node: Any) -> TerminologySettings:
        raw: dict[str, Any] = {}
        data = getattr(node, "data", None)
        if data is not None:
            p = Path(data) / "phip.toml"
            if p.exists():
                raw = tomllib.loads(p.read_text()).get("terminology", {})
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TerminologySettings:
        from phip.node.config import NodeError

        s = cls()
        strictness = str(raw.get("strictness", s.strictness))
        if strictness not in STRICTNESS:
            raise NodeError(f"[terminology] strictness must be one of {', '.join(STRICTNESS)}, not {strictness!r}")
        s.strictness = strictness
        s.load_on_init = bool(raw.get("load_on_init", s.load_on_init))
        if os.environ.get("PHIP_TERMINOLOGY_ON_INIT") == "0":
            s.load_on_init = False
        s.map_local = bool(raw.get("map_local", s.map_local))
        s.refresh_seconds = float(raw.get("refresh_seconds", s.refresh_seconds))
        profiles = raw.get("profiles", {})
        if not isinstance(profiles, dict):
            raise NodeError("[terminology.profiles] must map resource types to lists of profile URLs")
        s.profiles = {k: [v] if isinstance(v, str) else list(v) for k, v in profiles.items()}
        return s
