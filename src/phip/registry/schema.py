"""Tables of the registry capability (declared on the store's metadata; migration ``registry_0001``).

- ``registry_resident``: the population index — one row per Patient of the population registry
  (a Patient whose ``managingOrganization`` is a registry authority, WS 218 ``Z200`` by default), kept
  in step with every write by an AFTER_WRITE hook and rebuilt in a batch after ``phip import``.  The
  population queries (counts by region, sex, age band) aggregate this small table instead of
  parsing Patient documents.
- ``registry_health_card``: issued electronic health cards (电子健康码) and their revocation.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table

from phip.store.schema import metadata

resident = Table(
    "registry_resident",
    metadata,
    Column("patient_id", String(64), primary_key=True),
    #: GB/T 2260 county code (6 digits) or a finer synthetic township/village code (9/12 digits)
    Column("region", String(12), nullable=False),
    Column("sex", String(16), nullable=False),
    #: YYYYMMDD as an integer (0 when unknown): ages are compared as thresholds, portably
    Column("birth", Integer, nullable=False),
    Column("alive", Boolean, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("organization", String(64), nullable=False),
)
#: covers the population queries: a region-prefix range scan that never touches the table
Index("ix_registry_resident_region", resident.c.region, resident.c.sex, resident.c.birth, resident.c.alive,
      resident.c.active)

health_card = Table(
    "registry_health_card",
    metadata,
    Column("card_no", String(32), primary_key=True),
    Column("person_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # active | revoked
    Column("issued_at", BigInteger, nullable=False),  # µs since the epoch
    Column("issued_by", String(200), nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    Column("revoked_by", String(200), nullable=True),
    Column("reason", String(500), nullable=True),
)
Index("ix_registry_health_card_person", health_card.c.person_id)
