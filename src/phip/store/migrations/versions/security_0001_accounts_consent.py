"""security: users, OAuth2 clients, used client assertions, patient regions, consent rules

Revision ID: security_0001
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "security_0001"
down_revision = "0002"
branch_labels = ("security",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "security_users",
        sa.Column("username", sa.String(length=200), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("org", sa.String(length=100), nullable=True),
        sa.Column("region", sa.String(length=12), nullable=True),
        sa.Column("person", sa.String(length=100), nullable=True),
        sa.Column("practitioner", sa.String(length=100), nullable=True),
        sa.Column("scope", sa.Text(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.BigInteger(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("username"),
    )
    op.create_table(
        "security_clients",
        sa.Column("client_id", sa.String(length=200), nullable=False),
        sa.Column("secret_hash", sa.Text(), nullable=True),
        sa.Column("jwks", sa.Text(), nullable=True),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("org", sa.String(length=100), nullable=True),
        sa.Column("region", sa.String(length=12), nullable=True),
        sa.Column("practitioner", sa.String(length=100), nullable=True),
        sa.Column("scope", sa.Text(), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("client_id"),
    )
    op.create_table(
        "security_assertions",
        sa.Column("jti", sa.String(length=300), nullable=False),
        sa.Column("exp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("jti"),
    )
    op.create_table(
        "security_patient_region",
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("region", sa.String(length=12), nullable=False),
        sa.PrimaryKeyConstraint("patient_id"),
    )
    op.create_index("ix_security_patient_region_region", "security_patient_region", ["region", "patient_id"],
                    unique=False)
    op.create_table(
        "security_consent",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("consent_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("rule", sa.String(length=16), nullable=False),
        sa.Column("system", sa.Text(), nullable=True),
        sa.Column("code", sa.String(length=64), nullable=True),
        sa.Column("org", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_security_consent_patient", "security_consent", ["rule", "patient_id"], unique=False)
    op.create_index("ix_security_consent_consent", "security_consent", ["consent_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_security_consent_consent", table_name="security_consent")
    op.drop_index("ix_security_consent_patient", table_name="security_consent")
    op.drop_table("security_consent")
    op.drop_index("ix_security_patient_region_region", table_name="security_patient_region")
    op.drop_table("security_patient_region")
    op.drop_table("security_assertions")
    op.drop_table("security_clients")
    op.drop_table("security_users")
