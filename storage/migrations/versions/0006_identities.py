"""Identities the service finds: an ``identities`` table (an optional name: enrolment) and ``sightings.identity_id``.
Existing sightings start unlinked.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def _sqlite_sequence(conn, table: str):
    return conn.execute(sa.text('SELECT seq FROM sqlite_sequence WHERE name = :t'), {'t': table}).scalar()


def upgrade() -> None:
    conn = op.get_bind()
    sqlite = conn.dialect.name == 'sqlite'
    op.create_table('identities',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('name', sa.String(length=200), nullable=True),
                    sa.Column('created_at', sa.DateTime(), nullable=False),
                    sa.PrimaryKeyConstraint('id'),
                    sqlite_autoincrement=True)
    seq = _sqlite_sequence(conn, 'sightings') if sqlite else None  # the copy SQLite makes must keep the counter
    with op.batch_alter_table('sightings', table_kwargs={'sqlite_autoincrement': True}) as batch:
        batch.add_column(sa.Column('identity_id', sa.Integer(), nullable=True))
        batch.create_index(batch.f('ix_sightings_identity_id'), ['identity_id'], unique=False)
        batch.create_foreign_key(batch.f('fk_sightings_identity_id_identities'), 'identities', ['identity_id'],
                                 ['id'])
    if sqlite and seq is not None:
        conn.execute(sa.text('DELETE FROM sqlite_sequence WHERE name = :t'), {'t': 'sightings'})
        conn.execute(sa.text('INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :s)'), {'t': 'sightings', 's': seq})
    # the unlinked video sightings (storage.db.PENDING_SIGHTINGS), without walking every uploaded crop's
    pending = sa.text("identity_id IS NULL AND video <> ''")
    op.create_index('ix_sightings_pending', 'sightings', ['first_time', 'id'], sqlite_where=pending,
                    postgresql_where=pending)


def downgrade() -> None:
    op.drop_index('ix_sightings_pending', table_name='sightings')
    with op.batch_alter_table('sightings', table_kwargs={'sqlite_autoincrement': True}) as batch:
        batch.drop_constraint(batch.f('fk_sightings_identity_id_identities'), type_='foreignkey')
        batch.drop_index(batch.f('ix_sightings_identity_id'))
        batch.drop_column('identity_id')
    op.drop_table('identities')
