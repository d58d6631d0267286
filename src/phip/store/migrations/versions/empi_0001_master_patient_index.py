"""empi: master patient index records, blocking keys, review queue, decisions, merges

Revision ID: empi_0001
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "empi_0001"
down_revision = "0002"
branch_labels = ("empi",)
depends_on = None

IdxText = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "empi_record",
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("person_id", sa.String(length=64), nullable=False),
        sa.Column("features", sa.Text(), nullable=False),
        sa.Column("assurance", sa.String(length=8), nullable=False),
        sa.Column("link_kind", sa.String(length=16), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("updated", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("patient_id"),
    )
    op.create_index("ix_empi_record_person", "empi_record", ["person_id"])
    op.create_table(
        "empi_key",
        sa.Column("key", IdxText, nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
    )
    op.create_index("ix_empi_key_key", "empi_key", ["key", "patient_id"])
    op.create_index("ix_empi_key_patient", "empi_key", ["patient_id"])
    op.create_table(
        "empi_review",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("candidate_id", sa.String(length=64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decided_at", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_empi_review_status", "empi_review", ["status", "id"])
    op.create_index("ix_empi_review_patient", "empi_review", ["patient_id"])
    op.create_index("ix_empi_review_candidate", "empi_review", ["candidate_id"])
    op.create_table(
        "empi_decision",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("other_id", sa.String(length=64), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=False),
        sa.Column("decided_at", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_empi_decision_patient", "empi_decision", ["patient_id"])
    op.create_index("ix_empi_decision_other", "empi_decision", ["other_id"])
    op.create_table(
        "empi_merge",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source_id", sa.String(length=64), nullable=False),
        sa.Column("target_id", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("merged_by", sa.String(length=200), nullable=False),
        sa.Column("merged_at", sa.BigInteger(), nullable=False),
        sa.Column("undone_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_empi_merge_source", "empi_merge", ["source_id"])


def downgrade() -> None:
    for t in ("empi_merge", "empi_decision", "empi_review", "empi_key", "empi_record"):
        op.drop_table(t)
