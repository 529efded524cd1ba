"""jobs.cost_model; cost_model_evaluations

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 10:00:00

``jobs.cost_model`` records which cost model a job's search used
(``tuner.cost_models``: ``metaschedule`` or ``tunehub``; NULL before it was
chosen or for jobs older than this column). ``cost_model_evaluations`` keeps
the verdicts of leave-one-model-out evaluations per target key
(``cost_model.leave_out``); the newest decides the ``auto`` choice.
"""

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('cost_model', sa.String(length=16), nullable=True))
    op.create_table(
        'cost_model_evaluations',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('target_key', sa.String(length=1000), nullable=False),
        sa.Column('tunehub_wins', sa.Boolean(), nullable=False),
        sa.Column('report_json', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('cost_model_evaluations') as batch:
        batch.create_index('ix_cost_model_evaluations_target_key', ['target_key'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('cost_model_evaluations') as batch:
        batch.drop_index('ix_cost_model_evaluations_target_key')
    op.drop_table('cost_model_evaluations')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('cost_model')
