"""SQLite: gallery image ids are never reused (AUTOINCREMENT), as PostgreSQL's sequence never reuses them. Without it
SQLite gives a new row the largest id + 1, so deleting the newest image and uploading another hands the deleted
row's id to the new one, and whatever a replica still holds of the old row (its cached person, camera, tags,
visibility) would be shown for the new vector.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != 'sqlite':
        return
    with op.batch_alter_table('gallery_images', recreate='always',
                              table_kwargs={'sqlite_autoincrement': True}):
        pass
    # ids handed out before, whose rows are deleted since, are not handed out again either: the change log has them
    last = conn.execute(sa.text('SELECT max(image_id) FROM gallery_changes')).scalar() or 0
    conn.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = 'gallery_images'"))
    conn.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('gallery_images', "
                         "max(:last, (SELECT coalesce(max(id), 0) FROM gallery_images)))"), {'last': last})


def downgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        with op.batch_alter_table('gallery_images', recreate='always', table_kwargs={'sqlite_autoincrement': False}):
            pass
