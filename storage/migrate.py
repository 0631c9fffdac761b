"""Schema migrations (Alembic, ``storage/migrations``): every process that opens the database brings it to the
latest revision first, one at a time.

A database created before migrations existed (tables, no ``alembic_version``) holds revision 0001's schema: it is
stamped 0001 and upgraded from there."""
import fcntl
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

__all__ = ['upgrade', 'current_revision', 'head_revision', 'FIRST_REVISION']

SCRIPTS = Path(__file__).with_name('migrations')
FIRST_REVISION = '0001'
_PG_LOCK_KEY = 0x616D67726569  # 'amgrei': one advisory lock for all replicas' migrations


def _config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option('script_location', str(SCRIPTS))
    cfg.attributes['connection'] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory
    cfg = Config()
    cfg.set_main_option('script_location', str(SCRIPTS))
    return ScriptDirectory.from_config(cfg).get_current_head()


def current_revision(engine: Engine) -> str:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextmanager
def _one_at_a_time(engine: Engine, conn: Connection) -> Iterator[None]:
    """Replicas starting together migrate in turn (the later ones find the work done)."""
    if engine.dialect.name == 'postgresql':
        conn.execute(text('SELECT pg_advisory_lock(:k)'), {'k': _PG_LOCK_KEY})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text('SELECT pg_advisory_unlock(:k)'), {'k': _PG_LOCK_KEY})
            conn.commit()
    elif engine.dialect.name == 'sqlite' and engine.url.database not in (None, '', ':memory:'):
        with open(f'{engine.url.database}.migrate.lock', 'a+b') as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    else:
        yield


def upgrade(engine: Engine) -> None:
    """Bring the database to the latest revision (a no-op when it is there)."""
    with engine.connect() as conn, _one_at_a_time(engine, conn):
        cfg = _config(conn)
        revision = MigrationContext.configure(conn).get_current_revision()
        if revision is None and inspect(conn).has_table('gallery_images'):
            command.stamp(cfg, FIRST_REVISION)
            revision = FIRST_REVISION
        if revision != head_revision():
            command.upgrade(cfg, 'head')
        conn.commit()
