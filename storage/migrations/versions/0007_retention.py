"""Retention: gallery images are found by when they were stored (``created_at``), overall and per camera.

Revision ID: 0007
Revises: 0006
"""
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_gallery_images_created_at', 'gallery_images', ['created_at'])
    op.create_index('ix_gallery_images_camera_created', 'gallery_images', ['camera_id', 'created_at'])


def downgrade() -> None:
    op.drop_index('ix_gallery_images_camera_created', table_name='gallery_images')
    op.drop_index('ix_gallery_images_created_at', table_name='gallery_images')
