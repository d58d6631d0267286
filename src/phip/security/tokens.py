"""Bearer tokens: JWTs signed by the node's Ed25519 key (``alg: EdDSA``, ``kid`` set).

Claims: ``sub`` (who), ``role`` (admin, clinician, public-health, family-doctor, insurer,
manager, resident, auditor, node), optional ``org`` (Organization/ID), ``region``
(GB/T 2260 code), ``person`` (Person/ID), ``practitioner`` (Practitioner/ID), ``patient``
(the SMART launch patient), ``scope`` (SMART on FHIR scopes, space separated),
``purpose_of_use`` and ``break_glass`` (the reason, with purpose ``ETREAT``), ``client_id``,
``iat``/``exp``/``jti``, ``iss`` (the node).  A token without ``scope`` was minted by the
node's operator (``phip token``) and is limited by its role only.

Tokens of an external OpenID Connect issuer (a province's identity provider) are accepted
when ``[security.oidc]`` in ``phip.toml`` names it (see :class:`ExternalIssuer`).
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
#: purpose of use that opens break-glass (HL7 v3 ActReason ETREAT, emergency treatment)
ETREAT = "ETREAT"


class TokenError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, for the length of one request (``phip.api.context.current_principal``).

    ``scopes`` None: no SMART scope restriction (operator tokens); a tuple: exactly those.
    ``break_glass`` is the reason given for emergency access (purpose of use ``ETREAT``);
    ``source`` the caller's network address.
    """

    sub: str
    role: str
    org: str | None = None
    region: str | None = None
    person: str | None = None
    claims: dict[str, Any] | None = None
    scopes: tuple[str, ...] | None = None
    practitioner: str | None = None
    patient: str | None = None
    purpose_of_use: str | None = None
    break_glass: str | None = None
    client_id: str | None = None
    source: str | None = None
    issuer: str | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        """What the access decisions depend on (a cache key)."""
        return (self.sub, self.role, self.org, self.region, self.person, self.scopes, self.practitioner,
                self.patient, self.break_glass)


def _principal(claims: dict[str, Any], issuer: str | None = None) -> Principal:
    scope = claims.get("scope")
    scopes: tuple[str, ...] | None = None
    if isinstance(scope, str):
        scopes = tuple(s for s in scope.split() if s)
    elif isinstance(scope, list):
        scopes = tuple(str(s) for s in scope)
    reason = claims.get("break_glass")
    purpose = claims.get("purpose_of_use")
    return Principal(
        str(claims["sub"]), str(claims["role"]), claims.get("org"), claims.get("region"), claims.get("person"),
        claims, scopes, claims.get("practitioner"), claims.get("patient"), purpose,
        reason if purpose == ETREAT and reason else None, claims.get("client_id"), None,
        issuer or claims.get("iss"),
    )


class ExternalIssuer:
    """An OpenID Connect issuer whose access tokens the node accepts.

    ``jwks_url`` (fetched and cached by PyJWT) or ``jwks_file`` (a JWKS JSON file) give its keys;
    ``audience`` is checked when set; ``claims`` maps phip's claim names to the issuer's
    (e.g. ``{"role": "phip_role", "org": "organization"}``); ``default_role`` applies when the
    token carries none.
    """

    def __init__(self, issuer: str, *, jwks_url: str | None = None, jwks_file: str | None = None,
                 audience: str | None = None, claims: dict[str, str] | None = None,
                 default_role: str | None = None, algorithms: list[str] | None = None) -> None:
        import json
        from pathlib import Path

        if not jwks_url and not jwks_file:
            raise TokenError(f"[security.oidc] for {issuer}: set jwks_url or jwks_file")
        self.issuer = issuer
        self.audience = audience
        self.claims = claims or {}
        self.default_role = default_role
        self.algorithms = algorithms or ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA"]
        self._client = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=600) if jwks_url else None
        self._keys: dict[str, Any] = {}
        if jwks_file:
            data = json.loads(Path(jwks_file).read_text())
            for k in jwt.PyJWKSet.from_dict(data).keys:
                self._keys[k.key_id or ""] = k

    def key_for(self, token: str) -> Any:
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        kid = jwt.get_unverified_header(token).get("kid") or ""
        k = self._keys.get(kid) or (next(iter(self._keys.values())) if len(self._keys) == 1 and not kid else None)
        if k is None:
            raise TokenError(f"no key {kid!r} in the JWKS of {self.issuer}")
        return k.key

    def verify(self, token: str) -> Principal:
        claims = jwt.decode(token, self.key_for(token), algorithms=self.algorithms, issuer=self.issuer,
                            audience=self.audience, options={"require": ["exp", "sub"],
                                                             "verify_aud": self.audience is not None})
        mapped = dict(claims)
        for ours, theirs in self.claims.items():
            if theirs in claims:
                mapped[ours] = claims[theirs]
        if not mapped.get("role") and self.default_role:
            mapped["role"] = self.default_role
        if mapped.get("role") not in ROLES:
            raise TokenError(f"the token of {self.issuer} carries no known role")
        # an external token cannot open break-glass by itself; the header does that per request
        mapped.pop("break_glass", None)
        return _principal(mapped, self.issuer)


class TokenService:
    def __init__(self, keys: list[SigningKey], issuer: str) -> None:
        if not keys:
            raise TokenError("the node has no signing key")
        self.keys = keys
        self.by_kid = {k.kid: k for k in keys}
        self.issuer = issuer
        self.external: dict[str, ExternalIssuer] = {}
        self._cache: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    def issue(self, role: str, sub: str, *, org: str | None = None, region: str | None = None,
              person: str | None = None, ttl: int = 3600, scope: str | None = None,
              practitioner: str | None = None, patient: str | None = None, client_id: str | None = None,
              purpose_of_use: str | None = None, break_glass: str | None = None) -> str:
        if role not in ROLES:
            raise TokenError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        if break_glass and purpose_of_use != ETREAT:
            raise TokenError("break-glass needs purpose of use ETREAT")
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self.issuer, "sub": sub, "role": role, "iat": now, "exp": now + ttl,
                                  "jti": uuid.uuid4().hex}
        for k, v in (("org", org), ("region", region), ("person", person), ("practitioner", practitioner),
                     ("patient", patient), ("client_id", client_id), ("purpose_of_use", purpose_of_use),
                     ("break_glass", break_glass)):
            if v:
                claims[k] = v
        if scope is not None:
            claims["scope"] = scope
        key = self.keys[0]
        return jwt.encode(claims, key.private, algorithm="EdDSA", headers={"kid": key.kid})

    def jwks(self) -> dict[str, Any]:
        """The node's public keys as a JWKS (``/.well-known/jwks.json``)."""
        import base64

        from cryptography.hazmat.primitives import serialization

        out = []
        for k in self.keys:
            raw = k.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            out.append({"kty": "OKP", "crv": "Ed25519", "kid": k.kid, "use": "sig", "alg": "EdDSA",
                        "x": base64.urlsafe_b64encode(raw).decode().rstrip("=")})
        return {"keys": out}

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
                iss = jwt.decode(token, options={"verify_signature": False}).get("iss")
                ext = self.external.get(iss) if isinstance(iss, str) else None
                if ext is None:
                    raise TokenError("the token was not signed by a key of this node or a trusted issuer")
                p = ext.verify(token)
                exp = float((p.claims or {}).get("exp", now + 60))
            else:
                claims = jwt.decode(token, key.public, algorithms=["EdDSA"], issuer=self.issuer,
                                    options={"require": ["exp", "sub", "role"]})
                if claims.get("role") not in ROLES:
                    raise TokenError(f"unknown role {claims.get('role')!r} in the token")
                p = _principal(claims)
                exp = float(claims["exp"])
        except jwt.ExpiredSignatureError:
            raise TokenError("the token has expired") from None
        except jwt.PyJWTError as e:
            raise TokenError(f"the token is not valid: {e}") from None
        self._cache[token] = (min(exp, now + 300), p)
        if len(self._cache) > 10000:
            self._cache.popitem(last=False)
        return p


def with_request(p: Principal, scope: Any) -> Principal:
    """The principal of one request: the caller's address, and break-glass when the request asks
    for it (``X-Break-Glass: <reason>``, optionally ``X-Purpose-Of-Use: ETREAT``; the reason may
    be percent-encoded UTF-8)."""
    from dataclasses import replace
    from urllib.parse import unquote

    reason: str | None = None
    purpose: str | None = None
    for k, v in scope.get("headers", ()):
        if k == b"x-break-glass":
            reason = unquote(v.decode("utf-8", "replace")).strip() or None
        elif k == b"x-purpose-of-use":
            purpose = v.decode("latin-1").strip()
    client = scope.get("client")
    source = client[0] if client else None
    if reason is None and source is None:
        return p
    if reason is not None:
        return replace(p, source=source, break_glass=reason[:500], purpose_of_use=purpose or ETREAT)
    return replace(p, source=source)
