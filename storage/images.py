"""Content-addressed image files: ``<root>/<sha[:2]>/<sha>.<ext>``, written atomically and durably, never outside
``root``.

Rows in the database name files by content, so two uploads of the same bytes share one file, and a delete may remove
the file only when no row names it any more. Replicas share the store: :meth:`ImageStore.content_lock` orders a
delete's "count the rows, unlink" against an upload's "make sure the file exists, commit the row", so neither can
leave a row without its file."""
import hashlib
import os
import time
import uuid
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Set, Tuple

from sqlalchemy.engine import Engine

from .locks import replica_lock

__all__ = ['ImageStore']

LOCK_FILE = '.content.lock'


def _fsync_dir(path: Path) -> None:
    """A new or renamed directory entry is durable only once its directory is fsynced."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str, ext: str) -> Path:
        if len(sha256) != 64 or any(c not in '0123456789abcdef' for c in sha256) or ext not in ('jpg', 'png'):
            raise ValueError('invalid image key')
        return self.root / sha256[:2] / f'{sha256}.{ext}'

    def put(self, data: bytes, ext: str) -> Tuple[str, Path]:
        """Store bytes (idempotent for the same content); returns (sha256, path). The file and its directory entry
        are durable on return."""
        sha = hashlib.sha256(data).hexdigest()
        path = self.path_for(sha, ext)
        if path.exists():
            os.utime(path)  # in use again: the orphan sweep goes by age
            return sha, path
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
            _fsync_dir(self.root)
        tmp = path.with_name(f'.{path.name}.{uuid.uuid4().hex}.tmp')  # unique: writers of the same bytes may race
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        return sha, path

    def resolve(self, stored_path: str) -> Path:
        """A stored path, refused if it points outside the store."""
        path = Path(stored_path).resolve()
        if self.root not in path.parents:
            raise ValueError('image path outside the image store')
        return path

    def content_lock(self, sha256s: Iterable[str], engine: Optional[Engine] = None):
        """Held by every replica around "rows of these contents change, and their files with them": an advisory
        lock per content on PostgreSQL, otherwise a lock file in the shared store (storage.locks)."""
        return replica_lock([int(s[:15], 16) for s in sha256s], self.root / LOCK_FILE, engine)

    def sweep(self, referenced: Callable[[List[str]], Set[str]], older_than_s: float,
              batch: int = 1000) -> Tuple[int, int]:
        """Remove image files no row names and temporaries of interrupted writes, both only when older than
        ``older_than_s`` (another replica may be between writing a file and committing its row). ``referenced``:
        given a batch of contents (SHA-256, the file name's stem), those some row names - files are judged by
        their content, not their path (a replica may mount the store elsewhere), a batch at a time (a large
        gallery's rows are never all read). Returns (files, temporaries) removed."""
        cutoff = time.time() - older_than_s
        files = temps = 0
        candidates: List[Path] = []

        def judge() -> int:
            named = referenced([p.name.split('.', 1)[0] for p in candidates])
            gone = [p for p in candidates if p.name.split('.', 1)[0] not in named]
            for p in gone:
                p.unlink(missing_ok=True)
            candidates.clear()
            return len(gone)

        for path in self.root.glob('??/*'):
            try:
                if path.stat().st_mtime > cutoff:
                    continue
            except FileNotFoundError:  # removed meanwhile by another replica
                continue
            if path.name.startswith('.') and path.name.endswith('.tmp'):
                path.unlink(missing_ok=True)
                temps += 1
            else:
                candidates.append(path)
                if len(candidates) >= batch:
                    files += judge()
        if candidates:
            files += judge()
        return files, temps
