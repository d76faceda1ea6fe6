"""index instances by association

Retention keeps the record of an association while an indexed instance names it
(:func:`dicom_node.index.purge.prune_associations`): without an index that test
scanned every instance for each old record.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 05:40:00
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_index(
        op.f("ix_instances_association_id"), "instances", ["association_id"], unique=False
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index(op.f("ix_instances_association_id"), table_name="instances")
