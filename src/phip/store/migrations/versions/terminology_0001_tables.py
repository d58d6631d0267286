"""Terminology: unmapped local codes seen at ingest, and the loaded content versions.

Revision ID: terminology_0001
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "terminology_0001"
down_revision = "0002"
branch_labels = ("terminology",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "terminology_unmapped",
        sa.Column("system", sa.String(500), primary_key=True),
        sa.Column("code", sa.String(200), primary_key=True),
        sa.Column("display", sa.Text, nullable=True),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("first_seen", sa.BigInteger, nullable=False),
        sa.Column("last_seen", sa.BigInteger, nullable=False),
        sa.Column("last_resource", sa.String(200), nullable=True),
    )
    op.create_table(
        "terminology_loads",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("loaded", sa.BigInteger, nullable=False),
        sa.Column("detail", sa.Text, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("terminology_loads")
    op.drop_table("terminology_unmapped")
