"""The node's signing keys (Ed25519), kept as PEM files in ``DATA/keys/``.

Tokens and health-card payloads are signed with the newest key; every key in the
folder still verifies, so a rotated key does not invalidate live tokens.  Keys are
made at ``phip init`` (never committed, files mode 0600).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()


def _kid(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate(data: Path) -> SigningKey:
    folder = Path(data) / "keys"
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    key = Ed25519PrivateKey.generate()
    kid = _kid(key)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path = folder / f"signing-{kid}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return SigningKey(kid, key)


def load_all(data: Path) -> list[SigningKey]:
    """All signing keys, newest first."""
    folder = Path(data) / "keys"
    out = []
    for p in sorted(folder.glob("signing-*.pem"), key=lambda p: p.stat().st_mtime_ns, reverse=True):
        key = serialization.load_pem_private_key(p.read_bytes(), password=None)
        if isinstance(key, Ed25519PrivateKey):
            out.append(SigningKey(_kid(key), key))
    return out
