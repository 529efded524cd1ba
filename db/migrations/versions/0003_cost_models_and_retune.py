"""cost models table; jobs.retune

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 04:05:00

``cost_models`` holds the versioned XGBoost cost model of each target key
(``cost_model.store``); ``jobs.retune`` says whether a job tunes workloads the
database already has a best config for (default: no, they are answered at once).
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('cost_models',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('target_key', sa.String(length=1000), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('n_samples', sa.Integer(), nullable=False),
    sa.Column('full_samples', sa.Integer(), nullable=False),
    sa.Column('max_measurement_id', sa.BigInteger(), nullable=False),
    sa.Column('meta_json', sa.Text(), nullable=False),
    sa.Column('blob', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('target_key', 'version')
    )
    with op.batch_alter_table('cost_models', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cost_models_target_key'), ['target_key'], unique=False)
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('retune', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('retune')
    with op.batch_alter_table('cost_models', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cost_models_target_key'))
    op.drop_table('cost_models')
