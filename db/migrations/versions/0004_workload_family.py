"""workloads.family

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 06:30:00

``workloads.family`` is a workload's shape- and dtype-free skeleton key
(``tuner.transfer.family_key``): a new workload's first batch measures the best
schedules of the other members of its family, adapted (``tuner.transfer``).
Filled lazily by the tuner (it needs TVM to compute), so it is nullable.
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('workloads', schema=None) as batch_op:
        batch_op.add_column(sa.Column('family', sa.String(length=16), nullable=True))
        batch_op.create_index(batch_op.f('ix_workloads_family'), ['family'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('workloads', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_workloads_family'))
        batch_op.drop_column('family')
