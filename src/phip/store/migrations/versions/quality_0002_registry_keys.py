"""quality: keyed hashes of a Patient's ID number, name, phone and address (population registry check)

Revision ID: quality_0002
Revises: quality_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "quality_0002"
down_revision = "quality_0001"
branch_labels = None
depends_on = None

COLUMNS = ("idkey", "namekey", "phonekey", "addrkey")


def upgrade() -> None:
    with op.batch_alter_table("quality_resource") as b:
        for c in COLUMNS:
            b.add_column(sa.Column(c, sa.String(length=40), nullable=True))
    op.create_index("ix_quality_resource_idkey", "quality_resource", ["idkey"],
                    sqlite_where=sa.text("idkey IS NOT NULL"), postgresql_where=sa.text("idkey IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_quality_resource_idkey", table_name="quality_resource")
    with op.batch_alter_table("quality_resource") as b:
        for c in COLUMNS:
            b.drop_column(c)
