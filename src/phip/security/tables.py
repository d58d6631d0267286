"""Tables of the security capability (declared on ``phip.store.schema.metadata``).

- ``security_users``: console users (argon2 password hash, role, lockout state).
- ``security_clients``: OAuth2 clients of institutions and systems (secret hash or JWKS).
- ``security_assertions``: ``jti`` of client assertions already used (RFC 7523 replay check).
- ``security_patient_region``: the GB/T 2260 region of each Patient (public-health scoping).
- ``security_consent``: the rules of active privacy Consents, one row per rule
  (``deny-outside``, ``deny-label`` with the label, ``permit-org`` with the organization).

The last two are derived from resources at write (and caught up after ``phip import``);
the access filters join them in SQL so searches, paging and totals stay right.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, Text

from phip.store.schema import metadata

users = Table(
    "security_users",
    metadata,
    Column("username", String(200), primary_key=True),
    Column("password_hash", Text, nullable=False),
    Column("role", String(32), nullable=False),
    Column("org", String(100), nullable=True),
    Column("region", String(12), nullable=True),
    Column("person", String(100), nullable=True),
    Column("practitioner", String(100), nullable=True),
    Column("scope", Text, nullable=True),
    Column("failures", Integer, nullable=False),
    Column("locked_until", BigInteger, nullable=False),
    Column("disabled", Boolean, nullable=False),
    Column("created", BigInteger, nullable=False),
)

clients = Table(
    "security_clients",
    metadata,
    Column("client_id", String(200), primary_key=True),
    Column("secret_hash", Text, nullable=True),
    Column("jwks", Text, nullable=True),
    Column("role", String(32), nullable=False),
    Column("org", String(100), nullable=True),
    Column("region", String(12), nullable=True),
    Column("practitioner", String(100), nullable=True),
    Column("scope", Text, nullable=True),
    Column("disabled", Boolean, nullable=False),
    Column("created", BigInteger, nullable=False),
)

assertions = Table(
    "security_assertions",
    metadata,
    Column("jti", String(300), primary_key=True),
    Column("exp", BigInteger, nullable=False),
)

patient_region = Table(
    "security_patient_region",
    metadata,
    Column("patient_id", String(64), primary_key=True),
    Column("region", String(12), nullable=False),
)
Index("ix_security_patient_region_region", patient_region.c.region, patient_region.c.patient_id)

consent = Table(
    "security_consent",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("consent_id", String(64), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("rule", String(16), nullable=False),  # deny-outside | deny-label | permit-org
    Column("system", Text, nullable=True),
    Column("code", String(64), nullable=True),
    Column("org", String(64), nullable=True),
)
Index("ix_security_consent_patient", consent.c.rule, consent.c.patient_id)
Index("ix_security_consent_consent", consent.c.consent_id)
