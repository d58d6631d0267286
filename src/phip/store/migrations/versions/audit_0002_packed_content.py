"""audit trail: AuditEvent JSON stored compressed (zcontent), content kept for older rows

Revision ID: audit_0002
Revises: audit_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "audit_0002"
down_revision = "audit_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # (SQLite copies the table to drop NOT NULL: once, for the rows written so far)
    with op.batch_alter_table("audit_events") as b:
        b.add_column(sa.Column("zcontent", sa.LargeBinary(), nullable=True))
        b.alter_column("content", existing_type=sa.Text(), nullable=True)


def downgrade() -> None:
    # packed rows are unpacked back into content first (nothing of the trail is lost)
    from phip.audit.packing import unpack

    conn = op.get_bind()
    events = sa.table("audit_events", sa.column("seq", sa.BigInteger()), sa.column("content", sa.Text()),
                      sa.column("zcontent", sa.LargeBinary()))
    last = 0
    while True:
        rows = conn.execute(sa.select(events.c.seq, events.c.zcontent)
                            .where(events.c.zcontent.isnot(None), events.c.seq > last)
                            .order_by(events.c.seq).limit(2000)).all()
        if not rows:
            break
        for seq, z in rows:
            conn.execute(events.update().where(events.c.seq == seq).values(content=unpack(z).decode()))
        last = rows[-1][0]
    with op.batch_alter_table("audit_events") as b:
        b.alter_column("content", existing_type=sa.Text(), nullable=False)
        b.drop_column("zcontent")
