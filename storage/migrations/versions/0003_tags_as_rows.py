"""Tags become rows of ``gallery_tags`` (indexed by tag: listing and counting by tag no longer read every row), moved
out of the JSON column ``gallery_images.tags``; ``engine_positions`` records how far a shared vector engine (Milvus)
has applied the gallery change log.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

CHUNK = 10_000  # rows moved at a time: a large gallery is never read whole


def upgrade() -> None:
    op.create_table('gallery_tags',
                    sa.Column('image_id', sa.Integer(), nullable=False),
                    sa.Column('tag', sa.String(length=64), nullable=False),
                    sa.Column('position', sa.SmallInteger(), nullable=False),
                    sa.ForeignKeyConstraint(['image_id'], ['gallery_images.id'], ondelete='CASCADE'),
                    sa.PrimaryKeyConstraint('image_id', 'tag'))
    op.create_index('ix_gallery_tags_tag_image', 'gallery_tags', ['tag', 'image_id'], unique=False)
    op.create_table('engine_positions',
                    sa.Column('collection', sa.String(length=255), nullable=False),
                    sa.Column('applied_seq', sa.Integer(), nullable=False),
                    sa.Column('awaited', sa.JSON(), nullable=False),
                    sa.Column('updated_at', sa.DateTime(), nullable=False),
                    sa.PrimaryKeyConstraint('collection'))
    conn = op.get_bind()
    images = sa.table('gallery_images', sa.column('id', sa.Integer), sa.column('tags', sa.JSON))
    tags = sa.table('gallery_tags', sa.column('image_id', sa.Integer), sa.column('tag', sa.String),
                    sa.column('position', sa.SmallInteger))
    last = 0
    while True:
        rows = conn.execute(sa.select(images.c.id, images.c.tags).where(images.c.id > last)
                            .order_by(images.c.id).limit(CHUNK)).all()
        if not rows:
            break
        moved = [dict(image_id=image_id, tag=str(tag)[:64], position=position)
                 for image_id, values in rows
                 for position, tag in enumerate(dict.fromkeys(values or ()))]
        if moved:
            conn.execute(tags.insert(), moved)
        last = rows[-1][0]
    with op.batch_alter_table('gallery_images') as batch:
        batch.drop_column('tags')


def downgrade() -> None:
    with op.batch_alter_table('gallery_images') as batch:
        batch.add_column(sa.Column('tags', sa.JSON(), nullable=True))
    conn = op.get_bind()
    images = sa.table('gallery_images', sa.column('id', sa.Integer), sa.column('tags', sa.JSON))
    tags = sa.table('gallery_tags', sa.column('image_id', sa.Integer), sa.column('tag', sa.String),
                    sa.column('position', sa.SmallInteger))
    by_image = {}
    for image_id, tag in conn.execute(sa.select(tags.c.image_id, tags.c.tag).order_by(tags.c.image_id,
                                                                                      tags.c.position)):
        by_image.setdefault(image_id, []).append(tag)
    for image_id, values in by_image.items():
        conn.execute(images.update().where(images.c.id == image_id).values(tags=values))
    conn.execute(images.update().where(images.c.tags.is_(None)).values(tags=[]))
    op.drop_table('engine_positions')
    op.drop_index('ix_gallery_tags_tag_image', table_name='gallery_tags')
    op.drop_table('gallery_tags')
