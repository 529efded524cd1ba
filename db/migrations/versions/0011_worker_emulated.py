"""workers.emulated: a worker running under emulation (qemu-user)

Revision ID: 0011
Revises: 0008
Create Date: 2026-11-30 16:55:00

An aarch64 worker emulated on an x86 host proves the ARM path (lease, build,
run, report) but its timings say nothing about an ARM board. The flag is kept
on the worker's row; ``db.ranking`` leaves the measurements of emulated
workers out of every "best" (config downloads, bundles, search warm starts,
cost-model labels). The lead re-chains ``down_revision`` when merging.
"""

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('workers') as batch:
        batch.add_column(sa.Column('emulated', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('workers') as batch:
        batch.drop_column('emulated')
