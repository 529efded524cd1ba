"""ownership, confirmation of winners, suspect workers

Revision ID: 0007
Revises: 0005
Create Date: 2026-11-30 14:30:00

- ``jobs.owner_token_id`` / ``models.owner_token_id``: the token that made the
  row (only it or an admin may cancel a job). Nullable: rows from before this
  revision have no recorded owner.
- ``measurements.confirmation``: ``db.confirmation.Confirmation`` (null: none
  asked; pending, confirmed, rejected).
- ``candidates.confirms_measurement_id``: a re-measurement of that measurement's
  trace; ``candidates.exclude_worker_id``: the worker that may not lease it.
- ``workers.suspect_reason``: set when a worker's winner failed confirmation.
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ('jobs', 'models'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('owner_token_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                                          nullable=True))
            batch_op.create_foreign_key(f'fk_{table}_owner_token', 'tokens', ['owner_token_id'], ['id'])
    with op.batch_alter_table('measurements', schema=None) as batch_op:
        batch_op.add_column(sa.Column('confirmation', sa.String(length=16), nullable=True))
    with op.batch_alter_table('candidates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('confirms_measurement_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                                      nullable=True))
        batch_op.add_column(sa.Column('exclude_worker_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                                      nullable=True))
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('suspect_reason', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.drop_column('suspect_reason')
    with op.batch_alter_table('candidates', schema=None) as batch_op:
        batch_op.drop_column('exclude_worker_id')
        batch_op.drop_column('confirms_measurement_id')
    with op.batch_alter_table('measurements', schema=None) as batch_op:
        batch_op.drop_column('confirmation')
    for table in ('models', 'jobs'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(f'fk_{table}_owner_token', type_='foreignkey')
            batch_op.drop_column('owner_token_id')
