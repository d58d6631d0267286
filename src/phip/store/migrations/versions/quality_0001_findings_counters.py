"""quality: checked resources, findings and per institution x type x day counters

Revision ID: quality_0001
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "quality_0001"
down_revision = "0002"
branch_labels = ("quality",)
depends_on = None

FLAGS = ("completeness", "conformance", "consistency", "timeliness", "uniqueness")


def upgrade() -> None:
    op.create_table(
        "quality_resource",
        sa.Column("rtype", sa.String(length=64), nullable=False),
        sa.Column("rid", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("institution", sa.String(length=64), nullable=True),
        sa.Column("via_type", sa.String(length=64), nullable=True),
        sa.Column("via_id", sa.String(length=64), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("pid", sa.String(length=64), nullable=True),
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("received", sa.BigInteger(), nullable=False),
        sa.Column("event", sa.BigInteger(), nullable=True),
        sa.Column("gender", sa.String(length=16), nullable=True),
        sa.Column("birth", sa.BigInteger(), nullable=True),
        sa.Column("death", sa.BigInteger(), nullable=True),
        sa.Column("xrule", sa.String(length=100), nullable=True),
        sa.Column("ukey", sa.String(length=500), nullable=True),
        sa.Column("uid", sa.String(length=64), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        *[sa.Column(f"f_{d}", sa.SmallInteger(), nullable=False) for d in FLAGS],
        sa.PrimaryKeyConstraint("rtype", "rid"),
    )
    op.create_index("ix_quality_resource_seq", "quality_resource", ["seq"], unique=False)
    op.create_index("ix_quality_resource_ukey", "quality_resource", ["rtype", "institution", "ukey"], unique=False,
                    sqlite_where=sa.text("ukey IS NOT NULL"), postgresql_where=sa.text("ukey IS NOT NULL"))
    op.create_table(
        "quality_finding",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("rtype", sa.String(length=64), nullable=False),
        sa.Column("rid", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("rule", sa.String(length=100), nullable=False),
        sa.Column("dimension", sa.String(length=16), nullable=False),
        sa.Column("path", sa.String(length=200), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("institution", sa.String(length=64), nullable=True),
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("detected", sa.BigInteger(), nullable=False),
        sa.Column("closed", sa.BigInteger(), nullable=True),
        sa.Column("task", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("rtype", "rid", "rule", name="uq_quality_finding_rule"),
    )
    op.create_index("ix_quality_finding_subject", "quality_finding", ["subject"], unique=False)
    op.create_index("ix_quality_finding_inst", "quality_finding", ["institution", "day"], unique=False)
    op.create_index("ix_quality_finding_rule", "quality_finding", ["rule", "status"], unique=False)
    op.create_table(
        "quality_counter",
        sa.Column("institution", sa.String(length=64), nullable=False),
        sa.Column("rtype", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("received", sa.Integer(), nullable=False),
        *[sa.Column(f"f_{d}", sa.Integer(), nullable=False) for d in FLAGS],
        sa.PrimaryKeyConstraint("institution", "rtype", "day"),
    )


def downgrade() -> None:
    op.drop_table("quality_counter")
    op.drop_index("ix_quality_finding_rule", table_name="quality_finding")
    op.drop_index("ix_quality_finding_inst", table_name="quality_finding")
    op.drop_index("ix_quality_finding_subject", table_name="quality_finding")
    op.drop_table("quality_finding")
    op.drop_index("ix_quality_resource_ukey", table_name="quality_resource")
    op.drop_index("ix_quality_resource_seq", table_name="quality_resource")
    op.drop_table("quality_resource")
