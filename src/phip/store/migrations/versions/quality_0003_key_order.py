"""quality: ``quality_resource`` keyed by (rid, rtype); its ``seq`` index holds imported rows only

A server-assigned id is time-ordered (``phip.core.ids``): keyed by the id first, the rows of a
live feed's new records go to the end of one B-tree instead of the end of each type's part of it
(one page a transaction instead of one a type).  Rows checked at once (REST writes) have ``seq`` 0
and are never looked up by it: the index leaves them out.

Revision ID: quality_0003
Revises: quality_0002
"""

from __future__ import annotations

from alembic import op

revision = "quality_0003"
down_revision = "quality_0002"
branch_labels = None
depends_on = None

_COLUMNS = """
    rtype VARCHAR(64) NOT NULL, rid VARCHAR(64) NOT NULL, version INTEGER NOT NULL, institution VARCHAR(64),
    via_type VARCHAR(64), via_id VARCHAR(64), subject TEXT, pid VARCHAR(64), day INTEGER NOT NULL,
    received BIGINT NOT NULL, event BIGINT, gender VARCHAR(16), birth BIGINT, death BIGINT, xrule VARCHAR(100),
    ukey VARCHAR(500), uid VARCHAR(64), seq BIGINT NOT NULL, f_completeness SMALLINT NOT NULL,
    f_conformance SMALLINT NOT NULL, f_consistency SMALLINT NOT NULL, f_timeliness SMALLINT NOT NULL,
    f_uniqueness SMALLINT NOT NULL, idkey VARCHAR(40), namekey VARCHAR(40), phonekey VARCHAR(40),
    addrkey VARCHAR(40)"""
_NAMES = ("rtype, rid, version, institution, via_type, via_id, subject, pid, day, received, event, gender, birth, "
          "death, xrule, ukey, uid, seq, f_completeness, f_conformance, f_consistency, f_timeliness, f_uniqueness, "
          "idkey, namekey, phonekey, addrkey")


def _rekey(key: str, seq_where: str | None) -> None:
    bind = op.get_bind()
    op.drop_index("ix_quality_resource_seq", table_name="quality_resource")
    if bind.dialect.name == "sqlite":  # a primary key cannot be altered: the table is copied
        op.execute(f"CREATE TABLE quality_resource_rekeyed ({_COLUMNS},\n    PRIMARY KEY ({key}))")
        op.execute(f"INSERT INTO quality_resource_rekeyed ({_NAMES}) SELECT {_NAMES} FROM quality_resource")
        op.execute("DROP TABLE quality_resource")
        op.execute("ALTER TABLE quality_resource_rekeyed RENAME TO quality_resource")
        op.execute("CREATE INDEX ix_quality_resource_ukey ON quality_resource (rtype, institution, ukey) "
                   "WHERE ukey IS NOT NULL")
        op.execute("CREATE INDEX ix_quality_resource_idkey ON quality_resource (idkey) WHERE idkey IS NOT NULL")
    else:
        op.execute("ALTER TABLE quality_resource DROP CONSTRAINT quality_resource_pkey")
        op.execute(f"ALTER TABLE quality_resource ADD CONSTRAINT quality_resource_pkey PRIMARY KEY ({key})")
    where = f" WHERE {seq_where}" if seq_where else ""
    op.execute(f"CREATE INDEX ix_quality_resource_seq ON quality_resource (seq){where}")


def upgrade() -> None:
    _rekey("rid, rtype", "seq <> 0")


def downgrade() -> None:
    _rekey("rtype, rid", None)
