"""Bearer tokens: JWTs signed by the node's Ed25519 key (``alg: EdDSA``, ``kid`` set).

Claims: ``sub`` (who), ``role`` (admin, clinician, public-health, family-doctor, insurer,
manager, resident, auditor, node), optional ``org`` (Organization/ID), ``region``
(GB/T 2260 code), ``person`` (Person/ID), ``iat``/``exp``/``jti``, ``iss`` (the node).
Verification results are cached briefly so a busy API does not re-verify every call.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt

from phip.security.keys import SigningKey

ROLES = ("admin", "clinician", "public-health", "family-doctor", "insurer", "manager", "resident", "auditor",
         "node")


class TokenError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Principal:
    sub: str
    role: str
    org: str | None = None
    region: str | None = None
    person: str | None = None
    claims: dict[str, Any] | None = None


class TokenService:
    def __init__(self, keys: list[SigningKey], issuer: str) -> None:
        if not keys:
            raise TokenError("the node has no signing key")
        self.keys = keys
        self.by_kid = {k.kid: k for k in keys}
        self.issuer = issuer
        self._cache: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    def issue(self, role: str, sub: str, *, org: str | None = None, region: str | None = None,
              person: str | None = None, ttl: int = 3600) -> str:
        if role not in ROLES:
            raise TokenError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self.issuer, "sub": sub, "role": role, "iat": now, "exp": now + ttl,
                                  "jti": uuid.uuid4().hex}
        for k, v in (("org", org), ("region", region), ("person", person)):
            if v:
                claims[k] = v
        key = self.keys[0]
        return jwt.encode(claims, key.private, algorithm="EdDSA", headers={"kid": key.kid})

    def verify(self, token: str) -> Principal:
        hit = self._cache.get(token)
        now = time.time()
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(token)
            return hit[1]
        try:
            header = jwt.get_unverified_header(token)
            key = self.by_kid.get(header.get("kid", ""))
            if key is None:
                raise TokenError("the token was not signed by a key of this node")
            claims = jwt.decode(token, key.public, algorithms=["EdDSA"], issuer=self.issuer,
                                options={"require": ["exp", "sub", "role"]})
        except jwt.ExpiredSignatureError:
            raise TokenError("the token has expired") from None
        except jwt.PyJWTError as e:
            raise TokenError(f"the token is not valid: {e}") from None
        if claims.get("role") not in ROLES:
            raise TokenError(f"unknown role {claims.get('role')!r} in the token")
        p = Principal(claims["sub"], claims["role"], claims.get("org"), claims.get("region"), claims.get("person"),
                      claims)
        self._cache[token] = (min(float(claims["exp"]), now + 300), p)
        if len(self._cache) > 10000:
            self._cache.popitem(last=False)
        return p
