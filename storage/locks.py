"""Locks that every replica honours: PostgreSQL advisory locks (replicas may sit on different machines), otherwise
an exclusive ``flock`` on a file (SQLite replicas share one machine's disk)."""
import fcntl
import hashlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Optional

from sqlalchemy import text
from sqlalchemy.engine import Engine

__all__ = ['replica_lock', 'lock_key']


def lock_key(name: str) -> int:
    """A stable signed 63-bit key for a lock's name."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:15], 16)


@contextmanager
def replica_lock(keys: Iterable[int], lock_file: Path, engine: Optional[Engine] = None) -> Iterator[None]:
    """Hold the locks ``keys`` (PostgreSQL ``engine``), or ``lock_file`` (any other database), for the block."""
    if engine is not None and engine.dialect.name == 'postgresql':
        ordered = sorted(set(int(k) for k in keys))  # sorted: two holders cannot deadlock
        with engine.connect() as conn:
            for key in ordered:
                conn.execute(text('SELECT pg_advisory_lock(:k)'), {'k': key})
            try:
                yield
            finally:
                for key in ordered:
                    conn.execute(text('SELECT pg_advisory_unlock(:k)'), {'k': key})
                conn.commit()
        return
    with open(lock_file, 'a+b') as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
