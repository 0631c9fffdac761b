"""Locks that every replica honours: PostgreSQL advisory locks (replicas may sit on different machines), otherwise
an exclusive ``flock`` on a file (SQLite replicas share one machine's disk); and, in one process, a readers-writer
lock (:class:`ReadWriteLock`)."""
import fcntl
import hashlib
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Optional

from sqlalchemy import text
from sqlalchemy.engine import Engine

__all__ = ['replica_lock', 'lock_key', 'ReadWriteLock']


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


class ReadWriteLock:
    """Many readers at once, or one writer. Readers never queue behind a writer that is only waiting: writing an
    index file is a read, and the searches beside it must not wait for an upload that waits for the write. The
    writer may take the lock again, to write or to read."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: Optional[int] = None  # the writing thread's ident
        self._depth = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            inside_write = self._writer == me
            if not inside_write:
                while self._writer is not None:
                    self._cond.wait()
                self._readers += 1
        try:
            yield
        finally:
            if not inside_write:
                with self._cond:
                    self._readers -= 1
                    if self._readers == 0:
                        self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._writer != me:
                while self._writer is not None or self._readers:
                    self._cond.wait()
                self._writer = me
            self._depth += 1
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if self._depth == 0:
                    self._writer = None
                    self._cond.notify_all()
