"""measurements.error_kind

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 13:40:00

``measurements.error_kind`` is the class of a failed measurement
(``common.protocol.ErrorKind``: build, unsupported, wrong_output, run, crash,
timeout), stored beside the free-text ``error``. Nullable: valid results have
none, and rows stored before this revision did not record it.
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('measurements', schema=None) as batch_op:
        batch_op.add_column(sa.Column('error_kind', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('measurements', schema=None) as batch_op:
        batch_op.drop_column('error_kind')
