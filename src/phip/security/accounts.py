"""Console users and OAuth2 clients: creation, and checking their credentials.

- Users log in with a password (argon2id hashes, argon2-cffi); after ``lockout_failures``
  failed attempts in a row the account is locked for ``lockout_minutes`` (a correct password
  during the lock is refused too, so guessing gains nothing).
- Clients (institutions, systems, other nodes) authenticate with a secret (stored as an
  argon2 hash, shown once when made) or with a signed JWT assertion (RFC 7523,
  ``private_key_jwt``) checked against the public keys registered for them (a JWKS or a PEM).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt
import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from phip.security.tables import assertions, clients, users
from phip.security.tokens import ROLES

_hasher = PasswordHasher()
#: a hash to verify against when the user does not exist (same time either way)
_DUMMY = _hasher.hash("phip-no-such-user")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "ES256", "ES384", "EdDSA"]


class AuthError(Exception):
    """Authentication failed; ``error`` is the OAuth2 error code."""

    def __init__(self, message: str, error: str = "invalid_grant", status: int = 400) -> None:
        super().__init__(message)
        self.error = error
        self.status = status


class AccountError(ValueError):
    pass


@dataclass(slots=True)
class Account:
    """Who authenticated, and what their tokens will say."""

    kind: str  # user | client
    name: str
    role: str
    org: str | None
    region: str | None
    person: str | None
    practitioner: str | None
    scope: str | None


def now_us() -> int:
    return int(time.time() * 1_000_000)


def _check_role(role: str, org: str | None, person: str | None) -> None:
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    if role in ("clinician", "family-doctor", "insurer") and not org:
        raise AccountError(f"role {role} needs --org Organization/ID")
    if role == "resident" and not person:
        raise AccountError("role resident needs --person Person/ID")
    if org and not org.startswith("Organization/"):
        raise AccountError(f"--org must look like Organization/ID, not {org!r}")
    if person and not person.startswith("Person/"):
        raise AccountError(f"--person must look like Person/ID, not {person!r}")


def add_user(conn: Any, username: str, password: str, role: str, *, org: str | None = None,
             region: str | None = None, person: str | None = None, practitioner: str | None = None,
             scope: str | None = None) -> None:
    _check_role(role, org, person)
    if len(password) < 10:
        raise AccountError("a password needs at least 10 characters")
    if conn.execute(sa.select(users.c.username).where(users.c.username == username)).first():
        raise AccountError(f"user {username!r} already exists")
    conn.execute(users.insert().values(
        username=username, password_hash=_hasher.hash(password), role=role, org=org, region=region, person=person,
        practitioner=practitioner, scope=scope, failures=0, locked_until=0, disabled=False, created=now_us()))


def add_client(conn: Any, client_id: str, role: str, *, secret: bool = True, jwks: str | None = None,
               org: str | None = None, region: str | None = None, practitioner: str | None = None,
               scope: str | None = None) -> str | None:
    """Register a client; returns the generated secret (shown once) when ``secret``."""
    _check_role(role, org, None if role != "resident" else "Person/x")
    if role == "resident":
        raise AccountError("residents log in as users, not as clients")
    if conn.execute(sa.select(clients.c.client_id).where(clients.c.client_id == client_id)).first():
        raise AccountError(f"client {client_id!r} already exists")
    if jwks is not None:
        _public_keys(jwks)  # refuse keys that cannot be used
    value = secrets.token_urlsafe(32) if secret else None
    if value is None and jwks is None:
        raise AccountError("a client needs a secret or public keys (--jwks)")
    conn.execute(clients.insert().values(
        client_id=client_id, secret_hash=_hasher.hash(value) if value else None, jwks=jwks, role=role, org=org,
        region=region, practitioner=practitioner, scope=scope, disabled=False, created=now_us()))
    return value


def login(conn: Any, username: str, password: str, *, max_failures: int, lock_minutes: int) -> Account:
    rec = conn.execute(sa.select(users).where(users.c.username == username)).first()
    now = now_us()
    if rec is None:
        with contextlib.suppress(VerificationError):
            _hasher.verify(_DUMMY, password)
        raise AuthError("unknown user or wrong password")
    if rec.disabled:
        raise AuthError("this account is disabled")
    if rec.locked_until > now:
        raise AuthError(f"this account is locked after {max_failures} failed logins; try again later")
    try:
        _hasher.verify(rec.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        failures = rec.failures + 1
        locked = now + lock_minutes * 60_000_000 if failures >= max_failures else 0
        conn.execute(users.update().where(users.c.username == username).values(
            failures=0 if locked else failures, locked_until=locked))
        if locked:
            raise AuthError(f"wrong password; the account is now locked for {lock_minutes} minutes") from None
        raise AuthError("unknown user or wrong password") from None
    values: dict[str, Any] = {"failures": 0, "locked_until": 0}
    if _hasher.check_needs_rehash(rec.password_hash):
        values["password_hash"] = _hasher.hash(password)
    conn.execute(users.update().where(users.c.username == username).values(**values))
    return Account("user", rec.username, rec.role, rec.org, rec.region, rec.person, rec.practitioner, rec.scope)


def _client(conn: Any, client_id: str) -> Any:
    rec = conn.execute(sa.select(clients).where(clients.c.client_id == client_id)).first()
    if rec is None or rec.disabled:
        raise AuthError("unknown or disabled client", "invalid_client", 401)
    return rec


def _account(rec: Any) -> Account:
    return Account("client", rec.client_id, rec.role, rec.org, rec.region, None, rec.practitioner, rec.scope)


def client_secret(conn: Any, client_id: str, secret: str) -> Account:
    rec = _client(conn, client_id)
    if not rec.secret_hash:
        raise AuthError("this client authenticates with a signed assertion, not a secret", "invalid_client", 401)
    try:
        _hasher.verify(rec.secret_hash, secret)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        raise AuthError("wrong client secret", "invalid_client", 401) from None
    return _account(rec)


def _public_keys(text: str) -> list[Any]:
    """The keys of a JWKS (JSON) or of a PEM public key."""
    text = text.strip()
    if text.startswith("{"):
        try:
            return [k.key for k in jwt.PyJWKSet.from_dict(json.loads(text)).keys]
        except (jwt.PyJWTError, ValueError, KeyError) as e:
            raise AccountError(f"the JWKS cannot be used: {e}") from None
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        return [load_pem_public_key(text.encode())]
    except ValueError as e:
        raise AccountError(f"the public key is not a PEM public key: {e}") from None


def client_assertion(conn: Any, assertion: str, audiences: list[str], client_id: str | None = None) -> Account:
    """RFC 7523 §3: ``iss`` = ``sub`` = the client, ``aud`` the token endpoint, ``exp`` within 5 min,
    ``jti`` used once."""
    try:
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError as e:
        raise AuthError(f"the client assertion is not a JWT: {e}", "invalid_client", 401) from None
    cid = unverified.get("iss")
    if not isinstance(cid, str) or unverified.get("sub") != cid or (client_id and client_id != cid):
        raise AuthError("the client assertion needs iss and sub equal to the client id", "invalid_client", 401)
    rec = _client(conn, cid)
    if not rec.jwks:
        raise AuthError("this client has no registered public keys", "invalid_client", 401)
    claims = None
    for key in _public_keys(rec.jwks):
        try:
            claims = jwt.decode(assertion, key, algorithms=ASSERTION_ALGS, audience=audiences,
                                options={"require": ["exp", "iss", "sub", "aud", "jti"]})
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.ExpiredSignatureError:
            raise AuthError("the client assertion has expired", "invalid_client", 401) from None
        except jwt.PyJWTError as e:
            raise AuthError(f"the client assertion is not valid: {e}", "invalid_client", 401) from None
    if claims is None:
        raise AuthError("the client assertion's signature does not match the client's keys", "invalid_client", 401)
    if claims["exp"] - time.time() > 300:
        raise AuthError("a client assertion may live at most 5 minutes", "invalid_client", 401)
    key_id = f"{cid}|{claims['jti']}"
    conn.execute(assertions.delete().where(assertions.c.exp < int(time.time())))
    if conn.execute(sa.select(assertions.c.jti).where(assertions.c.jti == key_id)).first():
        raise AuthError("this client assertion was already used", "invalid_client", 401)
    conn.execute(assertions.insert().values(jti=key_id, exp=int(claims["exp"])))
    return _account(rec)
