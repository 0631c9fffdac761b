"""Alembic environment: run by :func:`storage.migrate.upgrade` with an open connection (the service, its job workers
and the tests), or by the ``alembic`` command with ``-x url=...``."""
from alembic import context
from sqlalchemy import create_engine

from storage.db import Base

config = context.config
connection = config.attributes.get('connection')


def run(conn) -> None:
    # SQLite cannot ALTER most things in place: batch mode copies the table
    context.configure(connection=conn, target_metadata=Base.metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get('url') or config.get_main_option('sqlalchemy.url')
    with create_engine(url).connect() as conn:
        run(conn)
