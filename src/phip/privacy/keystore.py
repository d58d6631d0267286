"""Symmetric keys of the node for protecting stored data, beside its signing keys in ``DATA/keys/``.

- ``data-<kid>.key``: AES-256-GCM data keys.  The newest seals; every one still opens (a value
  carries the id of the key that sealed it), so rotation can re-encrypt online.
- ``blind-<kid>.key``: the HMAC-SHA256 key of the blind indexes (kept across data-key rotations:
  rotating it would change every index value).
- ``pseudonym-<kid>.key``: the HMAC key of de-identified exports' pseudonyms.

Files hold the key in base64, mode 0600, in a folder of mode 0700; never commit them.
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class SymKey:
    kid: str
    key: bytes


def _folder(data: Path) -> Path:
    folder = Path(data) / "keys"
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder


def generate(data: Path, kind: str) -> SymKey:
    """A new random 256-bit key of ``kind`` (data, blind, pseudonym)."""
    key = secrets.token_bytes(32)
    kid = secrets.token_hex(4)
    path = _folder(data) / f"{kind}-{kid}.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(key).decode() + "\n")
    return SymKey(kid, key)


def load(data: Path, kind: str) -> list[SymKey]:
    """Keys of ``kind``, newest first."""
    folder = Path(data) / "keys"
    if not folder.exists():
        return []
    paths = sorted(folder.glob(f"{kind}-*.key"), key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True)
    return [SymKey(p.stem.split("-", 1)[1], base64.b64decode(p.read_text().strip())) for p in paths]


def current(data: Path, kind: str) -> SymKey:
    """The newest key of ``kind``, made on first use."""
    found = load(data, kind)
    return found[0] if found else generate(data, kind)
