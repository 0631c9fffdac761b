"""Sites: a ``site`` on gallery images, sightings and identities ('' for the rows from before: no site).

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

TABLES = ('gallery_images', 'sightings', 'identities')


def upgrade() -> None:
    # a column with a constant default: SQLite adds it in place (no table copy, the autoincrement counters stay)
    for table in TABLES:
        op.add_column(table, sa.Column('site', sa.String(length=64), server_default='', nullable=False))
        op.create_index(op.f(f'ix_{table}_site'), table, ['site'])


def downgrade() -> None:
    for table in TABLES:
        op.drop_index(op.f(f'ix_{table}_site'), table_name=table)
        with op.batch_alter_table(table, table_kwargs={'sqlite_autoincrement': True}) as batch:
            batch.drop_column('site')
