"""Sightings become the gallery's unit: a ``sightings`` table (camera, first/last time, source video and track,
crop count, best crop, quality); gallery images gain ``sighting_id``, ``frame`` and ``box``, and ``person_id`` may
be NULL (unknown). Every existing image becomes a sighting of one, with the image's id as its id (one INSERT ...
SELECT, no rows read into Python), its camera, and its timestamp as both ends of the time range.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def _sqlite_sequence(conn, table: str):
    return conn.execute(sa.text('SELECT seq FROM sqlite_sequence WHERE name = :t'), {'t': table}).scalar()


def _set_sqlite_sequence(conn, table: str, seq) -> None:
    conn.execute(sa.text('DELETE FROM sqlite_sequence WHERE name = :t'), {'t': table})
    if seq is not None:
        conn.execute(sa.text('INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :s)'), {'t': table, 's': seq})


def upgrade() -> None:
    conn = op.get_bind()
    sqlite = conn.dialect.name == 'sqlite'
    op.create_table('sightings',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('camera_id', sa.Integer(), nullable=False),
                    sa.Column('first_time', sa.DateTime(), nullable=True),
                    sa.Column('last_time', sa.DateTime(), nullable=True),
                    sa.Column('video', sa.String(length=512), nullable=False),
                    sa.Column('track_id', sa.Integer(), nullable=True),
                    sa.Column('crop_count', sa.Integer(), nullable=False),
                    sa.Column('frame_count', sa.Integer(), nullable=True),
                    sa.Column('best_image_id', sa.Integer(), nullable=True),
                    sa.Column('quality', sa.Float(), nullable=True),
                    sa.Column('created_at', sa.DateTime(), nullable=False),
                    sa.PrimaryKeyConstraint('id'),
                    sqlite_autoincrement=True)
    with op.batch_alter_table('sightings') as batch:
        batch.create_index(batch.f('ix_sightings_camera_id'), ['camera_id'], unique=False)
        batch.create_index(batch.f('ix_sightings_first_time'), ['first_time'], unique=False)
        batch.create_index(batch.f('ix_sightings_last_time'), ['last_time'], unique=False)

    # SQLite rebuilds the table: its AUTOINCREMENT counter (migration 0004) must survive the copy
    image_seq = _sqlite_sequence(conn, 'gallery_images') if sqlite else None
    with op.batch_alter_table('gallery_images', table_kwargs={'sqlite_autoincrement': True}) as batch:
        batch.alter_column('person_id', existing_type=sa.Integer(), nullable=True)
        batch.add_column(sa.Column('sighting_id', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('frame', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('box', sa.JSON(), nullable=True))
        batch.create_index(batch.f('ix_gallery_images_sighting_id'), ['sighting_id'], unique=False)
        batch.create_foreign_key(batch.f('fk_gallery_images_sighting_id_sightings'), 'sightings',
                                 ['sighting_id'], ['id'])
    if sqlite:
        _set_sqlite_sequence(conn, 'gallery_images', image_seq)

    conn.execute(sa.text(
        "INSERT INTO sightings (id, camera_id, first_time, last_time, video, crop_count, best_image_id, created_at) "
        "SELECT id, camera_id, timestamp, timestamp, '', 1, id, created_at FROM gallery_images"))
    conn.execute(sa.text('UPDATE gallery_images SET sighting_id = id'))
    if sqlite:  # later sightings are numbered after every image id ever handed out
        _set_sqlite_sequence(conn, 'sightings', image_seq or conn.execute(
            sa.text('SELECT max(id) FROM sightings')).scalar())
    elif conn.dialect.name == 'postgresql':  # explicit ids do not move the sequence
        conn.execute(sa.text("SELECT setval(pg_get_serial_sequence('sightings', 'id'), "
                             "coalesce((SELECT max(id) FROM sightings), 0) + 1, false)"))


def downgrade() -> None:
    conn = op.get_bind()
    sqlite = conn.dialect.name == 'sqlite'
    # images of unknown persons cannot go back to a schema where every image has one
    if conn.execute(sa.text('SELECT count(*) FROM gallery_images WHERE person_id IS NULL')).scalar():
        raise RuntimeError('gallery images of unknown persons exist: label or delete them before downgrading')
    image_seq = _sqlite_sequence(conn, 'gallery_images') if sqlite else None
    with op.batch_alter_table('gallery_images', table_kwargs={'sqlite_autoincrement': True}) as batch:
        batch.drop_constraint(batch.f('fk_gallery_images_sighting_id_sightings'), type_='foreignkey')
        batch.drop_index(batch.f('ix_gallery_images_sighting_id'))
        batch.drop_column('box')
        batch.drop_column('frame')
        batch.drop_column('sighting_id')
        batch.alter_column('person_id', existing_type=sa.Integer(), nullable=False)
    if sqlite:
        _set_sqlite_sequence(conn, 'gallery_images', image_seq)
    op.drop_table('sightings')
