"""user_workloads, user_records: what TVM users commit through tunehub.metaschedule.Database

Revision ID: 0008
Revises: 0006
Create Date: 2026-11-30 14:40:00

Records committed from a user's own MetaSchedule script are kept apart from the
fleet's measurements (``measurements``): they carry who committed them and
never take part in the fleet's ranking (``db.ranking``). ``user_workloads``
lists the workloads a user committed (rows of the shared ``workloads`` table).
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'user_workloads',
        sa.Column('id', _ID, nullable=False),
        sa.Column('workload_id', _ID, nullable=False),
        sa.Column('owner', sa.String(length=200), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['workload_id'], ['workloads.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('workload_id'),
    )
    op.create_table(
        'user_records',
        sa.Column('id', _ID, nullable=False),
        sa.Column('workload_id', _ID, nullable=False),
        sa.Column('target_key', sa.String(length=1000), nullable=False),
        sa.Column('record_json', sa.Text(), nullable=False),
        sa.Column('sort_secs', sa.Float(), nullable=False),
        sa.Column('valid', sa.Boolean(), nullable=False),
        sa.Column('owner', sa.String(length=200), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['workload_id'], ['workloads.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_user_records_top', 'user_records', ['target_key', 'workload_id', 'valid', 'sort_secs', 'id'])


def downgrade() -> None:
    op.drop_index('ix_user_records_top', table_name='user_records')
    op.drop_table('user_records')
    op.drop_table('user_workloads')
