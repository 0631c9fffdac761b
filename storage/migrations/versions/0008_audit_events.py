"""The audit trail: ``audit_events``, one row per request, append-only (an UPDATE is refused by a trigger).

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

REFUSED = 'audit events are append-only'


def upgrade() -> None:
    op.create_table('audit_events',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('at', sa.DateTime(), nullable=False),
                    sa.Column('key_name', sa.String(length=100), nullable=False),
                    sa.Column('role', sa.String(length=16), nullable=False),
                    sa.Column('client', sa.String(length=64), nullable=False),
                    sa.Column('method', sa.String(length=8), nullable=False),
                    sa.Column('route', sa.String(length=200), nullable=False),
                    sa.Column('path', sa.String(length=1024), nullable=False),
                    sa.Column('status', sa.Integer(), nullable=False),
                    sa.Column('filters', sa.JSON(), nullable=False),
                    sa.Column('k', sa.Integer(), nullable=True),
                    sa.Column('results', sa.Integer(), nullable=True),
                    sa.PrimaryKeyConstraint('id'),
                    sqlite_autoincrement=True)
    op.create_index(op.f('ix_audit_events_at'), 'audit_events', ['at'])
    op.create_index(op.f('ix_audit_events_key_name'), 'audit_events', ['key_name'])
    op.create_index(op.f('ix_audit_events_route'), 'audit_events', ['route'])
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(f"""CREATE FUNCTION audit_events_refuse_update() RETURNS trigger AS $$
                       BEGIN RAISE EXCEPTION '{REFUSED}'; END; $$ LANGUAGE plpgsql""")
        op.execute('CREATE TRIGGER audit_events_append_only BEFORE UPDATE ON audit_events '
                   'FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_update()')
    else:
        op.execute(f"""CREATE TRIGGER audit_events_append_only BEFORE UPDATE ON audit_events
                       BEGIN SELECT RAISE(ABORT, '{REFUSED}'); END""")


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('DROP TRIGGER audit_events_append_only ON audit_events')
        op.execute('DROP FUNCTION audit_events_refuse_update()')
    else:
        op.execute('DROP TRIGGER audit_events_append_only')
    op.drop_index(op.f('ix_audit_events_route'), table_name='audit_events')
    op.drop_index(op.f('ix_audit_events_key_name'), table_name='audit_events')
    op.drop_index(op.f('ix_audit_events_at'), table_name='audit_events')
    op.drop_table('audit_events')
