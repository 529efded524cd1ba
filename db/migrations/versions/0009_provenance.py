"""measurements.tvm_version, candidates.transferred, tuner_rounds: provenance for bundles, rounds for metrics

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 16:40:00

``measurements.tvm_version`` is the TVM version of the worker that measured the
row (it reports it at registration, ``hardware["tvm"]``): a schedule's time is
only comparable, and its trace only sure to replay, under the TVM that made it,
so bundles and searches for one version leave other versions' rows out unless
asked. Nullable: rows stored before this revision did not record it.

``candidates.transferred`` marks a candidate the tuner adapted from another
workload of the family (``tuner.transfer``) rather than found by searching
this one; bundles say so per record.

``tuner_rounds`` has one row per batch a tuner queued, with the seconds its
search took to propose it: ``GET /metrics`` reads rounds and generation time
from here, so any API replica reports what every tuner process did.
"""

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'tuner_rounds',
        sa.Column('id', _ID, nullable=False),
        sa.Column('job_id', _ID, nullable=False),
        sa.Column('task_id', _ID, nullable=False),
        sa.Column('round', sa.Integer(), nullable=False),
        sa.Column('candidates', sa.Integer(), nullable=False),
        sa.Column('generation_s', sa.Float(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id']),
        sa.ForeignKeyConstraint(['task_id'], ['tasks.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('measurements', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tvm_version', sa.String(length=64), nullable=True))
    with op.batch_alter_table('candidates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('transferred', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    op.drop_table('tuner_rounds')
    with op.batch_alter_table('candidates', schema=None) as batch_op:
        batch_op.drop_column('transferred')
    with op.batch_alter_table('measurements', schema=None) as batch_op:
        batch_op.drop_column('tvm_version')
