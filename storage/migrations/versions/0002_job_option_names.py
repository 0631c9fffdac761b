"""Job parameters use the options' one spelling: ``weight_decay`` and ``num_workers`` (rows written before the
configs had one home say ``wd`` and ``workers``).

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

RENAMED = {'wd': 'weight_decay', 'workers': 'num_workers'}
jobs = sa.table('jobs', sa.column('id', sa.Integer), sa.column('params', sa.JSON))


def _rename(mapping) -> None:
    conn = op.get_bind()
    for job_id, params in conn.execute(sa.select(jobs.c.id, jobs.c.params)).all():
        if params and any(old in params for old in mapping):
            renamed = {mapping.get(k, k): v for k, v in params.items()}
            conn.execute(jobs.update().where(jobs.c.id == job_id).values(params=renamed))


def upgrade() -> None:
    _rename(RENAMED)


def downgrade() -> None:
    _rename({new: old for old, new in RENAMED.items()})
