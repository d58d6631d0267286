"""Alembic environment for phip's store (``phip.store.schema.metadata``)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from phip.capabilities import load_tables
from phip.store.schema import metadata

load_tables()  # capabilities declare their tables on the same metadata

config = context.config


def run_migrations() -> None:
    conn = config.attributes.get("connection")
    if conn is not None:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations()
