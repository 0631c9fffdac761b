"""A throwaway PostgreSQL server for the storage and API tests (Debian's `postgresql` package).

``AMG_TEST_POSTGRES_URL`` (an SQLAlchemy URL of a server where the user may create databases) is used when set;
otherwise a private cluster is created with ``initdb`` in a temporary directory, listening on a Unix socket only,
and removed at the end. Where neither works the PostgreSQL variants are skipped, saying why.
"""
import glob
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from sqlalchemy.engine import make_url


def _bindir() -> Optional[Path]:
    if shutil.which('initdb') and shutil.which('pg_ctl'):
        return Path(shutil.which('initdb')).parent
    found = sorted(glob.glob('/usr/lib/postgresql/*/bin/initdb'), key=lambda p: int(p.split('/')[4]))
    return Path(found[-1]).parent if found else None


def start_postgres(workdir: Path) -> Tuple[Optional[str], str, Callable[[], None]]:
    """(server URL or None, why not, stop function)."""
    if os.environ.get('AMG_TEST_POSTGRES_URL'):
        return os.environ['AMG_TEST_POSTGRES_URL'], '', lambda: None
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return None, 'psycopg is not installed (pip install -e .[dev])', lambda: None
    bindir = _bindir()
    if bindir is None:
        return None, 'PostgreSQL is not installed (apt-get install postgresql, or set AMG_TEST_POSTGRES_URL)', \
            lambda: None
    data = workdir / 'pgdata'
    data.mkdir(parents=True)
    prefix: List[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: use the package's postgres user
        if not shutil.which('runuser'):
            return None, 'running as root without runuser', lambda: None
        shutil.chown(workdir, 'postgres')
        shutil.chown(data, 'postgres')
        prefix = ['runuser', '-u', 'postgres', '--']
    log = workdir / 'postgres.log'

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(prefix + list(args), capture_output=True, text=True, timeout=120)

    r = run(str(bindir / 'initdb'), '-D', str(data), '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync')
    if r.returncode != 0:
        return None, f'initdb failed: {r.stderr.strip()[-300:]}', lambda: None
    options = f"-c listen_addresses='' -k {data} -c fsync=off -c max_connections=200"
    r = run(str(bindir / 'pg_ctl'), '-D', str(data), '-l', str(log), '-o', options, '-w', 'start')
    if r.returncode != 0:
        return None, f'pg_ctl start failed: {r.stderr.strip()[-300:]}', lambda: None

    def stop() -> None:
        run(str(bindir / 'pg_ctl'), '-D', str(data), '-m', 'immediate', 'stop')

    return f'postgresql+psycopg://postgres@/postgres?host={data}', '', stop


def new_database(server_url: str) -> str:
    """A fresh, empty database on the server; its SQLAlchemy URL."""
    import psycopg
    url = make_url(server_url)
    name = f'amg_{uuid.uuid4().hex[:12]}'
    conninfo = url.set(drivername='postgresql').render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE {name}')
    return url.set(database=name).render_as_string(hide_password=False)
