"""Security settings: the ``[security]`` table of the node's ``phip.toml`` (all optional).

```toml
[security]
token_ttl = 900                 # seconds a token of POST /auth/token lives
treating_window_days = 365      # how far back an encounter/appointment/referral makes a treating relationship
lockout_failures = 5            # failed password logins before the account is locked
lockout_minutes = 15
consent_roles = ["clinician", "family-doctor", "insurer"]   # roles a resident's Consent applies to
break_glass_roles = ["clinician", "family-doctor", "public-health"]
label_rules = "labels.json"     # replaces the built-in security-label rules (path relative to the node folder)
family_doctor_contract = "urn:phip:careteam-category|family-doctor-contract"

[security.masking]              # role → what is masked: id, phone, address
insurer = ["phone", "address"]

[security.oidc]                 # accept the tokens of a provincial identity provider
issuer = "https://idp.example.gov.cn/realms/health"
jwks_url = "https://idp.example.gov.cn/realms/health/protocol/openid-connect/certs"  # or jwks_file
audience = "phip"
default_role = "clinician"
[security.oidc.claims]          # phip claim → the issuer's claim
role = "phip_role"
org = "organization"
```
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phip.security.tokens import ROLES

DEFAULT_MASKING: dict[str, tuple[str, ...]] = {
    "admin": (),
    "node": (),
    "resident": (),
    "public-health": (),
    "clinician": ("id",),
    "family-doctor": ("id",),
    "insurer": ("phone", "address"),
    "manager": ("id", "phone", "address"),
    "auditor": ("id", "phone", "address"),
}
MASKABLE = ("id", "phone", "address")


class SecurityConfigError(ValueError):
    pass


@dataclass(slots=True)
class SecurityConfig:
    token_ttl: int = 900
    treating_window_days: int = 365
    lockout_failures: int = 5
    lockout_minutes: int = 15
    consent_roles: tuple[str, ...] = ("clinician", "family-doctor", "insurer")
    break_glass_roles: tuple[str, ...] = ("clinician", "family-doctor", "public-health")
    label_rules: str | None = None
    family_doctor_contract: str = "urn:phip:careteam-category|family-doctor-contract"
    masking: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_MASKING))
    oidc: dict[str, Any] | None = None

    @classmethod
    def load(cls, data: Path | None) -> SecurityConfig:
        cfg = cls()
        if data is None:
            return cfg
        p = Path(data) / "phip.toml"
        if not p.exists():
            return cfg
        raw = tomllib.loads(p.read_text()).get("security", {})
        for k in ("token_ttl", "treating_window_days", "lockout_failures", "lockout_minutes"):
            if k in raw:
                v = raw[k]
                if not isinstance(v, int) or v < 0:
                    raise SecurityConfigError(f"[security] {k} must be a whole number ≥ 0, not {v!r}")
                setattr(cfg, k, v)
        for k in ("consent_roles", "break_glass_roles"):
            if k in raw:
                bad = [r for r in raw[k] if r not in ROLES]
                if bad:
                    raise SecurityConfigError(f"[security] {k} names unknown roles: {', '.join(bad)}")
                setattr(cfg, k, tuple(raw[k]))
        if raw.get("label_rules"):
            lr = Path(raw["label_rules"])
            cfg.label_rules = str(lr if lr.is_absolute() else Path(data) / lr)
        if raw.get("family_doctor_contract"):
            cfg.family_doctor_contract = str(raw["family_doctor_contract"])
        for role, fields in (raw.get("masking") or {}).items():
            if role not in ROLES:
                raise SecurityConfigError(f"[security.masking] names an unknown role {role!r}")
            bad = [f for f in fields if f not in MASKABLE]
            if bad:
                raise SecurityConfigError(f"[security.masking] {role}: unknown fields {bad} (use {MASKABLE})")
            cfg.masking[role] = tuple(fields)
        if raw.get("oidc"):
            cfg.oidc = dict(raw["oidc"])
        return cfg
