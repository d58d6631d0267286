"""Tables of the audit trail (declared on :data:`phip.store.schema.metadata`).

- ``audit_events``: one row per AuditEvent, append-only, in a hash chain: ``hash`` is
  SHA-256 over the previous record's hash and this record's content (the AuditEvent JSON,
  sorted keys, whose ``id`` is ``seq``).  The content is stored compressed in ``zcontent``
  (:mod:`phip.audit.packing`); rows written before that (``audit_0002``) hold it as text in
  ``content``.  Exactly one of the two is set: :func:`phip.audit.chain.content_of` reads either.
  The other columns are copies of fields of the content for searching; ``phip audit verify``
  checks they agree with it.
- ``audit_checkpoints``: every so often the hash of the newest record, signed with the node's
  Ed25519 key, so a rewrite of the whole chain from some point on is detectable too.
- ``audit_head``: one row: the newest record (seq, hash) and the anchor — the last archived
  record (seq, hash) the remaining chain starts from (0 and the genesis hash before any archive).

These are not FHIR resources in ``resources``: auditing a read must not add to the resource
history or the change feed that upper-level nodes replicate.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, SmallInteger, String, Table, Text

from phip.store.schema import metadata

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("recorded", BigInteger, nullable=False),  # µs since the epoch, UTC
    Column("kind", String(32), nullable=False),  # read, search, create, update, delete, export, login…
    Column("action", String(1), nullable=False),  # C R U D E
    Column("outcome", SmallInteger, nullable=False),  # 0 4 8 12
    Column("patient", String(64), nullable=True),  # Patient id, when the event concerns one
    Column("who", String(200), nullable=True),  # the requesting user or system (token subject)
    Column("role", String(32), nullable=True),
    Column("org", String(100), nullable=True),
    Column("purpose", String(32), nullable=True),
    Column("source", String(64), nullable=True),  # network address of the client
    Column("content", Text, nullable=True),  # the JSON as text (rows written before audit_0002)
    Column("zcontent", LargeBinary, nullable=True),  # the JSON packed (phip.audit.packing)
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)
Index("ix_audit_events_patient", audit_events.c.patient, audit_events.c.seq)
Index("ix_audit_events_recorded", audit_events.c.recorded)
Index("ix_audit_events_who", audit_events.c.who, audit_events.c.seq)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False),
    Column("signed_at", BigInteger, nullable=False),
    Column("kid", String(32), nullable=False),
    Column("signature", Text, nullable=False),  # base64url Ed25519 over checkpoint_message()
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("last_hash", String(64), nullable=False),
    Column("anchor_seq", BigInteger, nullable=False),
    Column("anchor_hash", String(64), nullable=False),
    Column("archives", Text, nullable=False),  # JSON list of archive file names, oldest first
)
