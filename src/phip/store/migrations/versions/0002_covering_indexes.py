"""Covering search indexes and (rid, param) keys on the index tables.

The value indexes of idx_string, idx_token and idx_ref carry rid, so a driving lookup
never touches the table; the rid indexes become (rid, param) for the correlated checks
of the other criteria of a search.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = ("idx_date", "idx_number", "idx_quantity", "idx_ref", "idx_string", "idx_token", "idx_uri")
COVERING = {
    "idx_string": ("ix_idx_string_val", ["param", "norm"], ["param", "norm", "rid"]),
    "idx_token": ("ix_idx_token_val", ["param", "code", "system"], ["param", "code", "system", "rid"]),
    "idx_ref": ("ix_idx_ref_target", ["param", "target_id", "target_type"],
                ["param", "target_id", "target_type", "rid"]),
}


def upgrade() -> None:
    for t in TABLES:
        op.drop_index(f"ix_{t}_rid", table_name=t)
        op.create_index(f"ix_{t}_rid", t, ["rid", "param"])
    for t, (name, _old, new) in COVERING.items():
        op.drop_index(name, table_name=t)
        op.create_index(name, t, new)


def downgrade() -> None:
    for t in TABLES:
        op.drop_index(f"ix_{t}_rid", table_name=t)
        op.create_index(f"ix_{t}_rid", t, ["rid"])
    for t, (name, old, _new) in COVERING.items():
        op.drop_index(name, table_name=t)
        op.create_index(name, t, old)
