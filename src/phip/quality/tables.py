"""The quality engine's tables (declared on ``phip.store.schema.metadata``).

- ``quality_resource``: one row per checked resource — its institution, receipt day, what the
  cross-record checks need, and which dimensions it fails (``f_*``); rows loaded by ``phip import``
  carry their resource row id in ``seq``: those above the watermark (``jobs`` row
  ``quality:import``) await the batch phase; rows of records checked at once have ``seq`` 0.
- ``quality_finding``: one row per (resource, rule): element path, message, status
  (``open`` → ``resolved`` when a corrected version passes; ``cancelled`` when the resource is
  deleted) and the FHIR Task assigned to the institution.
- ``quality_counter``: per institution × resource type × receipt day: resources received and
  how many fail each dimension — what scorecards add up.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from phip.store.schema import RowId, metadata

FLAG_DIMENSIONS: tuple[str, ...] = ("completeness", "conformance", "consistency", "timeliness", "uniqueness")

quality_resource = Table(
    "quality_resource",
    metadata,
    Column("rtype", String(64), nullable=False),
    Column("rid", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("institution", String(64), nullable=True),
    Column("via_type", String(64), nullable=True),
    Column("via_id", String(64), nullable=True),
    Column("subject", Text(), nullable=True),
    Column("pid", String(64), nullable=True),  # the Patient id when the subject is a Patient
    Column("day", Integer, nullable=False),
    Column("received", BigInteger, nullable=False),
    Column("event", BigInteger, nullable=True),
    Column("gender", String(16), nullable=True),
    Column("birth", BigInteger, nullable=True),
    Column("death", BigInteger, nullable=True),
    Column("xrule", String(100), nullable=True),
    Column("ukey", String(500), nullable=True),
    Column("uid", String(64), nullable=True),
    Column("seq", BigInteger, nullable=False),  # the resource's row id when imported (0: checked at once)
    *[Column(f"f_{d}", SmallInteger, nullable=False) for d in FLAG_DIMENSIONS],
    # a Patient's ID number, name, phone and current address as keyed hashes (the privacy capability's
    # blind index when encryption at rest is on): the population registry comparison needs equality only
    Column("idkey", String(40), nullable=True),
    Column("namekey", String(40), nullable=True),
    Column("phonekey", String(40), nullable=True),
    Column("addrkey", String(40), nullable=True),
    # the id first: a live feed's server-assigned ids are time-ordered (``phip.core.ids``), so its new
    # rows go to the end of one B-tree, not to the end of each type's part of it
    PrimaryKeyConstraint("rid", "rtype", name="quality_resource_pkey"),
)
# imported rows only (``seq`` > 0, awaiting or past the batch phase); queries on it say ``seq <> 0``
Index("ix_quality_resource_seq", quality_resource.c.seq, sqlite_where=quality_resource.c.seq != 0,
      postgresql_where=quality_resource.c.seq != 0)
Index("ix_quality_resource_idkey", quality_resource.c.idkey,
      sqlite_where=quality_resource.c.idkey.isnot(None), postgresql_where=quality_resource.c.idkey.isnot(None))
Index("ix_quality_resource_ukey", quality_resource.c.rtype, quality_resource.c.institution, quality_resource.c.ukey,
      sqlite_where=quality_resource.c.ukey.isnot(None), postgresql_where=quality_resource.c.ukey.isnot(None))

quality_finding = Table(
    "quality_finding",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("rtype", String(64), nullable=False),
    Column("rid", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("rule", String(100), nullable=False),
    Column("dimension", String(16), nullable=False),
    Column("path", String(200), nullable=False),
    Column("message", Text, nullable=False),
    Column("subject", Text(), nullable=True),
    Column("institution", String(64), nullable=True),
    Column("day", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # open | resolved | cancelled
    Column("detected", BigInteger, nullable=False),
    Column("closed", BigInteger, nullable=True),
    Column("task", String(64), nullable=True),
    UniqueConstraint("rtype", "rid", "rule", name="uq_quality_finding_rule"),
)
Index("ix_quality_finding_subject", quality_finding.c.subject)
Index("ix_quality_finding_inst", quality_finding.c.institution, quality_finding.c.day)
Index("ix_quality_finding_rule", quality_finding.c.rule, quality_finding.c.status)

quality_counter = Table(
    "quality_counter",
    metadata,
    Column("institution", String(64), primary_key=True),
    Column("rtype", String(64), primary_key=True),
    Column("day", Integer, primary_key=True),
    Column("received", Integer, nullable=False),
    *[Column(f"f_{d}", Integer, nullable=False) for d in FLAG_DIMENSIONS],
)
