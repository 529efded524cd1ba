"""measurements.flagged; workers.calibration_json

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 04:10:00

A worker reports its calibration (a fixed kernel's time against its best) with
every batch of results; ``workers.calibration_json`` keeps the last one, and
``measurements.flagged`` marks results measured while the worker was degraded
or its CPUs were shared (``workers.measure``).
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('measurements', schema=None) as batch_op:
        batch_op.add_column(sa.Column('flagged', sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('calibration_json', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.drop_column('calibration_json')
    with op.batch_alter_table('measurements', schema=None) as batch_op:
        batch_op.drop_column('flagged')
