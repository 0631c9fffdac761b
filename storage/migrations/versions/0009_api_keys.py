"""Named API keys: ``api_keys`` (a role, the sites a key may see, the secret's SHA-256, expiry and revocation).

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_keys',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('name', sa.String(length=100), nullable=False),
                    sa.Column('role', sa.String(length=16), nullable=False),
                    sa.Column('sites', sa.JSON(), nullable=False),
                    sa.Column('secret_sha256', sa.String(length=64), nullable=False),
                    sa.Column('created_at', sa.DateTime(), nullable=False),
                    sa.Column('expires_at', sa.DateTime(), nullable=True),
                    sa.Column('revoked_at', sa.DateTime(), nullable=True),
                    sa.PrimaryKeyConstraint('id'),
                    sa.UniqueConstraint('name'),
                    sa.UniqueConstraint('secret_sha256'))


def downgrade() -> None:
    op.drop_table('api_keys')
