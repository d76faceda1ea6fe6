"""Alembic environment: runs migrations on the connection the node passes in."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from dicom_node.index.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    """Run migrations online, on the given connection or a URL's engine."""
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite://")
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations()
