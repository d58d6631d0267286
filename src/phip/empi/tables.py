"""Tables of the master patient index (declared on the store's metadata; migration ``empi_0001``).

- ``empi_record``: one row per Patient: its :class:`~phip.empi.normalize.Features` (JSON), the
  master Person it is linked to, the assurance and how the link was made.
- ``empi_key``: the blocking keys of every record (``key`` indexed): candidates are found by
  index lookups on this table only, never by scanning.
- ``empi_review``: potential matches waiting for (or decided by) a person, with per-field scores.
- ``empi_decision``: manual link/unlink decisions (who, when, why); matching and rebuilds obey them.
- ``empi_merge``: ``Patient/$merge`` operations, with what they moved, so ``$unmerge`` can undo them.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, Integer, String, Table, Text

from phip.store.schema import IdxText, metadata

record = Table(
    "empi_record",
    metadata,
    Column("patient_id", String(64), primary_key=True),
    Column("person_id", String(64), nullable=False),
    Column("features", Text, nullable=False),
    #: Person.link.assurance: level1 … level4
    Column("assurance", String(8), nullable=False),
    #: deterministic | auto | manual | new | review | merged
    Column("link_kind", String(16), nullable=False),
    Column("score", Float, nullable=True),
    Column("updated", BigInteger, nullable=False),
)
Index("ix_empi_record_person", record.c.person_id)

key = Table(
    "empi_key",
    metadata,
    Column("key", IdxText, nullable=False),
    Column("patient_id", String(64), nullable=False),
)
Index("ix_empi_key_key", key.c.key, key.c.patient_id)
Index("ix_empi_key_patient", key.c.patient_id)

review = Table(
    "empi_review",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("patient_id", String(64), nullable=False),
    Column("candidate_id", String(64), nullable=False),
    Column("score", Float, nullable=False),
    Column("detail", Text, nullable=False),
    #: open | linked | rejected | obsolete
    Column("status", String(16), nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("decided_by", String(200), nullable=True),
    Column("decided_at", BigInteger, nullable=True),
    Column("reason", Text, nullable=True),
)
Index("ix_empi_review_status", review.c.status, review.c.id)
Index("ix_empi_review_patient", review.c.patient_id)
Index("ix_empi_review_candidate", review.c.candidate_id)

decision = Table(
    "empi_decision",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("patient_id", String(64), nullable=False),
    Column("other_id", String(64), nullable=False),
    #: same | different
    Column("decision", String(16), nullable=False),
    Column("decided_by", String(200), nullable=False),
    Column("decided_at", BigInteger, nullable=False),
    Column("reason", Text, nullable=True),
)
Index("ix_empi_decision_patient", decision.c.patient_id)
Index("ix_empi_decision_other", decision.c.other_id)

merge = Table(
    "empi_merge",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source_id", String(64), nullable=False),
    Column("target_id", String(64), nullable=False),
    #: JSON: {"moved": [[type, id, version_before], …], "source_before": version}
    Column("detail", Text, nullable=False),
    Column("merged_by", String(200), nullable=False),
    Column("merged_at", BigInteger, nullable=False),
    Column("undone_at", BigInteger, nullable=True),
)
Index("ix_empi_merge_source", merge.c.source_id)
