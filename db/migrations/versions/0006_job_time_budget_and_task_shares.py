"""jobs.time_budget_s, end_reason, estimated_latency_s; tasks.share, why

Revision ID: 0006
Revises: 0004
Create Date: 2026-11-30 14:00:00

A job may have a wall-clock budget (``time_budget_s``, from ``started_at`` on
the database's clock) and records why it stopped (``end_reason``) and the
model latency the scheduler estimated. Each task keeps the scheduler's last
word on it: its share of the model's time and why it has the trials it has.
All nullable: older jobs simply have none.
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('time_budget_s', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('end_reason', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('estimated_latency_s', sa.Float(), nullable=True))
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('share', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('why', sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_column('why')
        batch_op.drop_column('share')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('estimated_latency_s')
        batch_op.drop_column('end_reason')
        batch_op.drop_column('time_budget_s')
