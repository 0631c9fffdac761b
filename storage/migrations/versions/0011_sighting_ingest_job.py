"""Sightings name the video ingest job that stored them (its recording and tracked boxes: the frame viewer).

Revision ID: 0011
Revises: 0010
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a nullable column: SQLite adds it in place (no table copy, the autoincrement counter stays)
    op.add_column('sightings', sa.Column('ingest_job_id', sa.Integer(), nullable=True))
    op.create_index(op.f('ix_sightings_ingest_job_id'), 'sightings', ['ingest_job_id'])


def downgrade() -> None:
    op.drop_index(op.f('ix_sightings_ingest_job_id'), table_name='sightings')
    with op.batch_alter_table('sightings', table_kwargs={'sqlite_autoincrement': True}) as batch:
        batch.drop_column('ingest_job_id')
