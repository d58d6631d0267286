"""``[privacy]`` in ``phip.toml``.

```toml
[privacy]
encrypt_at_rest = true          # new nodes: on (phip init writes it); a node without the section: off
sealed_types = ["Patient", "Person", "RelatedPerson", "Practitioner"]
min_cell = 5                    # aggregate counts below this are suppressed
```
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phip.privacy.codec import DEFAULT_TYPES


@dataclass(slots=True)
class PrivacySettings:
    encrypt_at_rest: bool = False
    sealed_types: list[str] = field(default_factory=lambda: list(DEFAULT_TYPES))
    min_cell: int = 5


def load(data: Path) -> PrivacySettings:
    try:
        raw: dict[str, Any] = tomllib.loads((Path(data) / "phip.toml").read_text()).get("privacy", {})
    except (OSError, tomllib.TOMLDecodeError):
        raw = {}
    s = PrivacySettings()
    s.encrypt_at_rest = bool(raw.get("encrypt_at_rest", False))
    if isinstance(raw.get("sealed_types"), list):
        s.sealed_types = [str(t) for t in raw["sealed_types"]]
    s.min_cell = int(raw.get("min_cell", 5))
    return s


def write_defaults(data: Path, *, encrypt: bool = True) -> None:
    """Append a ``[privacy]`` section to a new node's ``phip.toml`` (``phip init``)."""
    p = Path(data) / "phip.toml"
    text = p.read_text()
    if "\n[privacy]" in text:
        return
    types = ", ".join(f'"{t}"' for t in DEFAULT_TYPES)
    text += ("\n[privacy]\n# encryption at rest of ID numbers, phones and address lines (docs/privacy.md)\n"
             f"encrypt_at_rest = {'true' if encrypt else 'false'}\nsealed_types = [{types}]\nmin_cell = 5\n")
    p.write_text(text)
