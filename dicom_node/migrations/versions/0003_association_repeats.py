"""count repeated rejections on one association record

A request rejected like the last one recorded (same address, AE titles and reason)
within a minute of it is counted on that record (``repeats``) instead of adding a row
(:meth:`dicom_node.network.Receiver._reject`).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 12:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("associations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("repeats", sa.Integer(), nullable=False,
                                      server_default="0"))


def downgrade() -> None:
    """Revert this revision (a plain ALTER TABLE: rebuilding the table, as a batch would
    on SQLite, fails while instances refer to it)."""
    with op.batch_alter_table("associations", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("repeats")
