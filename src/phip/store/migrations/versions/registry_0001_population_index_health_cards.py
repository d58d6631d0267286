"""registry: population index and electronic health cards

Revision ID: registry_0001
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "registry_0001"
down_revision = "0002"
branch_labels = ("registry",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registry_resident",
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("region", sa.String(length=12), nullable=False),
        sa.Column("sex", sa.String(length=16), nullable=False),
        sa.Column("birth", sa.Integer(), nullable=False),
        sa.Column("alive", sa.Boolean(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("organization", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("patient_id"),
    )
    op.create_index("ix_registry_resident_region", "registry_resident",
                    ["region", "sex", "birth", "alive", "active"], unique=False)
    op.create_table(
        "registry_health_card",
        sa.Column("card_no", sa.String(length=32), nullable=False),
        sa.Column("person_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("issued_at", sa.BigInteger(), nullable=False),
        sa.Column("issued_by", sa.String(length=200), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.Column("revoked_by", sa.String(length=200), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("card_no"),
    )
    op.create_index("ix_registry_health_card_person", "registry_health_card", ["person_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_registry_health_card_person", table_name="registry_health_card")
    op.drop_table("registry_health_card")
    op.drop_index("ix_registry_resident_region", table_name="registry_resident")
    op.drop_table("registry_resident")
