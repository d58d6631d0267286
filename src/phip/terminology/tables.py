"""The terminology capability's own tables (its migration: terminology_0001).

- ``terminology_unmapped``: local codes seen at ingest that no ConceptMap maps to a standard code,
  one row per (system, code) with how often and when they were seen — the list an institution
  works through (``GET /terminology/unmapped``, ``phip terminology unmapped``).
- ``terminology_loads``: which shipped table is loaded at which content version, so ``phip init``
  and ``phip terminology load`` skip what is already there.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, String, Table, Text

from phip.store.schema import metadata

unmapped_codes = Table(
    "terminology_unmapped",
    metadata,
    Column("system", String(500), primary_key=True),
    Column("code", String(200), primary_key=True),
    Column("display", Text, nullable=True),
    Column("count", BigInteger, nullable=False),
    Column("first_seen", BigInteger, nullable=False),
    Column("last_seen", BigInteger, nullable=False),
    Column("last_resource", String(200), nullable=True),
)

loads = Table(
    "terminology_loads",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("version", String(64), nullable=False),
    Column("loaded", BigInteger, nullable=False),
    Column("detail", Text, nullable=True),
)
