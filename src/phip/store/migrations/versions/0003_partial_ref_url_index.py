"""The (param, url) index of idx_ref holds only the rows that have a url.

``url`` is set only for references that are not local (absolute URLs to other servers, canonicals);
every relative reference — nearly all of them — had an entry with a NULL url that no search reads
(searches look a url up by equality, which implies it is not NULL). Writing those entries was ~7% of
the pages a transaction Bundle wrote to SQLite's log.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

WHERE = sa.text("url IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_idx_ref_url", table_name="idx_ref")
    op.create_index("ix_idx_ref_url", "idx_ref", ["param", "url"], sqlite_where=WHERE, postgresql_where=WHERE)


def downgrade() -> None:
    op.drop_index("ix_idx_ref_url", table_name="idx_ref")
    op.create_index("ix_idx_ref_url", "idx_ref", ["param", "url"])
